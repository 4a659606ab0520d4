"""The Skellam numerics: sampler against scipy, sums of shares, rounding bound, tail, RDP."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fedactors.privacy import skellam
from fedactors.privacy.accounting import RDP_ORDERS


def test_the_sampler_matches_scipys_skellam_pmf() -> None:
    # Chi-square goodness of fit on the central bins (tails pooled); 200k draws.
    rng, v = np.random.default_rng(1), 6.0
    x = skellam.sample_skellam(rng, v, 200_000)
    edges = np.arange(-8, 9)
    observed = np.array([np.sum(x < -8)] + [np.sum(x == k) for k in edges] + [np.sum(x > 8)])
    pmf = stats.skellam.pmf(edges, v / 2, v / 2)
    expected = x.size * np.concatenate([[stats.skellam.cdf(-9, v / 2, v / 2)], pmf,
                                        [stats.skellam.sf(8, v / 2, v / 2)]])
    chi2 = float(np.sum((observed - expected) ** 2 / expected))
    # 18 bins, 17 dof: the 0.999 quantile is 40.8; a Poisson(v) - Poisson(v) draw fails.
    assert chi2 < stats.chi2.ppf(0.999, len(observed) - 1)


def test_a_sum_of_shares_is_integer_with_the_expected_variance() -> None:
    """m shares of variance v/k each: variance v*m/k, integer support (issue #13 item 5)."""
    rng, v, k, m, n = np.random.default_rng(2), 400.0, 4, 6, 100_000
    total = sum(skellam.sample_skellam(rng, v / k, n) for _ in range(m))
    assert total.dtype == np.int64
    # The sample variance's relative standard error is sqrt(2/n) ~ 0.45%; allow 2%.
    assert total.var() == pytest.approx(v * m / k, rel=0.02)
    assert abs(total.mean()) < 5 * math.sqrt(v * m / k / n)


def test_zero_variance_adds_nothing_and_negative_is_refused() -> None:
    assert not skellam.sample_skellam(np.random.default_rng(0), 0.0, 10).any()
    with pytest.raises(ValueError):
        skellam.sample_skellam(np.random.default_rng(0), -1.0, 10)


@pytest.mark.parametrize("variance", [0.5, 6.0, 1e3, 1e6])
def test_the_tail_bound_is_above_the_exact_tail_and_the_level_meets_it(variance: float) -> None:
    for t in (0, 1, int(math.sqrt(variance)), int(5 * math.sqrt(variance))):
        exact = 2 * stats.skellam.sf(t, variance / 2, variance / 2)
        assert skellam.tail_bound(variance, t) >= exact * (1 - 1e-9)
    t = skellam.truncation_level(variance, 1e-12)
    assert skellam.tail_bound(variance, t) <= 1e-12 < skellam.tail_bound(variance, t - 1)


@pytest.mark.parametrize("dim,beta", [(10, 0.0), (100, math.exp(-0.5)), (1000, 0.01)])
def test_conditional_rounding_stays_within_its_bound(dim: int, beta: float) -> None:
    rng = np.random.default_rng(3)
    c = 30.0
    bound = skellam.rounded_l2_bound(c, dim, beta)
    tries = []
    for _ in range(200):
        x = rng.normal(size=dim)
        x *= c / np.linalg.norm(x) * rng.uniform(0.5, 1.0)
        q, n = skellam.conditional_round(rng, x, bound)
        assert q.dtype == np.int64 and np.all(np.abs(q - x) < 1)
        assert np.linalg.norm(q) <= bound
        tries.append(n)
    # One rounding meets the bound with probability >= 1 - beta (Theorem 1): on average
    # at most 1 / (1 - beta) tries; with margin for 200 samples.
    assert np.mean(tries) <= 1.5 / (1 - beta)


def test_the_rounding_bound_is_theorem_1s_formula() -> None:
    c, d, beta = 40.0, 400, 0.05
    conditional = math.sqrt(c**2 + d / 4 + math.sqrt(2 * math.log(1 / beta)) * (c + math.sqrt(d) / 2))
    assert skellam.rounded_l2_bound(c, d, beta) == pytest.approx(conditional, rel=1e-12)
    assert skellam.rounded_l2_bound(c, d, 0.0) == c + math.sqrt(d)
    assert skellam.rounded_l2_bound(1.0, 4, 1e-300) == 3.0  # the always-true bound is smaller


def test_rounding_is_unbiased_away_from_the_bound() -> None:
    rng = np.random.default_rng(4)
    x = np.array([0.25, -1.75, 3.5])
    qs = np.array([skellam.conditional_round(rng, x, 100.0)[0] for _ in range(20_000)])
    assert qs.mean(axis=0) == pytest.approx(x, abs=0.02)


def test_rounding_gives_up_with_the_zero_vector_never_past_the_bound() -> None:
    q, tries = skellam.conditional_round(np.random.default_rng(0), np.full(4, 1.5), 0.5)
    assert tries == skellam.MAX_ROUNDING_TRIES and not q.any()


def test_the_l1_bound_holds_for_integer_vectors() -> None:
    rng = np.random.default_rng(5)
    for _ in range(200):
        q = rng.integers(-3, 4, size=rng.integers(1, 50))
        l2 = float(np.linalg.norm(q)) or 1.0
        assert np.abs(q).sum() <= skellam.rounded_l1_bound(l2, q.size) + 1e-9


def test_skellam_rdp_tends_to_the_gaussian_limit() -> None:
    # As the variance grows with the sensitivity fixed, RDP -> a * l2**2 / (2 v), from above.
    l2, dim = 50.0, 100
    l1 = skellam.rounded_l1_bound(l2, dim)
    integer = np.ceil(RDP_ORDERS) == RDP_ORDERS
    previous = np.inf
    for v in (1e4, 1e6, 1e8):
        rdp = skellam.skellam_rdp(RDP_ORDERS, v, l1, l2)
        gauss = RDP_ORDERS * l2**2 / (2 * v)
        ratio = rdp[integer] / gauss[integer]
        assert np.all(ratio >= 1)
        excess = float(np.max(ratio - 1))
        assert excess < previous
        previous = excess
    assert previous < 1e-3


def test_skellam_rdp_at_non_integer_orders_is_the_next_integers() -> None:
    rdp = skellam.skellam_rdp(np.array([1.1, 2.0, 2.5, 3.0]), 1e4, 10.0, 5.0)
    assert rdp[0] == rdp[1] and rdp[2] == rdp[3] and rdp[1] < rdp[3]
    assert np.all(np.isinf(skellam.skellam_rdp(np.array([2.0]), 0.0, 1.0, 1.0)))


def test_skellam_rdp_is_the_papers_formula_at_a_point() -> None:
    a, v, l1, l2 = 8.0, 200.0, 30.0, 10.0
    expected = a * l2**2 / (2 * v) + min(((2 * a - 1) * l2**2 + 6 * l1) / (4 * v**2),
                                         3 * l1 / (2 * v))
    assert skellam.skellam_rdp(np.array([a]), v, l1, l2)[0] == pytest.approx(expected, rel=1e-12)


def test_calibration_scales_the_noise_to_the_rounded_sensitivity() -> None:
    cal = skellam.calibrate(0.5, 3.0, 10, 0.0, dim=16, shares=5)
    assert cal.l2 == 0.5 * 1024 + 4
    assert cal.variance == pytest.approx((3.0 * cal.l2) ** 2)
    assert cal.share_variance * 5 == pytest.approx(cal.variance)
    assert cal.record_bound == math.floor(cal.l2) + cal.share_tail
    assert skellam.tail_bound(cal.share_variance, cal.share_tail) <= skellam.TAIL_PROBABILITY
