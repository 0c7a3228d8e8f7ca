"""Gates: thresholds from the YAML (per ISA where given) checked against metrics.json figures.

A failed gate never raises: the verdict goes into metrics.json["gates"] and the CLI exits 3.
"""

from __future__ import annotations

from typing import Any

from lcpipe.metrics import get_path
from lcpipe.records import Gate

# gate name -> (dotted metrics key, "min" | "max"); every GatesConfig field must be here.
GATES: dict[str, tuple[str, str]] = {
    "max_top1_drop": ("accuracy.top1_drop", "max"),
    "max_top1_flips": ("accuracy.flips.lost", "max"),
    "min_agreement": ("accuracy.agreement", "min"),
    "min_cosine": ("accuracy.cosine", "min"),
    "max_rel_logit_error": ("accuracy.rel_logit_error", "max"),
    "min_fp32_top1": ("accuracy.fp32.top1", "min"),
    "min_int8_top1": ("accuracy.int8.top1", "min"),
    "min_latency_speedup": ("speedup.latency_p50", "min"),
    "min_throughput_speedup": ("speedup.throughput", "min"),
    "min_e2e_latency_speedup": ("speedup.e2e_latency_p50_vs_default", "min"),
    "min_e2e_throughput_speedup": ("speedup.e2e_throughput_vs_default", "min"),
}
# What each gate's figure compares the shipped model with. End to end is what a serving process gains
# over what it gets without lcpipe (the headline baseline); model-only speed and fidelity compare IR with
# IR, against the FP32 IR at validate's precision (f32 unless set), the same reference on every CPU.
GATE_BASELINES: dict[str, str] = {
    "max_top1_drop": "fp32", "max_top1_flips": "fp32", "min_agreement": "fp32", "min_cosine": "fp32",
    "max_rel_logit_error": "fp32", "min_latency_speedup": "fp32", "min_throughput_speedup": "fp32",
    "min_e2e_latency_speedup": "default", "min_e2e_throughput_speedup": "default",
}
FINITE_GATE = "finite_outputs"  # built in when a model gave NaN/inf outputs on the eval set
REVERTED_GATE = "max_reverted_fraction"  # built in when accuracy control ran (lcpipe.quantization.ptq.MOSTLY_REVERTED)


def evaluate_gates(gates: dict[str, Any], metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per configured gate; the threshold is picked for the ISA the figures were measured on.

    A gate whose figure was not measured (latency off, unlabeled data) fails: a CI gate must not
    pass by silence."""
    from lcpipe.sysinfo import pick_threshold

    isa = (metrics.get("cpu") or {}).get("isa")
    rows = []
    for name, raw in gates.items():
        if raw is None:
            continue
        metric, kind = GATES.get(name, (None, "min"))
        try:
            threshold, isa_key = pick_threshold(raw, isa)
        except KeyError as exc:
            rows.append(_gate(name, None, None, False, None, metric, f"no threshold for ISA {isa}: {exc}",
                              gate_baseline(name, metrics)))
            continue
        value = get_path(metrics, metric) if metric else None
        note = "" if metric else "unknown gate"
        if metric and value is None:
            note = "not measured"
        rows.append(_gate(name, threshold, value, _passes(value, threshold, kind), isa_key, metric, note,
                          gate_baseline(name, metrics)))
    bad = {n: c for n, c in ((metrics.get("accuracy") or {}).get("non_finite_outputs") or {}).items() if c}
    if bad:  # built in: no figure of a model that outputs NaN means anything, whatever gates are set
        rows.append(_gate(FINITE_GATE, 0, sum(bad.values()), False, "builtin", "accuracy.non_finite_outputs",
                          "non-finite (NaN/inf) outputs on " + ", ".join(f"{c} {n}" for n, c in bad.items())
                          + " image(s); accuracy and fidelity figures left out"))
    ac = (metrics.get("quantize") or {}).get("accuracy_control")
    if ac:
        from lcpipe.quantization.ptq import MOSTLY_REVERTED

        value = ac.get("reverted_fraction")
        rows.append(_gate(REVERTED_GATE, MOSTLY_REVERTED, value, _passes(value, MOSTLY_REVERTED, "max"), "builtin",
                          "quantize.accuracy_control.reverted_fraction",
                          f"{ac.get('reverted_ops')} of {ac.get('ptq_quantized_ops')} quantized ops reverted"))
    return rows


def gate_baseline(name: str, metrics: dict[str, Any]) -> str | None:
    """The reference of a gate's figure in words (None: an absolute figure, e.g. min_fp32_top1)."""
    kind = GATE_BASELINES.get(name)
    if kind == "fp32":
        return f"FP32 IR at {(metrics.get('inference_precision') or {}).get('fp32') or 'f32'}"
    if kind == "default":
        return f"FP32 IR at {metrics.get('default_precision') or 'the plugin default'} (plugin default) + Python " \
               "preprocessing"
    return None


def _passes(value: Any, threshold: float, kind: str) -> bool:
    if value is None:
        return False
    return value <= threshold if kind == "max" else value >= threshold


def _gate(name: str, threshold: float | None, value: Any, passed: bool, isa_key: str | None, metric: str | None,
          note: str, baseline: str | None = None) -> dict[str, Any]:
    return Gate.build(name=name, threshold=threshold, value=value, passed=passed, isa_key=isa_key, metric=metric,
                      baseline=baseline, note=note).to_dict()
