"""What ships, in words: the one sentence every human-readable output starts with, the shipped model's
label in tables (INT8 only when it is INT8), and the headline speed-up against what a user gets
without lcpipe (the FP32 IR at the plugin's default precision + Python float preprocessing).

Reads metrics.json's ``shipped`` section (lcpipe.metrics.shipped_metrics); a metrics.json written
before that section existed is read through the same function.
"""

from __future__ import annotations

from typing import Any

from lcpipe.render.format import ci, fixed


def shipped_of(m: dict[str, Any]) -> dict[str, Any]:
    from lcpipe.metrics import shipped_metrics

    return m.get("shipped") or shipped_metrics(m)


def shipped_headline(m: dict[str, Any]) -> str:
    """ "shipped: int8_mixed@bf16", or "shipped: FP32 IR at bf16 (no INT8 candidate was faster within the
    gates)": the shipped model by what it is."""
    s = shipped_of(m)
    if s["int8"]:
        how = "" if s["chosen_by"] == "plan" else " (the quantize stage's IR: no plan stage compared it with FP32)"
        return f"shipped: {s['plan']}{how}"
    plan = m.get("plan") or {}
    tried = any(c.get("int8") for c in plan.get("candidates") or [])
    why = "no INT8 candidate was faster within the gates" if tried or not plan else "no INT8 candidate was tried"
    return f"shipped: FP32 IR at {s['precision']} ({why})"


def model_label(m: dict[str, Any]) -> str:
    """The shipped model's row label: "INT8" for an INT8 model, else "shipped FP32 (bf16)"."""
    s = shipped_of(m)
    return "INT8" if s["int8"] else f"shipped FP32 ({s['precision']})"


def baseline_label(m: dict[str, Any]) -> str:
    return f"FP32 IR at {m.get('default_precision') or 'the plugin default'} (plugin default) + Python preprocessing"


def speedup_headline(m: dict[str, Any]) -> str:
    """The headline speed-up and its 95 % interval from the interleaved rounds: the shipped image-input
    route vs the baseline, end to end (decoded image -> top-k, batch 1); model-only vs the FP32 IR at the
    plugin default where no end-to-end figure exists."""
    s = shipped_of(m)
    if s.get("speedup_vs_default_e2e_p50"):
        return (f"{fixed(s['speedup_vs_default_e2e_p50'], 2, 'x')}{ci(s.get('speedup_vs_default_e2e_p50_ci95'))} "
                f"end to end vs {baseline_label(m)} "
                f"(p50 {_ms(s.get('e2e_p50_ms'))} vs {_ms(s.get('baseline_e2e_p50_ms'))} ms, batch 1)")
    if s.get("speedup_vs_default_latency_p50"):
        return (f"{fixed(s['speedup_vs_default_latency_p50'], 2, 'x')}"
                f"{ci(s.get('speedup_vs_default_latency_p50_ci95'))} model only vs the FP32 IR at "
                f"{m.get('default_precision')} (plugin default), batch 1")
    return "speed-up against the plugin default not measured"


def _ms(v: Any) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def route_labels(m: dict[str, Any], short: bool = False) -> dict[str, str]:
    """End-to-end route -> label (lcpipe.measure.e2e routes; ``int8_*`` hold the shipped model)."""
    prec = m.get("inference_precision") or {}
    return e2e_route_labels(model_label(m), prec.get("fp32"), m.get("default_precision"), short)


def e2e_route_labels(shipped: str, fp32_precision: str | None, default_precision: str | None,
                     short: bool = False) -> dict[str, str]:
    """Route labels for a shipped model called ``shipped`` ("INT8", "shipped FP32 (bf16)", ...); the
    baseline route (fp32_py_default, or fp32_py where that already runs at the plugin default) says so."""
    f32, default = fp32_precision or "f32", default_precision or "plugin default"
    if short:
        labels = {"fp32_py_default": f"FP32 {default} + Python", "fp32_py": f"FP32 {f32} + Python",
                  "int8_py": f"{shipped} + Python", "fp32_image": f"FP32 {f32} image-input",
                  "int8_image": f"{shipped} image-input"}
    else:
        labels = {"fp32_py_default": f"FP32 IR ({default}, plugin default) + Python float preprocessing",
                  "fp32_py": f"FP32 IR ({f32}) + Python float preprocessing",
                  "int8_py": f"{shipped} IR + Python float preprocessing",
                  "fp32_image": f"FP32 image-input IR ({f32}) + uint8 resize/crop",
                  "int8_image": f"{shipped} image-input IR + uint8 resize/crop"}
    base = "fp32_py" if fp32_precision and fp32_precision == default_precision else "fp32_py_default"
    labels[base] += " (baseline)"
    return labels
