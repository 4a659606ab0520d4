import math

import numpy as np
import pytest

from fedactors.errors import ConfigError
from fedactors.secagg.graph import complete_graph, secagg_plus_graph


def test_secagg_plus_degree_logarithmic_and_symmetric():
    for n in [100, 1000, 5000]:
        g = secagg_plus_graph(range(1, n + 1), np.random.default_rng(n))
        assert g.max_degree() <= 3 * math.log(n) + 2
        assert min(len(v) for v in g.neighbours.values()) == g.max_degree()
        for u, nb in g.neighbours.items():
            assert all(u in g.neighbours[v] for v in nb)
            assert g.thresholds[u] > (len(nb) + 1) / 2


def test_deterministic_given_rng():
    a = secagg_plus_graph(range(1, 200), np.random.default_rng(1))
    b = secagg_plus_graph(range(1, 200), np.random.default_rng(1))
    assert dict(a.neighbours) == dict(b.neighbours)


def test_complete_graph_threshold_validated():
    with pytest.raises(ConfigError, match="got 6"):
        complete_graph([1, 2, 3, 4, 5], 6)
