"""Evaluate FP32 vs INT8 IRs on slices of an eval set (shards) and merge the counts exactly.

A shard returns sums, never rates: correct top-1/top-k counts, agreement and flip counts, the
image count, and sums of per-image cosines and logit errors. Merging adds them (and takes
min/max), so merge(shards) equals the unsharded evaluation bit for bit:

* every image runs alone (batch 1), so its logits do not depend on which shard it is in;
* float sums are kept as exact fractions of per-image float64 values, so their total does not
  depend on how the images were grouped (floating-point addition is not associative).

Rates (top-1, agreement, mean cosine, ...) are computed once, from the merged sums.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

_FRACTIONS = ("cosine_sum", "abs_err_sum", "sq_err_sum")


@dataclass
class EvalCounts:
    images: int = 0
    labeled: int = 0  # images with a label (top-1/top-k/flips count only these)
    classes: int = 0
    top_k: int = 0
    fp32_top1: int = 0
    fp32_topk: int = 0
    int8_top1: int = 0
    int8_topk: int = 0
    agree: int = 0  # INT8 argmax == FP32 argmax
    lost: int = 0  # FP32 right, INT8 wrong
    gained: int = 0  # FP32 wrong, INT8 right
    cosine_sum: Fraction = field(default_factory=Fraction)  # sum over images of cos(fp32, int8)
    abs_err_sum: Fraction = field(default_factory=Fraction)  # sum over images of sum_c |fp32 - int8|
    sq_err_sum: Fraction = field(default_factory=Fraction)  # sum over images of sum_c (fp32 - int8)^2
    cosine_min: float = math.inf
    max_abs_diff: float = 0.0
    max_abs_fp32: float = 0.0

    def __add__(self, other: EvalCounts) -> EvalCounts:
        if self.images and other.images and (self.classes, self.top_k) != (other.classes, other.top_k):
            raise ValueError(f"cannot merge shards of different models/top-k: {(self.classes, self.top_k)} vs "
                             f"{(other.classes, other.top_k)}")
        out = EvalCounts()
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name in ("classes", "top_k"):
                setattr(out, f.name, a or b)
            elif f.name == "cosine_min":
                setattr(out, f.name, min(a, b))
            elif f.name.startswith("max_"):
                setattr(out, f.name, max(a, b))
            else:
                setattr(out, f.name, a + b)
        return out

    def summary(self) -> dict[str, Any]:
        """Rates from the sums (None where undefined), named like validation.json's figures."""
        n, lab, elems = self.images, self.labeled, self.images * self.classes

        def rate(count: int, total: int) -> float | None:
            return count / total if total else None

        labeled_all = lab == n and n > 0
        return {
            "images": n, "labeled": lab, "classes": self.classes, "top_k": self.top_k,
            "fp32_top1": rate(self.fp32_top1, lab) if labeled_all else None,
            "fp32_topk": rate(self.fp32_topk, lab) if labeled_all else None,
            "int8_top1": rate(self.int8_top1, lab) if labeled_all else None,
            "int8_topk": rate(self.int8_topk, lab) if labeled_all else None,
            "agreement": rate(self.agree, n),
            "flips": {"lost": self.lost, "gained": self.gained} if labeled_all else {"lost": None, "gained": None},
            "cosine": float(self.cosine_sum / n) if n else None,
            "cosine_min": self.cosine_min if n else None,
            "mean_abs_logit_diff": float(self.abs_err_sum / elems) if elems else None,
            "logit_mse": float(self.sq_err_sum / elems) if elems else None,
            "max_abs_logit_diff": self.max_abs_diff if n else None,
            "rel_logit_error": self.max_abs_diff / max(self.max_abs_fp32, 1e-30) if n else None,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe; fractions as "num/den" strings so a merge after reloading stays exact."""
        d: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in _FRACTIONS:
            d[name] = str(d[name])
        d["cosine_min"] = None if math.isinf(self.cosine_min) else self.cosine_min
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalCounts:
        d = dict(d)
        for name in _FRACTIONS:
            d[name] = Fraction(d[name])
        d["cosine_min"] = math.inf if d.get("cosine_min") is None else d["cosine_min"]
        return cls(**d)


def merge(shards: Iterable[EvalCounts]) -> EvalCounts:
    out = EvalCounts()
    for s in shards:
        out = out + s
    return out


def counts_from_logits(fp32: np.ndarray, int8: np.ndarray, labels: np.ndarray | None,
                       top_k: int = 5) -> EvalCounts:
    """The sums for a batch of logits [N, C] (pure numpy; ``labels`` None for unlabeled data)."""
    ref, got = fp32.astype(np.float64), int8.astype(np.float64)
    n, classes = ref.shape
    k = min(top_k, classes)
    c = EvalCounts(images=n, classes=classes, top_k=k)
    if n == 0:
        return c
    ref_top, got_top = ref.argmax(1), got.argmax(1)
    c.agree = int(np.sum(ref_top == got_top))
    diff = ref - got
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    cos = np.sum(ref * got, axis=1) / np.maximum(norms, 1e-30)
    for i in range(n):  # per-image values, summed exactly: independent of how images are grouped
        c.cosine_sum += Fraction(float(cos[i]))
        c.abs_err_sum += Fraction(math.fsum(np.abs(diff[i]).tolist()))
        c.sq_err_sum += Fraction(math.fsum((diff[i] * diff[i]).tolist()))
    c.cosine_min = float(cos.min())
    c.max_abs_diff = float(np.abs(diff).max())
    c.max_abs_fp32 = float(np.abs(ref).max())
    if labels is not None:
        labels = np.asarray(labels)
        c.labeled = n
        ref_k, got_k = np.argsort(-ref, 1)[:, :k], np.argsort(-got, 1)[:, :k]
        ref_ok, got_ok = ref_top == labels, got_top == labels
        c.fp32_top1, c.int8_top1 = int(ref_ok.sum()), int(got_ok.sum())
        c.fp32_topk = int((ref_k == labels[:, None]).any(1).sum())
        c.int8_topk = int((got_k == labels[:, None]).any(1).sum())
        c.lost, c.gained = int(np.sum(ref_ok & ~got_ok)), int(np.sum(~ref_ok & got_ok))
    return c


# ---------------------------------------------------------------- OpenVINO

def evaluate_shard(fp32_xml: str | Path, int8_xml: str | Path, samples: Sequence[Any], pre: Any, *,
                   top_k: int = 5, threads: int = 1, precision: str | None = "f32") -> EvalCounts:
    """Decode + preprocess ``samples`` (lcpipe.data.Sample), run both IRs one image at a time,
    return the sums. ``precision`` f32 as the validate stage does (no bf16 on AMX)."""
    from lcpipe.bench import compile_ir
    from lcpipe.data import load_image

    if not samples:
        return EvalCounts(top_k=top_k)
    x = np.stack([load_image(s.path, pre, s.rotate) for s in samples]).astype(np.float32)
    labels = None if any(s.label is None for s in samples) else np.asarray([s.label for s in samples])
    logits = [infer_sync(compile_ir(Path(p), "LATENCY", threads, precision), x) for p in (fp32_xml, int8_xml)]
    return counts_from_logits(logits[0], logits[1], labels, top_k)


def infer_sync(compiled: Any, x: np.ndarray) -> np.ndarray:
    """Logits of every sample, quietly (bench.infer_ov: synchronous, no completion callbacks)."""
    from lcpipe.bench import infer_ov

    return infer_ov(compiled, x, show=False)


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
    """data.eval of a pipeline config, subset and rotations applied (the validate stage's order)."""
    from lcpipe.data import list_samples
    from lcpipe.errors import ConfigError

    if config.data.eval is None:
        raise ConfigError("data.eval: not configured (sharded evaluation needs an eval set)")
    return list_samples(config.data.eval, "data.eval")


def evaluate_sharded(fp32_xml: str | Path, int8_xml: str | Path, config: Any, *, shards: int = 4,
                     samples: Sequence[Any] | None = None, top_k: int | None = None, threads: int = 1,
                     use_ray: bool = False) -> EvalCounts:
    """Evaluate the eval set of ``config`` (or ``samples``) in ``shards`` slices and merge them.

    ``use_ray``: one Ray task (1 CPU) per shard on the connected/local Ray; else one after another."""
    samples = list(samples) if samples is not None else eval_samples(config)
    opts = config.stage_options("validate")
    k = top_k or (opts.top_k if opts is not None else 5)
    slices = [samples[a:b] for a, b in shard_ranges(len(samples), shards)]
    if not use_ray:
        return merge(evaluate_shard(fp32_xml, int8_xml, s, config.preprocess, top_k=k, threads=threads)
                     for s in slices)
    import ray

    remote = ray.remote(num_cpus=1, max_retries=0)(evaluate_shard)
    refs = [remote.remote(str(fp32_xml), str(int8_xml), s, config.preprocess, top_k=k, threads=threads)
            for s in slices]
    return merge(ray.get(refs))


def find_irs(result: Any) -> tuple[Path | None, Path | None]:
    """The FP32 and INT8 IRs of a pipeline run (lcpipe.runner.RunResult)."""
    return result.artifacts.get("ir_fp32"), result.artifacts.get("ir_int8")
