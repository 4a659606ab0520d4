"""contribution_bounds is a hard and tight per-coordinate bound on what encode() can send
(found by mutation testing: the bound's slack was not pinned down)."""

from __future__ import annotations

import numpy as np
import pytest

from fedactors.aggregation.base import RoundContext, SummedContributions
from fedactors.errors import ConfigError
from fedactors.privacy.adaptive_clip import BELOW_CLIP, AdaptiveClipping
from fedactors.privacy.dp_mean import DPMean
from fedactors.privacy.gaussian_mean import CLIPPED_DELTA
from fedactors.privacy.noise import TAIL as _TAIL


class ExtremeRng:
    """Every standard-normal draw is far out in the tail: the device noise hits its clip."""

    def __init__(self, sign: float = 1.0) -> None:
        self.sign = sign

    def standard_normal(self, size):
        return np.full(size, self.sign * 1e6)


def extreme_row(dp: DPMean, clip: float, sign: float = 1.0) -> dict[str, np.ndarray]:
    params = dp.client_params(dp.initial_state(3))
    assert float(params["clip_norm"]) == clip
    delta = np.array([sign * 100.0 * clip, 0.0, 0.0], np.float32)  # clipped to (±C, 0, 0)
    return dp.encode(params, delta, 1, ExtremeRng(sign))


def rel_slack(bound: float, reached: float) -> float:
    return bound / reached - 1.0


@pytest.mark.parametrize("clip, z, k", [(2.0, 0.8, 4), (0.5, 1.3, 9)])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_distributed_noise_bound_is_reached_by_the_extreme_contribution(clip, z, k, sign) -> None:
    dp = DPMean.fixed(clip, z, 10, distributed_noise=True, min_survivors=k)
    bounds = dp.contribution_bounds(dp.client_params(dp.initial_state(3)), 3)
    row = extreme_row(dp, clip, sign)
    reached = float(np.max(np.abs(row[CLIPPED_DELTA])))
    # The most a coordinate can carry: the clipped delta plus the noise share at its clip.
    assert reached == pytest.approx(clip + _TAIL * z * clip / np.sqrt(k), rel=1e-6)
    assert reached <= bounds[CLIPPED_DELTA]
    assert 0.0 <= rel_slack(bounds[CLIPPED_DELTA], reached) < 1e-5


def test_without_distributed_noise_the_bound_is_the_clip_norm() -> None:
    clip = 2.0
    dp = DPMean.fixed(clip, 1.1, 10)
    bounds = dp.contribution_bounds(dp.client_params(dp.initial_state(3)), 3)
    row = extreme_row(dp, clip)
    reached = float(np.max(np.abs(row[CLIPPED_DELTA])))
    assert reached == pytest.approx(clip, rel=1e-6)
    assert reached <= bounds[CLIPPED_DELTA] and rel_slack(bounds[CLIPPED_DELTA], reached) < 1e-5


@pytest.mark.parametrize("sigma_b, k", [(2.0, 4), (0.5, 3)])
def test_below_clip_record_bound_is_reached_by_the_extreme_share(sigma_b, k) -> None:
    clip = 1.0
    dp = DPMean.adaptive_clipping(clip, 1.0, 10, clipped_count_stddev=sigma_b,
                                  distributed_noise=True, min_survivors=k)
    params = dp.client_params(dp.initial_state(3))
    bounds = dp.contribution_bounds(params, 3)
    # A zero delta is below the clip: its record is +0.5, then the share at its clip.
    row = dp.encode(params, np.zeros(3, np.float32), 1, ExtremeRng())
    reached = float(abs(row[BELOW_CLIP][0]))
    assert reached == pytest.approx(0.5 + _TAIL * sigma_b / np.sqrt(k), rel=1e-6)
    assert reached <= bounds[BELOW_CLIP]
    assert 0.0 <= rel_slack(bounds[BELOW_CLIP], reached) < 1e-5


def test_adaptive_clipping_keeps_every_option_it_is_given() -> None:
    dp = DPMean.adaptive_clipping(1.0, 1.0, 10, target_quantile=0.7, learning_rate=0.05,
                                  clipped_count_stddev=0.3, geometric=False,
                                  distributed_noise=True, min_survivors=6)
    assert dp.mechanism.adaptive == AdaptiveClipping(0.7, 0.05, 0.3, False)
    assert dp.min_survivors == 6 and dp.private_release().min_survivors == 6


def test_adaptive_clipping_defaults_are_the_papers() -> None:
    # docs/privacy.md: target median, geometric updates at rate 0.2, count noise m/20.
    dp = DPMean.adaptive_clipping(1.0, 1.0, 10)
    assert dp.adaptive == AdaptiveClipping(0.5, 0.2, None, True)


@pytest.mark.parametrize("kwargs, field", [
    ({"target_quantile": 1.5}, "target_quantile"),
    ({"learning_rate": -0.1}, "learning_rate"),
    ({"clipped_count_stddev": -1.0}, "clipped_count_stddev"),
])
def test_a_bad_adaptive_option_is_reported_under_its_own_field(kwargs, field) -> None:
    with pytest.raises(ConfigError) as err:
        DPMean.adaptive_clipping(1.0, 1.0, 10, **kwargs)
    assert err.value.field == field


def test_encoded_contributions_are_float32() -> None:
    dp = DPMean.adaptive_clipping(1.0, 1.0, 10, distributed_noise=True, min_survivors=4)
    params = dp.client_params(dp.initial_state(3))
    row = dp.encode(params, np.array([0.3, -2.0, 1.0], np.float32), 1, np.random.default_rng(0))
    assert row[CLIPPED_DELTA].dtype == np.float32 and row[BELOW_CLIP].dtype == np.float32


def test_a_device_clips_at_the_broadcast_clip_norm_not_the_initial_one() -> None:
    # Adaptive clipping: after the clip has grown, a delta between the initial and the
    # current clip norm is sent unclipped. Every device above C and target 0.5 with
    # geometric rate 2 ln 4 and no noise: C grows by exactly exp(ln 4) = 4 in a round.
    m = 10
    dp = DPMean.adaptive_clipping(1.0, 0.0, m, learning_rate=2 * np.log(4.0),
                                  clipped_count_stddev=0.0)
    first = dp.initial_state(3)
    all_above = SummedContributions({CLIPPED_DELTA: np.zeros(3), BELOW_CLIP: np.array([-m / 2])}, m)
    grown = dp.aggregate(first, all_above, RoundContext(1, m, m, np.random.default_rng(0))).state
    assert dp.client_params(grown)["clip_norm"] == pytest.approx(4.0, rel=1e-6)
    delta = np.array([0.0, 3.0, 0.0], np.float32)
    row = dp.encode(dp.client_params(grown), delta, 1, np.random.default_rng(0))
    np.testing.assert_allclose(row[CLIPPED_DELTA], delta, rtol=1e-6)
    row = dp.encode(dp.client_params(first), delta, 1, np.random.default_rng(0))
    assert np.linalg.norm(row[CLIPPED_DELTA]) == pytest.approx(1.0, rel=1e-5)


def test_too_few_noise_shares_release_nothing_and_keep_the_state() -> None:
    m, k = 10, 4
    dp = DPMean.adaptive_clipping(1.0, 1.0, m, distributed_noise=True, min_survivors=k)
    state = dp.initial_state(2)
    summed = SummedContributions({CLIPPED_DELTA: np.zeros(2), BELOW_CLIP: np.zeros(1)}, k - 1)
    out = dp.aggregate(state, summed, RoundContext(round=1, expected_count=m, selected=m,
                                                   rng=np.random.default_rng(0)))
    assert out.delta is None
    assert out.state == state
    assert out.measurements == {"clip_norm": dp.client_params(state)["clip_norm"],
                                "noise_shares_below_minimum": 1.0}
