from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from fedactors.aggregation.base import PlainContributions, RoundContext, SummedContributions
from fedactors.aggregation.clipping import l2_norm
from fedactors.aggregation.fedavg import WeightedMean
from fedactors.errors import ConfigError
from fedactors.privacy.adaptive_clip import BELOW_CLIP
from fedactors.privacy.dp_mean import DPMean
from fedactors.privacy.gaussian_mean import CLIPPED_DELTA
from fedactors.privacy.mechanism import DPMeanState


def ctx(expected: int, seed: int = 0, round: int = 1) -> RoundContext:
    return RoundContext(round=round, expected_count=expected, selected=expected,
                        rng=np.random.default_rng(seed))


def run_round(agg: DPMean, state, deltas, seed: int = 0):
    rng = np.random.default_rng(1000 + seed)
    params = agg.client_params(state)
    rows = [agg.encode(params, d, 1, rng) for d in deltas]
    return agg.aggregate(state, PlainContributions(rows), ctx(agg.expected_count, seed))


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(np.float32, st.integers(1, 16),
               elements=st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False, width=32)),
    st.floats(1e-3, 1e3),
    st.booleans(),
)
def test_every_encoded_delta_is_clipped_to_c(delta: np.ndarray, c: float, adaptive: bool) -> None:
    agg = (DPMean.adaptive_clipping(c, 1.0, 4) if adaptive else DPMean.fixed(c, 1.0, 4))
    params = agg.client_params(agg.initial_state(delta.size))
    # The query keeps C as float32, so the clip actually broadcast (and the one
    # the noise is scaled to) is float32(c), within 6e-8 relative of c.
    assert params["clip_norm"] == pytest.approx(c, rel=1e-7)
    enc = agg.encode(params, delta, 1, np.random.default_rng(0))
    assert l2_norm(enc[CLIPPED_DELTA]) <= params["clip_norm"]
    if adaptive:
        assert enc[BELOW_CLIP][0] == (0.5 if l2_norm(delta) <= params["clip_norm"] else -0.5)


def test_without_noise_and_clipping_it_is_unweighted_fedavg_exactly() -> None:
    # WeightedMean(weighted=False) divides by the number of reports; DPMean
    # divides by expected_count. They coincide exactly when everyone reports
    # (as here); with dropouts DPMean is that mean times reported/expected.
    # C is a power of two so TF's float32 clip scale C * (1/C) is exactly 1.
    rng = np.random.default_rng(5)
    deltas = [rng.normal(size=50).astype(np.float32) for _ in range(7)]
    dp = DPMean.fixed(clip_norm=2.0**40, noise_multiplier=0.0, expected_count=7)
    got = run_round(dp, dp.initial_state(50), deltas).delta
    fedavg = WeightedMean(weighted=False)
    rows = [fedavg.encode({}, d, 3, rng) for d in deltas]
    want = fedavg.aggregate(None, PlainContributions(rows), ctx(7)).delta
    np.testing.assert_array_equal(got, want)


def test_divides_by_expected_count_not_reports() -> None:
    dp = DPMean.fixed(clip_norm=10.0, noise_multiplier=0.0, expected_count=4)
    out = run_round(dp, dp.initial_state(2), [np.array([1.0, 2.0], np.float32)] * 2)
    np.testing.assert_allclose(out.delta, [0.5, 1.0])


@pytest.mark.parametrize("distributed", [False, True])
def test_noise_std_matches_z_c_over_expected_count(distributed: bool) -> None:
    z, c, m, dim, rounds = 1.3, 0.7, 10, 20_000, 3
    dp = DPMean.fixed(c, z, m, distributed_noise=distributed)
    state = dp.initial_state(dim)
    zeros = [np.zeros(dim, np.float32)] * m  # clipped sum is 0: the output is pure noise
    samples = np.concatenate(
        [run_round(dp, state, zeros, seed=s).delta.astype(np.float64) for s in range(rounds)]
    )
    n, sigma = samples.size, z * c / m
    # (n-1) s^2 / sigma^2 ~ chi2(n-1): a two-sided 99.9% interval for s/sigma
    # (fixed seeds, so the test is deterministic; the CI says how tight it is).
    lo, hi = stats.chi2.ppf([0.0005, 0.9995], n - 1) / (n - 1)
    ratio = np.var(samples, ddof=1) / sigma**2
    assert lo < ratio < hi, (ratio, lo, hi)  # about +-1.5% on the variance
    assert abs(samples.mean()) < 4 * sigma / np.sqrt(n)


def test_noise_is_reproducible_from_the_server_rng() -> None:
    dp = DPMean.adaptive_clipping(1.0, 1.0, 3)
    state = dp.initial_state(5)
    deltas = [np.full(5, v, np.float32) for v in (0.1, 1.0, 3.0)]
    a, b = run_round(dp, state, deltas, seed=7), run_round(dp, state, deltas, seed=7)
    np.testing.assert_array_equal(a.delta, b.delta)
    assert a.state == b.state
    assert not np.array_equal(a.delta, run_round(dp, state, deltas, seed=8).delta)


def test_secure_sum_gives_the_same_result_as_plain_contributions() -> None:
    dp = DPMean.adaptive_clipping(1.0, 0.5, 3, distributed_noise=True)
    state = dp.initial_state(4)
    rng = np.random.default_rng(0)
    params = dp.client_params(state)
    rows = [dp.encode(params, rng.normal(size=4).astype(np.float32), 1, rng) for _ in range(3)]
    bounds = dp.contribution_bounds(params, 4)
    for r in rows:
        for k, v in r.items():
            assert np.max(np.abs(v)) <= bounds[k]
    plain = dp.aggregate(state, PlainContributions(rows), ctx(3))
    summed = SummedContributions(PlainContributions(rows).sum(), 3)
    secure = dp.aggregate(state, summed, ctx(3))
    np.testing.assert_array_equal(plain.delta, secure.delta)
    assert plain.state == secure.state


def test_non_finite_delta_contributes_zero() -> None:
    dp = DPMean.fixed(1.0, 0.0, 2)
    out = run_round(dp, dp.initial_state(2),
                    [np.array([np.nan, 1.0], np.float32), np.array([0.0, 1.0], np.float32)])
    np.testing.assert_array_equal(out.delta, [0.0, 0.5])


def test_zero_reports_still_release_noise() -> None:
    dp = DPMean.fixed(1.0, 1.0, 4)
    out = dp.aggregate(dp.initial_state(3), PlainContributions([]), ctx(4))
    assert out.delta is not None and np.all(out.delta != 0)


@pytest.mark.slow
def test_adaptive_clip_converges_to_the_target_quantile() -> None:
    # Update norms ~ lognormal(0, 0.5): median exactly 1. Start 10x too low;
    # geometric rate 0.2 moves the clip by at most e^0.1 per round at this
    # distance, so ~25 rounds to arrive; the rest measure where it settles.
    m, rounds, target = 40, 70, 0.5
    dp = DPMean.adaptive_clipping(0.1, 0.0, m, target_quantile=target, learning_rate=0.2)
    state = dp.initial_state(2)
    rng = np.random.default_rng(42)
    clips = []
    for r in range(rounds):
        norms = rng.lognormal(0.0, 0.5, m)
        angles = rng.uniform(0, 2 * np.pi, m)
        deltas = [np.array([n * np.cos(a), n * np.sin(a)], np.float32)
                  for n, a in zip(norms, angles)]
        state = run_round(dp, state, deltas, seed=r).state
        clips.append(clip_of(dp, state))
    settled = np.array(clips[-30:])
    # Tolerance: the noised count (std m/20) and sampling of 40 norms make the
    # clip jitter by a few percent; 15% around the median is a clear pass/fail.
    assert abs(np.mean(settled) - 1.0) < 0.15, settled
    below = stats.lognorm(s=0.5).cdf(np.mean(settled))
    assert abs(below - target) < 0.12


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(clip_norm=0.0, noise_multiplier=1.0, expected_count=3), "clip_norm"),
        (dict(clip_norm=1.0, noise_multiplier=-1.0, expected_count=3), "noise_multiplier"),
        (dict(clip_norm=1.0, noise_multiplier=1.0, expected_count=0), "expected_count"),
    ],
)
def test_bad_config_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        DPMean.fixed(**kwargs)
    assert err.value.field == field


def test_bad_adaptive_config() -> None:
    with pytest.raises(ConfigError, match="target_quantile.*1.5"):
        DPMean.adaptive_clipping(1.0, 1.0, 3, target_quantile=1.5)


def test_expected_count_mismatch_is_refused() -> None:
    dp = DPMean.fixed(1.0, 1.0, 3)
    with pytest.raises(ValueError, match="expected_count=3"):
        dp.aggregate(dp.initial_state(2), PlainContributions([]), ctx(4))


def test_distributed_noise_shares_are_sized_for_min_survivors() -> None:
    z, c, m, k, dim = 1.5, 0.8, 10, 4, 50_000
    dp = DPMean.fixed(c, z, m, distributed_noise=True, min_survivors=k)
    params = dp.client_params(dp.initial_state(dim))
    share = dp.encode(params, np.zeros(dim, np.float32), 1, np.random.default_rng(3))[CLIPPED_DELTA]
    # Any k shares sum to the nominal N(0, (zC)^2): one share has variance (zC)^2 / k.
    n = share.size
    lo, hi = stats.chi2.ppf([0.0005, 0.9995], n - 1) / (n - 1)
    ratio = np.var(share.astype(np.float64), ddof=1) / ((z * c) ** 2 / k)
    assert lo < ratio < hi, (ratio, lo, hi)
    assert dp.private_release().min_survivors == k
    with pytest.raises(ConfigError, match="min_survivors"):
        DPMean.fixed(c, z, m, min_survivors=k)  # only meaningful with distributed noise


def _variance_ratio_interval(n: int) -> tuple[float, float]:
    """Two-sided 99.9% interval of s^2 / sigma^2 for n normal samples ((n-1) s^2/sigma^2 ~ chi2)."""
    lo, hi = stats.chi2.ppf([0.0005, 0.9995], n - 1) / (n - 1)
    return float(lo), float(hi)


def clip_of(dp: DPMean, state: DPMeanState) -> float:
    """The clip norm the server broadcasts in ``state``."""
    return float(dp.client_params(state)["clip_norm"])


def test_central_clipped_count_noise_has_variance_clipped_count_stddev_squared() -> None:
    # The server adds N(0, sigma_b^2) to the summed below-clip record. It is observable in the
    # next clip norm: with an arithmetic update of rate 1 and target 0.5,
    #   next = C - (noised_sum / m + 0.5 - 0.5) = C - noised_sum / m,
    # and a true sum of 0 (half the cohort below C, half above) leaves only the noise.
    m, sigma_b, n = 10, 1.0, 250  # one release per sample: each costs a TF query call
    dp = DPMean.adaptive_clipping(1.0, 0.0, m, target_quantile=0.5, learning_rate=1.0,
                                  clipped_count_stddev=sigma_b, geometric=False)
    state = dp.initial_state(1)
    summed = SummedContributions({CLIPPED_DELTA: np.zeros(1), BELOW_CLIP: np.array([0.0])}, m)
    clip = clip_of(dp, state)
    noise = np.array([m * (clip - clip_of(dp, dp.aggregate(state, summed, ctx(m, seed)).state))
                      for seed in range(n)])
    # The estimate is clamped to [0, 1] before the update: no draw came near it.
    assert np.max(np.abs(noise)) < m / 2
    lo, hi = _variance_ratio_interval(n)  # [0.73, 1.32] at n = 250: 2x or 0x fails
    ratio = np.var(noise, ddof=1) / sigma_b**2
    assert lo < ratio < hi, (ratio, lo, hi)
    assert abs(noise.mean()) < 4 * sigma_b / np.sqrt(n)


def test_distributed_clipped_count_noise_share_has_variance_sigma_b_squared_over_min_survivors(
) -> None:
    # Each device adds its share to its below-clip record (+0.5: a zero delta is below C);
    # any min_survivors shares then sum to the nominal N(0, sigma_b^2).
    m, k, sigma_b, n = 10, 4, 2.0, 250
    dp = DPMean.adaptive_clipping(1.0, 1.0, m, clipped_count_stddev=sigma_b,
                                  distributed_noise=True, min_survivors=k)
    params = dp.client_params(dp.initial_state(1))
    rng = np.random.default_rng(17)
    shares = np.array([dp.encode(params, np.zeros(1, np.float32), 1, rng)[BELOW_CLIP][0]
                       for _ in range(n)], np.float64) - 0.5
    lo, hi = _variance_ratio_interval(n)
    ratio = np.var(shares, ddof=1) / (sigma_b**2 / k)
    assert lo < ratio < hi, (ratio, lo, hi)
    assert abs(shares.mean()) < 4 * sigma_b / np.sqrt(k * n)


def test_distributed_noise_server_adds_no_clipped_count_noise() -> None:
    # The shares already carry the count noise; the server's rng must not move the clip.
    m = 4
    dp = DPMean.adaptive_clipping(1.0, 1.0, m, learning_rate=1.0, clipped_count_stddev=1.0,
                                  geometric=False, distributed_noise=True)
    state = dp.initial_state(2)
    summed = SummedContributions({CLIPPED_DELTA: np.zeros(2), BELOW_CLIP: np.array([1.0])}, m)
    clips = {clip_of(dp, dp.aggregate(state, summed, ctx(m, seed)).state) for seed in range(5)}
    # Below-fraction 1.0 / 4 + 0.5 = 0.75, target 0.5: next clip 1 - 0.25, whatever the seed.
    assert len(clips) == 1 and clips.pop() == pytest.approx(0.75, abs=1e-6)
