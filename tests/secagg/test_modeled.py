"""Modeled mode's counting shortcuts agree with what the real protocol builds."""

from __future__ import annotations

import numpy as np

from fedactors.secagg import consistency
from fedactors.secagg.graph import complete_graph, harary_graph
from fedactors.secagg.modeled import _forwarded_views


def test_forwarded_views_are_counted_as_the_real_server_forwards_them() -> None:
    # The real server forwards to signer v the views of every signer holding shares of a
    # device listed for v (set unions); modeled mode counts them from the neighbour table
    # (sparse) or at once (complete). Any U2, U4 and view sizes: the same counts and bytes.
    rng = np.random.default_rng(3)
    for trial in range(30):
        n = int(rng.integers(8, 60))
        degree = 2 * int(rng.integers(1, (n - 2) // 2 + 1))
        ids = sorted(int(i) for i in rng.choice(np.arange(1, 4 * n), size=n, replace=False))
        for graph in (harary_graph(ids, degree, np.random.default_rng(trial), 2),
                      complete_graph(ids, 2)):
            u2 = frozenset(i for i in ids if rng.random() < 0.9)
            u4 = frozenset(i for i in u2 if rng.random() < 0.8)
            sizes = {w: int(rng.integers(70, 300)) for w in u4}
            forwarded = _forwarded_views(graph, u2, u4, sizes)
            for v in sorted(u4):
                listed = (graph.neighbours[v] | {v}) & u2
                signers = consistency.signers_for(graph, listed, u4)
                assert forwarded(v) == (len(signers), sum(sizes[w] for w in signers))
