"""Uncertainty of the verdict's figures: intervals, the exact McNemar test, three-valued verdicts.

Pure functions (numbers in, numbers out); scipy.stats does the statistics and is imported inside
the functions so ``lcpipe --help`` stays instant. Intervals are ``(low, high)`` tuples of floats,
or None where the data cannot give one (no images, fewer than two rounds).

Which interval each figure uses (docs/verdicts.md explains them for users):

* top-1 of FP32 or INT8, agreement: ``proportion_ci`` (Wilson score; Clopper-Pearson "exact" on request);
* top-1 drop (FP32 minus INT8 on the same images): ``top1_drop_ci`` (Newcombe's hybrid score, paired);
* flips: ``mcnemar_exact_p`` on the discordant images (lost vs gained);
* speed-ups from interleaved rounds: ``ratio_ci`` (t interval on the per-round log ratios);
* the mean of a per-image figure (cosine): ``mean_ci`` (BCa bootstrap over the images, seeded);
* a gate: ``verdict(interval, threshold, kind)`` -> "pass" | "fail" | "inconclusive".

The adaptive-rounds stopping rule built on ``ratio_ci`` and ``verdict`` is in measure/stopping.py.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Interval = tuple[float, float]
Kind = Literal["min", "max"]  # the gate's figure must be at least / at most the threshold
Verdict = Literal["pass", "fail", "inconclusive"]
RatioMethod = Literal["t", "bootstrap"]

BOOTSTRAP_SEED = 0  # fixed: the same rounds always give the same interval
BOOTSTRAP_RESAMPLES = 9999
MIN_ROUNDS: dict[str, int] = {"t": 2, "bootstrap": 3}  # fewer rounds: no interval


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")


# ---------------------------------------------------------------- proportions

def proportion_ci(k: int, n: int, confidence: float = 0.95,
                  method: Literal["wilson", "exact"] = "wilson") -> Interval | None:
    """Interval for a proportion k/n (top-1, agreement); None when n == 0.

    "wilson" (the default) is the score interval: its coverage stays close to nominal down to a few
    dozen images and it never leaves [0, 1]; "exact" is Clopper-Pearson, never below nominal and
    wider. Both from ``scipy.stats.binomtest(k, n).proportion_ci``.
    """
    _check_confidence(confidence)
    if method not in ("wilson", "exact"):
        raise ValueError(f"method must be 'wilson' or 'exact', got {method!r}")
    if n < 0 or not 0 <= k <= max(n, 0):
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method=method)
    return float(ci.low), float(ci.high)


# ---------------------------------------------------------------- paired top-1: drop and McNemar

@dataclass(frozen=True)
class PairedCounts:
    """Top-1 of a reference (FP32) and a candidate (INT8) on the same labeled images."""

    both: int  # both right
    lost: int  # reference right, candidate wrong
    gained: int  # reference wrong, candidate right
    neither: int  # both wrong

    @property
    def images(self) -> int:
        return self.both + self.lost + self.gained + self.neither

    @property
    def drop(self) -> float | None:
        """Reference top-1 minus candidate top-1 (= (lost - gained) / images)."""
        return (self.lost - self.gained) / self.images if self.images else None


def paired_counts(reference_correct: Sequence[bool] | np.ndarray,
                  candidate_correct: Sequence[bool] | np.ndarray) -> PairedCounts:
    """The 2x2 table from per-image correctness (e.g. ``fp32_logits.argmax(1) == labels``)."""
    ref = np.asarray(reference_correct, dtype=bool)
    cand = np.asarray(candidate_correct, dtype=bool)
    if ref.shape != cand.shape or ref.ndim != 1:
        raise ValueError(f"need two 1-D arrays of the same length, got shapes {ref.shape} and {cand.shape}")
    return PairedCounts(both=int(np.sum(ref & cand)), lost=int(np.sum(ref & ~cand)),
                        gained=int(np.sum(~ref & cand)), neither=int(np.sum(~ref & ~cand)))


def top1_drop_ci(counts: PairedCounts, confidence: float = 0.95) -> Interval | None:
    """Interval for the top-1 drop (reference minus candidate, same images); None without images.

    Newcombe's hybrid score interval for paired proportions (Newcombe 1998, Stat Med 17:2635,
    method 10): the Wilson intervals of the two top-1 figures (scipy), combined with the
    correlation of the pairs. Why this one:

    * it is honest when the models almost always agree, as FP32 and INT8 do: with 0 discordant
      images out of 78 it still says +-4 points, where a bootstrap over images would say [0, 0];
    * exact enumeration over all outcomes gives coverage >= nominal at 40 images (tests) to 164 with
      1-5 % discordant images; Tango's score interval, equally valid, came out wider there
      (mean width 0.19 vs 0.17 at 40 images) and needs root finding;
    * its published worked examples are reproduced to 4 decimals (tests).
    """
    _check_confidence(confidence)
    n = counts.images
    if n == 0:
        return None
    a, b, c, d = counts.both, counts.lost, counts.gained, counts.neither
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = proportion_ci(a + b, n, confidence)  # type: ignore[misc]
    l2, u2 = proportion_ci(a + c, n, confidence)  # type: ignore[misc]
    phi = _paired_phi(a, b, c, d)
    drop = p1 - p2
    low = drop - math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    high = drop + math.sqrt(max((p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2, 0.0))
    return max(low, -1.0), min(high, 1.0)


def _paired_phi(a: int, b: int, c: int, d: int) -> float:
    """Newcombe's correlation of the pairs, with his continuity correction (-n/2) for positive
    association; 0 when a margin is empty."""
    n = a + b + c + d
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    if margins == 0:
        return 0.0
    cross = a * d - b * c
    if cross > n / 2:
        return (cross - n / 2) / math.sqrt(margins)
    return 0.0 if cross >= 0 else cross / math.sqrt(margins)


def mcnemar_exact_p(lost: int, gained: int) -> float:
    """Two-sided exact McNemar p-value: do the candidate's lost and gained images differ beyond
    chance? ``binomtest(lost, lost + gained, 0.5)``; 1.0 when no image changed."""
    if lost < 0 or gained < 0:
        raise ValueError(f"counts must be >= 0, got lost={lost}, gained={gained}")
    if lost + gained == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(int(lost), int(lost + gained), 0.5).pvalue)


# ---------------------------------------------------------------- speed-up ratios from rounds

@dataclass(frozen=True)
class RatioEstimate:
    estimate: float  # geometric mean ("t") or median ("bootstrap") of the per-round ratios
    interval: Interval | None  # None with fewer rounds than the method needs
    rounds: int
    confidence: float
    method: RatioMethod


def ratio_ci(numerator: Sequence[float], denominator: Sequence[float], confidence: float = 0.95,
             method: RatioMethod = "t") -> RatioEstimate | None:
    """Speed-up with its interval from interleaved rounds; round i of both models is one pair.

    Latency speed-up: ``ratio_ci(fp32_round_p50_ms, int8_round_p50_ms)``; throughput speed-up:
    ``ratio_ci(int8_round_images_per_s, fp32_round_images_per_s)``. None without rounds.

    Each round times both models under the same load, so the per-round ratio cancels what a round
    shares (a busy neighbour slows both); its spread is the noise left. Methods:

    * "t" (default): t interval on the mean log ratio, i.e. a geometric-mean speed-up. Simulated
      coverage on lognormal rounds is nominal from 2 rounds up, and >= nominal with heavy tails
      (t3): an outlier round widens the interval (INCONCLUSIVE) instead of moving a verdict.
      1 round: no interval. 2 rounds: a valid but very wide one (t with 1 degree of freedom).
    * "bootstrap": BCa bootstrap of the median per-round ratio (fixed seed: the same rounds give the
      same interval with a given scipy).
      Robust to an outlier round but below nominal under ~12 rounds (simulated 0.90 at 8 rounds);
      meant for long runs. Needs 3 rounds.

    Every round the same ratio (e.g. a constant clock) gives a zero-width interval at that ratio.
    """
    _check_confidence(confidence)
    if method not in ("t", "bootstrap"):
        raise ValueError(f"method must be 't' or 'bootstrap', got {method!r}")
    num, den = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    if num.shape != den.shape or num.ndim != 1:
        raise ValueError(f"need two 1-D sequences of the same length, got shapes {num.shape} and {den.shape}")
    if not (np.all(np.isfinite(num)) and np.all(np.isfinite(den)) and np.all(num > 0) and np.all(den > 0)):
        raise ValueError("per-round values must be finite and > 0")
    n = len(num)
    if n == 0:
        return None
    log_r = np.log(num) - np.log(den)
    center = float(log_r.mean()) if method == "t" else float(np.median(log_r))
    if n < MIN_ROUNDS[method]:
        interval = None
    elif np.ptp(log_r) == 0:
        interval = (math.exp(center), math.exp(center))
    else:
        log_ci = _t_interval(log_r, confidence) if method == "t" else _bootstrap_interval(log_r, confidence)
        interval = (math.exp(log_ci[0]), math.exp(log_ci[1])) if log_ci else None
    return RatioEstimate(estimate=math.exp(center), interval=interval, rounds=n, confidence=confidence,
                         method=method)


def _t_interval(log_r: np.ndarray, confidence: float) -> Interval:
    from scipy.stats import ttest_1samp

    ci = ttest_1samp(log_r, 0.0).confidence_interval(confidence_level=confidence)
    return float(ci.low), float(ci.high)


def _bootstrap_interval(log_r: np.ndarray, confidence: float) -> Interval | None:
    # the median commutes with exp, so the interval of the median log ratio maps to the ratio's
    return _bca(log_r, np.median, confidence)


def _bca(values: np.ndarray, statistic: Any, confidence: float) -> Interval | None:
    """BCa bootstrap interval of ``statistic`` over ``values``, fixed seed. scipy warns where BCa is
    undefined (mostly equal values): then no interval rather than a wrong one, and no warning."""
    from scipy.stats import bootstrap

    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore")
        res = bootstrap((values,), statistic, confidence_level=confidence, method="BCa",
                        n_resamples=BOOTSTRAP_RESAMPLES, rng=np.random.default_rng(BOOTSTRAP_SEED))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    return low, high


# ---------------------------------------------------------------- label-free figures: mean over images

def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Interval | None:
    """Interval for the mean of a per-image figure (INT8-vs-FP32 cosine): BCa bootstrap over the
    images, fixed seed (the same images give the same interval with a given scipy). None with fewer
    than 3 images; every image the same value gives a zero-width interval at it.

    The images are the sample: the interval says where the mean over images like these lies, not
    how far a single image can stray (cosine_min reports that)."""
    _check_confidence(confidence)
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or not np.all(np.isfinite(v)):
        raise ValueError("need a 1-D sequence of finite values")
    if len(v) < MIN_ROUNDS["bootstrap"]:
        return None
    if np.ptp(v) == 0:
        return float(v[0]), float(v[0])
    return _bca(v, np.mean, confidence)


# ---------------------------------------------------------------- verdicts

def verdict(interval: Interval | None, threshold: float, kind: Kind = "min") -> Verdict:
    """Three-valued gate: "pass" when the whole interval is on the right side of the threshold
    (touching it counts, as ``value >= threshold`` did), "fail" when it is entirely on the wrong
    side, "inconclusive" when it straddles the threshold or there is no interval.

    ``kind`` "min": the figure must be at least ``threshold`` (speed-up, agreement); "max": at most
    (top-1 drop). A figure that was not measured at all is the caller's business (gates fail it).
    """
    if kind not in ("min", "max"):
        raise ValueError(f"kind must be 'min' or 'max', got {kind!r}")
    if interval is None:
        return "inconclusive"
    low, high = interval
    if low > high:
        raise ValueError(f"interval low > high: {interval}")
    if kind == "min":
        return "pass" if low >= threshold else "fail" if high < threshold else "inconclusive"
    return "pass" if high <= threshold else "fail" if low > threshold else "inconclusive"


def point_verdict(value: float, threshold: float, kind: Kind = "min") -> Verdict:
    """The old point-estimate gate (explicit opt-in): pass or fail on the measured value alone."""
    return verdict((value, value), threshold, kind)
