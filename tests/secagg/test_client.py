"""Device-side guarantees: either-or reveal, and abort-without-reveal on inconsistent lists."""

import pytest

from fedactors.secagg import client
from fedactors.secagg.messages import Abort, UnmaskRequest, UnmaskResponse

from .helpers import run_to_delivery, run_to_unmask


def test_reveals_b_for_alive_and_s_for_dropped_never_both():
    _, states, req, _, _ = run_to_unmask(n=6, t=3, drop_before_masked=(2, 5))
    for u, r in req.items():
        st, resp = client.unmask(states[u], r)
        assert isinstance(resp, UnmaskResponse)
        assert set(resp.b_shares) == set(r.alive) and set(resp.s_shares) == set(r.dropped)
        assert not set(resp.b_shares) & set(resp.s_shares)
        assert set(resp.s_shares) == {2, 5} and st.phase == "done"
        # A second request (e.g. with the lists swapped) gets nothing.
        swapped = UnmaskRequest(u, tuple(r.dropped) + (u,), tuple(v for v in r.alive if v != u))
        _, again = client.unmask(st, swapped)
        assert isinstance(again, Abort)


def _case(name, u, alive, dropped, why):
    return pytest.param(u, alive, dropped, why, id=name)


# Device 1 of 6; after round 2 it holds shares from everyone (1..6), device 6 is dropped.
@pytest.mark.parametrize("u, alive, dropped, why", [
    _case("alive_and_dropped", 1, (1, 2, 3, 4, 5, 6), (6,), "both alive and dropped"),
    _case("listed_twice_alive", 1, (1, 2, 2, 3, 4, 5), (6,), "listed twice"),
    _case("listed_twice_dropped", 1, (1, 2, 3, 4, 5), (6, 6), "listed twice"),
    _case("self_dropped", 1, (2, 3, 4, 5), (1, 6), "listed as dropped"),
    _case("self_missing", 1, (2, 3, 4, 5), (6,), "missing from the alive"),
    _case("unknown_id", 1, (1, 2, 3, 4, 5), (6, 99), "unknown devices"),
    _case("omitted_peer", 1, (1, 2, 3, 4), (6,), "omitted"),
    _case("fewer_than_t_alive", 1, (1, 2), (3, 4, 5, 6), "threshold"),
    _case("wrong_recipient", 2, (1, 2, 3, 4, 5), (6,), "addressed to"),
])
def test_inconsistent_lists_abort_without_reveal(u, alive, dropped, why):
    _, states, _, _, _ = run_to_unmask(n=6, t=4, drop_before_masked=(6,))
    st, out = client.unmask(states[1], UnmaskRequest(u, alive, dropped))
    assert isinstance(out, Abort) and st.phase == "aborted" and why in out.reason
    assert not hasattr(out, "b_shares") and not hasattr(out, "s_shares")


def test_device_dropped_before_round_two_cannot_reappear():
    # Device 4 advertises keys but never shares them: others never hold its shares.
    import numpy as np

    from fedactors.secagg import server
    from fedactors.secagg.graph import complete_graph
    from fedactors.secagg.messages import SecAggConfig

    ids = [1, 2, 3, 4]
    cfg = SecAggConfig(0, complete_graph(ids, 2), 16, 8)
    rngs = {u: np.random.default_rng(u) for u in ids}
    states, msgs = {}, []
    for u in ids:
        states[u], m = client.advertise_keys(cfg, u, rngs[u])
        msgs.append(m)
    srv, bc = server.collect_keys(server.start(cfg), msgs)
    msgs = []
    for u in [1, 2, 3]:
        states[u], m = client.share_keys(states[u], bc[u], rngs[u])
        msgs.append(m)
    srv, dl = server.collect_shares(srv, msgs)
    for u in [1, 2, 3]:
        states[u], _ = client.masked_input(states[u], dl[u], np.zeros(8, dtype=np.uint64))
    for alive, dropped in [((1, 2, 3, 4), ()), ((1, 2, 3), (4,))]:
        st, out = client.unmask(states[1], UnmaskRequest(1, alive, dropped))
        assert isinstance(out, Abort), (alive, dropped)
    st, out = client.unmask(states[1], UnmaskRequest(1, (1, 2, 3), ()))
    assert isinstance(out, UnmaskResponse)


def test_tampered_or_misrouted_bundle_aborts_round_two():
    from fedactors.secagg.messages import ShareDelivery

    _, states, dl, inputs, _, _ = run_to_delivery(n=4, t=2)
    x = inputs[1]
    good = dict(dl[1].ciphertexts)
    flipped = dict(good)
    ct = bytearray(flipped[2])
    ct[-1] ^= 1
    flipped[2] = bytes(ct)
    swapped = dict(good)
    swapped[2], swapped[3] = good[3], good[2]  # replay 3's bundle as if from 2
    stranger = dict(good)
    stranger[9] = good[2]
    for cts, why in [(flipped, "authentication"), (swapped, "authentication"),
                     (stranger, "not in U1")]:
        st, out = client.masked_input(states[1], ShareDelivery(1, cts), x)
        assert isinstance(out, Abort) and why in out.reason and st.held_b == states[1].held_b
    # Phase guard: the honest delivery works once, and a replay afterwards is refused.
    st, out = client.masked_input(states[1], dl[1], x)
    assert not isinstance(out, Abort)
    _, again = client.masked_input(st, dl[1], x)
    assert isinstance(again, Abort) and "phase" in again.reason


def test_broadcast_checks():
    import numpy as np

    from fedactors.secagg.graph import complete_graph
    from fedactors.secagg.messages import KeyBroadcast, SecAggConfig

    cfg = SecAggConfig(0, complete_graph([1, 2, 3], 2), 16, 8)
    rng = np.random.default_rng(0)
    sts = {u: client.advertise_keys(cfg, u, rng) for u in [1, 2, 3]}
    keys = {u: (m.c_public, m.s_public) for u, (_, m) in sts.items()}
    st1 = sts[1][0]
    bad = [
        {2: keys[2], 3: keys[3]},                       # own keys missing
        {1: keys[1], 2: keys[2], 3: keys[2]},           # duplicate public keys
        {1: keys[1], 2: keys[2], 7: keys[3]},           # unknown device
        {1: keys[1]},                                   # fewer than t
    ]
    for k in bad:
        _, out = client.share_keys(st1, KeyBroadcast(1, k), rng)
        assert isinstance(out, Abort), k
    _, ok = client.share_keys(st1, KeyBroadcast(1, keys), rng)
    assert not isinstance(ok, Abort)
