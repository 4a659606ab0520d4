"""The DP mechanism classes' options and edge cases, found by mutation testing.

Each test names the property it protects; the mechanisms' statistics are tested in
test_dp_mean.py, test_gaussian_mean.py and test_noise.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedactors.aggregation.base import RoundContext, SummedContributions
from fedactors.aggregation.fedavg import WeightedMean
from fedactors.errors import ConfigError
from fedactors.privacy.adaptive_clip import AdaptiveClipDPMean, AdaptiveClipping
from fedactors.privacy.distributed_noise import DistributedDPMean
from fedactors.privacy.dp_mean import DPMean
from fedactors.privacy.fixed_clip import FixedClipDPMean
from fedactors.privacy.gaussian_mean import CLIPPED_DELTA


def test_an_adaptive_mean_built_without_options_uses_the_papers_defaults() -> None:
    assert AdaptiveClipDPMean(1.0, 1.0, 10).adaptive == AdaptiveClipping()
    assert AdaptiveClipDPMean(1.0, 1.0, 10).clipped_count_stddev == 10 / 20


@pytest.mark.parametrize("build, field, shown", [
    (lambda: AdaptiveClipDPMean(1.0, 1.0, 10, adaptive=0.5), "adaptive", "0.5"),  # type: ignore
    (lambda: AdaptiveClipDPMean(1.0, 1.0, 0), "expected_count", "0"),
    (lambda: DPMean.adaptive_clipping(1.0, 1.0, -3), "expected_count", "-3"),
    (lambda: DistributedDPMean(WeightedMean()), "mechanism", "WeightedMean"),  # type: ignore
    (lambda: DistributedDPMean(FixedClipDPMean(1.0, 1.0, 10), min_survivors=0), "min_survivors", "0"),
    (lambda: DistributedDPMean(FixedClipDPMean(1.0, 1.0, 10), min_survivors=11), "min_survivors",
     "11"),
    (lambda: DPMean.fixed(1.0, 1.0, 10, distributed_noise="yes"), "distributed_noise", "yes"),
    (lambda: DPMean.fixed(1.0, 1.0, 10, min_survivors=5), "min_survivors", "distributed_noise=True"),
    (lambda: DPMean.fixed(1.0, 1.0, 10).initial_state(0), "dim", "0"),
])
def test_a_bad_option_is_refused_under_its_own_field_showing_the_value(build, field, shown) -> None:
    with pytest.raises(ConfigError) as err:
        build()
    assert err.value.field == field
    assert shown in str(err.value)


@pytest.mark.parametrize("make", [FixedClipDPMean, AdaptiveClipDPMean])
def test_distributed_noise_keeps_the_mechanisms_c_z_and_m(make) -> None:
    inner = make(0.7, 1.3, 10)
    dp = DistributedDPMean(inner, min_survivors=4)
    assert (dp.clip_norm, dp.noise_multiplier, dp.expected_count) == (0.7, 1.3, 10)
    assert dp.dp_event() == inner.dp_event()
    assert dp.private_release().min_survivors == 4
    assert dp.private_release().noise_multiplier == inner.private_release().noise_multiplier


def test_a_noiseless_distributed_release_is_made_and_reports_no_noise() -> None:
    # z = 0: the nominal multiplier is 0, so the ratio of actual to nominal noise is not
    # defined; the release must still be made (as the central one is), with no noise.
    dp = DPMean.fixed(1.0, 0.0, 4, distributed_noise=True, min_survivors=2)
    state = dp.initial_state(2)
    summed = SummedContributions({CLIPPED_DELTA: np.array([1.0, -2.0])}, 3)
    out = dp.aggregate(state, summed, RoundContext(1, 4, 4, np.random.default_rng(0)))
    np.testing.assert_array_equal(out.delta, np.array([0.25, -0.5], np.float32))
    assert out.measurements["noise_stddev_on_mean"] == 0.0


@pytest.mark.parametrize("distributed", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_records_are_float32_whatever_the_deltas_dtype(distributed: bool, dtype) -> None:
    # What a device sends is float32 (the wire format secure aggregation quantizes).
    dp = DPMean.adaptive_clipping(1.0, 1.0, 10, distributed_noise=distributed)
    row = dp.encode(dp.client_params(dp.initial_state(3)), np.array([0.1, 2.0, -1.0], dtype), 1,
                    np.random.default_rng(0))
    assert all(v.dtype == np.float32 for v in row.values()), {k: v.dtype for k, v in row.items()}


def test_dp_mean_itself_is_not_a_stage_and_says_how_to_build_one() -> None:
    with pytest.raises(TypeError) as err:
        DPMean()
    for constructor in ("fixed", "adaptive_clipping", "tree", "skellam"):
        assert f"DPMean.{constructor}(...)" in str(err.value)


@pytest.mark.parametrize("distributed", [False, True])
def test_a_release_reports_the_clip_it_used_the_next_clip_and_its_noise(distributed: bool) -> None:
    # metrics.jsonl and the report read these three names.
    dp = DPMean.adaptive_clipping(0.5, 1.0, 4, distributed_noise=distributed)
    state = dp.initial_state(2)
    summed = SummedContributions({CLIPPED_DELTA: np.zeros(2), "below_clip": np.zeros(1)}, 4)
    out = dp.aggregate(state, summed, RoundContext(1, 4, 4, np.random.default_rng(0)))
    assert set(out.measurements) == {"clip_norm", "next_clip_norm", "noise_stddev_on_mean"}
    assert out.measurements["clip_norm"] == 0.5
    assert out.measurements["next_clip_norm"] == dp.client_params(out.state)["clip_norm"]


def test_a_summed_record_of_the_wrong_shape_is_refused_naming_the_record() -> None:
    dp = DPMean.fixed(1.0, 1.0, 4)
    bad = SummedContributions({CLIPPED_DELTA: np.zeros(3)}, 4)
    with pytest.raises(ValueError, match=r"clipped_delta.*\(3,\).*\(2,\)"):
        dp.aggregate(dp.initial_state(2), bad, RoundContext(1, 4, 4, np.random.default_rng(0)))
