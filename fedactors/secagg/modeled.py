"""Secure aggregation without the cryptography: the protocol's structure, sizes and sum.

``SecureAggregation(mode="modeled")`` runs these functions in place of
:mod:`fedactors.secagg.client` and :mod:`fedactors.secagg.server`. Every
message still travels, with the byte size the real one has; every party still
decides from the same sets (who advertised, who shared, who sent a masked
input, who answered), so the same thresholds abort the same rounds with the
same reasons; the cost model charges the same seconds (it reads only the peer
counts). What is skipped is everything whose result an honest run already
knows: no keys are made, no bundle is sealed, no secret is shared, and the
"masked" input is the input itself, so the server's sum is the plain sum of
the survivors' quantized inputs mod 2**k, which is exactly what unmasking
yields in the real protocol.

What modeled mode does not prove: that the masks cancel, that the server can
learn nothing more, or that a device detects a lying server. A message here
carries counts, not secrets, and no check on it could fail on tampering. The
real mode's tests establish those; modeled mode is for scale (tests/secagg
check that the two agree on sums, aborts, metrics, bytes and times).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Optional, Union

import numpy as np

from fedactors.secagg import consistency, keys, server, shamir
from fedactors.secagg.client import SECRET_BYTES, short_sum
from fedactors.secagg.graph import CommGraph
from fedactors.secagg.messages import (
    ID_BYTES,
    Abort,
    MaskedInput,
    SecAggConfig,
    SecAggResult,
    empty_mapping,
)

#: A device's two public keys (c for bundles, s for masks), as AdvertiseKeys carries them.
KEY_PAIR_BYTES = 2 * keys.PUBLIC_KEY_BYTES
#: One Shamir share of a 32-byte secret, as ``shamir.Share.nbytes`` counts it.
SHARE_BYTES = shamir.share_nbytes(SECRET_BYTES)
#: One sealed bundle: nonce, sender and recipient ids, a b-share and an s-share, tag.
BUNDLE_BYTES = keys.NONCE_BYTES + 2 * ID_BYTES + 2 * SHARE_BYTES + keys.TAG_BYTES


# -- messages: who and how many, with the real messages' sizes -----------------------------


@dataclass(frozen=True)
class Advertised:
    """Stands for ``AdvertiseKeys`` (signed in malicious-server mode)."""

    sender: int
    signed: bool = False

    @property
    def nbytes(self) -> int:
        return ID_BYTES + KEY_PAIR_BYTES + (keys.SIGNATURE_BYTES if self.signed else 0)


@dataclass(frozen=True)
class KeysOf:
    """Stands for ``KeyBroadcast``: ``peers`` key pairs of N[u] ∩ U1, the recipient's own included."""

    recipient: int
    peers: int
    signed: bool = False  # malicious mode: each pair with its owner's signature

    @property
    def nbytes(self) -> int:
        per_pair = ID_BYTES + KEY_PAIR_BYTES + (keys.SIGNATURE_BYTES if self.signed else 0)
        return ID_BYTES + self.peers * per_pair


@dataclass(frozen=True)
class Shared:
    """Stands for ``ShareKeys``: one sealed bundle per other holder."""

    sender: int
    bundles: int

    @property
    def nbytes(self) -> int:
        return ID_BYTES + self.bundles * (ID_BYTES + BUNDLE_BYTES)


@dataclass(frozen=True)
class Delivered:
    """Stands for ``ShareDelivery``: ``peers`` bundles reach ``recipient``, one per sender."""

    recipient: int
    peers: int

    @property
    def nbytes(self) -> int:
        return ID_BYTES + self.peers * (ID_BYTES + BUNDLE_BYTES)


@dataclass(frozen=True)
class ViewCounts:
    """Stands for ``ConsistencyRequest`` (malicious mode): the view the recipient signs."""

    recipient: int
    alive: int
    dropped: int

    @property
    def peers(self) -> int:
        return self.alive + self.dropped

    @property
    def nbytes(self) -> int:
        return ID_BYTES + 8 + ID_BYTES * (self.alive + self.dropped)


@dataclass(frozen=True)
class Signed:
    """Stands for ``SignedView``: a view of ``listed`` devices and a signature."""

    sender: int
    listed: int

    @property
    def nbytes(self) -> int:
        return view_nbytes(self.listed)


def view_nbytes(listed: int) -> int:
    """``SignedView.nbytes`` of a view listing ``listed`` devices."""
    return ID_BYTES + 8 + ID_BYTES * listed + keys.SIGNATURE_BYTES


@dataclass(frozen=True)
class UnmaskCounts:
    """Stands for ``UnmaskRequest``: how many of the recipient's holders are alive, dropped,
    and (malicious mode) how many signed views, of how many bytes in all, come with it."""

    recipient: int
    alive: int
    dropped: int
    views: int = 0
    views_nbytes: int = 0

    @property
    def peers(self) -> int:
        return self.alive + self.dropped

    @property
    def view_count(self) -> int:
        return self.views

    @property
    def nbytes(self) -> int:
        base = ID_BYTES + 8 + ID_BYTES * (self.alive + self.dropped)
        # As UnmaskRequest: a views section (count, then the views) only when there are views.
        return base + (ID_BYTES + self.views_nbytes if self.views else 0)


@dataclass(frozen=True)
class Unmasked:
    """Stands for ``UnmaskResponse``: ``b`` shares for live peers, ``s`` for dropped ones."""

    sender: int
    b: int
    s: int

    @property
    def nbytes(self) -> int:
        return ID_BYTES + 8 + (self.b + self.s) * (ID_BYTES + SHARE_BYTES)


# -- the device ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModeledClient:
    # Counts and phases only: a device's sets are implied by the graph and what the
    # honest server computed, and a million short-lived sets would cost the collector.
    config: SecAggConfig
    device_id: int
    phase: str  # advertised -> shared -> masked -> [signed, malicious mode] -> done | aborted

    @property
    def threshold(self) -> int:
        return self.config.graph.thresholds[self.device_id]

    def moved_to(self, phase: str) -> ModeledClient:
        # dataclasses.replace costs ~7 µs of introspection; a step per device adds up.
        return ModeledClient(self.config, self.device_id, phase)


def _client_abort(state: ModeledClient, step: str, reason: str) -> tuple[ModeledClient, Abort]:
    return state.moved_to("aborted"), Abort(f"device {state.device_id}", step, reason)


def advertise_keys(config: SecAggConfig, device_id: int, rng: object = None,
                   signing_key: object = None) -> tuple[ModeledClient, Advertised]:
    """Round 0: no keys are made; the message has the size of two public keys."""
    if device_id not in config.graph.neighbours:
        raise ValueError(f"device_id {device_id!r} is not in the communication graph")
    return ModeledClient(config, device_id, "advertised"), Advertised(device_id, config.malicious)


def share_keys(state: ModeledClient, msg: KeysOf,
               rng: object = None) -> tuple[ModeledClient, Union[Shared, Abort]]:
    """Round 1: one bundle per other holder that advertised; none is sealed."""
    step = "share_keys"
    if state.phase != "advertised":
        return _client_abort(state, step, f"called in phase {state.phase!r}")
    if msg.peers < state.threshold:
        return _client_abort(state, step, f"{msg.peers} peers < threshold {state.threshold}")
    return state.moved_to("shared"), Shared(state.device_id, msg.peers - 1)


def masked_input(state: ModeledClient, msg: Delivered,
                 x: np.ndarray) -> tuple[ModeledClient, Union[MaskedInput, Abort]]:
    """Round 2: the input itself, in the masked input's format and size."""
    step, me, cfg = "masked_input", state.device_id, state.config
    if state.phase != "shared":
        return _client_abort(state, step, f"called in phase {state.phase!r}")
    x = np.asarray(x)
    if x.shape != (cfg.dim,) or not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"input must be an integer vector of shape ({cfg.dim},), got "
                         f"{x.dtype} {x.shape}")
    u2 = msg.peers + 1  # the senders and itself
    if u2 < state.threshold:
        return _client_abort(state, step, f"{u2} peers < threshold {state.threshold}")
    y = x.astype(np.uint64)  # a copy: the server sums what it was sent
    return state.moved_to("masked"), MaskedInput(me, y, cfg.modulus_bits)


def sign_view(state: ModeledClient, msg: ViewCounts,
              signing_key: object = None) -> tuple[ModeledClient, Union[Signed, Abort]]:
    """Malicious mode, round 3: a view of ``msg.peers`` devices, signed (no signature made)."""
    step = "sign_view"
    if not state.config.malicious:
        return _client_abort(state, step, "no consistency check in an honest-but-curious round")
    if state.phase != "masked":
        return _client_abort(state, step, f"called in phase {state.phase!r}")
    why = _alive_problem(state, msg.alive)
    if why:
        return _client_abort(state, step, why)
    return state.moved_to("signed"), Signed(state.device_id, msg.peers)


def unmask(state: ModeledClient,
           msg: UnmaskCounts) -> tuple[ModeledClient, Union[Unmasked, Abort]]:
    """Round 3 (4 in malicious mode): one share per listed peer, counted."""
    step = "unmask"
    if state.phase != ("signed" if state.config.malicious else "masked"):
        return _client_abort(state, step, f"called in phase {state.phase!r}")
    why = _alive_problem(state, msg.alive)
    if why:
        return _client_abort(state, step, why)
    return state.moved_to("done"), Unmasked(state.device_id, msg.alive, msg.dropped)


def _alive_problem(state: ModeledClient, alive: int) -> Optional[str]:
    """The real device's count checks on the server's alive list (``client._lists_problem``
    also checks the list's members, which counts cannot carry)."""
    if alive < state.threshold:
        return f"{alive} alive < threshold {state.threshold}"
    return short_sum(state.config, state.device_id, alive)


# -- the server ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModeledServer:
    config: SecAggConfig
    phase: str  # keys -> shares -> masked -> unmask -> done | aborted
    u1: frozenset[int] = frozenset()
    u2: frozenset[int] = frozenset()
    u3: frozenset[int] = frozenset()
    u4: frozenset[int] = frozenset()  # malicious mode: who signed their view
    masked: Mapping[int, np.ndarray] = field(default_factory=empty_mapping)


def start(config: SecAggConfig) -> ModeledServer:
    return ModeledServer(config, "keys")


def _server_abort(state: ModeledServer, step: str, reason: str) -> tuple[ModeledServer, Abort]:
    return replace(state, phase="aborted"), Abort("server", step, reason)


def collect_keys(state: ModeledServer, msgs: Sequence[Advertised],
                 ) -> tuple[ModeledServer, Union[dict[int, KeysOf], Abort]]:
    step, g = "collect_keys", state.config.graph
    if state.phase != "keys":
        return _server_abort(state, step, f"called in phase {state.phase!r}")
    u1 = frozenset(server.first_by_sender(msgs, g.ids))
    why = server.short_neighbourhood(state, u1, u1) if u1 else "no device advertised keys"
    if why:
        return _server_abort(state, step, why)
    signed = state.config.malicious
    counts = g.holder_counts(u1)
    out = {u: KeysOf(u, counts[u], signed) for u in sorted(u1)}
    return replace(state, phase="shares", u1=u1), out


def collect_shares(state: ModeledServer, msgs: Sequence[Shared],
                   ) -> tuple[ModeledServer, Union[dict[int, Delivered], Abort]]:
    step, g = "collect_shares", state.config.graph
    if state.phase != "shares":
        return _server_abort(state, step, f"called in phase {state.phase!r}")
    u2 = frozenset(server.first_by_sender(msgs, state.u1))
    why = server.short_neighbourhood(state, u2, u2) if u2 else "no device shared keys"
    if why:
        return _server_abort(state, step, why)
    # u's bundles go to every other holder in U1; v in U2 gets those of its neighbours in U2.
    counts = g.holder_counts(u2)  # v itself is in U2: its neighbours there are one fewer
    out = {v: Delivered(v, counts[v] - 1) for v in sorted(u2)}
    return replace(state, phase="masked", u2=u2), out


def collect_masked(state: ModeledServer, msgs: Sequence[MaskedInput],
                   ) -> tuple[ModeledServer, Union[dict[int, UnmaskCounts], Abort]]:
    step, cfg = "collect_masked", state.config
    if state.phase != "masked":
        return _server_abort(state, step, f"called in phase {state.phase!r}")
    got, why = server.accept_masked(state, msgs)
    if why:
        return _server_abort(state, step, why)
    u3, g = frozenset(got), cfg.graph
    dropped = state.u2 - u3
    # Malicious mode: the same lists, first to be signed (collect_views sends them to unmask).
    kind, phase = (ViewCounts, "views") if cfg.malicious else (UnmaskCounts, "unmask")
    alive, gone = g.holder_counts(u3), g.holder_counts(dropped)
    out = {v: kind(v, alive[v], gone[v]) for v in sorted(u3)}
    masked = MappingProxyType({u: m.y for u, m in got.items()})
    return replace(state, phase=phase, u3=u3, masked=masked), out


def collect_views(state: ModeledServer, msgs: Sequence[Signed],
                  ) -> tuple[ModeledServer, Union[dict[int, UnmaskCounts], Abort]]:
    """Malicious mode: U4 = the signers; each is told how many views (and bytes) it gets."""
    step, g = "collect_views", state.config.graph
    if state.phase != "views":
        return _server_abort(state, step, f"called in phase {state.phase!r}")
    dropped = state.u2 - state.u3
    u4 = frozenset(server.first_by_sender([m for m in msgs if isinstance(m, Signed)], state.u3))
    why = server.short_neighbourhood(state, u4, server.to_unmask(g, state.u3, dropped), "signed their view")
    if why:
        return _server_abort(state, step, why)
    # Each signer's view lists its holders in U2: its size is known without the view.
    listed_of = g.holder_counts(state.u2)
    sizes = {w: view_nbytes(listed_of[w]) for w in u4}
    alive, gone = g.holder_counts(state.u3), g.holder_counts(dropped)
    forwarded = _forwarded_views(g, state.u2, u4, sizes)
    out = {v: UnmaskCounts(v, alive[v], gone[v], *forwarded(v)) for v in sorted(u4)}
    return replace(state, phase="unmask", u4=u4), out


def _forwarded_views(g: CommGraph, u2: frozenset[int], u4: frozenset[int],
                     sizes: Mapping[int, int]) -> Callable[[int], tuple[int, int]]:
    """v -> (views, bytes) the real server forwards to signer v: those of every signer
    holding shares of a device listed for v (``consistency.signers_for``)."""
    def forwarded(v: int) -> tuple[int, int]:
        signers = consistency.signers_for(g, (g.neighbours[v] | {v}) & u2, u4)
        return len(signers), sum(sizes[w] for w in signers)

    return forwarded


def finish(state: ModeledServer, msgs: Sequence[Unmasked],
           ) -> tuple[ModeledServer, Union[SecAggResult, Abort]]:
    """The plain sum of U3's inputs mod 2**k, if as many shares came as real unmasking needs."""
    step, cfg, g = "finish", state.config, state.config.graph
    if state.phase != "unmask":
        return _server_abort(state, step, f"called in phase {state.phase!r}")
    # Malicious mode: only the signers were sent an unmask request.
    u5 = frozenset(server.first_by_sender(msgs, state.u4 if cfg.malicious else state.u3))
    answered = g.holder_counts(u5)
    # Honest holders answer for every peer listed to them, so the shares that arrive are
    # exactly those of the holders that answered; the same checks, in the same order.
    for u in sorted(state.u3):
        have = answered[u]
        if have < g.thresholds[u]:
            return _server_abort(state, step, f"{have} b-shares of device {u}, need "
                                              f"{g.thresholds[u]}")
    dropped = state.u2 - state.u3
    for v in sorted(dropped):
        if not g.neighbours[v] & state.u3:
            continue
        have = answered[v]
        if have < g.thresholds[v]:
            return _server_abort(state, step, f"{have} key shares of dropped device {v}, need "
                                              f"{g.thresholds[v]}")
    total = np.zeros(cfg.dim, dtype=np.uint64)
    for u in sorted(state.u3):
        total += state.masked[u]
    total &= np.uint64((1 << cfg.modulus_bits) - 1)
    return replace(state, phase="done"), SecAggResult(total, state.u3, g.ids - state.u3)
