"""Gates: thresholds from the YAML (per ISA where given) checked against metrics.json figures, three-valued.

Each gate checks its figure's interval (lcpipe.measure.intervals; docs/verdicts.md): **pass** when the
whole interval is on the right side of the threshold, **fail** when it is entirely on the wrong side,
**inconclusive** otherwise (the data cannot tell). A few figures are facts about the verdict images
themselves (a count of flips, a worst case) and decide alone. ``mode="point"`` (``gates.mode: point``)
is the old pass/fail on the figure alone, for pipelines that relied on it and for the plan stage's
selection on tune images (it chooses; the verdict vouches).

A gate never raises: the verdicts go into metrics.json["gates"]; the CLI exits 3 when any gate fails
and 4 when none fails but some are inconclusive (lcpipe.errors).
"""

from __future__ import annotations

from typing import Any

from lcpipe.measure.stats import Kind, point_verdict, verdict
from lcpipe.metrics import get_path
from lcpipe.records import Gate

# gate name -> (dotted metrics key, "min" | "max"); every GatesConfig gate must be here.
GATES: dict[str, tuple[str, Kind]] = {
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


def evaluate_gates(gates: dict[str, Any], metrics: dict[str, Any], validation: dict[str, Any] | None = None, *,
                   confidence: float = 0.95, mode: str = "interval") -> list[dict[str, Any]]:
    """One row per configured gate (``gates``: name -> threshold, GatesConfig.thresholds()); the
    threshold is picked for the ISA the figures were measured on. ``validation`` (validation.json)
    holds what the intervals are computed from; without it, interval mode has no interval to decide
    on and says inconclusive.

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
            rows.append(_row(name, None, None, "fail", None, None, None, None, metric,
                             f"no threshold for ISA {isa}: {exc}", gate_baseline(name, metrics)))
            continue
        value = get_path(metrics, metric) if metric else None
        if metric is None or value is None:
            rows.append(_row(name, threshold, value, "fail", None, None, None, isa_key, metric,
                             "not measured" if metric else "unknown gate", gate_baseline(name, metrics)))
            continue
        rows.append(_judge(name, metric, kind, threshold, value, isa_key, validation or {}, confidence, mode,
                           gate_baseline(name, metrics)))
    bad = {n: c for n, c in ((metrics.get("accuracy") or {}).get("non_finite_outputs") or {}).items() if c}
    if bad:  # built in: no figure of a model that outputs NaN means anything, whatever gates are set
        rows.append(_row(FINITE_GATE, 0, sum(bad.values()), "fail", None, None, "count on the verdict images (exact)",
                         "builtin", "accuracy.non_finite_outputs",
                         "non-finite (NaN/inf) outputs on " + ", ".join(f"{c} {n}" for n, c in bad.items())
                         + " image(s); accuracy and fidelity figures left out"))
    ac = (metrics.get("quantize") or {}).get("accuracy_control")
    if ac:
        from lcpipe.quantization.ptq import MOSTLY_REVERTED

        value = ac.get("reverted_fraction")
        v = "fail" if value is None else point_verdict(value, MOSTLY_REVERTED, "max")
        rows.append(_row(REVERTED_GATE, MOSTLY_REVERTED, value, v, None, None, "share of the quantized ops (exact)",
                         "builtin", "quantize.accuracy_control.reverted_fraction",
                         f"{ac.get('reverted_ops')} of {ac.get('ptq_quantized_ops')} quantized ops reverted"))
    return rows


def speed_gates(gates: dict[str, Any], isa: str | None) -> list[Any]:
    """The configured speed-up gates as lcpipe.measure.rounds.GatedSpeedup (what validate's adaptive
    rounds must decide), thresholds picked for ``isa``; a gate without a threshold for it is left out."""
    from lcpipe.measure.rounds import GatedSpeedup
    from lcpipe.measure.speedups import BY_NAME
    from lcpipe.sysinfo import pick_threshold

    out = []
    for name, raw in gates.items():
        metric, kind = GATES.get(name, ("", "min"))
        speedup = metric.removeprefix("speedup.")
        if raw is None or not metric.startswith("speedup.") or speedup not in BY_NAME:
            continue
        try:
            threshold, _ = pick_threshold(raw, isa)
        except KeyError:
            continue
        out.append(GatedSpeedup(name, speedup, threshold, kind))
    return out


def _judge(name: str, metric: str, kind: Kind, threshold: float, value: Any, isa_key: str,
           validation: dict[str, Any], confidence: float, mode: str, baseline: str | None) -> dict[str, Any]:
    from lcpipe.measure.intervals import EXACT, gate_interval

    if mode == "point":
        return _row(name, threshold, value, point_verdict(value, threshold, kind), None, None,
                    "point estimate (gates.mode: point)", isa_key, metric, "", baseline)
    if metric in EXACT:
        return _row(name, threshold, value, point_verdict(value, threshold, kind), None, None, EXACT[metric],
                    isa_key, metric, "", baseline)
    found = gate_interval(metric, validation, confidence)
    if found is None:
        return _row(name, threshold, value, "inconclusive", None, None, None, isa_key, metric,
                    "no interval for this figure", baseline)
    interval, conf, method = found
    v = verdict(interval, threshold, kind)
    note = "" if interval is not None else "no interval (too few images or rounds)"
    return _row(name, threshold, value, v, interval, conf, method, isa_key, metric, note, baseline)


def gate_baseline(name: str, metrics: dict[str, Any]) -> str | None:
    """The reference of a gate's figure in words (None: an absolute figure, e.g. min_fp32_top1)."""
    kind = GATE_BASELINES.get(name)
    if kind == "fp32":
        return f"FP32 IR at {(metrics.get('inference_precision') or {}).get('fp32') or 'f32'}"
    if kind == "default":
        return f"FP32 IR at {metrics.get('default_precision') or 'the plugin default'} (plugin default) + Python " \
               "preprocessing"
    return None


def _row(name: str, threshold: float | None, value: Any, v: str, interval: tuple[float, float] | None,
         confidence: float | None, method: str | None, isa_key: str | None, metric: str | None,
         note: str, baseline: str | None = None) -> dict[str, Any]:
    return Gate.build(name=name, threshold=threshold, value=value, passed=v == "pass", verdict=v,
                      interval=None if interval is None else [round(interval[0], 6), round(interval[1], 6)],
                      confidence=None if confidence is None else round(confidence, 6), method=method,
                      isa_key=isa_key, metric=metric, baseline=baseline, note=note).to_dict()


def overall(rows: list[dict[str, Any]]) -> str:
    """pass (every gate passes; also with no gates), fail (any fails), inconclusive (else)."""
    verdicts = {r.get("verdict") or ("pass" if r.get("passed") else "fail") for r in rows}
    return "fail" if "fail" in verdicts else "inconclusive" if "inconclusive" in verdicts else "pass"


def explain(row: dict[str, Any]) -> str:
    """Which gate and why, in one line: what the CLI prints for a gate that did not pass."""
    value, interval, limit = row.get("value"), row.get("interval"), row.get("threshold")
    side = ">=" if (GATES.get(row["name"], (None, "min"))[1] == "min") else "<="
    what = f"{row['name']} {row.get('verdict', 'fail')}: {_num(value)}"
    if interval is not None:
        conf = row.get("confidence")
        what += f" [{_num(interval[0])}, {_num(interval[1])}] ({_pct(conf)} interval, {row.get('method')})"
        if row.get("verdict") == "inconclusive":
            what += f" straddles the limit {_num(limit)}"
        else:
            what += f", limit {side} {_num(limit)}"
    else:
        what += f", limit {side} {_num(limit)}"
    return what + (f" - {row['note']}" if row.get("note") else "")


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def _pct(c: Any) -> str:
    return "?" if c is None else f"{100 * c:.4g} %"
