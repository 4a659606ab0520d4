"""Malicious-server mode: signed views, and a server that lies about who dropped.

A lying server is planted with ``run_protocol(..., tamper=...)`` (it rewrites the honest
server's replies) or by driving the pure steps by hand. What must never happen is the server
holding t shares of both b_u and s_u^SK of one device; what must happen instead is an abort.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedactors.secagg import client, consistency, keys, server, shamir
from fedactors.secagg.graph import complete_graph, harary_graph
from fedactors.secagg.messages import (
    Abort,
    ConsistencyRequest,
    MaskedInput,
    SecAggConfig,
    SecAggResult,
    SignedView,
    UnmaskRequest,
    UnmaskResponse,
)
from fedactors.secagg.parameters import plus_parameters
from fedactors.secagg.simulate import MALICIOUS_UNMASK, SIGN_VIEW, run_protocol

from .helpers import DIM, K, random_inputs, run_to_delivery

N, T = 8, 5  # 2t - (k+1) = 2: the complete graph resists a lying server with < 2 corrupt
IDS = list(range(1, N + 1))
MOD = np.uint64((1 << K) - 1)


def _plain_sum(inputs, ids):
    total = np.zeros(DIM, np.uint64)
    for u in ids:
        total += inputs[u]
    return total & MOD


def _run(graph=None, drop_at=None, seed=0, malicious=True, tamper=None):
    graph = complete_graph(IDS, T) if graph is None else graph
    rng = np.random.default_rng(seed)
    inputs = random_inputs(sorted(graph.ids), rng)
    trace = run_protocol(inputs, graph, K, rng, drop_at, malicious=malicious, tamper=tamper)
    return inputs, trace


def _shares_received(trace, u: int) -> tuple[int, int]:
    """(b shares, s^SK shares) of device u among the unmask responses the server got."""
    resp = [m for m in trace.server_inbox if isinstance(m, UnmaskResponse)]
    return sum(u in m.b_shares for m in resp), sum(u in m.s_shares for m in resp)


def _assert_never_both(trace, graph) -> None:
    for u in sorted(graph.ids):
        b, s = _shares_received(trace, u)
        t = graph.thresholds[u]
        assert not (b >= t and s >= t), f"server holds {b} b-shares and {s} s-shares of {u}"


# --- an honest server: the check costs nothing but messages ---------------------------------

def _sparse():
    ids = list(range(1, 31))
    return harary_graph(ids, 10, np.random.default_rng(9), 8)  # 2t - (k+1) = 5


@pytest.mark.parametrize("graph, drop_at", [
    (complete_graph(IDS, T), {}),
    (complete_graph(IDS, T), {2: 2, 6: 1}),
    (_sparse(), {}),
    (_sparse(), {3: 2, 17: 1, 25: 0}),
], ids=["complete", "complete-drops", "sparse", "sparse-drops"])
def test_malicious_mode_gives_the_same_sum_and_masked_inputs_as_honest_mode(graph, drop_at):
    inputs, honest = _run(graph, drop_at, malicious=False)
    inputs2, checked = _run(graph, drop_at, malicious=True)
    assert all((inputs[u] == inputs2[u]).all() for u in inputs)
    for trace in (honest, checked):
        assert isinstance(trace.result, SecAggResult), trace.result
        assert not trace.client_aborts
    assert checked.result.contributors == honest.result.contributors
    np.testing.assert_array_equal(checked.result.total, honest.result.total)
    np.testing.assert_array_equal(checked.result.total, _plain_sum(inputs, honest.result.contributors))
    # The devices' keys, shares and masks come from the same streams in both modes.
    ys = [{m.sender: m.y for m in t.server_inbox if isinstance(m, MaskedInput)}
          for t in (honest, checked)]
    assert ys[0].keys() == ys[1].keys()
    assert all((ys[0][u] == ys[1][u]).all() for u in ys[0])
    assert any(isinstance(m, SignedView) for m in checked.server_inbox)
    assert not any(isinstance(m, SignedView) for m in honest.server_inbox)


@pytest.mark.slow
def test_sparse_graph_with_malicious_parameters_sums_exactly_with_dropouts():
    n = 100
    p = plus_parameters(n, 0.1, 0.02, 10.0, 20.0, malicious=True)
    assert p.meets_targets and not p.complete and 2 * p.threshold > p.degree + 1
    rng = np.random.default_rng(4)
    ids = list(range(1, n + 1))
    graph = harary_graph(ids, p.degree, rng, p.threshold)
    gone = rng.choice(ids, 8, replace=False)
    drop_at = {int(u): int(rng.integers(0, 5)) for u in gone}
    inputs, trace = _run(graph, drop_at, seed=5)
    assert isinstance(trace.result, SecAggResult), trace.result
    assert trace.result.contributors == {u for u in ids if drop_at.get(u, 99) > 2}
    np.testing.assert_array_equal(trace.result.total, _plain_sum(inputs, trace.result.contributors))


def test_traffic_counts_every_view_signed_and_forwarded():
    replies = []

    def record(step, received, out):
        replies.extend(out.values())
        return out

    _, trace = _run(drop_at={3: 2, 5: SIGN_VIEW}, tamper=record)
    assert isinstance(trace.result, SecAggResult)
    assert trace.bytes_from_server == sum(m.nbytes for m in replies)
    assert trace.bytes_to_server == sum(m.nbytes for m in trace.server_inbox)
    signed = [m for m in trace.server_inbox if isinstance(m, SignedView)]
    assert {m.sender for m in signed} == set(IDS) - {3, 5}
    for m in signed:  # 8 listed (5 alive though unsigned, 3 dropped): lengths, ids, signature
        assert m.nbytes == 4 + 8 + 4 * 8 + 64
    unmask = [m for m in replies if isinstance(m, UnmaskRequest)]
    assert {m.recipient for m in unmask} == set(IDS) - {3, 5}
    for m in unmask:  # its lists, a view count, and all six signers' views
        assert len(m.views) == 6 and m.nbytes == (4 + 8 + 4 * 8) + 4 + 6 * (4 + 8 + 4 * 8 + 64)


# --- dropouts at the consistency step -------------------------------------------------------

def _survivors_each_step(drop_at):
    return [sum(1 for u in IDS if drop_at.get(u, 99) > s) for s in range(5)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drop_at=st.dictionaries(st.sampled_from(IDS), st.integers(0, 4), max_size=N),
       seed=st.integers(0, 2**32 - 1))
def test_exact_sum_or_clean_server_abort_for_any_dropout_pattern(drop_at, seed):
    """On the complete graph the round completes iff every one of the five steps keeps t."""
    inputs, trace = _run(drop_at=drop_at, seed=seed)
    assert not trace.client_aborts  # an honest server never makes an honest device abort
    if min(_survivors_each_step(drop_at)) >= T:
        r = trace.result
        assert isinstance(r, SecAggResult), r
        assert r.contributors == {u for u in IDS if drop_at.get(u, 99) > 2}
        np.testing.assert_array_equal(r.total, _plain_sum(inputs, r.contributors))
    else:
        assert isinstance(trace.result, Abort) and trace.result.party == "server"


def test_signers_at_threshold_complete_the_round():
    # Three of eight never sign (they did send masked inputs, so they are summed): five = t.
    inputs, trace = _run(drop_at={2: SIGN_VIEW, 4: SIGN_VIEW, 7: SIGN_VIEW})
    assert isinstance(trace.result, SecAggResult), trace.result
    assert trace.result.contributors == set(IDS)
    np.testing.assert_array_equal(trace.result.total, _plain_sum(inputs, IDS))
    # Only the signers were asked to unmask, and only they answered.
    assert {m.sender for m in trace.server_inbox if isinstance(m, UnmaskResponse)} == (
        set(IDS) - {2, 4, 7})


def test_too_few_signers_abort_at_the_server_naming_the_device():
    _, trace = _run(drop_at={2: SIGN_VIEW, 4: SIGN_VIEW, 7: SIGN_VIEW, 8: SIGN_VIEW})
    r = trace.result
    assert isinstance(r, Abort) and r.party == "server" and r.step == "collect_views"
    assert "device 1: only 4 of its share holders signed their view, threshold 5" in r.reason
    assert not any(isinstance(m, UnmaskResponse) for m in trace.server_inbox)


def test_dropouts_at_unmasking_after_signing_are_counted_at_the_finish():
    _, ok = _run(drop_at={1: MALICIOUS_UNMASK, 5: MALICIOUS_UNMASK, 6: SIGN_VIEW})
    assert isinstance(ok.result, SecAggResult) and ok.result.contributors == set(IDS)
    _, short = _run(drop_at={1: MALICIOUS_UNMASK, 5: MALICIOUS_UNMASK, 6: SIGN_VIEW,
                             8: MALICIOUS_UNMASK})
    assert isinstance(short.result, Abort) and short.result.step == "finish"


# --- a server that tells holders different stories ------------------------------------------

def _split(victim: int, told_dropped: Iterable[int], forward):
    """A lying server: tells ``told_dropped`` that ``victim`` dropped (the rest that it is
    alive), then hands each signer its view back with the views ``forward(v, views)`` picks."""
    told_dropped = set(told_dropped)

    def tamper(step, received, replies):
        if step == "collect_masked":
            out = {}
            for v, r in replies.items():
                if v in told_dropped:
                    r = ConsistencyRequest(v, tuple(x for x in r.alive if x != victim),
                                           tuple(sorted(r.dropped + (victim,))))
                out[v] = r
            return out
        if step == "collect_views":
            # The honest server refused the "dropped" views (not what it sent): ignore that.
            views = {m.sender: m for m in received if isinstance(m, SignedView)}
            return {v: UnmaskRequest(v, view.alive, view.dropped,
                                     {w: views[w] for w in forward(v, views)})
                    for v, view in views.items()}
        return replies

    return tamper


ALIVE_TO, DROPPED_TO = {1, 2, 3, 7}, {4, 5, 6}  # of N = 7, t = 5: neither group has t


@pytest.mark.parametrize("forward, phrase", [
    (lambda v, views: sorted(views), "inconsistent views: device 7 "),
    # Each side sees only the views that agree with it: too few signers on either side.
    (lambda v, views: sorted(w for w in views
                             if (7 in views[w].alive) == (v in ALIVE_TO)), "signed views give"),
], ids=["all-views-forwarded", "only-agreeing-views-forwarded"])
def test_splitting_a_device_between_alive_and_dropped_is_detected(forward, phrase):
    graph = complete_graph(range(1, 8), 5)
    _, trace = _run(graph, tamper=_split(7, DROPPED_TO, forward))
    assert set(trace.client_aborts) == set(graph.ids)  # nobody released a share
    assert all(a.step == "unmask" and phrase in a.reason for a in trace.client_aborts.values())
    _assert_never_both(trace, graph)
    assert not any(isinstance(m, UnmaskResponse) for m in trace.server_inbox)


def test_the_contradiction_is_named():
    graph = complete_graph(range(1, 8), 5)
    _, trace = _run(graph, tamper=_split(7, DROPPED_TO, lambda v, views: sorted(views)))
    assert trace.client_aborts[1].reason == "inconsistent views: device 7 alive to 1, dropped to 4"
    assert trace.client_aborts[4].reason == "inconsistent views: device 7 dropped to 4, alive to 1"


def test_a_contradicting_view_aborts_even_when_t_signers_agree():
    # t = 4 of 7: the four told "alive" have t signers behind it, yet one forwarded view says
    # "dropped", which an honest server could never have collected.
    graph = complete_graph(range(1, 8), 4)
    _, trace = _run(graph, tamper=_split(7, DROPPED_TO, lambda v, views: sorted(views)))
    for v in ALIVE_TO:
        assert trace.client_aborts[v].reason.startswith("inconsistent views: device 7 alive")
    _assert_never_both(trace, graph)


# --- forwarded views that must not be believed ----------------------------------------------

def _rewrite_request_of(v: int, change):
    """A server that alters only ``v``'s unmask request (its views, its lists)."""
    def tamper(step, received, replies):
        if step != "collect_views" or isinstance(replies, Abort):
            return replies
        return {**replies, v: change(replies[v])}
    return tamper


def _with_views(req: UnmaskRequest, views) -> UnmaskRequest:
    return UnmaskRequest(req.recipient, req.alive, req.dropped, dict(views))


def _flip_bit(view: SignedView) -> SignedView:
    sig = bytearray(view.signature)
    sig[5] ^= 1
    return SignedView(view.sender, view.alive, view.dropped, bytes(sig))


def _forged_by_server(view: SignedView) -> SignedView:
    # Same content, signed with a key the server made up: not the PKI's key of that device.
    impostor = keys.generate_signing_key(np.random.default_rng(123))
    return consistency.sign(impostor, 0, view.sender, view.alive, view.dropped)


def _moved_to_dropped(view: SignedView) -> SignedView:
    # Device 3's signed view, edited to say that 8 dropped (the signature no longer fits).
    return SignedView(view.sender, tuple(x for x in view.alive if x != 8), (8,), view.signature)


@pytest.mark.parametrize("change, phrase", [
    (lambda r: _with_views(r, {**r.views, 3: _flip_bit(r.views[3])}),
     "view of device 3 has an invalid signature"),
    (lambda r: _with_views(r, {**r.views, 3: _forged_by_server(r.views[3])}),
     "view of device 3 has an invalid signature"),
    (lambda r: _with_views(r, {**r.views, 3: _moved_to_dropped(r.views[3])}),
     "view of device 3 has an invalid signature"),
    (lambda r: _with_views(r, {**r.views, 3: r.views[2]}),
     "view of device 2 forwarded as device 3's"),
    # Withheld: device 1 sees only four signers (t = 5) behind each device.
    (lambda r: _with_views(r, {w: r.views[w] for w in (1, 2, 3, 4)}),
     "only 4 signed views give device 1 as alive, threshold 5"),
    # The lists changed after signing: 8 alive in the signed view, dropped in the request.
    (lambda r: UnmaskRequest(1, tuple(x for x in r.alive if x != 8), (8,), r.views),
     "request lists differ from the view this device signed"),
], ids=["bit-flipped", "signed-by-the-server", "edited-lists", "relabelled", "withheld",
        "lists-changed"])
def test_a_bad_forwarded_view_makes_the_device_abort_before_releasing_anything(change, phrase):
    _, trace = _run(tamper=_rewrite_request_of(1, change))
    assert set(trace.client_aborts) == {1}
    a = trace.client_aborts[1]
    assert a.step == "unmask" and a.reason == phrase
    assert all(m.sender != 1 for m in trace.server_inbox if isinstance(m, UnmaskResponse))
    # The other seven still complete the round.
    assert isinstance(trace.result, SecAggResult)


def test_a_view_from_outside_the_two_hop_neighbourhood_is_refused():
    ids = list(range(1, 41))
    graph = harary_graph(ids, 4, np.random.default_rng(2), 4)  # ring: two hops = 4 each side
    v = 1
    near = consistency.signers_for(graph, graph.holders(v), ids)
    far = min(set(ids) - near)

    def tamper(step, received, replies):
        if step != "collect_views":
            return replies
        views = {m.sender: m for m in received}
        return {**replies, v: _with_views(replies[v], {**replies[v].views, far: views[far]})}

    _, trace = _run(graph, tamper=tamper)
    assert trace.client_aborts[v].reason == f"view of device {far}, which neighbours no device listed here"
    assert set(trace.client_aborts) == {v}


def test_a_server_that_forwards_no_views_gets_no_shares():
    def tamper(step, received, replies):
        if step != "collect_views":
            return replies
        return {v: UnmaskRequest(v, r.alive, r.dropped) for v, r in replies.items()}

    _, trace = _run(tamper=tamper)
    assert set(trace.client_aborts) == set(IDS)
    assert not any(isinstance(m, UnmaskResponse) for m in trace.server_inbox)


# --- the soundness bound is exact: 2t <= (k+1) + c breaks it, one corrupt fewer does not -----

def _lying_round(corrupt: set[int], alive_to: set[int], dropped_to: set[int], victim: int = 7):
    """Complete graph of 7, t = 5. The server knows the corrupt devices' signing keys and shares,
    signs both stories for them, and tells the honest ones ``alive_to``/``dropped_to``.

    Returns (b shares, s shares) of ``victim`` the server ends up with, the devices' aborts, and
    the victim's true secrets."""
    graph = complete_graph(range(1, 8), 5)
    signing = {u: keys.generate_signing_key(np.random.default_rng([7, u])) for u in graph.ids}
    cfg, states, dl, inputs, srv, _ = run_to_delivery(graph=graph, signing=signing)
    msgs = []
    for u, m in dl.items():
        states[u], out = client.masked_input(states[u], m, inputs[u])
        msgs.append(out)
    srv, req = server.collect_masked(srv, msgs)
    assert all(isinstance(r, ConsistencyRequest) for r in req.values())
    # The two stories, as signed views of every device.
    told_alive = {v: (r.alive, r.dropped) for v, r in req.items()}
    told_dropped = {v: (tuple(x for x in a if x != victim), tuple(sorted(d + (victim,))))
                    for v, (a, d) in told_alive.items()}
    story = {"alive": {}, "dropped": {}}
    for v in sorted(graph.ids):
        for name, lists in (("alive", told_alive[v]), ("dropped", told_dropped[v])):
            if v in corrupt:
                story[name][v] = consistency.sign(signing[v], cfg.round_id, v, *lists)
            elif v in (alive_to if name == "alive" else dropped_to):
                states[v], story[name][v] = client.sign_view(
                    states[v], ConsistencyRequest(v, *lists), signing[v])
                assert isinstance(story[name][v], SignedView)
    b, s, aborts = [], [], {}
    for name, group in (("alive", alive_to), ("dropped", dropped_to)):
        views = story[name]
        for v in sorted(group):
            request = UnmaskRequest(v, views[v].alive, views[v].dropped, views)
            states[v], out = client.unmask(states[v], request)
            if isinstance(out, Abort):
                aborts[v] = out
            else:
                b += [out.b_shares[victim]] if victim in out.b_shares else []
                s += [out.s_shares[victim]] if victim in out.s_shares else []
    # Corrupt holders hand over both of their shares.
    b += [states[v].held_b[victim] for v in sorted(corrupt)]
    s += [states[v].held_s[victim] for v in sorted(corrupt)]
    return b, s, aborts, (states[victim].b_seed, states[victim].s_pair.private_bytes())


def test_with_2t_minus_k_minus_1_corrupt_holders_a_lying_server_gets_both_secrets():
    # k + 1 = 7, t = 5: c = 2t - (k+1) = 3 corrupt signers back both stories.
    b, s, aborts, (b_seed, s_key) = _lying_round({4, 5, 6}, alive_to={1, 7}, dropped_to={2, 3})
    assert not aborts
    assert shamir.reconstruct(b, 5) == b_seed and shamir.reconstruct(s, 5) == s_key


@pytest.mark.parametrize("alive_to, dropped_to", [
    ({1, 2, 7}, {3, 4}), ({1, 7}, {2, 3, 4}), ({1, 2, 3, 7}, {4}),
])
def test_with_one_corrupt_holder_fewer_every_split_is_refused(alive_to, dropped_to):
    b, s, aborts, _ = _lying_round({5, 6}, alive_to, dropped_to)
    assert aborts and all("signed views give" in a.reason for a in aborts.values())
    assert not (len(b) >= 5 and len(s) >= 5)


def test_a_view_from_a_corrupt_non_holder_does_not_count_towards_a_threshold():
    # Ring of 20, k = 4, t = 4: a corrupt w two places from v signs v's own view (consistent
    # with it, and w neighbours v, so it is a view v may be sent). The server withholds two
    # holders' views of v's neighbour u, hoping w stands in for them: w holds none of u's shares.
    graph = harary_graph(list(range(1, 21)), 4, np.random.default_rng(8), 4)
    cfg, states, req, srv, signing = _to_consistency(graph=graph)
    views = {}
    for x, r in req.items():
        states[x], views[x] = client.sign_view(states[x], r, signing[x])
    srv, unmask = server.collect_views(srv, list(views.values()))
    v = 1
    u = next(x for x in sorted(graph.neighbours[v])
             if any(w not in graph.holders(x) for w in graph.neighbours[v]))
    w = min(x for x in graph.neighbours[v] if x not in graph.holders(u))
    withheld = sorted(graph.holders(u) - {u, v})[:2]
    forged = consistency.sign(signing[w], cfg.round_id, w, views[v].alive, views[v].dropped)
    sent = {x: views[x] for x in unmask[v].views if x not in withheld}
    _, out = client.unmask(states[v], _with_views(unmask[v], {**sent, w: forged}))
    assert isinstance(out, Abort) and "signed views give device" in out.reason and "threshold 4" in out.reason


# --- the device steps ------------------------------------------------------------------------

def _signing(ids):
    return {u: keys.generate_signing_key(np.random.default_rng([1, u])) for u in ids}


def _to_consistency(n=6, t=4, drop_before_masked=(), graph=None):
    """Rounds 0-2 of a malicious-mode round (``graph``: default complete, n and t)."""
    signing = _signing(range(1, n + 1) if graph is None else sorted(graph.ids))
    cfg, states, dl, inputs, srv, _ = run_to_delivery(n, t, graph=graph, signing=signing)
    msgs = []
    for u, m in dl.items():
        states[u], out = client.masked_input(states[u], m, inputs[u])
        if u not in drop_before_masked:
            msgs.append(out)
    srv, req = server.collect_masked(srv, msgs)
    return cfg, states, req, srv, signing


def test_the_server_asks_for_signatures_over_the_unmask_lists():
    _, _, req, srv, _ = _to_consistency(drop_before_masked=(6,))
    assert srv.phase == "views"
    assert set(req) == {1, 2, 3, 4, 5}
    for r in req.values():
        assert isinstance(r, ConsistencyRequest)
        assert r.alive == (1, 2, 3, 4, 5) and r.dropped == (6,)


@pytest.mark.parametrize("alive, dropped, phrase", [
    ((1, 2, 2, 3, 4, 5), (6,), "listed twice"),
    ((2, 3, 4, 5), (1, 6), "listed as dropped"),
    ((1, 2, 3, 4), (6,), "omitted from both lists: [5]"),
    ((1, 2, 3, 4, 5, 6), (6,), "both alive and dropped: [6]"),
    ((1, 2), (3, 4, 5, 6), "threshold 4"),
])
def test_sign_view_runs_the_unmask_list_checks(alive, dropped, phrase):
    _, states, _, _, signing = _to_consistency(drop_before_masked=(6,))
    new, out = client.sign_view(states[1], ConsistencyRequest(1, alive, dropped), signing[1])
    assert isinstance(out, Abort) and out.step == "sign_view" and phrase in out.reason
    assert new.phase == "aborted" and new.view is None


def test_a_device_signs_one_view_per_round():
    _, states, req, _, signing = _to_consistency(drop_before_masked=(6,))
    st1, view = client.sign_view(states[1], req[1], signing[1])
    assert isinstance(view, SignedView) and st1.phase == "signed"
    assert st1.view == ((1, 2, 3, 4, 5), (6,)) and consistency.is_validly_signed(st1.config, view)
    other = ConsistencyRequest(1, (1, 2, 3, 4, 5, 6), ())
    _, again = client.sign_view(st1, other, signing[1])
    assert isinstance(again, Abort) and "'signed'" in again.reason


def test_unmasking_needs_a_signed_view_first_and_honest_rounds_sign_nothing():
    _, states, req, _, signing = _to_consistency()
    _, out = client.unmask(states[1], UnmaskRequest(1, req[1].alive, req[1].dropped))
    assert isinstance(out, Abort) and "'masked'" in out.reason
    _, honest, dl, inputs, _, _ = run_to_delivery(6, 4)
    masked, _ = client.masked_input(honest[1], dl[1], inputs[1])
    _, out = client.sign_view(masked, req[1], signing[1])
    assert isinstance(out, Abort) and "honest-but-curious" in out.reason


def test_a_signing_key_other_than_the_pki_one_is_a_caller_bug():
    _, states, req, _, signing = _to_consistency()
    with pytest.raises(ValueError, match="does not match its verification key"):
        client.sign_view(states[1], req[1], signing[2])


def test_wrong_recipient_is_refused():
    _, states, req, _, signing = _to_consistency()
    _, out = client.sign_view(states[1], req[2], signing[1])
    assert isinstance(out, Abort) and "addressed to 2" in out.reason


# --- the server step -------------------------------------------------------------------------

def test_collect_views_keeps_only_views_it_can_forward():
    cfg, states, req, srv, signing = _to_consistency(n=7, t=4)
    views = {}
    for v, r in req.items():
        states[v], views[v] = client.sign_view(states[v], r, signing[v])
    bad = [
        _flip_bit(views[2]),                                                    # bad signature
        consistency.sign(signing[3], 0, 3, (1, 2, 3, 4, 5, 6), (7,)),           # not what was sent
        SignedView(99, views[4].alive, views[4].dropped, views[4].signature),   # a stranger
        MaskedInput(5, np.zeros(DIM, np.uint64), K),                            # not a view
    ]
    good = [views[v] for v in (1, 4, 6, 7)]
    st, out = server.collect_views(srv, bad + good + [views[2]])
    # 2's valid view came after its bad one, and is kept; 3 and 5 signed nothing acceptable.
    assert st.u4 == {1, 2, 4, 6, 7} and set(out) == st.u4
    for v, r in out.items():
        assert (r.alive, r.dropped) == (req[v].alive, req[v].dropped)
        assert set(r.views) == st.u4 and all(r.views[w] == views[w] for w in r.views)


def test_collect_views_in_the_wrong_phase_aborts():
    _, _, _, srv, _ = _to_consistency()
    st, _ = server.collect_views(srv, [])
    _, out = server.collect_views(st, [])
    assert isinstance(out, Abort) and "phase" in out.reason
    honest = run_to_delivery(4, 2)[4]
    _, out = server.collect_views(honest, [])
    assert isinstance(out, Abort) and "'masked'" in out.reason


def test_sparse_graph_forwards_exactly_the_views_of_the_listed_devices_holders():
    ids = list(range(1, 25))
    graph = harary_graph(ids, 4, np.random.default_rng(5), 4)
    signing = _signing(ids)
    cfg, states, dl, inputs, srv, _ = run_to_delivery(graph=graph, signing=signing)
    msgs = []
    for u, m in dl.items():
        states[u], out = client.masked_input(states[u], m, inputs[u])
        if u != 10:  # 10 drops: its neighbours list it as dropped
            msgs.append(out)
    srv, req = server.collect_masked(srv, msgs)
    views = []
    for v, r in req.items():
        states[v], out = client.sign_view(states[v], r, signing[v])
        views.append(out)
    srv, out = server.collect_views(srv, views)
    assert srv.u4 == set(ids) - {10}
    for r in out.values():
        listed = set(r.alive) | set(r.dropped)
        want = {w for w in srv.u4 if graph.holders(w) & listed}
        assert set(r.views) == want
    responses = []
    for v, r in out.items():
        states[v], resp = client.unmask(states[v], r)
        assert isinstance(resp, UnmaskResponse), resp
        responses.append(resp)
    _, result = server.finish(srv, responses)
    assert isinstance(result, SecAggResult)
    np.testing.assert_array_equal(result.total, _plain_sum(inputs, set(ids) - {10}))


def test_finish_takes_responses_only_from_signers():
    cfg, states, req, srv, signing = _to_consistency(n=6, t=4)
    views = []
    for v, r in req.items():
        states[v], view = client.sign_view(states[v], r, signing[v])
        if v != 6:
            views.append(view)
    srv, out = server.collect_views(srv, views)
    assert 6 not in out
    # Device 6 answers anyway, with shares the server would otherwise count.
    forged = UnmaskResponse(6, {u: states[6].held_b[u] for u in range(1, 7)}, {})
    responses = [client.unmask(states[v], r)[1] for v, r in out.items()]
    st, result = server.finish(srv, [forged] + responses)
    assert isinstance(result, SecAggResult)
    st2, short = server.finish(srv, [forged] + responses[:3])
    assert isinstance(short, Abort) and "3 b-shares" in short.reason


# --- configuration ---------------------------------------------------------------------------

def test_malicious_config_needs_every_devices_verification_key():
    g = complete_graph([1, 2, 3], 2)
    pki = {u: k.public for u, k in _signing([1, 2, 3]).items()}
    with pytest.raises(ValueError, match=r"missing \[3\]"):
        SecAggConfig(0, g, K, DIM, True, {1: pki[1], 2: pki[2]})
    with pytest.raises(ValueError, match=r"devices \[2\]"):
        SecAggConfig(0, g, K, DIM, True, {**pki, 2: b"short"})
    SecAggConfig(0, g, K, DIM)  # honest-but-curious needs no PKI


def test_the_config_keeps_its_own_copy_of_the_pki():
    g = complete_graph([1, 2, 3], 2)
    pki = {u: k.public for u, k in _signing([1, 2, 3]).items()}
    cfg = SecAggConfig(0, g, K, DIM, True, pki)
    original = dict(pki)
    pki[1] = pki[2]
    assert dict(cfg.verification_keys) == original
    with pytest.raises(TypeError):
        cfg.verification_keys[1] = pki[2]  # type: ignore[index]


def test_view_encoding_is_unambiguous_and_order_free():
    a = consistency.view_bytes(0, 1, (1, 2), (3,))
    assert a == consistency.view_bytes(0, 1, (2, 1), (3,))
    for other in [consistency.view_bytes(0, 1, (1,), (2, 3)), consistency.view_bytes(1, 1, (1, 2), (3,)),
                  consistency.view_bytes(0, 2, (1, 2), (3,)), consistency.view_bytes(0, 1, (1, 2, 3), ())]:
        assert other != a


# --- round 0: keys the server relays but cannot replace -------------------------------------

def _substitute_keys_of(victim: int):
    """A server that puts a key pair of its own in place of ``victim``'s, keeping the
    victim's signature (it cannot make one), to read the bundles sent to the victim."""
    mine = keys.generate_keypair(np.random.default_rng(99))

    def tamper(step, received, replies):
        if step != "collect_keys" or isinstance(replies, Abort):
            return replies
        out = {}
        for u, r in replies.items():
            pairs = dict(r.keys)
            if victim in pairs and u != victim:
                pairs[victim] = (mine.public, pairs[victim][1])
            out[u] = type(r)(u, pairs, r.signatures)
        return out

    return tamper


def test_a_server_substituting_a_devices_keys_is_refused_before_any_share_is_sent():
    _, trace = _run(tamper=_substitute_keys_of(3))
    # Everyone but the victim was handed the forged pair: they refuse before sharing.
    assert set(trace.client_aborts) == set(IDS) - {3}
    assert all(a.step == "share_keys" and a.reason == "keys of device 3 are not signed by "
               "its PKI key" for a in trace.client_aborts.values())
    assert isinstance(trace.result, Abort)


def test_honest_but_curious_rounds_do_not_check_key_signatures():
    # The same substitution goes unnoticed without the malicious-server mode: the reason
    # the mode exists (the bundles to device 3 would be readable by the server).
    _, trace = _run(malicious=False, tamper=_substitute_keys_of(3))
    assert not any(a.step == "share_keys" for a in trace.client_aborts.values())


def test_signed_key_advertisements_are_counted_in_the_traffic():
    signing = {u: keys.generate_signing_key(np.random.default_rng(u)) for u in IDS}
    pki = {u: k.public for u, k in signing.items()}
    cfg = SecAggConfig(0, complete_graph(IDS, T), K, DIM, True, pki)
    plain_cfg = SecAggConfig(0, complete_graph(IDS, T), K, DIM)
    _, signed = client.advertise_keys(cfg, 1, np.random.default_rng(0), signing[1])
    _, plain = client.advertise_keys(plain_cfg, 1, np.random.default_rng(0))
    assert signed.nbytes == plain.nbytes + keys.SIGNATURE_BYTES
    assert consistency.keys_signed(cfg, 1, signed.c_public, signed.s_public, signed.signature)
    assert not consistency.keys_signed(cfg, 2, signed.c_public, signed.s_public,
                                       signed.signature)
    with pytest.raises(ValueError, match="PKI signing key"):
        client.advertise_keys(cfg, 1, np.random.default_rng(0), signing[2])


def test_signers_for_equals_the_union_of_the_listed_devices_closed_neighbourhoods() -> None:
    # signers_for takes shortcuts (the complete graph; a gather over the Harary graph's
    # neighbour table); whatever the graph, U4 or list, it must be exactly the definition.
    rng = np.random.default_rng(3)
    for trial in range(30):
        n = int(rng.integers(8, 60))
        degree = 2 * int(rng.integers(1, (n - 2) // 2 + 1))
        ids = sorted(int(i) for i in rng.choice(np.arange(1, 4 * n), size=n, replace=False))
        for graph in (harary_graph(ids, degree, np.random.default_rng(trial), 2),
                      complete_graph(ids, 2)):
            u2 = frozenset(i for i in ids if rng.random() < 0.9)
            u4 = frozenset(i for i in u2 if rng.random() < 0.8)
            for v in sorted(u4):
                listed = (graph.neighbours[v] | {v}) & u2
                reach = set().union(*(graph.holders(u) for u in listed))
                assert consistency.signers_for(graph, listed, u4) == reach & u4
            assert consistency.signers_for(graph, set(), u4) == frozenset()
