"""Protocol messages. ``nbytes`` is the size of a plain binary encoding (4-byte ids,
raw keys, ciphertexts, ceil(k/8) bytes per masked element), used to simulate transfer time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from fedactors.secagg.graph import CommGraph
from fedactors.secagg.keys import SIGNATURE_BYTES, VERIFICATION_KEY_BYTES
from fedactors.secagg.shamir import Share

ID_BYTES = 4
#: The fewest inputs whose sum the server may unmask: a sum of one is that input.
MIN_INPUTS = 2


def empty_mapping() -> Mapping:
    """A read-only empty mapping: the default of the protocol states' per-peer maps."""
    return MappingProxyType({})

@dataclass(frozen=True)
class SecAggConfig:
    """Public parameters every party knows before round 0.

    ``malicious``: defend against a server that lies about who dropped (adds the consistency
    check, :mod:`fedactors.secagg.consistency`). It then needs ``verification_keys``, every
    device's Ed25519 public key: a PKI fixed before the round, which the server cannot
    substitute (it must reach the devices by a channel the server does not control).

    ``min_inputs``: the fewest masked inputs a sum may have. The server unmasks no
    smaller sum, and a device that holds shares of every device (the complete graph,
    where its list of who is alive is the whole sum) refuses to help unmask one. With
    distributed DP noise it is the aggregator's ``min_survivors``: a sum of fewer noise
    shares carries less noise than the privacy accounting charges.
    """

    round_id: int
    graph: CommGraph
    modulus_bits: int
    dim: int
    malicious: bool = False
    verification_keys: Mapping[int, bytes] = field(default_factory=empty_mapping)
    min_inputs: int = MIN_INPUTS

    def __post_init__(self) -> None:
        if isinstance(self.min_inputs, bool) or not isinstance(self.min_inputs, int) \
                or self.min_inputs < MIN_INPUTS:
            raise ValueError(f"min_inputs must be a whole number >= {MIN_INPUTS}, "
                             f"got {self.min_inputs!r}")
        if not 1 <= self.modulus_bits <= 62:
            raise ValueError(f"modulus_bits must be in [1, 62], got {self.modulus_bits!r}")
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim!r}")
        if self.round_id < 0:
            raise ValueError(f"round_id must be >= 0, got {self.round_id!r}")
        if self.malicious:
            missing = sorted(self.graph.ids - set(self.verification_keys))
            if missing:
                raise ValueError(f"malicious mode needs a verification key for every device; "
                                 f"missing {missing}")
        bad = sorted(u for u, k in self.verification_keys.items()
                     if not isinstance(k, bytes) or len(k) != VERIFICATION_KEY_BYTES)
        if bad:
            raise ValueError(f"verification keys must be {VERIFICATION_KEY_BYTES} bytes; "
                             f"devices {bad} are not")
        # A private read-only copy: nobody holding the caller's dict can swap a key later.
        object.__setattr__(self, "verification_keys",
                           MappingProxyType(dict(self.verification_keys)))


@dataclass(frozen=True)
class Abort:
    """A clean stop: who stopped, at which step, and why. Carries no secrets."""

    party: str
    step: str
    reason: str

    @property
    def nbytes(self) -> int:
        return ID_BYTES + 1


@dataclass(frozen=True)
class AdvertiseKeys:
    """Round 0: a device's two public keys; in malicious-server mode signed with its PKI key,
    so the server cannot substitute them (empty signature otherwise)."""

    sender: int
    c_public: bytes
    s_public: bytes
    signature: bytes = b""

    @property
    def nbytes(self) -> int:
        return ID_BYTES + len(self.c_public) + len(self.s_public) + len(self.signature)


@dataclass(frozen=True)
class KeyBroadcast:
    """Round-0 reply to one device: the keys of its neighbours (and itself) that advertised."""

    recipient: int
    keys: Mapping[int, tuple[bytes, bytes]]
    #: Malicious-server mode: each key pair's signature by its owner (empty otherwise).
    signatures: Mapping[int, bytes] = field(default_factory=empty_mapping, hash=False)

    @property
    def peers(self) -> int:
        """Key pairs carried (the recipient's own included): what its next step works on."""
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        return (ID_BYTES + sum(ID_BYTES + len(c) + len(s) for c, s in self.keys.values())
                + sum(len(sig) for sig in self.signatures.values()))


@dataclass(frozen=True)
class ShareKeys:
    """Encrypted share bundles, one per recipient; the server routes but cannot read them."""

    sender: int
    ciphertexts: Mapping[int, bytes]

    @property
    def nbytes(self) -> int:
        return ID_BYTES + sum(ID_BYTES + len(c) for c in self.ciphertexts.values())


@dataclass(frozen=True)
class ShareDelivery:
    """Round-1 reply to one device: bundles addressed to it, keyed by sender."""

    recipient: int
    ciphertexts: Mapping[int, bytes]

    @property
    def peers(self) -> int:
        """Bundles delivered: what the recipient decrypts and masks against."""
        return len(self.ciphertexts)

    @property
    def nbytes(self) -> int:
        return ID_BYTES + sum(ID_BYTES + len(c) for c in self.ciphertexts.values())


@dataclass(frozen=True, eq=False)
class MaskedInput:
    sender: int
    y: np.ndarray
    modulus_bits: int

    @property
    def nbytes(self) -> int:
        return ID_BYTES + self.y.size * ((self.modulus_bits + 7) // 8)


def _lists_nbytes(alive: tuple[int, ...], dropped: tuple[int, ...]) -> int:
    # Two 4-byte lengths, then the ids.
    return 8 + ID_BYTES * (len(alive) + len(dropped))


@dataclass(frozen=True)
class ConsistencyRequest:
    """Malicious mode, round-2 reply: the recipient's view, which it is asked to sign.

    The same lists as the ``UnmaskRequest`` that follows (alive = N[v] ∩ U3,
    dropped = N[v] ∩ (U2 − U3)); tuples, so duplicates are visible."""

    recipient: int
    alive: tuple[int, ...]
    dropped: tuple[int, ...]

    @property
    def peers(self) -> int:
        """Devices listed, alive or dropped."""
        return len(self.alive) + len(self.dropped)

    @property
    def nbytes(self) -> int:
        return ID_BYTES + _lists_nbytes(self.alive, self.dropped)


@dataclass(frozen=True)
class SignedView:
    """A device's signature over its view (round, itself, sorted alive, sorted dropped)."""

    sender: int
    alive: tuple[int, ...]
    dropped: tuple[int, ...]
    signature: bytes

    @property
    def nbytes(self) -> int:
        return ID_BYTES + _lists_nbytes(self.alive, self.dropped) + SIGNATURE_BYTES


@dataclass(frozen=True)
class UnmaskRequest:
    """Round-2 reply (round 3 under malicious): which of the recipient's neighbours sent masked
    input and which dropped.

    Tuples, not sets, so that a lying server's duplicates are visible to the device.
    ``views`` (malicious mode only, keyed by signer): the signed views of every device that
    answered the consistency check and neighbours a device listed here, so the recipient can
    check that enough holders were told the same story. Empty, and costing nothing, otherwise."""

    recipient: int
    alive: tuple[int, ...]
    dropped: tuple[int, ...]
    # Left out of the hash so the request stays hashable (a mapping is not).
    views: Mapping[int, SignedView] = field(default_factory=empty_mapping, hash=False)

    @property
    def peers(self) -> int:
        """Devices listed, alive or dropped."""
        return len(self.alive) + len(self.dropped)

    @property
    def view_count(self) -> int:
        """Signed views to check before unmasking (0 in honest-but-curious mode)."""
        return len(self.views)

    @property
    def nbytes(self) -> int:
        base = ID_BYTES + _lists_nbytes(self.alive, self.dropped)
        if not self.views:  # the honest-but-curious encoding has no views section
            return base
        return base + ID_BYTES + sum(v.nbytes for v in self.views.values())


@dataclass(frozen=True)
class UnmaskResponse:
    """For each listed peer exactly one share: of b (peer alive) or of s^SK (peer dropped)."""

    sender: int
    b_shares: Mapping[int, Share]
    s_shares: Mapping[int, Share]

    @property
    def nbytes(self) -> int:
        shares = list(self.b_shares.values()) + list(self.s_shares.values())
        return ID_BYTES + 8 + sum(ID_BYTES + s.nbytes for s in shares)


@dataclass(frozen=True, eq=False)
class SecAggResult:
    """The server's output: the sum mod 2**k over ``contributors`` and nothing per device."""

    total: np.ndarray
    contributors: frozenset[int]
    dropped: frozenset[int]
