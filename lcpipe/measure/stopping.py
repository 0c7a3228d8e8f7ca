"""Adaptive rounds: when validate may stop adding interleaved timing rounds (a pure rule).

The caller times one more round of every model, then asks ``should_stop`` with all rounds so far.
Timing stops when every gated speed-up is decided (its interval lies on one side of its threshold),
or ``max_rounds`` are done, or the next round would overrun ``max_seconds``.

Looking at an interval after every round and stopping as soon as it clears the threshold would
make a wrong verdict far likelier than the nominal 5 %: simulated with the speed-up exactly at the
threshold, looking at 95 % after every round from 4 to 32 decided (wrongly, either way) in 25 % of
the runs. So the rule
looks only at a doubling schedule (min_rounds, 2x, 4x, ... and max_rounds, see ``look_rounds``),
and each look uses the Bonferroni-adjusted confidence 1 - (1 - confidence) / looks
(``look_confidence``): whatever the data, the chance that a gate's final verdict is wrong stays
below 1 - confidence. With the defaults (4..32 rounds: looks at 4, 8, 16, 32) each look is at
98.75 %; simulated at the threshold, about 4 % of runs decide. A look also happens at the round where
the time budget stops the run; that replaces a later planned look, so the bound holds.

The verdicts and intervals of the deciding look are in the returned ``StopDecision``: the gate rows
should record that interval and ``StopDecision.confidence`` (the ``_ci95`` figures of metrics.json
are plain 95 % intervals from ``stats.ratio_ci`` over all rounds, for reading, not for gating).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from lcpipe.measure.stats import Interval, Kind, RatioMethod, Verdict, ratio_ci, verdict

StopReason = Literal["decided", "budget", "max_rounds"]


@dataclass(frozen=True)
class GatedRatio:
    """One gated speed-up and its per-round data (round i of numerator and denominator is a pair)."""

    name: str  # the gate, e.g. "min_latency_speedup"
    numerator: Sequence[float]  # latency: FP32 per-round p50 ms; throughput: INT8 per-round images/s
    denominator: Sequence[float]  # latency: INT8 per-round p50 ms; throughput: FP32 per-round images/s
    threshold: float
    kind: Kind = "min"


@dataclass(frozen=True)
class RoundsBudget:
    min_rounds: int = 4  # always timed, whatever the budget (fewer give no useful interval)
    max_rounds: int = 32
    max_seconds: float = 120.0  # wall time of the rounds (not warm-up); a round is not started past it

    def __post_init__(self) -> None:
        if self.min_rounds < 2:
            raise ValueError(f"min_rounds must be >= 2 (an interval needs two rounds), got {self.min_rounds}")
        if self.max_rounds < self.min_rounds:
            raise ValueError(f"max_rounds ({self.max_rounds}) must be >= min_rounds ({self.min_rounds})")
        if not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0, got {self.max_seconds}")


@dataclass(frozen=True)
class StopDecision:
    stop: bool
    reason: StopReason | None  # None while timing continues
    looked: bool  # intervals were computed at this round (a scheduled look, or the last round)
    confidence: float  # per-look confidence the intervals below use
    verdicts: dict[str, Verdict] = field(default_factory=dict)  # by gate name; empty when not looked
    intervals: dict[str, Interval | None] = field(default_factory=dict)

    @property
    def undecided(self) -> list[str]:
        """Gates still inconclusive at this look (what the terminal names when the budget ran out)."""
        return [name for name, v in self.verdicts.items() if v == "inconclusive"]


def look_rounds(min_rounds: int, max_rounds: int) -> tuple[int, ...]:
    """Rounds at which intervals are looked at: min_rounds, doubling, and max_rounds."""
    looks = [min_rounds]
    while looks[-1] < max_rounds:
        looks.append(min(2 * looks[-1], max_rounds))
    return tuple(looks)


def look_confidence(confidence: float, min_rounds: int, max_rounds: int) -> float:
    """Bonferroni: each of the k looks at 1 - (1 - confidence) / k (k = 1 with fixed rounds)."""
    return 1.0 - (1.0 - confidence) / len(look_rounds(min_rounds, max_rounds))


def should_stop(ratios: Sequence[GatedRatio], *, rounds_done: int, elapsed_s: float, confidence: float = 0.95,
                budget: RoundsBudget = RoundsBudget(), method: RatioMethod = "t",
                next_round_s: float | None = None) -> StopDecision:
    """Call after every round (``rounds_done`` >= 1; ``elapsed_s`` since the first round started).

    Order: below ``min_rounds`` always continue; at a look, stop "decided" when no gate is
    inconclusive; then stop "max_rounds" at ``max_rounds``; then stop "budget" when one more round
    (``next_round_s``, by default the mean round time so far) would end past ``max_seconds``; else
    continue. A stop is always a look, so the decision carries the verdicts the gates should use. No
    gated ratio: "decided" at ``min_rounds``.
    """
    if rounds_done < 1:
        raise ValueError(f"rounds_done must be >= 1, got {rounds_done}")
    conf = look_confidence(confidence, budget.min_rounds, budget.max_rounds)
    if rounds_done < budget.min_rounds:
        return StopDecision(stop=False, reason=None, looked=False, confidence=conf)
    at_max = rounds_done >= budget.max_rounds
    next_s = elapsed_s / rounds_done if next_round_s is None else next_round_s
    over_budget = elapsed_s + next_s > budget.max_seconds
    if not (rounds_done in look_rounds(budget.min_rounds, budget.max_rounds) or at_max or over_budget):
        return StopDecision(stop=False, reason=None, looked=False, confidence=conf)
    intervals: dict[str, Interval | None] = {}
    verdicts: dict[str, Verdict] = {}
    for g in ratios:
        est = ratio_ci(g.numerator, g.denominator, conf, method)
        intervals[g.name] = est.interval if est else None
        verdicts[g.name] = verdict(intervals[g.name], g.threshold, g.kind)
    decided = all(v != "inconclusive" for v in verdicts.values())
    reason: StopReason | None = ("decided" if decided else "max_rounds" if at_max
                                 else "budget" if over_budget else None)
    return StopDecision(stop=reason is not None, reason=reason, looked=True, confidence=conf,
                        verdicts=verdicts, intervals=intervals)
