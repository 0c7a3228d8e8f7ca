"""Evaluate FP32 vs INT8 IRs on slices of an eval set (shards), locally or as Ray tasks, and
merge the counts exactly (measure.accuracy.EvalCounts: merge(shards) equals the unsharded
evaluation bit for bit, because every image runs alone at batch 1 and sums are exact fractions)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lcpipe.measure.accuracy import EvalCounts, counts_from_logits, merge


def evaluate_shard(fp32_xml: str | Path, int8_xml: str | Path, samples: Sequence[Any], pre: Any, *,
                   top_k: int = 5, threads: int = 1,
                   precision: str | None | dict[str, str | None] = "f32") -> EvalCounts:
    """Decode + preprocess ``samples`` (lcpipe.data.Sample), run both IRs one image at a time,
    return the sums. ``precision``: one float precision for both IRs, or {"fp32": ..., "int8": ...}
    (evaluate_sharded passes what the validate stage uses: see ir_precisions)."""
    from lcpipe.data import load_image
    from lcpipe.ir import compile_ir
    from lcpipe.measure.runtime import infer_ov

    if not samples:
        return EvalCounts(top_k=top_k)
    x = np.stack([load_image(s.path, pre, s.rotate) for s in samples]).astype(np.float32)
    labels = None if any(s.label is None for s in samples) else np.asarray([s.label for s in samples])
    prec = precision if isinstance(precision, dict) else {"fp32": precision, "int8": precision}
    logits = [infer_ov(compile_ir(Path(p), "LATENCY", threads, prec[n]), x, show=False)
              for n, p in (("fp32", fp32_xml), ("int8", int8_xml))]
    return counts_from_logits(logits[0], logits[1], labels, top_k)


def shard_ranges(n: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous [start, stop) slices covering 0..n, sizes differing by at most one."""
    if shards <= 0:
        raise ValueError("shards must be > 0")
    shards = min(shards, max(n, 1))
    base, extra = divmod(n, shards)
    out, start = [], 0
    for i in range(shards):
        stop = start + base + (i < extra)
        out.append((start, stop))
        start = stop
    return out


def eval_samples(config: Any) -> list[Any]:
    """The verdict images of a pipeline config (data.eval, subset and rotations applied, minus the tune
    images a selecting step looked at: lcpipe.data.roles), in the validate stage's order."""
    from lcpipe.data.roles import resolve_roles
    from lcpipe.errors import ConfigError

    if config.data.eval is None:
        raise ConfigError("data.eval: not configured (sharded evaluation needs an eval set)")
    return list(resolve_roles(config).verdict)


def evaluate_sharded(fp32_xml: str | Path, int8_xml: str | Path, config: Any, *, shards: int = 4,
                     samples: Sequence[Any] | None = None, top_k: int | None = None, threads: int = 1,
                     use_ray: bool = False) -> EvalCounts:
    """Evaluate the eval set of ``config`` (or ``samples``) in ``shards`` slices and merge them.

    ``use_ray``: one Ray task (1 CPU) per shard on the connected/local Ray; else one after another.
    Each IR runs at the precision validate runs it at: validate's ``inference_precision``, or the
    one the plan stage recorded in an IR it chose."""
    samples = list(samples) if samples is not None else eval_samples(config)
    opts = config.stage_options("validate")
    k = top_k or (opts.top_k if opts is not None else 5)
    prec = ir_precisions({"fp32": Path(fp32_xml), "int8": Path(int8_xml)},
                         getattr(opts, "inference_precision", "f32") if opts is not None else "f32")
    slices = [samples[a:b] for a, b in shard_ranges(len(samples), shards)]
    if not use_ray:
        return merge(evaluate_shard(fp32_xml, int8_xml, s, config.preprocess, top_k=k, threads=threads,
                                    precision=prec) for s in slices)
    import ray

    remote = ray.remote(num_cpus=1, max_retries=0)(evaluate_shard)
    refs = [remote.remote(str(fp32_xml), str(int8_xml), s, config.preprocess, top_k=k, threads=threads,
                          precision=prec) for s in slices]
    return merge(ray.get(refs))


def ir_precisions(xml: dict[str, Path], configured: str | None) -> dict[str, str | None]:
    """Per IR, the float precision the validate stage runs it at: the plan's recorded choice, else
    validate's ``inference_precision`` ("default": the plugin's own, None)."""
    from lcpipe.ir import planned_precision

    base = None if configured in (None, "default") else configured
    return {k: planned_precision(p) or base for k, p in xml.items()}


def find_irs(result: Any) -> tuple[Path | None, Path | None]:
    """The FP32 and INT8 IRs of a pipeline run (lcpipe.runner.RunResult)."""
    return result.artifacts.get("ir_fp32"), result.artifacts.get("ir_int8")
