"""fedactors.privacy.noise: seeded Gaussian noise, central and in distributed shares."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from fedactors.privacy import noise


def _variance_ratio_interval(n: int) -> tuple[float, float]:
    """Two-sided 99.9% interval of s^2 / sigma^2 for n normal samples."""
    lo, hi = stats.chi2.ppf([0.0005, 0.9995], n - 1) / (n - 1)
    return float(lo), float(hi)


def test_central_noise_has_the_standard_deviation_asked_for() -> None:
    draws = noise.central(np.random.default_rng(1), 3.0, 20_000)
    lo, hi = _variance_ratio_interval(draws.size)
    assert lo < np.var(draws, ddof=1) / 9.0 < hi
    assert abs(draws.mean()) < 4 * 3.0 / np.sqrt(draws.size)


def test_noise_is_a_function_of_the_generator_state() -> None:
    a = noise.central(np.random.default_rng(5), 1.0, 4)
    b = noise.central(np.random.default_rng(5), 1.0, 4)
    assert a.tobytes() == b.tobytes()
    s1 = noise.device_share(np.random.default_rng(5), 2.0, 3, 4)
    s2 = noise.device_share(np.random.default_rng(5), 2.0, 3, 4)
    assert s1.tobytes() == s2.tobytes()


@pytest.mark.parametrize("shares", [1, 4, 25])
def test_any_k_shares_sum_to_the_central_noise(shares: int) -> None:
    # The sum of `shares` devices' shares must carry N(0, sigma^2): not less (privacy), and
    # not needlessly more (utility).
    sigma, n = 2.0, 4_000
    rng = np.random.default_rng(shares)
    sums = sum(noise.device_share(rng, sigma, shares, n) for _ in range(shares))
    lo, hi = _variance_ratio_interval(n)
    assert lo < np.var(sums, ddof=1) / sigma**2 < hi


def test_a_share_never_exceeds_its_bound_and_the_bound_is_reached() -> None:
    class Extreme:
        """A generator whose normals are far in both tails."""

        def standard_normal(self, size: int) -> np.ndarray:
            return np.array([1e3, -1e3, 0.5])[:size]

    share = noise.device_share(Extreme(), 6.0, 9, 3)  # type: ignore[arg-type]
    bound = noise.share_bound(6.0, 9)
    assert bound == pytest.approx(noise.TAIL * 6.0 / 3.0)
    assert share[0] == pytest.approx(bound) and share[1] == pytest.approx(-bound)
    assert share[2] == pytest.approx(0.5 * 6.0 / 3.0)
