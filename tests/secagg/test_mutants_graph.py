"""Communication-graph contracts at the edges: n-of-n thresholds, the degree rules of the
Harary graph and its complete fallback, and SecAgg+ honouring every stated assumption
(found by mutation testing)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedactors.errors import ConfigError
from fedactors.secagg.graph import CommGraph, complete_graph, harary_graph, secagg_plus_graph
from fedactors.secagg.parameters import plus_parameters


def _is_complete(g: CommGraph) -> bool:
    return all(g.neighbours[u] == g.ids - {u} for u in g.ids)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_n_of_n_threshold_is_valid(n: int) -> None:
    """The threshold may equal the number of devices (everyone must answer)."""
    g = complete_graph(range(1, n + 1), n)
    assert set(g.thresholds.values()) == {n} and _is_complete(g)


@pytest.mark.parametrize("bad", [0, -1, 6])
def test_complete_graph_bad_threshold_names_the_field(bad: int) -> None:
    """A threshold outside [1, n] is a ConfigError on field 'threshold' quoting it."""
    with pytest.raises(ConfigError) as e:
        complete_graph([1, 2, 3, 4, 5], bad)
    assert e.value.field == "threshold"
    assert repr(bad) in e.value.message


@pytest.mark.parametrize("n, bad", [(9, 0), (9, -2), (9, 2.0), (9, "4"), (9, None), (5, 3), (9, 5)])
def test_harary_bad_degree_names_the_field(n: int, bad: Any) -> None:
    """Degree must be an even int >= 2 unless it is >= n - 1; else ConfigError on 'degree'."""
    with pytest.raises(ConfigError) as e:
        harary_graph(range(1, n + 1), bad, np.random.default_rng(0), 1)
    assert e.value.field == "degree"
    assert repr(bad) in e.value.message


@pytest.mark.parametrize("n, degree", [(2, 1), (3, 2), (5, 4), (5, 5), (5, 6), (6, 5), (6, 8)])
def test_harary_degree_at_least_n_minus_1_gives_the_complete_graph(n: int, degree: int) -> None:
    """Any degree >= n - 1, odd or even, falls back to the complete graph."""
    g = harary_graph(range(1, n + 1), degree, np.random.default_rng(n), 1)
    assert _is_complete(g)


@pytest.mark.parametrize("n, degree", [(7, 2), (9, 4), (20, 6), (21, 10)])
def test_harary_graph_is_degree_regular_and_symmetric(n: int, degree: int) -> None:
    """Below n - 1, every device has exactly ``degree`` neighbours, symmetrically."""
    g = harary_graph(range(1, n + 1), degree, np.random.default_rng(degree), 2)
    assert {len(v) for v in g.neighbours.values()} == {degree}
    assert all(u in g.neighbours[v] for u in g.ids for v in g.neighbours[u])


def test_secagg_plus_graph_honours_the_security_target() -> None:
    """The security target reaches plus_parameters (a laxer target gives other (k, t))."""
    n, lax = 150, 10.0
    p, default = plus_parameters(n, security_log2=lax), plus_parameters(n)
    assert (p.degree, p.threshold) != (default.degree, default.threshold)
    g = secagg_plus_graph(range(1, n + 1), np.random.default_rng(1), security_log2=lax)
    assert g.max_degree() == p.degree and set(g.thresholds.values()) == {p.threshold}
