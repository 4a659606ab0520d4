"""Server-side guarantees: per-neighbourhood thresholds, strangers ignored, order enforced."""

import numpy as np

from fedactors.secagg import client, server
from fedactors.secagg.graph import harary_graph
from fedactors.secagg.messages import Abort, AdvertiseKeys, SecAggConfig

from .helpers import run_to_unmask


def _advertise(cfg, ids):
    return [client.advertise_keys(cfg, u, np.random.default_rng(u))[1] for u in ids]


def test_sparse_neighbourhood_below_threshold_aborts():
    ids = list(range(1, 21))
    g = harary_graph(ids, 4, np.random.default_rng(0), 3)  # |N[u]| = 5, t = 3
    cfg = SecAggConfig(0, g, 16, 8)
    victim = 1
    gone = sorted(g.neighbours[victim])[:3]  # leaves victim with 2 holders < 3
    _, out = server.collect_keys(server.start(cfg), _advertise(cfg, set(ids) - set(gone)))
    assert isinstance(out, Abort) and "threshold 3" in out.reason
    _, ok = server.collect_keys(server.start(cfg), _advertise(cfg, set(ids) - set(gone[:2])))
    assert not isinstance(ok, Abort)
    assert set(ok[victim].keys) == g.holders(victim) - set(gone[:2])


def test_strangers_and_duplicates_ignored():
    from fedactors.secagg.graph import complete_graph
    cfg = SecAggConfig(0, complete_graph([1, 2, 3], 2), 16, 8)
    msgs = _advertise(cfg, [1, 2, 3])
    extra = [AdvertiseKeys(42, b"x" * 32, b"y" * 32), AdvertiseKeys(1, b"z" * 32, b"w" * 32)]
    st, out = server.collect_keys(server.start(cfg), msgs + extra)
    assert set(st.public_keys) == {1, 2, 3}
    assert st.public_keys[1] == (msgs[0].c_public, msgs[0].s_public)


def test_steps_out_of_order_abort():
    _, _, _, _, srv = run_to_unmask(n=4, t=2)
    st, out = server.collect_keys(srv, [])
    assert isinstance(out, Abort) and "phase" in out.reason and st.phase == "aborted"


def test_unmask_lists_partition_the_neighbourhood():
    _, _, req, _, _ = run_to_unmask(n=6, t=3, drop_before_masked=(4,))
    for r in req.values():
        assert set(r.alive) == {1, 2, 3, 5, 6} and r.dropped == (4,)
