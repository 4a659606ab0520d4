from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedactors.aggregation.base import PlainContributions, RoundContext
from fedactors.aggregation.clipping import Clipped, clip_l2, l2_norm, zero_if_non_finite
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


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
@pytest.mark.parametrize("c", [100.0, 1.0], ids=["within", "clipped"])
def test_the_clipped_delta_is_float32_whatever_the_input_dtype(dtype, c: float) -> None:
    delta = np.array([3, -4, 0]).astype(dtype)
    out, norm = clip_l2(delta, c)
    assert out.dtype == np.float32 and norm == 5.0
    assert zero_if_non_finite(delta)[0].dtype == np.float32
    enc = Clipped(c, WeightedMean(weighted=False)).encode({}, delta, 1, np.random.default_rng(0))
    assert enc[WEIGHTED_DELTA].dtype == np.float32


@pytest.mark.parametrize("delta, c, expected", [
    ([2.0, 0.0], 1.0, [1.0, 0.0]),
    ([0.0, -8.0, 0.0], 2.0, [0.0, -2.0, 0.0]),
    ([6.0, 8.0], 5.0, [3.0, 4.0]),
])
def test_a_clip_float32_can_land_on_exactly_lands_exactly_on_the_sphere(delta, c, expected) -> None:
    # No needless shrinking: when the scaled vector is exact in float32 its norm is the bound.
    out, norm = clip_l2(np.array(delta, np.float32), c)
    np.testing.assert_array_equal(out, expected)
    assert l2_norm(out) == c and norm == l2_norm(np.array(delta))


def test_the_shrink_after_a_float32_overshoot_takes_a_few_passes_even_for_a_subnormal_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A clip norm just above half the smallest float32 subnormal: the clipped value rounds up
    # to that subnormal (over the bound) once, and again after one shrink of a hair; the next
    # shrink must go further, not repeat the same one. (With flush-to-zero on, it rounds to
    # zero at once; the bound holds either way.)
    from fedactors.aggregation import clipping

    passes: list[int] = []
    real_norm = clipping.l2_norm

    def counted(x: np.ndarray) -> float:
        passes.append(1)
        if len(passes) > 100:
            raise AssertionError("clip_l2 keeps shrinking by the same amount")
        return real_norm(x)

    monkeypatch.setattr(clipping, "l2_norm", counted)
    c = 2.0**-150 * (1 + 1.5e-6)
    out, norm = clip_l2(np.array([1.0], np.float32), c)
    assert norm == 1.0 and real_norm(out) <= c
    assert len(passes) <= 5
