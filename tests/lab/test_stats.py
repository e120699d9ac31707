"""The statistics of the verdicts against SciPy's tests and hand-worked corrections."""

import math

import pytest
from scipy import stats as scipy_stats

from dmcore.lab import stats

A = [0.81, 0.79, 0.84, 0.80, 0.83]
B = [0.78, 0.80, 0.79, 0.76, 0.80]
DIFF = [a - b for a, b in zip(A, B)]


def test_paired_t_is_scipys_paired_test():
    test = stats.paired_t(DIFF)
    reference = scipy_stats.ttest_rel(A, B)
    assert test.p == pytest.approx(reference.pvalue, rel=1e-12)
    low, high = reference.confidence_interval(0.95)
    assert (test.mean - test.ci95, test.mean + test.ci95) == pytest.approx((low, high), rel=1e-12)
    assert (test.n, test.wins, test.losses) == (5, 4, 1)


def test_paired_t_of_identical_differences_and_of_nan():
    assert stats.paired_t([0.01] * 5).p == 0.0 and stats.paired_t([0.0] * 5).p == 1.0
    assert math.isnan(stats.paired_t([0.1, math.nan, 0.2]).p)
    with pytest.raises(ValueError, match="at least 2 pairs"):
        stats.paired_t([0.1])


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04: 3 x 0.01 = 0.03; 2 x 0.03 = 0.06; max(0.06, 1 x 0.04) = 0.06
    assert stats.holm([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match="p-values must lie in"):
        stats.holm([0.1, math.nan])


def test_benjamini_hochberg_by_hand():
    # m = 4, sorted 0.01, 0.02, 0.03, 0.5: 4*0.01/1 = 0.04, 4*0.02/2 = 0.04, 4*0.03/3 = 0.04, 4*0.5/4 = 0.5
    assert stats.benjamini_hochberg([0.03, 0.5, 0.01, 0.02]) == pytest.approx([0.04, 0.5, 0.04, 0.04])
    assert stats.benjamini_hochberg([0.04, 0.01]) == pytest.approx([0.04, 0.02])


def test_holm_is_never_below_the_raw_p_nor_above_bonferroni():
    raw = [0.001, 0.2, 0.013, 0.04, 0.6, 0.03]
    adjusted = stats.holm(raw)
    assert all(p <= q <= min(1, len(raw) * p) for p, q in zip(raw, adjusted))


def test_tost_is_two_one_sided_scipy_tests():
    margin = 0.025
    result = stats.tost(DIFF, margin)
    upper = scipy_stats.ttest_1samp(DIFF, margin, alternative="less").pvalue
    lower = scipy_stats.ttest_1samp(DIFF, -margin, alternative="greater").pvalue
    assert result.p == pytest.approx(max(upper, lower), rel=1e-12)
    low, high = scipy_stats.ttest_1samp(DIFF, 0).confidence_interval(0.90)
    assert (result.low, result.high) == pytest.approx((low, high), rel=1e-12)
    assert result.equivalent == (result.p < 0.05) == (-margin < result.low and result.high < margin)


def test_tost_needs_a_margin_and_tells_a_clear_difference():
    assert not stats.tost([0.05, 0.06, 0.04, 0.05, 0.07], 0.025).equivalent
    assert stats.tost([0.001, -0.002, 0.0, 0.001, -0.001], 0.025).equivalent
    with pytest.raises(ValueError, match="margin must be positive"):
        stats.tost(DIFF, 0)
