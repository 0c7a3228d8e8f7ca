"""Per-layer INT8 sensitivity: which layers' quantization moves the outputs most.

Runs the pipeline up to ``convert`` (cached; lcpipe.runner.run_until) for the FP32 IR, quantizes it with NNCF exactly as
the pipeline's quantize stage would (preset, subset, bias correction, ignored scope), then once
more per layer group:

* ``ignore`` (default): everything INT8 except the group; the error the group's quantization
  adds is the full-INT8 error minus this one (leave-one-out).
* ``only``: the group alone INT8; its error is this one (one-at-a-time).

Error = difference to the FP32 logits on a few tune images (data.tune, else the tune part of the
data.eval split, lcpipe.data.roles: a ranking is a choice, so it does not look at verdict images):
logit MSE (default), 1 - cosine, or 1 - argmax agreement. Groups are the convs and the fc MatMul,
named by their source layer (``blocks5.3.dw_conv.conv``; OpenVINO calls the op
``blocks5.3.dw_conv.conv/WithoutBiases``), or whole blocks (``blocks5.3``). The top N become an
``ignored_scope`` for ``stages.quantize.ignored_scope``, which is verified with one more quantization.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lcpipe.config import PipelineConfig
from lcpipe.errors import ConfigError
from lcpipe.fileio import write_json
from lcpipe.ir import compile_ir, ov_config, read_ir
from lcpipe.measure.accuracy import counts_from_logits
from lcpipe.measure.runtime import infer_ov, output_classes
from lcpipe.quantization.graph import layer_ops, quantized_ops
from lcpipe.quantization.ptq import quantize, quantize_with_accuracy_control
from lcpipe.quantization.settings import choose_preset, nncf_params
from lcpipe.rundir import claim_output_dir, is_lcpipe_run

log = logging.getLogger("lcpipe")

Mode = Literal["ignore", "only"]
GroupBy = Literal["layer", "block"]
Metric = Literal["mse", "cosine", "agreement"]
_OV_SUFFIX = "/WithoutBiases"  # OpenVINO's ONNX frontend names a biased conv's Convolution op so


@dataclass
class LayerGroup:
    name: str  # source layer (blocks5.3.dw_conv.conv) or block (blocks5.3)
    nodes: list[str]  # OpenVINO op names, as stages.quantize.ignored_scope.names takes them


@dataclass
class Measurement:
    """Output difference of one quantized variant to FP32 on the eval images."""

    agreement: float
    cosine: float
    mse: float
    top1: float | None = None
    quantized_ops: int = 0

    def error(self, metric: Metric) -> float:
        return {"mse": self.mse, "cosine": 1.0 - self.cosine, "agreement": 1.0 - self.agreement}[metric]


@dataclass
class GroupResult:
    group: LayerGroup
    measurement: Measurement
    score: float = 0.0  # error this group's quantization adds (higher = more sensitive)
    rank: int = 0


@dataclass
class SensitivityResult:
    mode: Mode
    metric: Metric
    fp32_top1: float | None
    baseline: Measurement  # the pipeline's own INT8 (all groups quantized)
    groups: list[GroupResult]  # ranked, most sensitive first
    suggestion: dict[str, list[str]]  # {"names": [...]} for stages.quantize.ignored_scope
    suggested: Measurement | None  # INT8 with the suggestion applied
    accuracy_control: dict[str, Any] | None
    info: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    def top(self, n: int) -> list[GroupResult]:
        return self.groups[:n]


# ---------------------------------------------------------------- groups

def source_name(node: str) -> str:
    return node.removesuffix(_OV_SUFFIX)


def block_name(layer: str) -> str:
    """``blocks5.3.dw_conv.conv`` -> ``blocks5.3``; ``conv1`` / ``last_conv`` / ``fc`` stay."""
    parts = layer.split(".")
    return ".".join(parts[:2]) if parts[0].startswith(("blocks", "stages")) and len(parts) > 2 else parts[0]


def layer_groups(nodes: list[str], by: GroupBy = "layer",
                 include: tuple[str, ...] | list[str] = ()) -> list[LayerGroup]:
    """Group quantized op names; ``include``: glob patterns over group names (empty = all)."""
    groups: dict[str, list[str]] = {}
    for node in nodes:
        name = source_name(node) if by == "layer" else block_name(source_name(node))
        groups.setdefault(name, []).append(node)
    out = [LayerGroup(n, ns) for n, ns in groups.items()]
    if include:
        out = [g for g in out if any(fnmatch.fnmatchcase(g.name, p) for p in include)]
        if not out:
            raise ConfigError(f"--include {' '.join(include)}: matches no layer group; groups are e.g. "
                              f"{', '.join(list(groups)[:6])}")
    return out


# ---------------------------------------------------------------- the analysis

@dataclass
class _Context:
    """What every quantization + measurement of one analysis shares."""

    ov: Any
    fp32_model: Any
    calib: np.ndarray
    options: Any  # the pipeline's quantize stage options (its defaults without one)
    preset: str
    x: np.ndarray
    labels: np.ndarray | None
    fp32_logits: np.ndarray
    threads: int

    def params(self, keep_float: Sequence[str] = ()) -> dict[str, Any]:
        """nncf.quantize keyword arguments: the quantize stage's, plus ``keep_float`` op names in float."""
        return nncf_params(self.options, self.preset, len(self.calib), keep_float=keep_float)


def analyze(config: PipelineConfig | str | Path, *, overrides: tuple[str, ...] | list[str] = (),
            out: str | Path | None = None, cache_dir: str | Path | None = None, by: GroupBy = "layer",
            mode: Mode = "ignore", metric: Metric = "mse", include: tuple[str, ...] | list[str] = (),
            images: int = 32, calib_images: int | None = None, top: int = 5,
            accuracy_control: bool = False, ac_max_drop: float = 0.01) -> SensitivityResult:
    """Rank layer groups by quantization sensitivity; writes sensitivity.json/.md into ``out``."""
    if not isinstance(config, PipelineConfig):
        from lcpipe.runner import load_config

        config = load_config(config, overrides)
    from lcpipe.runner import require_stage

    require_stage(config, "convert", purpose="sensitivity")  # before the folder is claimed
    out = claim_output_dir(Path(out or Path("runs", "sensitivity", config.name)), "sensitivity",
                           made_by_older=lambda p: (p / "sensitivity.json").is_file() or is_lcpipe_run(p / "pipeline"))
    t0 = time.perf_counter()
    ctx, info = _prepare(config, out, cache_dir, images, calib_images)
    baseline_model = _quantize(ctx, [])
    baseline = _measure(ctx, baseline_model)
    groups = layer_groups(layer_ops(ctx.fp32_model), by, include)
    # "only" keeps everything else FP32: the other layers and the extra ops NNCF quantized (SE multiply, ...)
    all_nodes = list(dict.fromkeys([*layer_ops(ctx.fp32_model), *quantized_ops(baseline_model)]))
    log.info("sensitivity: %d group(s), mode %s, %d tune / %d calibration images", len(groups), mode, len(ctx.x),
             min(ctx.options.subset_size, len(ctx.calib)))
    results = []
    for i, g in enumerate(groups):
        ignored = g.nodes if mode == "ignore" else [n for n in all_nodes if n not in g.nodes]
        m = _measure(ctx, _quantize(ctx, ignored))
        results.append(GroupResult(g, m, _score(mode, metric, baseline, m)))
        log.info("sensitivity: [%d/%d] %s: %s %.3g, agreement %.4f, cosine %.6f", i + 1, len(groups), g.name,
                 metric, m.error(metric), m.agreement, m.cosine)
    ranked = _rank(results, metric)
    names = [n for r in ranked[:top] for n in r.group.nodes]
    suggestion = {"names": names}
    suggested = _measure(ctx, _quantize(ctx, names)) if names else None
    ac = _accuracy_control(ctx, baseline_model, by, ranked, ac_max_drop) if accuracy_control else None
    info.update(mode=mode, metric=metric, group_by=by, include=list(include), top=top,
                seconds=round(time.perf_counter() - t0, 1))
    fp32_top1 = _top1(ctx.fp32_logits, ctx.labels)
    result = SensitivityResult(mode, metric, fp32_top1, baseline, ranked, suggestion, suggested, ac, info)
    result.files = write_outputs(result, out)
    return result


def _prepare(config: PipelineConfig, out: Path, cache_dir: str | Path | None, images: int,
             calib_images: int | None) -> tuple[_Context, dict[str, Any]]:
    from lcpipe.cache import default_cache_dir
    from lcpipe.data import load_samples, load_split
    from lcpipe.data.roles import resolve_roles
    from lcpipe.deps import require
    from lcpipe.runner import run_until, stage_options
    from lcpipe.sysinfo import default_threads

    ov = require("openvino")
    require("nncf", "sensitivity analysis")
    cache_root = Path(cache_dir) if cache_dir else default_cache_dir()
    run = run_until(config, "convert", purpose="sensitivity", out=out / "pipeline", cache_dir=cache_root)
    fp32_xml = run.artifacts["ir_fp32"]
    fp32_model = read_ir(fp32_xml)
    options = stage_options(config, "quantize")
    calib = load_split(config.data, "calib", config.preprocess, cache_root, progress=False).x
    if calib_images:
        calib = calib[:calib_images]
    roles = resolve_roles(config, tune_needed=True)
    ev = load_samples(list(roles.tune), config.preprocess, cache_root if config.data.cache_preprocessed else None,
                      progress=False, what="tune images")
    ev.check_classes(output_classes(fp32_model))
    x, labels = ev.x[:images], None if ev.labels is None else ev.labels[:images]
    log.info("sensitivity: ranking on %d tune images (%s)", len(x), roles.tune_from)
    if roles.tune_from == "data.eval split" and not roles.selecting and config.data.split is None:
        log.warning("sensitivity: %s has no selecting step, so its verdict scores all of data.eval, these tune "
                    "images included; to keep them out, give it `data: {split: {}}` (the same split) or data.tune",
                    config.name)
    preset, reason = choose_preset(options.preset, run.artifacts.get("canonical"), fp32_model)
    threads = config.runtime.threads or default_threads()
    fp32_logits = infer_ov(compile_ir(fp32_xml, "LATENCY", threads, "f32"), x, show=False)
    scope = options.ignored_scope
    base_scope = {"names": list(scope.names), "patterns": list(scope.patterns), "types": list(scope.types)} \
        if scope is not None else {"names": [], "patterns": [], "types": []}
    ctx = _Context(ov, fp32_model, calib, options, preset, x, labels, fp32_logits, threads)
    info = {"pipeline": config.name, "ir_fp32": str(fp32_xml), "preset": preset, "preset_reason": reason,
            "calib_images": min(options.subset_size, len(calib)), "eval_images": len(x), "tune_from": roles.tune_from,
            "threads": threads,
            "base_ignored_scope": base_scope}
    return ctx, info


def _quantize(ctx: _Context, ignored: list[str]) -> Any:
    """nncf.quantize with the pipeline's parameters plus ``ignored`` op names."""
    return quantize(ctx.fp32_model, ctx.calib, ctx.params(ignored))


def _measure(ctx: _Context, model: Any) -> Measurement:

    compiled = ctx.ov.Core().compile_model(model, "CPU", ov_config("LATENCY", ctx.threads, "f32"))
    logits = infer_ov(compiled, ctx.x, show=False)
    s = counts_from_logits(ctx.fp32_logits, logits, None).summary()
    return Measurement(agreement=s["agreement"], cosine=s["cosine"], mse=s["logit_mse"],
                       top1=_top1(logits, ctx.labels), quantized_ops=len(quantized_ops(model)))


def _top1(logits: np.ndarray, labels: np.ndarray | None) -> float | None:
    return None if labels is None else float(np.mean(logits.argmax(1) == labels))


def _score(mode: Mode, metric: Metric, baseline: Measurement, m: Measurement) -> float:
    """Error the group's quantization adds: leave-one-out difference, or its error alone."""
    return baseline.error(metric) - m.error(metric) if mode == "ignore" else m.error(metric)


def _rank(results: list[GroupResult], metric: Metric) -> list[GroupResult]:
    # ties (common with agreement on few images) fall back to MSE, then graph order
    order = sorted(range(len(results)), key=lambda i: (-results[i].score, -results[i].measurement.mse, i))
    ranked = [results[i] for i in order]
    for r, res in enumerate(ranked, start=1):
        res.rank = r
    return ranked


# ---------------------------------------------------------------- NNCF accuracy control (optional)

def _accuracy_control(ctx: _Context, baseline_model: Any, by: GroupBy, ranked: list[GroupResult],
                      max_drop: float) -> dict[str, Any]:
    """quantize_with_accuracy_control with FP32-argmax agreement as the metric (works without
    labels); which ops it reverts, and how they rank here."""
    fp32_top = ctx.fp32_logits.argmax(1)
    t0 = time.perf_counter()
    model, _ = quantize_with_accuracy_control(ctx.fp32_model, ctx.calib, ctx.x, fp32_top, ctx.params(),
                                              max_drop=max_drop)
    reverted = sorted(set(quantized_ops(baseline_model)) - set(quantized_ops(model)))
    rank_of = {n: r.rank for r in ranked for n in r.group.nodes}
    compiled = ctx.ov.Core().compile_model(model, "CPU", ov_config("LATENCY", ctx.threads, "f32"))
    ac_agree = float(np.mean(infer_ov(compiled, ctx.x, show=False).argmax(1) == fp32_top))
    return {"max_drop": max_drop, "metric": "agreement with FP32 argmax", "seconds": round(time.perf_counter() - t0, 1),
            "reverted": [{"node": n, "group": source_name(n) if by == "layer" else block_name(source_name(n)),
                          "rank_here": rank_of.get(n)} for n in reverted],
            "agreement": ac_agree}


# ---------------------------------------------------------------- output

def to_dict(r: SensitivityResult) -> dict[str, Any]:
    def meas(m: Measurement | None) -> dict[str, Any] | None:
        return None if m is None else m.__dict__.copy()

    return {
        "info": r.info, "mode": r.mode, "metric": r.metric, "fp32_top1": r.fp32_top1,
        "baseline_int8": meas(r.baseline),
        "groups": [{"rank": g.rank, "group": g.group.name, "nodes": g.group.nodes, "score": g.score,
                    **meas(g.measurement)} for g in r.groups],  # type: ignore[dict-item]
        "ignored_scope": r.suggestion,
        "suggested_int8": meas(r.suggested),
        "accuracy_control": r.accuracy_control if r.accuracy_control is not None
        else "skipped (use --accuracy-control)",
    }


def format_table(r: SensitivityResult, limit: int | None = None) -> str:
    """Markdown table, most sensitive first."""
    what = "error removed when kept FP32" if r.mode == "ignore" else "error when quantized alone"
    lines = [f"| rank | group | score ({r.metric}, {what}) | agreement | cosine | logit MSE | ops |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for g in r.groups[:limit]:
        m = g.measurement
        lines.append(f"| {g.rank} | {g.group.name} | {g.score:.4g} | {m.agreement:.4f} | {m.cosine:.6f} | "
                     f"{m.mse:.4g} | {len(g.group.nodes)} |")
    return "\n".join(lines)


def format_suggestion(r: SensitivityResult) -> str:
    import json

    names = r.suggestion["names"]
    flow = "{names: [" + ", ".join(names) + "]}"
    lines = ["# stages.quantize.ignored_scope for the top groups:",
             "- quantize: {ignored_scope: " + flow + "}",
             f"# or: --set 'stages.quantize.ignored_scope={json.dumps(r.suggestion)}'"]
    b, s = r.baseline, r.suggested
    if s is not None:
        lines.append(f"# vs FP32 on {r.info.get('eval_images')} images: agreement {b.agreement:.4f} -> "
                     f"{s.agreement:.4f}, cosine {b.cosine:.6f} -> {s.cosine:.6f}, "
                     f"logit MSE {b.mse:.4g} -> {s.mse:.4g}")
    return "\n".join(lines)


def write_outputs(r: SensitivityResult, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "sensitivity.json", "md": out / "sensitivity.md"}
    write_json(files["json"], to_dict(r))
    b = r.baseline
    head = [f"# Quantization sensitivity: {r.info.get('pipeline')}", "",
            f"Mode `{r.mode}`, metric `{r.metric}`, groups by {r.info.get('group_by')}, "
            f"{r.info.get('eval_images')} tune / {r.info.get('calib_images')} calibration images, "
            f"preset {r.info.get('preset')}.", "",
            f"Full INT8 vs FP32: agreement {b.agreement:.4f}, cosine {b.cosine:.6f}, logit MSE {b.mse:.4g}"
            + (f", top-1 {b.top1:.4f} (FP32 {r.fp32_top1:.4f})" if b.top1 is not None and r.fp32_top1 is not None
               else "") + ".", ""]
    files["md"].write_text("\n".join([*head, format_table(r), "", "```yaml", format_suggestion(r), "```", ""]))
    return files
