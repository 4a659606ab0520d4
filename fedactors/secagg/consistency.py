"""The consistency check of the malicious-server mode: signed views, localized to neighbourhoods.

Bonawitz et al. (2017) add a ConsistencyCheck round against a server that lies
about who dropped; here it is localized to SecAgg+ neighbourhoods. After the
masked inputs, the server sends each survivor v its *view*: which devices of
N[v] it calls alive (sent a masked input) and which dropped (shared keys but
sent no masked input). v signs the view (Ed25519, under a key every party
knows from a PKI) and returns it. Before releasing any share, v is sent the
signed views of every signer whose closed neighbourhood meets v's listed
devices, and checks that (a) its unmask lists are the view it signed, (b) every
view is validly signed by a device neighbouring one of its listed devices, (c)
no view gives any device a status (alive or dropped) other than the one v's own
view gives it, and (d) every listed u has at least t_u signers in N[u] whose
views give u the same status.

Why this is sound. A device signs one view per round, so an honest holder
signs at most one status for u. To collect t_u shares of b_u from honest
holders the server needs t_u signers in N[u] calling u alive; to collect
t_u shares of s_u^SK it needs t_u signers in N[u] calling u dropped. Honest
signers of the two sets are distinct, corrupt ones may sign both, so both
together need 2t ≤ (k+1) + c_u, where c_u is the number of corrupt devices in
N[u]. Hence if c_u < 2t − (k+1) for every honest u, a lying server can never
obtain both b_u and s_u^SK shares of an honest device (the bound used by
``parameters.plus_parameters(..., malicious=True)``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import Optional

from fedactors.secagg import keys
from fedactors.secagg.graph import CommGraph
from fedactors.secagg.messages import SecAggConfig, SignedView

# Domain separation: these signatures can never be mistaken for a signature over anything else.
_LABEL = b"fedactors/secagg/v1/view"


def view_bytes(round_id: int, sender: int, alive: Iterable[int], dropped: Iterable[int]) -> bytes:
    """The signed encoding: label, round, signer, the two list lengths, then each sorted list.

    Lengths before the ids make the encoding unambiguous (no split of the ids between the
    lists gives the same bytes), and sorting makes it independent of the order sent."""
    a, d = sorted(alive), sorted(dropped)
    return (_LABEL + struct.pack("<QIII", round_id, sender, len(a), len(d))
            + struct.pack(f"<{len(a) + len(d)}I", *a, *d))


#: Round 0's signatures (malicious mode) are over another label: no view can pass for keys.
_KEYS_LABEL = b"fedactors/secagg/v1/keys"


def keys_bytes(round_id: int, sender: int, c_public: bytes, s_public: bytes) -> bytes:
    """What a device signs when it advertises its keys: label, round, itself, both keys."""
    return _KEYS_LABEL + struct.pack("<QI", round_id, sender) + c_public + s_public


def keys_signed(config: SecAggConfig, sender: int, c_public: bytes, s_public: bytes,
                signature: bytes) -> bool:
    """Whether ``sender``'s key pair carries its signature under its PKI key."""
    public = config.verification_keys.get(sender)
    return public is not None and keys.verify(
        public, signature, keys_bytes(config.round_id, sender, c_public, s_public))


def sign(key: keys.SigningKey, round_id: int, sender: int, alive: Iterable[int],
         dropped: Iterable[int]) -> SignedView:
    """``sender``'s signed view (its lists sorted)."""
    a, d = tuple(sorted(alive)), tuple(sorted(dropped))
    return SignedView(sender, a, d, keys.sign(key, view_bytes(round_id, sender, a, d)))


def is_validly_signed(config: SecAggConfig, view: SignedView) -> bool:
    """Whether ``view`` carries its sender's signature under the PKI key (unknown sender: no)."""
    public = config.verification_keys.get(view.sender)
    return public is not None and keys.verify(
        public, view.signature, view_bytes(config.round_id, view.sender, view.alive, view.dropped))


def signers_for(graph: CommGraph, listed: Iterable[int], signed: Iterable[int]) -> frozenset[int]:
    """The devices of ``signed`` whose closed neighbourhood meets ``listed``.

    These are the views relevant to a device that unmasks for ``listed``: every holder of a
    listed device (so a neighbour of one of its neighbours, or a neighbour, or itself)."""
    listed = set(listed)
    if not listed:
        return frozenset()
    if graph.is_complete:  # every device holds shares of every other
        return frozenset(graph.ids.intersection(signed))
    table = graph.reach_mask(listed)
    if table is not None:  # one gather over the neighbour table, not k set unions
        ids, mask = table
        return frozenset(ids[mask].tolist()).intersection(signed)
    reach: set[int] = set()
    for u in listed:
        reach |= graph.holders(u)
    return frozenset(reach.intersection(signed))


def _status(alive: Iterable[int], dropped: Iterable[int]) -> dict[int, str]:
    out = {u: "dropped" for u in dropped}
    out.update((u, "alive") for u in alive)
    return out


def views_problem(config: SecAggConfig, me: int, alive: tuple[int, ...], dropped: tuple[int, ...],
                  views: Mapping[int, SignedView]) -> Optional[str]:
    """Why device ``me``, whose own signed view is (alive, dropped), must not unmask given the
    forwarded ``views`` (checks (b)-(d) of the module docstring), or None if it may."""
    g = config.graph
    mine = _status(alive, dropped)
    allowed = signers_for(g, mine, views)
    for w in sorted(views):
        view = views[w]
        if view.sender != w:
            return f"view of device {view.sender} forwarded as device {w}'s"
        if w not in allowed:
            return f"view of device {w}, which neighbours no device listed here"
        if not is_validly_signed(config, view):
            return f"view of device {w} has an invalid signature"
    theirs = {w: _status(view.alive, view.dropped) for w, view in views.items()}
    # (c) before (d): a contradiction is evidence of a lie, worth naming even when (d) would fail.
    for w in sorted(theirs):
        for u, status in theirs[w].items():
            if u in mine and status != mine[u]:
                return f"inconsistent views: device {u} {mine[u]} to {me}, {status} to {w}"
    backing = dict.fromkeys(mine, 0)
    for w, statuses in theirs.items():
        for u, status in statuses.items():
            # Only signers holding u's shares count, and only for the status this device saw
            # (after (c) every view agrees; the test keeps (d) sound on its own).
            if mine.get(u) == status and (w == u or w in g.neighbours[u]):
                backing[u] += 1
    for u in sorted(mine):
        t = g.thresholds[u]
        if backing[u] < t:
            return (f"only {backing[u]} signed views give device {u} as {mine[u]}, "
                    f"threshold {t}")
    return None
