"""Which interval each verdict figure gets, computed from validation.json (its ``evidence`` counts and
per-image cosines, and the per-round timings): metrics.json's ``*_ci95`` figures and the gates'
intervals (at ``gates.confidence``) both come from here. docs/verdicts.md explains the choices.

* FP32 / INT8 top-1 and agreement: Wilson score interval;
* top-1 drop: Newcombe's paired interval; flips: the exact McNemar p-value beside the counts;
* mean cosine: BCa bootstrap over the verdict images, seeded;
* speed-ups: t interval on the per-round log ratios (lcpipe.measure.speedups);
* ``max_top1_flips`` and ``max_rel_logit_error`` are exact statements about the verdict images (a
  count, and a worst case over them): no sampling interval, the figure itself decides.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lcpipe.measure.speedups import BY_NAME, estimate, round_figures
from lcpipe.measure.stats import (
    Interval,
    PairedCounts,
    mcnemar_exact_p,
    mean_ci,
    proportion_ci,
    top1_drop_ci,
)

Evidence = dict[str, Any]  # validation.json "evidence" (lcpipe.measure.accuracy.verdict_evidence)


def _paired(ev: Evidence) -> PairedCounts | None:
    p = ev.get("paired")
    return None if p is None else PairedCounts(p["both"], p["lost"], p["gained"], p["neither"])


def _top1(key: str) -> Callable[[Evidence, float], Interval | None]:
    def ci(ev: Evidence, confidence: float) -> Interval | None:
        k = ev.get(key)
        return None if k is None else proportion_ci(k, ev["images"], confidence)

    return ci


def _drop(ev: Evidence, confidence: float) -> Interval | None:
    counts = _paired(ev)
    return None if counts is None else top1_drop_ci(counts, confidence)


# metrics.json figure -> (method, interval from the evidence at a confidence)
ACCURACY: dict[str, tuple[str, Callable[[Evidence, float], Interval | None]]] = {
    "accuracy.fp32.top1": ("Wilson score", _top1("fp32_correct")),
    "accuracy.int8.top1": ("Wilson score", _top1("int8_correct")),
    "accuracy.agreement": ("Wilson score", lambda ev, c: proportion_ci(ev["agree"], ev["images"], c)),
    "accuracy.top1_drop": ("Newcombe paired score", _drop),
    "accuracy.cosine": ("BCa bootstrap over images", lambda ev, c: mean_ci(ev["cosines"], c)),
}
EXACT = {  # figures that are facts about the verdict images themselves
    "accuracy.flips.lost": "count on the verdict images (exact)",
    "accuracy.rel_logit_error": "worst case over the verdict images (exact)",
}


def accuracy_ci95(evidence: Evidence | None) -> dict[str, Any]:
    """The accuracy section's ``*_ci95`` figures and the McNemar p-value ({} without evidence)."""
    if not evidence:
        return {}
    out: dict[str, Any] = {f"{key}_ci95": _rounded(fn(evidence, 0.95)) for key, (_, fn) in ACCURACY.items()}
    counts = _paired(evidence)
    out["accuracy.flips.mcnemar_p"] = None if counts is None else round(mcnemar_exact_p(counts.lost, counts.gained), 4)
    return out


def gate_interval(metric: str, validation: dict[str, Any], confidence: float
                  ) -> tuple[Interval | None, float | None, str] | None:
    """(interval, the confidence it holds at, method) for a gate's figure, or None when the figure
    has no interval (then the gate decides on the figure: EXACT, or the point mode).

    Speed-ups use the confidence of validate's last look (lcpipe.measure.stopping: Bonferroni over the
    looks of adaptive rounds), not ``confidence`` itself, since timing stopped on that look."""
    if metric in ACCURACY:
        evidence = validation.get("evidence")
        method, fn = ACCURACY[metric]
        return (None if not evidence else fn(evidence, confidence)), confidence, method
    name = metric.removeprefix("speedup.")
    if metric.startswith("speedup.") and name in BY_NAME:
        timing = validation.get("timing") or {}
        conf = timing.get("confidence") or confidence
        s = BY_NAME[name]
        est = estimate(s, round_figures(validation, s.track), conf)
        rounds = 0 if est is None else est.rounds
        return (None if est is None else est.interval), conf, f"t on per-round log ratios, {rounds} rounds"
    return None


def _rounded(iv: Interval | None) -> list[float] | None:
    return None if iv is None else [round(iv[0], 6), round(iv[1], 6)]
