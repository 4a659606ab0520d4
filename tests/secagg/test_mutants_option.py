"""The SecureAggregation option: accepted ranges, the field each refusal names, the graph each
constructor picks, and which aggregators it lets through (found by mutation testing)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytest

from fedactors.aggregation import WeightedMean
from fedactors.errors import ConfigError
from fedactors.secagg.option import SecureAggregation, check_aggregator
from fedactors.secagg.parameters import plus_parameters


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """plus_parameters is cached: start each test empty so every case is really computed."""
    plus_parameters.cache_clear()
    yield
    plus_parameters.cache_clear()


@pytest.mark.parametrize("kwargs", [
    dict(max_dropout=0.0, max_corrupt=0.0),            # [0, 1): 0 is allowed
    dict(failure_log2=0.5, security_log2=0.5),         # (0, 1000]: small positive targets
    dict(failure_log2=1000.0, security_log2=1000.0),   # ... up to 1000 bits inclusive
    dict(scale_bits=0),
    dict(scale_bits=52),                               # 0 to 52 bits inclusive
    dict(threshold_fraction=1e-9),
    dict(sparse_above=0),
    dict(stochastic_rounding=False),
])
def test_values_at_the_edges_of_the_documented_ranges_are_accepted(kwargs: dict) -> None:
    """Each documented range includes its closed ends."""
    option = SecureAggregation(**kwargs)
    for name, value in kwargs.items():
        assert getattr(option, name) == value


@pytest.mark.parametrize("kwargs, field", [
    (dict(graph="Sparse"), "graph"),
    (dict(sparse_above=-1), "sparse_above"),
    (dict(sparse_above=2.5), "sparse_above"),
    (dict(threshold_fraction=1.5), "threshold_fraction"),
    (dict(threshold_fraction=float("nan")), "threshold_fraction"),
    (dict(threshold_fraction=0.0), "threshold_fraction"),
    (dict(failure_log2=1000.5), "failure_log2"),
    (dict(security_log2=1000.5), "security_log2"),
    (dict(scale_bits=53), "scale_bits"),
    (dict(scale_bits=-1), "scale_bits"),
    (dict(scale_bits=16.0), "scale_bits"),
    (dict(stochastic_rounding=1), "stochastic_rounding"),
    (dict(stochastic_rounding="yes"), "stochastic_rounding"),
    (dict(step_timeout=0.0), "step_timeout"),
    (dict(step_timeout=-1.0), "step_timeout"),
    (dict(step_dropout=1.0), "step_dropout"),  # every device silent: no round could run
])
def test_a_bad_field_raises_config_error_naming_it_and_showing_the_value(kwargs: dict, field: str) -> None:
    """Every refusal names secure_aggregation.<field> and quotes the rejected value."""
    with pytest.raises(ConfigError) as err:
        SecureAggregation(**kwargs)
    (value,) = kwargs.values()
    assert err.value.field == f"secure_aggregation.{field}"
    assert repr(value) in str(err.value)


def test_a_bad_graph_lists_the_choices() -> None:
    """An unknown graph name is refused with the valid names in the message."""
    with pytest.raises(ConfigError) as err:
        SecureAggregation(graph="ring")
    assert all(choice in str(err.value) for choice in ("auto", "complete", "sparse"))


@pytest.mark.parametrize("selected", [2, 100, 101, 100_000])
def test_named_constructors_fix_the_graph_whatever_the_cohort_size(selected: int) -> None:
    """complete() always runs SecAgg, sparse() always SecAgg+, and both keep the other options."""
    complete = SecureAggregation.complete(scale_bits=20)
    sparse = SecureAggregation.sparse(max_dropout=0.2)
    assert complete.graph == "complete" and not complete.uses_sparse_graph(selected)
    assert sparse.graph == "sparse" and sparse.uses_sparse_graph(selected)
    assert complete.scale_bits == 20 and sparse.max_dropout == 0.2


def test_auto_switches_to_the_sparse_graph_strictly_above_sparse_above() -> None:
    """graph="auto": complete up to sparse_above selected devices, sparse beyond."""
    option = SecureAggregation(graph="auto", sparse_above=50)
    assert not option.uses_sparse_graph(49)
    assert not option.uses_sparse_graph(50)
    assert option.uses_sparse_graph(51)
    assert SecureAggregation().uses_sparse_graph(1000)


def test_admitting_more_than_selected_adds_no_survivors() -> None:
    """admitted > selected is capped: survival never exceeds 1 - max_dropout."""
    option = SecureAggregation.sparse()
    assert option.plus_parameters(1000, 2000) == option.plus_parameters(1000, 1000)


def test_over_selection_counts_as_dropout_for_the_graph() -> None:
    """Admitting a of s selected devices is survival (1 - max_dropout) * a / s."""
    option = SecureAggregation.sparse(max_dropout=0.1, max_corrupt=0.05)
    got = option.plus_parameters(500, 400)
    want = plus_parameters(500, 1.0 - 0.9 * 0.8, 0.05, option.failure_log2, option.security_log2)
    assert got == want


# --- check_aggregator ------------------------------------------------------------------------

class Bounded(WeightedMean):
    """WeightedMean that claims the given per-key contribution bounds."""

    def __init__(self, bounds: Mapping[str, Any]) -> None:
        super().__init__(weighted=False)
        self.bounds = dict(bounds)

    def contribution_bounds(self, params: Mapping[str, Any], dim: int) -> dict[str, float]:
        return dict(self.bounds)


class SizeBounded(WeightedMean):
    """Bounds that depend on the model size (e.g. a per-coordinate share of a total)."""

    def contribution_bounds(self, params: Mapping[str, Any], dim: int) -> dict[str, float]:
        return {"weighted_delta": 10.0 / dim, "weight": 1.0}


@pytest.mark.parametrize("bound", [0, 0.0, -1.0, float("inf"), float("nan"), "1.0", None])
def test_a_bound_that_is_not_a_finite_positive_number_is_refused(bound: object) -> None:
    """Each contribution bound must be finite and > 0; the error names aggregator, key and value."""
    with pytest.raises(ConfigError) as err:
        check_aggregator(Bounded({"weight": 1.0, "weighted_delta": bound}))
    assert err.value.field == "aggregator"
    assert "'weighted_delta'" in str(err.value) and repr(bound) in str(err.value)


@pytest.mark.parametrize("bound", [1, 2.5, np.float32(0.25), np.float64(1e-6)])
def test_finite_positive_bounds_pass(bound: object) -> None:
    """Ints, floats and numpy floats > 0 are accepted as bounds."""
    check_aggregator(Bounded({"weight": 1.0, "weighted_delta": bound}))


def test_bounds_are_probed_with_an_actual_model_size() -> None:
    """contribution_bounds receives an int dim, so size-dependent bounds can be checked."""
    check_aggregator(SizeBounded(weighted=False))
    check_aggregator(SizeBounded(weighted=False), dim=1000)


def test_unbounded_aggregator_refusal_names_the_remedies() -> None:
    """Refusing an aggregator without bounds points to Clipped(... WeightedMean ...) and DPMean."""
    with pytest.raises(ConfigError) as err:
        check_aggregator(WeightedMean())
    assert err.value.field == "aggregator"
    assert all(word in str(err.value) for word in ("Clipped(", "WeightedMean(weighted=False)", "DPMean"))


@pytest.mark.parametrize("kwargs, says", [
    (dict(graph="sparse"), "applies to the complete graph only"),
    (dict(server="malicious"), "is not used with server='malicious'"),
])
def test_a_threshold_fraction_that_would_be_ignored_is_refused(kwargs: dict, says: str) -> None:
    # Else summary.json would record a threshold_fraction the run never used.
    with pytest.raises(ConfigError, match=f"^secure_aggregation.threshold_fraction: {says}"):
        SecureAggregation(threshold_fraction=0.5, **kwargs)
    SecureAggregation(**kwargs)  # without it: fine
    SecureAggregation(threshold_fraction=0.5, graph="auto")  # its complete rounds use it
