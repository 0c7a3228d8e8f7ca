"""Every speed-up lcpipe reports, as data: which timing track it comes from and which two models it
compares, so each gets its interval from the interleaved rounds (lcpipe.measure.stats.ratio_ci) and
can be gated with adaptive rounds (lcpipe.measure.rounds), without code per figure.

A new route or model only needs a row in SPEEDUPS (its figure appears as ``speedup.<name>`` with
``speedup.<name>_ci95`` in metrics.json) and, to gate it, a gate in lcpipe.gates.GATES naming
``speedup.<name>``.

Tracks and where validation.json keeps their per-round figures (round i of every model of a track
is one interleaved round, so per-round ratios pair them):

* ``latency``: batch-1 p50 ms per round, ``latency_ms.<model>.round_p50``;
* ``throughput``: images/s per round, ``throughput.<model>.round_images_per_s``;
* ``e2e_latency`` / ``e2e_throughput``: the same for the end-to-end routes, under ``e2e``.

The end-to-end ``*_vs_default`` rows (the headline) compare the shipped image-input route with
``BASELINE``: whichever route is the FP32 IR at the plugin's default precision + Python
preprocessing on this CPU (``e2e.baseline_route``: ``fp32_py_default`` where validate pins another
precision, else ``fp32_py`` itself; lcpipe.measure.e2e.baseline_route).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lcpipe.measure.stats import RatioEstimate, ratio_ci

TRACKS = ("latency", "throughput", "e2e_latency", "e2e_throughput")
_ROUND_KEY = {"latency": "round_p50", "throughput": "round_images_per_s", "e2e_latency": "round_p50",
              "e2e_throughput": "round_images_per_s"}


@dataclass(frozen=True)
class Speedup:
    name: str  # metrics.json key under "speedup"
    track: str  # one of TRACKS
    candidate: str  # the model (or route) expected to be faster
    baseline: str  # the one it is compared with

    @property
    def lower_is_better(self) -> bool:
        """Latency tracks time ms (baseline / candidate), throughput tracks images/s (candidate / baseline)."""
        return self.track.endswith("latency")

    def pair(self) -> tuple[str, str]:
        """(numerator model, denominator model) of the per-round ratio."""
        return (self.baseline, self.candidate) if self.lower_is_better else (self.candidate, self.baseline)


BASELINE = "baseline"  # stands for the run's e2e baseline route (``e2e.baseline_route`` in validation.json)

SPEEDUPS = (
    Speedup("latency_p50", "latency", "int8", "fp32"),
    Speedup("throughput", "throughput", "int8", "fp32"),
    Speedup("latency_p50_vs_default", "latency", "int8", "fp32_default"),
    Speedup("latency_p50_ptq", "latency", "int8_ptq", "fp32"),
    Speedup("e2e_latency_p50", "e2e_latency", "int8_image", "fp32_py"),
    Speedup("e2e_throughput", "e2e_throughput", "int8_image", "fp32_py"),
    Speedup("e2e_latency_p50_vs_default", "e2e_latency", "int8_image", BASELINE),
    Speedup("e2e_throughput_vs_default", "e2e_throughput", "int8_image", BASELINE),
)
BY_NAME = {s.name: s for s in SPEEDUPS}


def track_section(validation: dict[str, Any], track: str) -> dict[str, Any]:
    """model -> its figures in validation.json for one track ({} when the track was not timed)."""
    if track == "latency":
        return validation.get("latency_ms") or {}
    if track == "throughput":
        return validation.get("throughput") or {}
    e2e = validation.get("e2e") or {}
    return (e2e.get("latency_ms") if track == "e2e_latency" else e2e.get("throughput")) or {}


def round_figures(validation: dict[str, Any], track: str) -> dict[str, list[float]]:
    """model -> its per-round figures in one track (models without them are left out), with the
    end-to-end baseline route also under BASELINE."""
    key = _ROUND_KEY[track]
    rounds = {m: list(s[key]) for m, s in track_section(validation, track).items()
              if isinstance(s, dict) and s.get(key)}
    return with_baseline(rounds, (validation.get("e2e") or {}).get("baseline_route"))


def with_baseline(rounds: dict[str, list[float]], baseline_route: str | None) -> dict[str, list[float]]:
    """``rounds`` plus BASELINE naming the baseline route's rounds, when that route was timed here."""
    if baseline_route and baseline_route in rounds:
        return {**rounds, BASELINE: rounds[baseline_route]}
    return rounds


def estimate(s: Speedup, rounds: dict[str, list[float]], confidence: float = 0.95) -> RatioEstimate | None:
    """The speed-up and its interval from the per-round figures of ``s.track`` (None: a model untimed)."""
    num, den = s.pair()
    if num not in rounds or den not in rounds or len(rounds[num]) != len(rounds[den]):
        return None
    return ratio_ci(rounds[num], rounds[den], confidence)


def speedups_with_intervals(validation: dict[str, Any], confidence: float = 0.95) -> dict[str, Any]:
    """Every SPEEDUPS figure that was timed, ``<name>`` (geometric mean of the per-round ratios, the
    centre of its interval) and ``<name>_ci95`` ([low, high] at ``confidence``, None with one round)."""
    out: dict[str, Any] = {}
    for s in SPEEDUPS:
        est = estimate(s, round_figures(validation, s.track), confidence)
        if est is None:
            continue
        out[s.name] = round(est.estimate, 4)
        out[f"{s.name}_ci95"] = None if est.interval is None else [round(v, 4) for v in est.interval]
    return out
