"""Device side of SecAgg/SecAgg+: one pure function per round.

Each step returns ``(new_state, message)``; the message is an ``Abort`` when
the device refuses to continue, in which case the new state is terminal and
nothing secret was put in the message. Unmasking is where a lying server could
learn an input (by getting both b_u and s_u^SK shares for the same u), so that
step checks the server's lists against everything this device has seen. In
malicious-server mode (``config.malicious``) a consistency check comes first:
the device signs its view of who dropped (``sign_view``) and, before unmasking,
checks its neighbours' signed views (:mod:`fedactors.secagg.consistency`), so
that the server cannot tell different holders different stories.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Optional, Union

import numpy as np

from fedactors.secagg import consistency, keys, prg, shamir
from fedactors.secagg.messages import (
    Abort,
    AdvertiseKeys,
    ConsistencyRequest,
    KeyBroadcast,
    MaskedInput,
    SecAggConfig,
    ShareDelivery,
    ShareKeys,
    SignedView,
    UnmaskRequest,
    UnmaskResponse,
    empty_mapping,
)


def _empty() -> Mapping:
    return MappingProxyType({})
SECRET_BYTES = 32


@dataclass(frozen=True)
class ClientState:
    config: SecAggConfig
    device_id: int
    phase: str  # advertised -> shared -> masked -> [signed, malicious mode] -> done | aborted
    c_pair: keys.KeyPair
    s_pair: keys.KeyPair
    # U1 within N[u], including this device.
    peer_keys: Mapping[int, tuple[bytes, bytes]] = field(default_factory=empty_mapping)
    b_seed: Optional[bytes] = None
    u2: frozenset[int] = frozenset()  # peers whose shares this device holds, incl. self
    held_b: Mapping[int, shamir.Share] = field(default_factory=empty_mapping)
    held_s: Mapping[int, shamir.Share] = field(default_factory=empty_mapping)
    # Per-peer bundle keys from round 1, kept so round 2 need not redo the X25519 agreement.
    aead_keys: Mapping[int, bytes] = field(default_factory=empty_mapping)
    # Malicious mode: the (sorted alive, sorted dropped) view this device signed.
    view: Optional[tuple[tuple[int, ...], tuple[int, ...]]] = None
    abort: Optional[Abort] = field(default=None)

    @property
    def threshold(self) -> int:
        return self.config.graph.thresholds[self.device_id]


def _abort(state: ClientState, step: str, reason: str) -> tuple[ClientState, Abort]:
    a = Abort(f"device {state.device_id}", step, reason)
    return replace(state, phase="aborted", abort=a), a


def _bundle(sender: int, recipient: int, b: shamir.Share, s: shamir.Share) -> bytes:
    return (sender.to_bytes(4, "little") + recipient.to_bytes(4, "little")
            + b.to_bytes() + s.to_bytes())


def _unbundle(data: bytes) -> tuple[int, int, shamir.Share, shamir.Share]:
    half = (len(data) - 8) // 2
    return (int.from_bytes(data[:4], "little"), int.from_bytes(data[4:8], "little"),
            shamir.Share.from_bytes(data[8 : 8 + half]), shamir.Share.from_bytes(data[8 + half :]))


def advertise_keys(
    config: SecAggConfig, device_id: int, rng: np.random.Generator,
    signing_key: Optional[keys.SigningKey] = None,
) -> tuple[ClientState, AdvertiseKeys]:
    """Round 0: fresh key pairs c (encrypting shares) and s (pairwise masks).

    Malicious-server mode: signed with ``signing_key`` (the device's PKI key), so that a
    server relaying them cannot put keys of its own in their place and read the bundles."""
    if device_id not in config.graph.neighbours:
        raise ValueError(f"device_id {device_id!r} is not in the communication graph")
    c, s = keys.generate_keypair(rng), keys.generate_keypair(rng)
    state = ClientState(config, device_id, "advertised", c, s)
    signature = b""
    if config.malicious:
        if signing_key is None or signing_key.public != config.verification_keys[device_id]:
            raise ValueError(f"device {device_id} needs its PKI signing key in malicious mode")
        signature = keys.sign(signing_key, consistency.keys_bytes(
            config.round_id, device_id, c.public, s.public))
    return state, AdvertiseKeys(device_id, c.public, s.public, signature)


def share_keys(
    state: ClientState, msg: KeyBroadcast, rng: np.random.Generator
) -> tuple[ClientState, Union[ShareKeys, Abort]]:
    """Round 1: Shamir-share b_u and s_u^SK to U1 ∩ N[u], each bundle encrypted to its holder."""
    step, me = "share_keys", state.device_id
    if state.phase != "advertised":
        return _abort(state, step, f"called in phase {state.phase!r}")
    if msg.recipient != me:
        return _abort(state, step, f"broadcast addressed to {msg.recipient}")
    if msg.keys.get(me) != (state.c_pair.public, state.s_pair.public):
        return _abort(state, step, "broadcast does not carry this device's own keys")
    unknown = set(msg.keys) - state.config.graph.holders(me)
    if unknown:
        return _abort(state, step, f"keys of non-neighbours {sorted(unknown)}")
    flat = [k for pair in msg.keys.values() for k in pair]
    if len(set(flat)) != len(flat):
        return _abort(state, step, "public keys are not all distinct")
    if state.config.malicious:
        for v in sorted(msg.keys):
            sig = msg.signatures.get(v, b"")
            if not consistency.keys_signed(state.config, v, *msg.keys[v], sig):
                return _abort(state, step, f"keys of device {v} are not signed by its PKI key")
    if len(msg.keys) < state.threshold:
        return _abort(state, step, f"{len(msg.keys)} peers < threshold {state.threshold}")
    holders = sorted(msg.keys)
    b_seed = rng.bytes(SECRET_BYTES)
    b_shares = shamir.split(b_seed, state.threshold, holders, rng)
    s_shares = shamir.split(state.s_pair.private_bytes(), state.threshold, holders, rng)
    cts, aead = {}, {}
    rid = state.config.round_id
    for v in holders:
        if v == me:
            continue
        aead[v] = keys.aead_key(state.c_pair.private, msg.keys[v][0])
        cts[v] = keys.encrypt(aead[v], _bundle(me, v, b_shares[v], s_shares[v]), me, v, rid, rng)
    new = replace(
        state, phase="shared", peer_keys=MappingProxyType(dict(msg.keys)), b_seed=b_seed,
        held_b=MappingProxyType({me: b_shares[me]}), held_s=MappingProxyType({me: s_shares[me]}),
        aead_keys=MappingProxyType(aead),
    )
    return new, ShareKeys(me, MappingProxyType(cts))


def masked_input(
    state: ClientState, msg: ShareDelivery, x: np.ndarray
) -> tuple[ClientState, Union[MaskedInput, Abort]]:
    """Round 2: y_u = x_u + PRG(b_u) + sum_{v<u} PRG(s_uv) - sum_{v>u} PRG(s_uv) mod 2**k."""
    step, me, cfg = "masked_input", state.device_id, state.config
    if state.phase != "shared":
        return _abort(state, step, f"called in phase {state.phase!r}")
    if msg.recipient != me:
        return _abort(state, step, f"delivery addressed to {msg.recipient}")
    x = np.asarray(x)
    if x.shape != (cfg.dim,) or not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"input must be an integer vector of shape ({cfg.dim},), got "
                         f"{x.dtype} {x.shape}")
    if x.size and (int(x.min()) < 0 or int(x.max()) >> cfg.modulus_bits):
        raise ValueError(f"input values must lie in [0, 2**{cfg.modulus_bits})")
    bad = set(msg.ciphertexts) - (set(state.peer_keys) - {me})
    if bad:
        return _abort(state, step, f"bundles from devices not in U1 ∩ N(u): {sorted(bad)}")
    held_b, held_s = dict(state.held_b), dict(state.held_s)
    for u, ct in msg.ciphertexts.items():
        try:
            plain = keys.decrypt(state.aead_keys[u], ct, u, me, cfg.round_id)
            sender, recipient, b, s = _unbundle(plain)
        except (keys.DecryptionError, shamir.ShamirError) as e:
            return _abort(state, step, str(e))
        if (sender, recipient, b.x, s.x) != (u, me, me, me):
            return _abort(state, step, f"bundle from {u} is mislabelled")
        held_b[u], held_s[u] = b, s
    u2 = frozenset(held_b)
    if len(u2) < state.threshold:
        return _abort(state, step, f"{len(u2)} peers < threshold {state.threshold}")
    mask = np.uint64((1 << cfg.modulus_bits) - 1)
    y = x.astype(np.uint64) + prg.expand(state.b_seed, cfg.dim, cfg.modulus_bits)
    for v in sorted(u2 - {me}):
        seed = keys.mask_seed(state.s_pair.private, state.peer_keys[v][1], cfg.round_id)
        p = prg.expand(seed, cfg.dim, cfg.modulus_bits)
        # uint64 wraps mod 2**64, a multiple of 2**k, so masking at the end is exact.
        if v < me:
            y += p
        else:
            y -= p
    y &= mask
    new = replace(state, phase="masked", u2=u2, held_b=MappingProxyType(held_b),
                  held_s=MappingProxyType(held_s))
    return new, MaskedInput(me, y, cfg.modulus_bits)


def _lists_problem(state: ClientState, alive_list: tuple[int, ...],
                   dropped_list: tuple[int, ...]) -> Optional[str]:
    """Why the server's alive/dropped lists contradict what this device saw (None if they fit).

    They must partition exactly the peers whose shares it holds (U2 ∩ N[u]), with itself
    alive, and leave at least t alive. Used for the view it signs and the list it unmasks for.
    """
    me = state.device_id
    alive, dropped = set(alive_list), set(dropped_list)
    if len(alive) != len(alive_list) or len(dropped) != len(dropped_list):
        return "a device is listed twice"
    if alive & dropped:
        return f"devices listed both alive and dropped: {sorted(alive & dropped)}"
    if me in dropped:
        return "this device is listed as dropped"
    if me not in alive:
        return "this device is missing from the alive list"
    listed = alive | dropped
    early = (listed & set(state.peer_keys)) - state.u2
    if early:
        return f"devices that dropped before round 2 reappear: {sorted(early)}"
    unknown = listed - state.u2
    if unknown:
        return f"unknown devices listed: {sorted(unknown)}"
    if listed != state.u2:
        return f"devices omitted from both lists: {sorted(state.u2 - listed)}"
    if len(alive) < state.threshold:
        return f"{len(alive)} alive < threshold {state.threshold}"
    return short_sum(state.config, me, len(alive))


def short_sum(config: SecAggConfig, me: int, alive: int) -> Optional[str]:
    """Why a device that holds shares of every device refuses to help unmask a sum of
    ``alive`` inputs (None if it may). On the complete graph its alive list is the whole
    sum, so it can hold a lying server to ``min_inputs``; on a sparse graph no device sees
    the whole sum and only the server's own check applies. Shared with ``modeled``."""
    if len(config.graph.neighbours[me]) + 1 == len(config.graph.neighbours) \
            and alive < config.min_inputs:
        return f"{alive} alive < min_inputs {config.min_inputs}: too few inputs in the sum"
    return None


def sign_view(
    state: ClientState, msg: ConsistencyRequest, signing_key: keys.SigningKey
) -> tuple[ClientState, Union[SignedView, Abort]]:
    """Malicious mode, round 3: check the server's view of who dropped and sign it, once.

    ``signing_key`` is this device's long-term key, whose public half the PKI lists in
    ``config.verification_keys``."""
    step, me, cfg = "sign_view", state.device_id, state.config
    if not cfg.malicious:
        return _abort(state, step, "no consistency check in an honest-but-curious round")
    if state.phase != "masked":  # one signed view per round: the soundness argument needs it
        return _abort(state, step, f"called in phase {state.phase!r}")
    if signing_key.public != cfg.verification_keys[me]:
        raise ValueError(f"signing key of device {me} does not match its verification key")
    if msg.recipient != me:
        return _abort(state, step, f"request addressed to {msg.recipient}")
    why = _lists_problem(state, msg.alive, msg.dropped)
    if why:
        return _abort(state, step, why)
    view = consistency.sign(signing_key, cfg.round_id, me, msg.alive, msg.dropped)
    return replace(state, phase="signed", view=(view.alive, view.dropped)), view


def unmask(
    state: ClientState, msg: UnmaskRequest
) -> tuple[ClientState, Union[UnmaskResponse, Abort]]:
    """Round 3 (4 in malicious mode): per peer, the b share if it is alive, else the s^SK
    share; never both. In malicious mode only after the signed views check out."""
    step, me, cfg = "unmask", state.device_id, state.config
    expected = "signed" if cfg.malicious else "masked"
    if state.phase != expected:
        return _abort(state, step, f"called in phase {state.phase!r}")
    if msg.recipient != me:
        return _abort(state, step, f"request addressed to {msg.recipient}")
    why = _lists_problem(state, msg.alive, msg.dropped)
    if why:
        return _abort(state, step, why)
    if cfg.malicious:
        signed = state.view or ((), ())  # phase "signed" always comes with a view
        if (tuple(sorted(msg.alive)), tuple(sorted(msg.dropped))) != signed:
            return _abort(state, step, "request lists differ from the view this device signed")
        why = consistency.views_problem(cfg, me, *signed, msg.views)
        if why:
            return _abort(state, step, why)
    resp = UnmaskResponse(
        me,
        MappingProxyType({v: state.held_b[v] for v in sorted(msg.alive)}),
        MappingProxyType({v: state.held_s[v] for v in sorted(msg.dropped)}),
    )
    return replace(state, phase="done"), resp
