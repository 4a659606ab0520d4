"""Server-side aborts say which step stopped and why and are kept in the state; dropped devices
without surviving neighbours neither block nor end the unmasking (found by mutation testing)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

from fedactors.secagg import client, server, shamir
from fedactors.secagg.graph import complete_graph, harary_graph
from fedactors.secagg.messages import Abort, MaskedInput, SecAggConfig, SecAggResult, UnmaskResponse
from fedactors.secagg.server import ServerState

from .helpers import K, run_to_delivery, run_to_unmask


def _assert_abort(state: ServerState, out: object, step: Callable, phrase: str) -> None:
    """A clean server abort: names the server and the step, says why, and the state keeps it."""
    assert isinstance(out, Abort), out
    assert out.party == "server"
    assert out.step == step.__name__
    assert phrase in out.reason
    assert state.phase == "aborted" and state.abort == out


def _state_in(phase: str) -> ServerState:
    """A server state that has reached ``phase`` honestly (n = 5, t = 3)."""
    cfg, states, dl, inputs, srv, _ = run_to_delivery(n=5, t=3)
    if phase == "masked":
        return srv
    msgs = [client.masked_input(states[u], m, inputs[u])[1] for u, m in dl.items()]
    srv, _ = server.collect_masked(srv, msgs)
    assert srv.phase == phase == "unmask"
    return srv


@pytest.mark.parametrize("step, phase", [
    (server.collect_keys, "masked"),
    (server.collect_shares, "unmask"),
    (server.collect_masked, "unmask"),
    (server.finish, "masked"),
])
def test_a_step_called_out_of_order_is_a_clean_abort(step: Callable, phase: str) -> None:
    """Each server step refuses the wrong phase with an Abort naming the step and that phase."""
    state = _state_in(phase)
    new, out = step(state, [])
    _assert_abort(new, out, step, repr(phase))


def test_nobody_advertising_keys_aborts_at_collect_keys() -> None:
    """With no AdvertiseKeys at all the round aborts at collect_keys, saying no device did."""
    cfg = SecAggConfig(0, complete_graph([1, 2, 3], 2), K, 8)
    new, out = server.collect_keys(server.start(cfg), [])
    _assert_abort(new, out, server.collect_keys, "no device")


def test_too_few_advertisers_abort_at_collect_keys_naming_the_short_device() -> None:
    """Two of five advertising (t = 3) leaves device 1 short: abort at collect_keys naming it."""
    cfg = SecAggConfig(0, complete_graph([1, 2, 3, 4, 5], 3), K, 8)
    adverts = [client.advertise_keys(cfg, u, np.random.default_rng(u))[1] for u in (1, 2)]
    new, out = server.collect_keys(server.start(cfg), adverts)
    _assert_abort(new, out, server.collect_keys, "device 1: only 2")


def test_nobody_sharing_keys_aborts_at_collect_shares() -> None:
    """With no ShareKeys at all the round aborts at collect_shares, not a step later."""
    _, _, _, _, srv = _run_keys_only()
    new, out = server.collect_shares(srv, [])
    _assert_abort(new, out, server.collect_shares, "no device")


def _run_keys_only() -> tuple[SecAggConfig, dict, dict, dict, ServerState]:
    """Rounds 0 of n = 5, t = 3; returns (config, client states, broadcasts, rngs, server)."""
    ids = [1, 2, 3, 4, 5]
    cfg = SecAggConfig(0, complete_graph(ids, 3), K, 8)
    rngs = {u: np.random.default_rng(u) for u in ids}
    states, msgs = {}, []
    for u in ids:
        states[u], m = client.advertise_keys(cfg, u, rngs[u])
        msgs.append(m)
    srv, bc = server.collect_keys(server.start(cfg), msgs)
    return cfg, states, bc, rngs, srv


def test_too_few_sharers_abort_at_collect_shares_naming_the_short_device() -> None:
    """Two of five sharing (t = 3) leaves every neighbourhood short: abort naming device 1."""
    _, states, bc, rngs, srv = _run_keys_only()
    msgs = [client.share_keys(states[u], bc[u], rngs[u])[1] for u in (1, 2)]
    new, out = server.collect_shares(srv, msgs)
    _assert_abort(new, out, server.collect_shares, "device 1: only 2")


def test_nobody_sending_a_masked_input_says_so() -> None:
    """collect_masked with no input at all aborts saying no device sent one."""
    srv = _state_in("masked")
    new, out = server.collect_masked(srv, [])
    _assert_abort(new, out, server.collect_masked, "no device")


def test_finish_leaves_the_server_done() -> None:
    """After a successful finish the state is 'done' and a second finish is refused."""
    _, states, req, inputs, srv = run_to_unmask(n=5, t=3)
    responses = [client.unmask(states[u], r)[1] for u, r in req.items()]
    done, result = server.finish(srv, responses)
    assert isinstance(result, SecAggResult) and done.phase == "done" and done.abort is None
    again, out = server.finish(done, responses)
    _assert_abort(again, out, server.finish, "'done'")


def _to_finish(drop: int) -> tuple[dict, ServerState, list[UnmaskResponse]]:
    """Complete graph n = 5, t = 3, device ``drop`` gone before round 2: (inputs, server, responses)."""
    _, states, req, inputs, srv = run_to_unmask(n=5, t=3, drop_before_masked=(drop,))
    return inputs, srv, [client.unmask(states[u], r)[1] for u, r in req.items()]


def test_too_few_key_shares_of_a_dropped_device_abort_finish() -> None:
    """If fewer than t responders return s^SK shares of a dropped device, finish aborts naming it."""
    _, srv, responses = _to_finish(drop=5)
    stingy = [UnmaskResponse(r.sender, r.b_shares, {}) if r.sender in (1, 2) else r for r in responses]
    new, out = server.finish(srv, stingy)
    _assert_abort(new, out, server.finish, "key shares of dropped device 5, need 3")


def test_key_shares_rebuilding_another_key_abort_finish() -> None:
    """s^SK shares that rebuild a key other than the one advertised abort at finish."""
    _, srv, responses = _to_finish(drop=5)
    fake = shamir.split(bytes(range(32)), 3, [1, 2, 3, 4, 5], np.random.default_rng(3))
    forged = [UnmaskResponse(r.sender, r.b_shares, {5: fake[r.sender]}) for r in responses]
    new, out = server.finish(srv, forged)
    _assert_abort(new, out, server.finish, "device 5 does not match its advertised key")


def _isolated_dropout(seed: int) -> tuple[Any, int, set[int]]:
    """A ring (k = 2, t = 1) over 1..10 and a device v below both its neighbours; drops v and them."""
    g = harary_graph(list(range(1, 11)), 2, np.random.default_rng(seed), 1)
    v = min(u for u in g.ids if u < min(g.neighbours[u]))
    return g, v, {v} | set(g.neighbours[v])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_dropped_device_without_surviving_neighbours_does_not_block_the_sum(seed: int) -> None:
    """v and both ring neighbours drop before round 2: v needs no unmasking, the rest sum exactly."""
    g, v, gone = _isolated_dropout(seed)
    _, states, dl, inputs, srv, _ = run_to_delivery(graph=g)
    msgs = [client.masked_input(states[u], m, inputs[u]) for u, m in dl.items()]
    for u, (st, _) in zip(dl, msgs):
        states[u] = st
    srv, req = server.collect_masked(srv, [m for u, (_, m) in zip(dl, msgs) if u not in gone])
    assert not isinstance(req, Abort), req
    responses = [client.unmask(states[u], r)[1] for u, r in req.items()]
    _, result = server.finish(srv, responses)
    assert isinstance(result, SecAggResult)
    survivors = g.ids - gone
    assert result.contributors == survivors
    want = sum(inputs[u] for u in survivors) & np.uint64(2**K - 1)
    np.testing.assert_array_equal(result.total, want)


@pytest.mark.parametrize("m, name", [
    ("not a message", "str"),
    (MaskedInput(1, [0, 1, 2, 3], K), "list"),
    (MaskedInput(1, (0, 1, 2, 3), K), "tuple"),
])
def test_masked_input_problem_names_the_wrong_type(m: object, name: str) -> None:
    """A wrong message or y type is reported with the type actually received."""
    cfg = SecAggConfig(0, complete_graph([1, 2, 3], 2), K, 4)
    problem = server.masked_input_problem(cfg, m)
    assert problem is not None and name in problem
