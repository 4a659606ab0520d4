import numpy as np
import pytest

from fedactors.errors import ConfigError
from fedactors.secagg.graph import complete_graph, harary_graph, secagg_plus_graph
from fedactors.secagg.parameters import plus_parameters


def test_secagg_plus_graph_regular_symmetric_with_chosen_parameters():
    for n in [100, 1000, 5000]:
        g = secagg_plus_graph(range(1, n + 1), np.random.default_rng(n))
        p = plus_parameters(n)
        assert g.max_degree() == p.degree < n - 1
        assert min(len(v) for v in g.neighbours.values()) == g.max_degree()
        assert set(g.thresholds.values()) == {p.threshold}
        for u, nb in g.neighbours.items():
            assert all(u in g.neighbours[v] for v in nb)


def test_secagg_plus_graph_falls_back_to_complete_for_small_cohorts():
    g = secagg_plus_graph(range(1, 31), np.random.default_rng(0))
    p = plus_parameters(30)
    assert p.complete and not p.meets_targets
    assert g.max_degree() == 29 and set(g.thresholds.values()) == {p.threshold}


def test_harary_threshold_validated():
    with pytest.raises(ConfigError, match="got 12"):
        harary_graph(range(1, 50), 10, np.random.default_rng(0), 12)
    with pytest.raises(ConfigError, match="got 3"):
        harary_graph(range(1, 50), 3, np.random.default_rng(0), 2)


def test_deterministic_given_rng():
    a = secagg_plus_graph(range(1, 200), np.random.default_rng(1))
    b = secagg_plus_graph(range(1, 200), np.random.default_rng(1))
    assert dict(a.neighbours) == dict(b.neighbours)


def test_complete_graph_threshold_validated():
    with pytest.raises(ConfigError, match="got 6"):
        complete_graph([1, 2, 3, 4, 5], 6)


@pytest.mark.parametrize("n, degree", [(12, 4), (100, 10), (41, 40), (7, 6)])
def test_holder_counts_agree_with_one_intersection_per_device(n: int, degree: int) -> None:
    # The server's vectorized count must be exactly len(holders(u) & group), for any group
    # (strangers included), on sparse, complete-fallback and complete graphs alike.
    rng = np.random.default_rng(n)
    ids = sorted(int(i) for i in rng.choice(np.arange(1, 3 * n), size=n, replace=False))
    graphs = [harary_graph(ids, degree, np.random.default_rng(1), 2), complete_graph(ids, 2)]
    for _ in range(25):
        size = int(rng.integers(0, 2 * n))
        group = {int(i) for i in rng.choice(np.arange(1, 4 * n), size=size, replace=False)}
        for g in graphs:
            assert g.holder_counts(group) == {u: len(g.holders(u) & group) for u in g.ids}
