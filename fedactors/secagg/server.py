"""Server side of SecAgg/SecAgg+: collect each round from whoever answered, route, and finally
remove the masks. Every step returns ``(new_state, replies)`` where replies is a dict of
per-device messages, or an ``Abort`` when some neighbourhood fell below its threshold.

In malicious-server mode (``config.malicious``) ``collect_masked`` asks each survivor to sign
its view of who dropped, and ``collect_views`` forwards the signed views with the unmask
requests (:mod:`fedactors.secagg.consistency`); this module is still the *honest* server, which
a test can make lie by rewriting its replies."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Optional, Union

import numpy as np

from fedactors.secagg import consistency, keys, prg, shamir
from fedactors.secagg.graph import CommGraph
from fedactors.secagg.messages import (
    MIN_INPUTS,
    Abort,
    AdvertiseKeys,
    ConsistencyRequest,
    KeyBroadcast,
    MaskedInput,
    SecAggConfig,
    SecAggResult,
    ShareDelivery,
    ShareKeys,
    SignedView,
    UnmaskRequest,
    UnmaskResponse,
    empty_mapping,
)


@dataclass(frozen=True)
class ServerState:
    config: SecAggConfig
    phase: str  # keys -> shares -> masked -> [views, malicious mode] -> unmask -> done | aborted
    public_keys: Mapping[int, tuple[bytes, bytes]] = field(default_factory=empty_mapping)  # U1
    u2: frozenset[int] = frozenset()
    u3: frozenset[int] = frozenset()
    u4: frozenset[int] = frozenset()  # malicious mode: who signed their view
    masked: Mapping[int, np.ndarray] = field(default_factory=empty_mapping)
    abort: Optional[Abort] = None


def start(config: SecAggConfig) -> ServerState:
    return ServerState(config, "keys")


def _abort(state: ServerState, step: str, reason: str) -> tuple[ServerState, Abort]:
    a = Abort("server", step, reason)
    return replace(state, phase="aborted", abort=a), a


def first_by_sender(msgs: Iterable, allowed: Iterable[int]) -> dict:
    # Late duplicates and strangers are ignored rather than trusted.
    allowed = set(allowed)
    out: dict = {}
    for m in msgs:
        if m.sender in allowed and m.sender not in out:
            out[m.sender] = m
    return out


def short_neighbourhood(state: ServerState, alive: frozenset[int], who: Iterable[int],
           what: str = "remain") -> Optional[str]:
    g = state.config.graph
    counts = g.holder_counts(alive)
    for u in sorted(who):
        have = counts[u]
        if have < g.thresholds[u]:
            return (f"device {u}: only {have} of its share holders {what}, "
                    f"threshold {g.thresholds[u]}")
    return None


def to_unmask(g: CommGraph, u3: frozenset[int], dropped: frozenset[int]) -> set[int]:
    """Devices whose secret the server must rebuild: every survivor's b_u, and s_v^SK of each
    dropped v that some survivor masked against."""
    return set(u3) | {v for v in dropped if g.neighbours[v] & u3}


def _view(g: CommGraph, u3: frozenset[int], dropped: frozenset[int],
          v: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """What the server tells v: its neighbourhood's survivors, and those that dropped."""
    return tuple(sorted(g.holders(v) & u3)), tuple(sorted(g.holders(v) & dropped))


def collect_keys(
    state: ServerState, msgs: Sequence[AdvertiseKeys]
) -> tuple[ServerState, Union[dict[int, KeyBroadcast], Abort]]:
    step = "collect_keys"
    if state.phase != "keys":
        return _abort(state, step, f"called in phase {state.phase!r}")
    got = first_by_sender(msgs, state.config.graph.ids)
    u1 = frozenset(got)
    why = short_neighbourhood(state, u1, u1) if u1 else "no device advertised keys"
    if why:
        return _abort(state, step, why)
    pks = {u: (m.c_public, m.s_public) for u, m in got.items()}
    g = state.config.graph

    def signatures(who: list[int]) -> Mapping[int, bytes]:
        # Malicious mode: each pair travels with its owner's signature, for holders to check.
        if not state.config.malicious:
            return empty_mapping()
        return MappingProxyType({v: got[v].signature for v in who})

    out = {}
    for u in sorted(u1):
        who = sorted(g.holders(u) & u1)
        out[u] = KeyBroadcast(u, MappingProxyType({v: pks[v] for v in who}), signatures(who))
    return replace(state, phase="shares", public_keys=MappingProxyType(pks)), out


def collect_shares(
    state: ServerState, msgs: Sequence[ShareKeys]
) -> tuple[ServerState, Union[dict[int, ShareDelivery], Abort]]:
    step = "collect_shares"
    if state.phase != "shares":
        return _abort(state, step, f"called in phase {state.phase!r}")
    got = first_by_sender(msgs, state.public_keys)
    u2 = frozenset(got)
    why = short_neighbourhood(state, u2, u2) if u2 else "no device shared keys"
    if why:
        return _abort(state, step, why)
    inbox: dict[int, dict[int, bytes]] = {v: {} for v in u2}
    for u in sorted(u2):
        for v, ct in got[u].ciphertexts.items():
            if v in inbox:
                inbox[v][u] = ct
    out = {v: ShareDelivery(v, MappingProxyType(inbox[v])) for v in sorted(u2)}
    return replace(state, phase="masked", u2=u2), out


def masked_input_problem(config: SecAggConfig, m: Any) -> Optional[str]:
    """Why ``m`` cannot be accepted as a masked input under ``config`` (None if it can).

    A masked input must be a ``MaskedInput`` for this modulus whose ``y`` is a uint64 vector of
    exactly ``config.dim`` elements, each in [0, 2**modulus_bits): anything else (a float
    vector, a wrong length, values past the modulus) would break or skew the unmasking sum.
    """
    if not isinstance(m, MaskedInput):
        return f"not a MaskedInput but {type(m).__name__}"
    if m.modulus_bits != config.modulus_bits:
        return f"modulus_bits {m.modulus_bits!r}, expected {config.modulus_bits}"
    y = m.y
    if not isinstance(y, np.ndarray):
        return f"y is a {type(y).__name__}, expected a numpy array"
    if y.dtype != np.uint64:
        return f"y has dtype {y.dtype}, expected uint64"
    if y.shape != (config.dim,):
        return f"y has shape {y.shape}, expected ({config.dim},)"
    if y.size and int(y.max()) >> config.modulus_bits:
        return f"y has values >= 2**{config.modulus_bits}"
    return None


def accept_masked(state: Any, msgs: Sequence[Any]) -> tuple[dict[int, MaskedInput],
                                                             Optional[str]]:
    """The masked inputs kept (U3, by sender), or why the round must abort.

    Shared by the real server and ``modeled`` (``state`` needs ``config`` and ``u2``): a
    malformed masked input is not accepted, its sender counting as dropped at this step.
    """
    ok = [m for m in msgs if masked_input_problem(state.config, m) is None]
    got = first_by_sender(ok, state.u2)
    u3 = frozenset(got)
    if not u3:
        return got, "no device sent a masked input"
    why = short_neighbourhood(state, u3, to_unmask(state.config.graph, u3, state.u2 - u3))
    need = state.config.min_inputs
    if not why and len(u3) < need:
        # Unmasking a "sum" of one input would hand the server that device's update; one of
        # fewer than min_survivors noise shares, an update less noised than accounted.
        why = (f"only {len(u3)} masked input; a sum needs at least {MIN_INPUTS} to hide any one"
               if need == MIN_INPUTS else
               f"only {len(u3)} masked inputs; the aggregator's min_survivors is {need} (a "
               "smaller sum carries less noise than the privacy accounting charges)")
    return got, why


def collect_masked(
    state: ServerState, msgs: Sequence[MaskedInput]
) -> tuple[ServerState, Union[dict[int, UnmaskRequest], Abort]]:
    step = "collect_masked"
    if state.phase != "masked":
        return _abort(state, step, f"called in phase {state.phase!r}")
    cfg, g = state.config, state.config.graph
    got, why = accept_masked(state, msgs)
    if why:
        return _abort(state, step, why)
    u3 = frozenset(got)
    dropped = state.u2 - u3
    # Malicious mode: the same lists, first to be signed (collect_views sends them to unmask).
    kind, phase = (ConsistencyRequest, "views") if cfg.malicious else (UnmaskRequest, "unmask")
    out = {v: kind(v, *_view(g, u3, dropped, v)) for v in sorted(u3)}
    masked = MappingProxyType({u: m.y for u, m in got.items()})
    return replace(state, phase=phase, u3=u3, masked=masked), out


def collect_views(
    state: ServerState, msgs: Sequence[SignedView]
) -> tuple[ServerState, Union[dict[int, UnmaskRequest], Abort]]:
    """Malicious mode: keep the signed views (U4 = their signers), then send each signer its
    unmask request with the views of every signer holding shares of a device listed for it."""
    step = "collect_views"
    if state.phase != "views":
        return _abort(state, step, f"called in phase {state.phase!r}")
    cfg, g = state.config, state.config.graph
    dropped = state.u2 - state.u3

    def valid(m: Any) -> bool:
        # A view other than the one sent, or badly signed, would only make honest devices abort.
        return (isinstance(m, SignedView) and m.sender in state.u3
                and (m.alive, m.dropped) == _view(g, state.u3, dropped, m.sender)
                and consistency.is_validly_signed(cfg, m))

    got = first_by_sender([m for m in msgs if valid(m)], state.u3)
    u4 = frozenset(got)
    # A device unmasks only with t_u signers in N[u] behind u's status: check that here too,
    # so a shortfall is a server abort rather than every holder of u refusing.
    why = short_neighbourhood(state, u4, to_unmask(g, state.u3, dropped), "signed their view")
    if why:
        return _abort(state, step, why)
    out = {}
    for v in sorted(u4):
        alive, gone = _view(g, state.u3, dropped, v)
        signers = consistency.signers_for(g, alive + gone, u4)
        out[v] = UnmaskRequest(v, alive, gone, MappingProxyType({w: got[w] for w in sorted(signers)}))
    return replace(state, phase="unmask", u4=u4), out


def finish(
    state: ServerState, msgs: Sequence[UnmaskResponse]
) -> tuple[ServerState, Union[SecAggResult, Abort]]:
    """Reconstruct b_u for survivors and s_v^SK for dropped devices; output sum mod 2**k."""
    step = "finish"
    if state.phase != "unmask":
        return _abort(state, step, f"called in phase {state.phase!r}")
    cfg, g = state.config, state.config.graph
    # Malicious mode: only the signers were sent an unmask request.
    got = first_by_sender(msgs, state.u4 if cfg.malicious else state.u3)
    u5 = frozenset(got)
    dropped = state.u2 - state.u3
    k, dim, rid = cfg.modulus_bits, cfg.dim, cfg.round_id
    total = np.zeros(dim, dtype=np.uint64)
    for u in sorted(state.u3):
        total += state.masked[u]
    for u in sorted(state.u3):
        shares = [got[h].b_shares[u] for h in sorted(g.holders(u) & u5) if u in got[h].b_shares]
        if len(shares) < g.thresholds[u]:
            return _abort(state, step, f"{len(shares)} b-shares of device {u}, need "
                                       f"{g.thresholds[u]}")
        total -= prg.expand(shamir.reconstruct(shares, g.thresholds[u]), dim, k)
    for v in sorted(dropped):
        partners = g.neighbours[v] & state.u3
        if not partners:
            continue
        shares = [got[h].s_shares[v] for h in sorted(g.holders(v) & u5) if v in got[h].s_shares]
        if len(shares) < g.thresholds[v]:
            return _abort(state, step, f"{len(shares)} key shares of dropped device {v}, need "
                                       f"{g.thresholds[v]}")
        pair = keys.keypair_from_private_bytes(shamir.reconstruct(shares, g.thresholds[v]))
        if pair.public != state.public_keys[v][1]:
            return _abort(state, step, f"reconstructed key of device {v} does not match its "
                                       "advertised key")
        for u in sorted(partners):
            p = prg.expand(keys.mask_seed(pair.private, state.public_keys[u][1], rid), dim, k)
            # Survivor u added +PRG(s_uv) if v < u and -PRG(s_uv) if v > u; undo that.
            if v < u:
                total -= p
            else:
                total += p
    total &= np.uint64((1 << k) - 1)
    result = SecAggResult(total, state.u3, g.ids - state.u3)
    return replace(state, phase="done"), result
