"""FedAvg is the example-weighted mean of deltas, and never divides by zero."""

from __future__ import annotations

import numpy as np

from fedactors.aggregation import PlainContributions, RoundContext, WeightedMean


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

