"""The study statistics against scipy (to 1e-10) and hand-worked cases, and the verdict rule
as a table."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sp

from pipelines.studies.engine import stats
from pipelines.studies.engine.checks import CONTRADICTED, INCONCLUSIVE, SUPPORTED
from pipelines.studies.engine.verdict import decide

RNG = np.random.default_rng(1)
A = RNG.normal(1.0, 1.0, 12)
B = A + RNG.normal(0.4, 0.5, 12)


@pytest.mark.parametrize("alternative", ["less", "greater"])
def test_paired_t_matches_scipy_ttest_rel(alternative):
    got = stats.compare_paired(A, B, alternative, resamples=99)
    ref = sp.ttest_rel(A, B, alternative=alternative).pvalue
    assert got.p_support == pytest.approx(ref, abs=1e-10)
    assert got.method == "paired t"
    assert got.estimate == pytest.approx(np.mean(A - B), abs=1e-12)


def test_paired_t_with_a_factor_tests_a_minus_factor_b():
    got = stats.compare_paired(A, B, "less", factor=0.5, resamples=99)
    ref = sp.ttest_rel(A, 0.5 * B, alternative="less").pvalue
    assert got.p_support == pytest.approx(ref, abs=1e-10)


@pytest.mark.parametrize("alternative", ["less", "greater"])
def test_wilcoxon_matches_scipy(alternative):
    got = stats.compare_paired(A, B, alternative, stat="wilcoxon", resamples=99)
    ref = sp.wilcoxon(A, B, alternative=alternative).pvalue
    assert got.p_support == pytest.approx(ref, abs=1e-10)
    assert got.detail["p_t"] == pytest.approx(sp.ttest_rel(A, B, alternative=alternative)
                                              .pvalue, abs=1e-10)


def test_wilcoxon_exact_hand_worked():
    """n=5 differences all negative: the exact one-sided p is 1/2^5."""
    d = np.array([-1.0, -2.0, -3.0, -4.0, -5.0])
    assert stats.signed_rank(d, "less") == pytest.approx(1 / 32, abs=1e-12)
    assert stats.signed_rank(d, "greater") == pytest.approx(1.0, abs=1e-12)


def test_tost_matches_two_one_sided_scipy_tests():
    d = A - B
    p, p_low, p_high = stats.tost(d, -0.8, 0.8)
    ref_low = sp.ttest_1samp(d, -0.8, alternative="greater").pvalue
    ref_high = sp.ttest_1samp(d, 0.8, alternative="less").pvalue
    assert p_low == pytest.approx(ref_low, abs=1e-10)
    assert p_high == pytest.approx(ref_high, abs=1e-10)
    assert p == pytest.approx(max(ref_low, ref_high), abs=1e-10)


def test_tost_hand_worked():
    """d = (0.1, -0.1, 0.2, 0.0), margin 0.5: mean 0.05, sd sqrt(0.05/3), se sd/2;
    t_high = (0.05 - 0.5) / se with 3 dof, whose CDF has the closed form
    1/2 + (x/(1 + x^2) + atan(x)) / pi at x = t/sqrt(3)."""
    p, p_low, p_high = stats.tost([0.1, -0.1, 0.2, 0.0], -0.5, 0.5)
    x = (0.05 - 0.5) / (math.sqrt(0.05 / 3) / 2) / math.sqrt(3)
    assert p_high == pytest.approx(0.5 + (x / (1 + x * x) + math.atan(x)) / math.pi, abs=1e-12)
    assert p_low < p_high and p == p_high


def test_equivalence_and_noninferior_outcomes():
    near = stats.equivalence(A, A + 0.01 * RNG.normal(size=12), 0.1, resamples=99)
    assert near.p_support < 1e-6
    far = stats.equivalence(A, A + 1.0, 0.1, resamples=99)
    assert far.p_contra < 1e-6 and far.p_support > 0.5
    # a is worse (higher loss) by 0.05 on average: no worse than b by more than 0.2
    a = A + 0.05 + 0.01 * RNG.normal(size=12)
    worse = stats.equivalence(a, A, 0.2, kind="noninferior", resamples=99)
    assert worse.p_support == pytest.approx(
        sp.ttest_1samp(a - A, 0.2, alternative="less").pvalue, abs=1e-10)
    assert worse.p_support < 1e-6
    # higher is better (accuracy): a lower by 0.05 is still within a margin of 0.2
    acc = stats.equivalence(A - 0.05, A, 0.2, kind="noninferior", better="higher",
                            resamples=99)
    assert acc.p_support < 1e-6 and acc.p_contra > 0.5


def test_holm_hand_worked():
    """p = (0.01, 0.04, 0.03, 0.005): sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 =
    0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06."""
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.holm([]) == []


def test_bootstrap_ci_matches_scipy_and_covers_the_mean():
    lo, hi = stats.bootstrap_ci(A, 0.95, 999, seed=3)
    ref = sp.bootstrap((A,), np.mean, n_resamples=999, method="percentile",
                       random_state=np.random.default_rng(3)).confidence_interval
    assert (lo, hi) == pytest.approx((ref.low, ref.high), abs=1e-12)
    assert lo < A.mean() < hi
    assert stats.bootstrap_ci([2.0, 2.0, 2.0], 0.95, 99, 0) == (2.0, 2.0)


def test_censored_pairs_are_scored_by_known_order():
    # a reached in 10, 20; b never (censored at 100) or reached later; one pair both censored
    a, ea = [10, 20, 100, 50], [1, 1, 0, 1]
    b, eb = [100, 100, 100, 40], [0, 0, 0, 1]
    scores = stats.order_scores(np.array(a, float), np.array(b, float), np.array(ea, bool),
                                np.array(eb, bool))
    assert scores.tolist() == [-1, -1, 0, 1]
    t = stats.compare_censored(a, ea, b, eb, "less", resamples=99)
    assert (t.detail["wins"], t.detail["losses"], t.detail["undecided"]) == (2, 1, 1)
    assert t.p_support == pytest.approx(sp.binomtest(2, 3, 0.5, "greater").pvalue, abs=1e-12)
    # a censored value is not known larger than an observed value above it
    assert stats.order_scores(np.array([60.0]), np.array([80.0]), np.array([False]),
                              np.array([True])).tolist() == [0]


def test_two_diverged_runs_in_a_pair_are_tied():
    # inf - inf is NaN: a pair where both runs diverged must score 0, not crash the test
    a = [math.inf, 1.0, math.inf, -math.inf]
    b = [math.inf, 2.0, 3.0, -math.inf]
    assert stats.order_scores(np.array(a), np.array(b)).tolist() == [0, -1, 1, 0]
    t = stats.compare_paired(a, b, "less", resamples=99)
    assert (t.detail["wins"], t.detail["losses"], t.detail["undecided"]) == (1, 1, 2)


def test_a_diverged_run_is_a_failure_not_a_gap():
    a = [1.0, 1.1, math.inf, 0.9, 1.0]
    b = [2.0, 2.1, 2.0, 1.9, 2.2]
    t = stats.compare_paired(a, b, "less", resamples=99)
    assert t.method.startswith("sign test")
    assert (t.detail["wins"], t.detail["losses"]) == (4, 1)
    s = stats.summarize(a)
    assert (s.n, s.failed) == (5, 1)


def test_unpaired_matches_welch_and_mann_whitney():
    t = stats.compare_unpaired(A, B, "less", resamples=99)
    assert t.p_support == pytest.approx(sp.ttest_ind(A, B, equal_var=False,
                                                     alternative="less").pvalue, abs=1e-10)
    assert t.detail["p_mann_whitney"] == pytest.approx(
        sp.mannwhitneyu(A, B, alternative="less").pvalue, abs=1e-10)


def test_one_sample_against_a_threshold_matches_scipy():
    t = stats.compare_to(A, 0.5, "greater", resamples=99)
    assert t.p_support == pytest.approx(sp.ttest_1samp(A, 0.5, alternative="greater").pvalue,
                                        abs=1e-10)


def test_summary_ci_is_the_t_interval():
    s = stats.summarize(A)
    half = sp.t.ppf(0.975, len(A) - 1) * A.std(ddof=1) / math.sqrt(len(A))
    assert (s.ci_lo, s.ci_hi) == pytest.approx((A.mean() - half, A.mean() + half), abs=1e-12)


S, C, I = SUPPORTED, CONTRADICTED, INCONCLUSIVE
VERDICT_TABLE = [
    # primary, secondary outcomes, verdict
    (S, [], "supported"),
    (S, [S, S, I], "supported"),
    (S, [I, I, I], "supported"),
    (S, [S, C], "mixed"),
    (S, [C, C, C], "mixed"),
    (C, [], "contradicted"),
    (C, [S, S, S], "contradicted"),
    (I, [S, S, S], "inconclusive"),
    (I, [C, C], "inconclusive"),
    (I, [], "inconclusive"),
]


@pytest.mark.parametrize("primary,secondary,expected", VERDICT_TABLE)
def test_verdict_rule(primary, secondary, expected):
    assert decide(primary, secondary) == expected


def test_verdict_rule_refuses_an_unknown_outcome():
    with pytest.raises(ValueError, match="primary outcome"):
        decide("holds", [])
