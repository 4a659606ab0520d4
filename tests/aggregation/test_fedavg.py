"""FedAvg is the example-weighted mean of deltas, and never divides by zero."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedactors.aggregation import PlainContributions, RoundContext, WeightedMean
from fedactors.aggregation.fedavg import weighted_delta


def ctx() -> RoundContext:
    return RoundContext(round=1, expected_count=3, selected=3, rng=np.random.default_rng(0))


def test_weighted_mean_equals_the_example_weighted_mean() -> None:
    rng = np.random.default_rng(1)
    deltas = rng.normal(size=(3, 5)).astype(np.float32)
    sizes = [7, 120, 33]
    agg = WeightedMean()
    rows = [agg.encode({}, d, n, rng) for d, n in zip(deltas, sizes)]
    result = agg.aggregate(None, PlainContributions(rows), ctx())
    expected = (deltas * np.array(sizes)[:, None]).sum(0) / sum(sizes)
    np.testing.assert_allclose(result.delta, expected, rtol=1e-6)
    assert result.measurements["total_weight"] == sum(sizes)


def test_unweighted_mean_ignores_example_counts() -> None:
    agg = WeightedMean(weighted=False)
    rng = np.random.default_rng(0)
    rows = [agg.encode({}, np.full(2, v, np.float32), n, rng) for v, n in [(1.0, 1), (3.0, 999)]]
    np.testing.assert_array_equal(agg.aggregate(None, PlainContributions(rows), ctx()).delta,
                                  [2.0, 2.0])


def test_no_contributions_or_zero_weight_is_an_explicit_no_update() -> None:
    agg = WeightedMean()
    assert agg.aggregate(None, PlainContributions([]), ctx()).delta is None
    zero = agg.encode({}, np.ones(2, np.float32), 0, np.random.default_rng(0))
    result = agg.aggregate(None, PlainContributions([zero]), ctx())
    assert result.delta is None and result.measurements["total_weight"] == 0.0


def test_an_empty_cohort_reports_zero_total_weight() -> None:
    for agg in (WeightedMean(), WeightedMean(weighted=False)):
        result = agg.aggregate(None, PlainContributions([]), ctx())
        assert result.delta is None and result.measurements == {"total_weight": 0.0}



@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # inf * 0, overflow: both routes warn
@settings(max_examples=500)
@given(arrays(np.float32, st.integers(0, 40),
              elements=st.floats(width=32, allow_nan=True, allow_infinity=True)),
       st.one_of(st.integers(0, 2**24 - 1), st.integers(2**24, 2**40)).map(float))
def test_weighted_delta_is_the_float64_product_rounded_once(delta, weight):
    # The float32 shortcut must give exactly the bits the float64 route gives,
    # subnormals, infinities and weights too large for float32 included.
    got = weighted_delta(delta, weight)
    want = (delta.astype(np.float64) * weight).astype(np.float32)
    nan = np.isnan(want)
    assert got.dtype == np.float32 and np.array_equal(np.isnan(got), nan)
    assert got[~nan].tobytes() == want[~nan].tobytes()
    assert got is not delta
