"""Server-side guarantees: per-neighbourhood thresholds, strangers ignored, order enforced."""

import numpy as np
import pytest

from fedactors.secagg import client, server
from fedactors.secagg.graph import complete_graph, harary_graph
from fedactors.secagg.messages import Abort, AdvertiseKeys, MaskedInput, SecAggConfig, SecAggResult

from .helpers import K, run_to_delivery, run_to_unmask


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


# A device's masked input, tampered with: each must be refused at collect_masked, its sender
# treated as dropped at that step, and the others' sum still come out exactly.
BAD_MASKED = {
    "float64": lambda y: y.astype(np.float64),
    "float32": lambda y: y.astype(np.float32),
    "int64": lambda y: y.astype(np.int64),
    "uint32": lambda y: y.astype(np.uint32),
    "too-short": lambda y: y[:-1],
    "too-long": lambda y: np.concatenate([y, y[:1]]),
    "two-d": lambda y: y.reshape(1, -1),
    "beyond-modulus": lambda y: y | np.uint64(1 << K),
    "a-list": lambda y: [int(v) for v in y],
}


@pytest.mark.parametrize("tamper", list(BAD_MASKED), ids=list(BAD_MASKED))
def test_a_malformed_masked_input_is_refused_and_the_rest_sum_exactly(tamper):
    cfg, states, dl, inputs, srv, _ = run_to_delivery(n=5, t=3)
    msgs = []
    for u, m in dl.items():
        states[u], out = client.masked_input(states[u], m, inputs[u])
        if u == 2:
            out = MaskedInput(u, BAD_MASKED[tamper](out.y), out.modulus_bits)
            assert server.masked_input_problem(cfg, out) is not None
        else:
            assert server.masked_input_problem(cfg, out) is None
        msgs.append(out)
    srv, req = server.collect_masked(srv, msgs)
    assert not isinstance(req, Abort)
    assert srv.u3 == {1, 3, 4, 5} and all(r.dropped == (2,) for r in req.values())
    responses = []
    for u, r in req.items():
        states[u], out = client.unmask(states[u], r)
        responses.append(out)
    _, result = server.finish(srv, responses)
    assert isinstance(result, SecAggResult) and result.contributors == {1, 3, 4, 5}
    want = sum(inputs[u] for u in (1, 3, 4, 5)) & np.uint64(2**K - 1)
    np.testing.assert_array_equal(result.total, want)
    assert result.total.dtype == np.uint64


def test_masked_input_problem_names_what_is_wrong():
    cfg = SecAggConfig(0, complete_graph([1, 2, 3], 2), K, 4)
    good = np.arange(4, dtype=np.uint64)
    assert server.masked_input_problem(cfg, MaskedInput(1, good, K)) is None
    assert "dtype float64" in server.masked_input_problem(
        cfg, MaskedInput(1, good.astype(np.float64), K))
    assert "shape (3,)" in server.masked_input_problem(cfg, MaskedInput(1, good[:3], K))
    assert f"2**{K}" in server.masked_input_problem(
        cfg, MaskedInput(1, good | np.uint64(1 << K), K))
    assert "modulus_bits" in server.masked_input_problem(cfg, MaskedInput(1, good, K + 1))
    assert "MaskedInput" in server.masked_input_problem(cfg, object())


def test_a_sum_of_a_single_masked_input_is_never_unmasked() -> None:
    from fedactors.secagg.messages import Abort
    from tests.secagg.helpers import run_to_unmask

    # Two devices, threshold 1: every neighbourhood could still be recovered, but
    # unmasking one survivor's "sum" would give the server its input.
    _, _, req, _, _ = run_to_unmask(n=2, t=1, drop_before_masked=(2,))
    assert isinstance(req, Abort) and "at least 2" in req.reason
    _, _, req, _, _ = run_to_unmask(n=2, t=1)
    assert not isinstance(req, Abort)
