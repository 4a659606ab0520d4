"""Protocol messages. ``nbytes`` is the size of a plain binary encoding (4-byte ids,
raw keys, ciphertexts, ceil(k/8) bytes per masked element), used to simulate transfer time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from fedactors.secagg.graph import CommGraph
from fedactors.secagg.shamir import Share

ID_BYTES = 4



def empty_mapping() -> Mapping:
    """A read-only empty mapping: the default of the protocol states' per-peer maps."""
    return MappingProxyType({})

@dataclass(frozen=True)
class SecAggConfig:
    """Public parameters every party knows before round 0."""

    round_id: int
    graph: CommGraph
    modulus_bits: int
    dim: int

    def __post_init__(self) -> None:
        if not 1 <= self.modulus_bits <= 62:
            raise ValueError(f"modulus_bits must be in [1, 62], got {self.modulus_bits!r}")
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim!r}")
        if self.round_id < 0:
            raise ValueError(f"round_id must be >= 0, got {self.round_id!r}")


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
    sender: int
    c_public: bytes
    s_public: bytes

    @property
    def nbytes(self) -> int:
        return ID_BYTES + len(self.c_public) + len(self.s_public)


@dataclass(frozen=True)
class KeyBroadcast:
    """Round-0 reply to one device: the keys of its neighbours (and itself) that advertised."""

    recipient: int
    keys: Mapping[int, tuple[bytes, bytes]]

    @property
    def peers(self) -> int:
        """Key pairs carried (the recipient's own included): what its next step works on."""
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        return ID_BYTES + sum(ID_BYTES + len(c) + len(s) for c, s in self.keys.values())


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


@dataclass(frozen=True)
class UnmaskRequest:
    """Round-2 reply: which of the recipient's neighbours sent masked input and which dropped.

    Tuples, not sets, so that a lying server's duplicates are visible to the device."""

    recipient: int
    alive: tuple[int, ...]
    dropped: tuple[int, ...]

    @property
    def peers(self) -> int:
        """Devices listed, alive or dropped."""
        return len(self.alive) + len(self.dropped)

    @property
    def nbytes(self) -> int:
        return ID_BYTES + 8 + ID_BYTES * (len(self.alive) + len(self.dropped))


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
