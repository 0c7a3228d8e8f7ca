"""Intervals, McNemar, verdicts and the adaptive-rounds stopping rule against published values,
brute-force computations and simulations (fixed seeds, so every run sees the same numbers)."""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pytest

from lcpipe.measure import stats
from lcpipe.measure.stats import (
    PairedCounts,
    mcnemar_exact_p,
    paired_counts,
    point_verdict,
    proportion_ci,
    ratio_ci,
    top1_drop_ci,
    verdict,
)
from lcpipe.measure.stopping import GatedRatio, RoundsBudget, look_confidence, look_rounds, should_stop


def _rounded(interval, digits=4):
    return tuple(round(v, digits) for v in interval)


# ---------------------------------------------------------------- proportions

# Newcombe (1998), "Two-sided confidence intervals for the single proportion", Stat Med 17:857, Table II
@pytest.mark.parametrize(("k", "n", "wilson", "exact"), [
    (15, 148, (0.0624, 0.1605), (0.0578, 0.1617)),
    (0, 20, (0.0, 0.1611), (0.0, 0.1684)),
    (1, 29, (0.0061, 0.1718), (0.0009, 0.1776)),
])
def test_proportion_ci_matches_newcombes_single_proportion_examples(k, n, wilson, exact) -> None:
    assert _rounded(proportion_ci(k, n)) == wilson
    assert _rounded(proportion_ci(k, n, method="exact")) == exact


def test_proportion_ci_is_none_without_images_and_rejects_impossible_counts() -> None:
    assert proportion_ci(0, 0) is None
    for k, n in ((5, 4), (-1, 4)):
        with pytest.raises(ValueError, match="0 <= k <= n"):
            proportion_ci(k, n)
    with pytest.raises(ValueError, match="method"):
        proportion_ci(1, 4, method="wald")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="confidence"):
        proportion_ci(1, 4, confidence=95)


def test_proportion_ci_narrows_with_more_images_and_contains_the_estimate() -> None:
    widths = []
    for n in (40, 78, 164, 1000):
        k = round(0.8462 * n)
        low, high = proportion_ci(k, n)
        assert low < k / n < high
        widths.append(high - low)
    assert widths == sorted(widths, reverse=True)


# ---------------------------------------------------------------- paired top-1 drop

# (both right, reference only, candidate only, both wrong) -> Newcombe's method 10, published:
PAIRED_EXAMPLES = [
    ((20, 12, 2, 16), (0.0562, 0.3292)),  # Newcombe 1998, Stat Med 17:2635, worked example, method 10
    ((1, 1, 7, 12), (-0.5069, -0.0256)),  # Fagerland et al. 2014 (Bentur 2009 data): -0.507 to -0.026
    ((59, 6, 16, 80), (-0.1186, -0.0046)),  # Fagerland, Lydersen, Laake 2017, ch. 8 (Cavo 2012 data)
    ((8, 3, 1, 2), (-0.1574, 0.4136)),  # Tang et al. 2010
]


@pytest.mark.parametrize(("table", "expected"), PAIRED_EXAMPLES)
def test_top1_drop_ci_matches_published_paired_examples(table, expected) -> None:
    counts = PairedCounts(*table)
    assert _rounded(top1_drop_ci(counts)) == expected
    assert counts.drop == pytest.approx((table[1] - table[2]) / sum(table))


def test_top1_drop_ci_keeps_a_width_when_the_models_never_disagree() -> None:
    """0 discordant images of 78 are no proof of 0 drop: a bootstrap over images would say [0, 0]."""
    low, high = top1_drop_ci(PairedCounts(both=66, lost=0, gained=0, neither=12))
    assert low == pytest.approx(-high) and 0.03 < high < 0.05
    assert top1_drop_ci(PairedCounts(0, 0, 0, 0)) is None


def _coverage(n: int, p_both: float, p_lost: float, p_gained: float) -> float:
    """Exact coverage of top1_drop_ci: the probability, over every possible table of n images, that
    the interval contains the true drop."""
    from scipy.stats import multinomial

    p = (p_both, p_lost, p_gained, 1.0 - p_both - p_lost - p_gained)
    tables = [(a, b, c, n - a - b - c) for a, b, c in itertools.product(range(n + 1), repeat=3) if a + b + c <= n]
    prob = multinomial.pmf(np.array(tables), n, p)
    truth = p_lost - p_gained
    covered = [lo - 1e-12 <= truth <= hi + 1e-12 for lo, hi in (top1_drop_ci(PairedCounts(*t)) for t in tables)]
    return float(prob[np.array(covered)].sum())


@pytest.mark.parametrize("probs", [(0.83, 0.01, 0.01), (0.83, 0.02, 0.005), (0.80, 0.05, 0.02), (0.6, 0.1, 0.1)])
def test_top1_drop_ci_covers_the_true_drop_at_least_95_percent_of_the_time(monkeypatch, probs) -> None:
    """Brute force over all 12,341 tables of 40 images, at accuracies like the README's and 1-20 %
    discordant images. (The Wilson intervals are cached: 41 distinct ones.)"""
    monkeypatch.setattr(stats, "proportion_ci", functools.lru_cache(maxsize=None)(stats.proportion_ci))
    assert _coverage(40, *probs) >= 0.95


def test_paired_counts_from_per_image_correctness() -> None:
    fp32 = [True, True, True, False, False, True]
    int8 = [True, False, True, True, False, True]
    assert paired_counts(fp32, int8) == PairedCounts(both=3, lost=1, gained=1, neither=1)
    with pytest.raises(ValueError, match="same length"):
        paired_counts([True], [True, False])


# ---------------------------------------------------------------- McNemar

def _mcnemar_by_hand(b: int, c: int) -> float:
    m, k = b + c, min(b, c)
    return min(1.0, 2 * sum(math.comb(m, i) for i in range(k + 1)) / 2**m)


@pytest.mark.parametrize(("lost", "gained", "published"), [
    (6, 16, 0.052),  # Fagerland, Lydersen, Laake 2013 (BMC Med Res Methodol 13:91), Cavo data: exact conditional
    (1, 7, 0.070),  # same paper, Bentur data
])
def test_mcnemar_exact_p_matches_published_values(lost, gained, published) -> None:
    assert round(mcnemar_exact_p(lost, gained), 3) == published


@pytest.mark.parametrize(("lost", "gained"), [(0, 1), (0, 5), (1, 9), (3, 3), (2, 11), (40, 20)])
def test_mcnemar_exact_p_equals_the_binomial_sum_and_is_symmetric(lost, gained) -> None:
    assert mcnemar_exact_p(lost, gained) == pytest.approx(_mcnemar_by_hand(lost, gained), rel=1e-9)
    assert mcnemar_exact_p(gained, lost) == pytest.approx(mcnemar_exact_p(lost, gained), rel=1e-12)


def test_mcnemar_without_discordant_images_is_one() -> None:
    assert mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(0, 1) == 1.0  # the README's run: 0 lost, 1 gained
    with pytest.raises(ValueError):
        mcnemar_exact_p(-1, 2)


# ---------------------------------------------------------------- speed-up ratios

def test_ratio_ci_t_is_the_t_interval_of_the_log_ratios() -> None:
    from scipy.stats import t as student_t

    fp32 = [2.61, 2.74, 2.58, 2.90, 2.66, 2.71]
    int8 = [2.31, 2.35, 2.30, 2.52, 2.33, 2.37]
    logs = np.log(fp32) - np.log(int8)
    half = student_t.ppf(0.975, len(logs) - 1) * logs.std(ddof=1) / math.sqrt(len(logs))
    est = ratio_ci(fp32, int8)
    assert est.estimate == pytest.approx(math.exp(logs.mean()))
    assert est.interval == pytest.approx((math.exp(logs.mean() - half), math.exp(logs.mean() + half)))
    assert (est.rounds, est.confidence, est.method) == (6, 0.95, "t")


def test_ratio_ci_of_identical_rounds_is_the_ratio_itself() -> None:
    for method in ("t", "bootstrap"):
        est = ratio_ci([3.0] * 5, [2.0] * 5, method=method)
        assert est.estimate == pytest.approx(1.5) and est.interval == pytest.approx((1.5, 1.5))


def test_ratio_ci_with_too_few_rounds() -> None:
    assert ratio_ci([], []) is None
    one = ratio_ci([2.0], [1.0])
    assert one.estimate == 2.0 and one.interval is None  # a single round says nothing about noise
    low, high = ratio_ci([2.0, 2.2], [1.0, 1.0]).interval  # valid but wide: t with 1 degree of freedom
    assert low < 1.5 and high > 2.8
    assert ratio_ci([2.0, 2.2], [1.0, 1.0], method="bootstrap").interval is None


def test_ratio_ci_bootstrap_gives_no_interval_where_bca_is_undefined() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and says so without warnings in the terminal
        est = ratio_ci([2.0, 2.0, 2.0, 2.0, 2.2], [1.0] * 5, method="bootstrap")
    assert est.estimate == pytest.approx(2.0) and est.interval is None


def test_ratio_ci_rejects_bad_rounds() -> None:
    for num, den in (([1.0, 2.0], [1.0]), ([1.0, 0.0], [1.0, 1.0]), ([1.0, float("nan")], [1.0, 1.0])):
        with pytest.raises(ValueError):
            ratio_ci(num, den)


def test_ratio_ci_bootstrap_is_deterministic() -> None:
    rng = np.random.default_rng(7)
    num, den = rng.lognormal(1.0, 0.1, 15), rng.lognormal(0.8, 0.1, 15)
    first, second = ratio_ci(num, den, method="bootstrap"), ratio_ci(num, den, method="bootstrap")
    assert first == second
    low, high = first.interval
    assert low < first.estimate < high


def test_ratio_ci_t_covers_the_true_speedup_95_percent_of_the_time_on_lognormal_rounds() -> None:
    """400 simulated runs of 5 rounds, per-round timings lognormal with a shared per-round load
    factor (both models slowed together) and 8 % own noise; true speed-up 1.3. A normal (z)
    interval would cover only ~0.88 at 5 rounds."""
    rng = np.random.default_rng(2024)
    covered = 0
    for _ in range(400):
        load = rng.lognormal(0.0, 0.3, 5)
        fp32 = 2.6 * load * rng.lognormal(0.0, 0.08, 5)
        int8 = 2.0 * load * rng.lognormal(0.0, 0.08, 5)
        low, high = ratio_ci(fp32, int8).interval
        covered += low <= 1.3 <= high
    assert 0.93 <= covered / 400 <= 0.975


# ---------------------------------------------------------------- verdicts

@pytest.mark.parametrize(("interval", "threshold", "kind", "expected"), [
    ((1.08, 1.21), 1.0, "min", "pass"),
    ((1.0, 1.21), 1.0, "min", "pass"),  # touching the threshold passes, as value >= threshold did
    ((0.95, 1.21), 1.0, "min", "inconclusive"),
    ((0.80, 0.97), 1.0, "min", "fail"),
    ((-0.03, 0.005), 0.01, "max", "pass"),
    ((-0.03, 0.04), 0.01, "max", "inconclusive"),
    ((0.02, 0.04), 0.01, "max", "fail"),
    (None, 1.0, "min", "inconclusive"),
])
def test_verdict(interval, threshold, kind, expected) -> None:
    assert verdict(interval, threshold, kind) == expected


def test_point_verdict_never_says_inconclusive() -> None:
    assert point_verdict(1.0, 1.0) == "pass" and point_verdict(0.99, 1.0) == "fail"
    assert point_verdict(0.01, 0.01, "max") == "pass" and point_verdict(0.02, 0.01, "max") == "fail"
    with pytest.raises(ValueError):
        verdict((1.0, 2.0), 1.0, "atleast")  # type: ignore[arg-type]


# ---------------------------------------------------------------- adaptive rounds

def _rounds(speedup: float, rounds: int, noise: float, seed: int) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(seed)
    load = rng.lognormal(0.0, 0.2, rounds)
    fp32 = 2.0 * speedup * load * rng.lognormal(0.0, noise, rounds)
    int8 = 2.0 * load * rng.lognormal(0.0, noise, rounds)
    return fp32.tolist(), int8.tolist()


def _run(speedup: float, *, noise: float, seed: int, seconds_per_round: float = 1.0,
         budget: RoundsBudget | None = None):
    """Call should_stop after every round, as validate will; returns (rounds done, decision)."""
    budget = budget or RoundsBudget()
    fp32, int8 = _rounds(speedup, budget.max_rounds, noise, seed)
    for r in range(1, budget.max_rounds + 1):
        gate = GatedRatio("min_latency_speedup", fp32[:r], int8[:r], threshold=1.0)
        decision = should_stop([gate], rounds_done=r, elapsed_s=r * seconds_per_round, budget=budget)
        if decision.stop:
            return r, decision
    raise AssertionError("should_stop never stopped at max_rounds")


def test_look_schedule_and_bonferroni_confidence() -> None:
    assert look_rounds(4, 32) == (4, 8, 16, 32)
    assert look_rounds(5, 30) == (5, 10, 20, 30)
    assert look_rounds(5, 5) == (5,)
    assert look_confidence(0.95, 4, 32) == pytest.approx(0.9875)
    assert look_confidence(0.95, 5, 5) == pytest.approx(0.95)  # fixed rounds: one look, no adjustment


def test_clear_speedup_stops_at_the_first_look_with_pass() -> None:
    rounds, decision = _run(1.5, noise=0.03, seed=1)
    assert rounds == 4 and decision.reason == "decided"
    assert decision.verdicts == {"min_latency_speedup": "pass"} and decision.undecided == []
    low, high = decision.intervals["min_latency_speedup"]
    assert 1.0 < low < 1.5 < high
    assert decision.confidence == pytest.approx(0.9875)


def test_clear_regression_stops_early_with_fail() -> None:
    rounds, decision = _run(0.7, noise=0.03, seed=2)
    assert rounds == 4 and decision.reason == "decided" and decision.verdicts["min_latency_speedup"] == "fail"


def test_straddling_speedup_keeps_going_until_the_budget_runs_out() -> None:
    budget = RoundsBudget(min_rounds=4, max_rounds=64, max_seconds=30.0)
    rounds, decision = _run(1.0, noise=0.10, seed=3, seconds_per_round=1.0, budget=budget)
    assert decision.reason == "budget" and rounds == 30  # 30 rounds of 1 s fill 30 s; a 31st would overrun
    assert decision.looked and decision.undecided == ["min_latency_speedup"]


def test_straddling_speedup_stops_at_max_rounds_when_time_is_plenty() -> None:
    budget = RoundsBudget(min_rounds=4, max_rounds=16, max_seconds=1e6)
    rounds, decision = _run(1.0, noise=0.10, seed=3, budget=budget)
    assert (rounds, decision.reason, decision.verdicts["min_latency_speedup"]) == (16, "max_rounds", "inconclusive")


def test_no_look_between_scheduled_rounds() -> None:
    fp32, int8 = _rounds(1.0, 6, 0.1, seed=4)
    gate = GatedRatio("min_latency_speedup", fp32, int8, threshold=1.0)
    decision = should_stop([gate], rounds_done=6, elapsed_s=6.0)  # 6 is not a look of 4..32
    assert not decision.stop and not decision.looked and decision.verdicts == {}


def test_min_rounds_are_timed_even_past_the_budget() -> None:
    fp32, int8 = _rounds(1.5, 3, 0.03, seed=5)
    gate = GatedRatio("min_latency_speedup", fp32, int8, threshold=1.0)
    assert not should_stop([gate], rounds_done=3, elapsed_s=1000.0).stop
    no_gates = should_stop([], rounds_done=4, elapsed_s=1.0)
    assert no_gates.stop and no_gates.reason == "decided"


def test_every_gated_ratio_must_be_decided() -> None:
    """Latency clearly faster, throughput straddling its threshold: keep timing."""
    fp32, int8 = _rounds(1.5, 4, 0.03, seed=6)
    ips_int8, ips_fp32 = _rounds(1.0, 4, 0.10, seed=7)
    gates = [GatedRatio("min_latency_speedup", fp32, int8, 1.0),
             GatedRatio("min_throughput_speedup", ips_int8, ips_fp32, 1.0)]
    decision = should_stop(gates, rounds_done=4, elapsed_s=4.0)
    assert not decision.stop and decision.looked
    assert decision.verdicts == {"min_latency_speedup": "pass", "min_throughput_speedup": "inconclusive"}


def test_repeated_looks_keep_wrong_decisions_below_five_percent() -> None:
    """At a true speed-up exactly at the threshold any decision is wrong. 400 simulated adaptive runs
    (4..32 rounds, 10 % noise): the Bonferroni looks keep the decided share below 5 % (expected ~4 %);
    looking at 95 % after every round would decide in ~25 %."""
    decided = sum(_run(1.0, noise=0.10, seed=1000 + i, budget=RoundsBudget(4, 32, 1e6))[1].reason == "decided"
                  for i in range(400))
    assert decided / 400 <= 0.065


def test_rounds_budget_rejects_impossible_settings() -> None:
    for kwargs in ({"min_rounds": 1}, {"min_rounds": 8, "max_rounds": 4}, {"max_seconds": 0}):
        with pytest.raises(ValueError):
            RoundsBudget(**kwargs)
    with pytest.raises(ValueError):
        should_stop([], rounds_done=0, elapsed_s=0.0)


def test_importing_the_statistics_does_not_import_scipy() -> None:
    """lcpipe --help stays instant: scipy is imported inside the functions that use it."""
    import subprocess
    import sys

    code = ("import sys, lcpipe.measure.stats, lcpipe.measure.stopping, lcpipe.data.split; "
            "print('scipy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_mean_interval_is_scipys_bca_bootstrap_with_the_fixed_seed() -> None:
    """mean_ci (the label-free cosine's interval) is one scipy call: the same numbers, reproducibly."""
    from scipy.stats import bootstrap

    from lcpipe.measure.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, mean_ci

    values = np.random.default_rng(7).beta(20, 1, 54)  # skewed towards 1, like per-image cosines
    ref = bootstrap((values,), np.mean, confidence_level=0.95, method="BCa", n_resamples=BOOTSTRAP_RESAMPLES,
                    rng=np.random.default_rng(BOOTSTRAP_SEED)).confidence_interval
    assert mean_ci(values) == pytest.approx((ref.low, ref.high), abs=1e-12)
    assert mean_ci(values) == mean_ci(values)
    assert mean_ci([0.9, 0.9, 0.9]) == (0.9, 0.9) and mean_ci([0.9, 0.8]) is None
