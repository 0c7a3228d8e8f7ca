"""Interleaved timing rounds over several tracks, fixed or adaptive.

A round runs one round of every active track (model latency, model throughput, end-to-end latency,
end-to-end throughput: lcpipe.measure.timing tracks), one after the other. Fixed: ``rounds`` rounds.
Adaptive (validate): after ``min_rounds`` only the tracks holding a gated speed-up keep going, and
timing stops as soon as lcpipe.measure.stopping.should_stop says every gated speed-up is decided,
or ``max_rounds`` are done, or the next round would overrun ``max_seconds``. A clear case thus
costs ``min_rounds`` rounds; a close one gets the rounds it needs within the budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from lcpipe.measure.speedups import BY_NAME, with_baseline
from lcpipe.measure.stats import Kind
from lcpipe.measure.stopping import GatedRatio, RoundsBudget, StopDecision, should_stop
from lcpipe.render.progress import progress


class Track(Protocol):
    rounds: int
    per_round: dict[str, list[float]]

    def warm_up(self) -> None: ...

    def run_round(self, advance: Callable[..., None] = ...) -> None: ...

    def results(self) -> dict[str, dict[str, Any]]: ...


@dataclass(frozen=True)
class GatedSpeedup:
    """A speed-up gate that timing must decide: the SPEEDUPS row it reads and the limit."""

    gate: str  # e.g. "min_latency_speedup"
    speedup: str  # SPEEDUPS name, e.g. "latency_p50"
    threshold: float
    kind: Kind = "min"


def run_fixed(tracks: dict[str, Track], rounds: int, *, show: bool = True) -> dict[str, Any]:
    """Warm every track up, then ``rounds`` rounds of all of them; returns the timing record."""
    for t in tracks.values():
        t.warm_up()
    started = time.perf_counter()
    with progress("timing rounds", rounds, show) as advance:
        for _ in range(rounds):
            for t in tracks.values():
                t.run_round()
            advance()
    return {"mode": "fixed", "rounds": rounds, "stop_reason": "max_rounds",
            "rounds_by_track": {n: t.rounds for n, t in tracks.items()},
            "seconds": round(time.perf_counter() - started, 2), "confidence": None, "min_rounds": rounds,
            "max_rounds": rounds, "max_seconds": None, "gated": [], "undecided": []}


def run_adaptive(tracks: dict[str, Track], gated: list[GatedSpeedup], budget: RoundsBudget, *,
                 confidence: float = 0.95, show: bool = True, baseline_route: str | None = None,
                 on_look: Callable[[int, StopDecision], None] | None = None) -> dict[str, Any]:
    """Rounds until should_stop; returns the timing record (validation.json ``timing``).

    ``baseline_route``: the end-to-end route the ``*_vs_default`` speed-ups compare with
    (lcpipe.measure.speedups.BASELINE). A gate whose models are not among the tracks (e.g. a latency
    gate with latency timing off) is left out of the rule; the report fails it as not measured."""
    usable = [g for g in gated if _timed(g, tracks, baseline_route)]
    gated_tracks = {BY_NAME[g.speedup].track for g in usable}
    for t in tracks.values():
        t.warm_up()
    started = time.perf_counter()
    round_seconds: dict[str, list[float]] = {n: [] for n in tracks}
    decision: StopDecision | None = None
    done = 0
    with progress("timing rounds", budget.max_rounds, show) as advance:
        while decision is None or not decision.stop:
            active = tracks if done < budget.min_rounds else {n: t for n, t in tracks.items() if n in gated_tracks}
            for name, t in active.items():
                t0 = time.perf_counter()
                t.run_round()
                round_seconds[name].append(time.perf_counter() - t0)
            done += 1
            advance()
            # the next round times only the gated tracks: estimate it from their rounds so far
            next_s = sum(sum(round_seconds[n]) / len(round_seconds[n]) for n in gated_tracks) if gated_tracks else 0.0
            decision = should_stop(_ratios(usable, tracks, baseline_route), rounds_done=done,
                                   elapsed_s=time.perf_counter() - started, confidence=confidence, budget=budget,
                                   next_round_s=next_s)
            if decision.looked and on_look is not None:
                on_look(done, decision)
    return {
        "mode": "adaptive", "rounds": done, "stop_reason": decision.reason,
        "rounds_by_track": {n: t.rounds for n, t in tracks.items()},
        "seconds": round(time.perf_counter() - started, 2), "confidence": decision.confidence,
        "min_rounds": budget.min_rounds, "max_rounds": budget.max_rounds, "max_seconds": budget.max_seconds,
        "gated": [g.gate for g in usable], "undecided": decision.undecided,
    }


def _timed(g: GatedSpeedup, tracks: dict[str, Track], baseline_route: str | None) -> bool:
    s = BY_NAME.get(g.speedup)
    return (s is not None and s.track in tracks
            and set(s.pair()) <= set(with_baseline(tracks[s.track].per_round, baseline_route)))


def _ratios(gated: list[GatedSpeedup], tracks: dict[str, Track], baseline_route: str | None) -> list[GatedRatio]:
    out = []
    for g in gated:
        s = BY_NAME[g.speedup]
        num, den = s.pair()
        rounds = with_baseline(tracks[s.track].per_round, baseline_route)
        out.append(GatedRatio(g.gate, rounds[num], rounds[den], g.threshold, g.kind))
    return out
