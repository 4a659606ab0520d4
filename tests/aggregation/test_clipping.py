from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedactors.aggregation.base import PlainContributions, RoundContext
from fedactors.aggregation.clipping import Clipped, clip_l2, l2_norm
from fedactors.aggregation.fedavg import WEIGHT, WEIGHTED_DELTA, WeightedMean
from fedactors.errors import ConfigError

# No subnormals: TensorFlow (imported by the privacy tests) sets flush-to-zero.
finite32 = st.floats(-(2.0**100), 2.0**100, allow_nan=False, allow_subnormal=False, width=32)
deltas = hnp.arrays(np.float32, st.integers(1, 64), elements=finite32)
clips = st.floats(1e-6, 1e6, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(deltas, clips)
def test_every_clipped_delta_is_within_the_bound(delta: np.ndarray, c: float) -> None:
    out, norm = clip_l2(delta, c)
    assert out.dtype == np.float32 and out.shape == delta.shape
    assert np.all(np.isfinite(out))
    assert l2_norm(out) <= c
    if norm <= c:
        np.testing.assert_array_equal(out, delta)  # within the bound: untouched
    else:
        # Clipping keeps the direction and lands on (just inside) the sphere.
        assert l2_norm(out) == pytest.approx(c, rel=1e-5)


@settings(max_examples=100, deadline=None)
@given(deltas, clips)
def test_clipped_stage_bounds_what_the_inner_stage_sums(delta: np.ndarray, c: float) -> None:
    stage = Clipped(c, WeightedMean(weighted=False))
    enc = stage.encode({}, delta, 7, np.random.default_rng(0))
    bounds = stage.contribution_bounds({}, delta.size)
    assert l2_norm(enc[WEIGHTED_DELTA]) <= c
    assert np.max(np.abs(enc[WEIGHTED_DELTA])) <= bounds[WEIGHTED_DELTA]
    assert enc[WEIGHT][0] == bounds[WEIGHT] == 1.0


def test_zero_delta_passes_through_without_division() -> None:
    with np.errstate(all="raise"):
        out, norm = clip_l2(np.zeros(5, np.float32), 1.0)
    assert norm == 0.0 and np.all(out == 0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_delta_is_zeroed(bad: float) -> None:
    delta = np.array([1.0, bad, 2.0], np.float32)
    out, norm = clip_l2(delta, 1.0)
    assert np.all(out == 0) and norm == float("inf")


def test_clipped_mean_of_cohort() -> None:
    stage = Clipped(1.0, WeightedMean(weighted=False))
    rng = np.random.default_rng(0)
    rows = [
        stage.encode({}, np.array([3.0, 4.0], np.float32), 10, rng),  # norm 5 -> [0.6, 0.8]
        stage.encode({}, np.array([0.1, 0.0], np.float32), 1, rng),
        stage.encode({}, np.array([np.nan, 0.0], np.float32), 1, rng),  # zeroed, still counted
    ]
    ctx = RoundContext(round=1, expected_count=3, selected=3, rng=np.random.default_rng(1))
    agg = stage.aggregate(None, PlainContributions(rows), ctx)
    np.testing.assert_allclose(agg.delta, [0.7 / 3, 0.8 / 3], rtol=1e-5)


@pytest.mark.parametrize("c", [0, -1.0, float("nan"), "x"])
def test_bad_clip_norm_is_a_config_error(c: object) -> None:
    with pytest.raises(ConfigError) as err:
        Clipped(c, WeightedMean())  # type: ignore[arg-type]
    assert err.value.field == "clip_norm" and repr(c) in str(err.value)
