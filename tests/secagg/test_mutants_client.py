"""Device-side aborts say who stopped, at which step and why, and are kept in the terminal state;
round 2 checks its input and its share bundles (found by mutation testing)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest

from fedactors.secagg import client, keys, shamir
from fedactors.secagg.client import ClientState
from fedactors.secagg.graph import complete_graph
from fedactors.secagg.messages import (
    Abort,
    KeyBroadcast,
    MaskedInput,
    SecAggConfig,
    ShareDelivery,
    UnmaskRequest,
)

from .helpers import DIM, K, run_to_delivery, run_to_unmask


def _assert_abort(state: ClientState, out: object, device: int, step: Callable, phrase: str) -> None:
    """A clean device abort: names the device and the step, says why, and the state keeps it."""
    assert isinstance(out, Abort), out
    assert out.party == f"device {device}"
    assert out.step == step.__name__
    assert phrase in out.reason
    assert state.phase == "aborted" and state.abort == out


def test_a_device_outside_the_graph_cannot_advertise() -> None:
    """advertise_keys for an id not in the graph is a caller bug: ValueError naming that id."""
    cfg = SecAggConfig(0, complete_graph([1, 2, 3], 2), K, DIM)
    with pytest.raises(ValueError, match="device_id 99 "):
        client.advertise_keys(cfg, 99, np.random.default_rng(0))


# --- round 2: masked_input ------------------------------------------------------------------

def _mislabelled(sender_label: int, share_x: int) -> tuple[ClientState, ShareDelivery]:
    """Device 2 sends device 1 a well-encrypted bundle whose labels are not (2 -> 1, x = 1)."""
    cfg, states, dl, _, _, _ = run_to_delivery(n=4, t=2)
    rng = np.random.default_rng(7)
    shares = shamir.split(bytes(32), 2, [1, 2, 3, 4], rng)
    plain = client._bundle(sender_label, 1, shares[share_x], shares[share_x])
    ct = keys.encrypt(states[2].aead_keys[1], plain, 2, 1, cfg.round_id, rng)
    return states[1], ShareDelivery(1, {**dl[1].ciphertexts, 2: ct})


def _masked(kind: str) -> tuple[ClientState, ShareDelivery]:
    _, states, dl, _, _, _ = run_to_delivery(n=4, t=3)
    good = dict(dl[1].ciphertexts)
    if kind == "wrong_recipient":
        return states[1], ShareDelivery(2, good)
    if kind == "stranger":
        return states[1], ShareDelivery(1, {**good, 9: good[2]})
    if kind == "tampered":
        ct = bytearray(good[2])
        ct[-1] ^= 1
        return states[1], ShareDelivery(1, {**good, 2: bytes(ct)})
    if kind == "too_few":
        return states[1], ShareDelivery(1, {2: good[2]})  # self + 1 < t = 3
    raise AssertionError(kind)


@pytest.mark.parametrize("make, phrase", [
    (lambda: _masked("wrong_recipient"), "addressed to 2"),
    (lambda: _masked("stranger"), "[9]"),
    (lambda: _masked("tampered"), "authentication"),
    (lambda: _masked("too_few"), "threshold 3"),
    (lambda: _mislabelled(sender_label=3, share_x=1), "mislabelled"),
    (lambda: _mislabelled(sender_label=2, share_x=3), "mislabelled"),
], ids=["wrong_recipient", "stranger", "tampered", "too_few", "wrong_sender", "wrong_holder"])
def test_round_two_refusals_are_clean_aborts(make: Callable, phrase: str) -> None:
    """Every masked_input refusal is an Abort naming device 1, the step and the cause."""
    state, delivery = make()
    new, out = client.masked_input(state, delivery, np.zeros(DIM, np.uint64))
    _assert_abort(new, out, 1, client.masked_input, phrase)
    assert new.held_b == state.held_b  # nothing from the bad delivery is kept


def test_round_two_in_the_wrong_phase_is_a_clean_abort() -> None:
    """masked_input before share_keys (or twice) aborts at that step, saying which phase."""
    _, states, dl, inputs, _, _ = run_to_delivery(n=4, t=2)
    done, _ = client.masked_input(states[1], dl[1], inputs[1])
    new, out = client.masked_input(done, dl[1], inputs[1])
    _assert_abort(new, out, 1, client.masked_input, "'masked'")


def test_exactly_threshold_share_holders_is_enough() -> None:
    """With t = 2 and one peer's bundle (self + 1 = t holders) the device masks its input."""
    _, states, dl, inputs, _, _ = run_to_delivery(n=4, t=2)
    new, out = client.masked_input(states[1], ShareDelivery(1, {2: dl[1].ciphertexts[2]}), inputs[1])
    assert isinstance(out, MaskedInput) and new.phase == "masked" and new.u2 == {1, 2}


@pytest.mark.parametrize("x", [
    np.zeros(DIM, np.float64),          # right shape, not integers
    np.zeros(DIM + 1, np.uint64),       # integers, wrong length
    np.zeros((DIM, 1), np.uint64),
])
def test_input_must_be_an_integer_vector_of_the_configured_length(x: np.ndarray) -> None:
    """A malformed input is a caller bug: ValueError quoting the expected shape, not a mask."""
    _, states, dl, _, _, _ = run_to_delivery(n=4, t=2)
    with pytest.raises(ValueError, match=rf"\({DIM},\)"):
        client.masked_input(states[1], dl[1], x)


@pytest.mark.parametrize("bad", [2**K, 2**K + 5, -1])
def test_input_values_must_lie_in_the_modulus_range(bad: int) -> None:
    """Any coordinate outside [0, 2**k) raises ValueError naming the modulus; the edges pass."""
    _, states, dl, _, _, _ = run_to_delivery(n=4, t=2)
    x = np.zeros(DIM, np.int64)
    x[3] = bad
    with pytest.raises(ValueError, match=rf"2\*\*{K}"):
        client.masked_input(states[1], dl[1], x)
    x[3] = 2**K - 1
    _, out = client.masked_input(states[1], dl[1], x)
    assert isinstance(out, MaskedInput)


# --- round 3: unmask ------------------------------------------------------------------------

@pytest.mark.parametrize("u, alive, dropped, phrase", [
    (2, (1, 2, 3, 4, 5), (6,), "addressed to 2"),
    (1, (1, 2, 2, 3, 4, 5), (6,), "listed twice"),
    (1, (1, 2, 3, 4, 5, 6), (6,), "both alive and dropped: [6]"),
    (1, (1, 2, 3, 4, 5, 6), (5, 6), "both alive and dropped: [5, 6]"),
    (1, (2, 3, 4, 5), (1, 6), "listed as dropped"),
    (1, (2, 3, 4, 5), (6,), "missing from the alive"),
    (1, (1, 2, 3, 4, 5), (6, 99), "unknown devices listed: [99]"),
    (1, (1, 2, 3, 4), (6,), "omitted from both lists: [5]"),
    (1, (1, 2), (3, 4, 5, 6), "threshold 4"),
])
def test_unmask_refusals_name_device_step_and_offending_ids(
    u: int, alive: tuple[int, ...], dropped: tuple[int, ...], phrase: str
) -> None:
    """Each inconsistent request is an Abort at the unmask step that names the culprit ids."""
    _, states, _, _, _ = run_to_unmask(n=6, t=4, drop_before_masked=(6,))
    new, out = client.unmask(states[1], UnmaskRequest(u, alive, dropped))
    _assert_abort(new, out, 1, client.unmask, phrase)


def test_unmask_twice_is_refused_naming_the_phase() -> None:
    """A second unmask request (after 'done') aborts and says the phase it came in."""
    _, states, req, _, _ = run_to_unmask(n=5, t=3)
    done, first = client.unmask(states[1], req[1])
    assert not isinstance(first, Abort)
    new, out = client.unmask(done, req[1])
    _assert_abort(new, out, 1, client.unmask, "'done'")


def test_a_peer_that_dropped_before_round_two_is_reported_as_reappearing() -> None:
    """A peer with keys but no shares listed again is named as a reappearing early dropout."""
    _, states, dl, inputs, _, _ = run_to_delivery(n=4, t=2)
    # Device 1 never got device 4's bundle: 4 is in its U1 (keys) but not in its U2.
    partial = ShareDelivery(1, {v: c for v, c in dl[1].ciphertexts.items() if v != 4})
    masked, _ = client.masked_input(states[1], partial, inputs[1])
    for alive, dropped in [((1, 2, 3, 4), ()), ((1, 2, 3), (4,))]:
        new, out = client.unmask(masked, UnmaskRequest(1, alive, dropped))
        _assert_abort(new, out, 1, client.unmask, "reappear: [4]")


def test_share_keys_abort_names_its_step() -> None:
    """share_keys in the wrong phase aborts at the share_keys step, naming the phase."""
    _, states, _, _, _, rngs = run_to_delivery(n=4, t=2)
    new, out = client.share_keys(states[1], KeyBroadcast(1, {}), rngs[1])
    _assert_abort(new, out, 1, client.share_keys, "'shared'")


def _advertised() -> tuple[ClientState, dict[int, tuple[bytes, bytes]]]:
    """Device 1's state after round 0 of a complete graph over 1..3 with t = 2, and all keys."""
    cfg = SecAggConfig(0, complete_graph([1, 2, 3], 2), K, DIM)
    rng = np.random.default_rng(0)
    adverts = {u: client.advertise_keys(cfg, u, rng) for u in (1, 2, 3)}
    return adverts[1][0], {u: (m.c_public, m.s_public) for u, (_, m) in adverts.items()}


@pytest.mark.parametrize("recipient, pick, phrase", [
    (2, lambda k: k, "addressed to 2"),
    (1, lambda k: {2: k[2], 3: k[3]}, "own keys"),
    (1, lambda k: {1: k[1], 2: k[2], 7: k[3]}, "non-neighbours [7]"),
    (1, lambda k: {1: k[1], 2: k[2], 3: k[2]}, "not all distinct"),
    (1, lambda k: {1: k[1]}, "1 peers < threshold 2"),
], ids=["wrong_recipient", "own_keys_missing", "stranger", "duplicate_keys", "too_few"])
def test_round_one_refusals_are_clean_aborts(recipient: int, pick: Callable, phrase: str) -> None:
    """Every share_keys refusal is an Abort naming device 1, the step and the cause."""
    state, keys_of = _advertised()
    new, out = client.share_keys(state, KeyBroadcast(recipient, pick(keys_of)), np.random.default_rng(1))
    _assert_abort(new, out, 1, client.share_keys, phrase)


def test_exactly_threshold_peers_in_the_broadcast_is_enough() -> None:
    """With t = 2, a broadcast of this device and one peer (t keys) lets it share."""
    state, keys_of = _advertised()
    new, out = client.share_keys(state, KeyBroadcast(1, {1: keys_of[1], 2: keys_of[2]}),
                                 np.random.default_rng(1))
    assert not isinstance(out, Abort) and new.phase == "shared" and set(out.ciphertexts) == {2}
