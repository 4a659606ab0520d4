"""The public-key infrastructure of malicious-server mode: long-term signing keys per device.

The consistency check (``fedactors.secagg.consistency``) is sound only if the
server cannot substitute a device's verification key, so the keys reach every
party before any round by a channel the server does not control (in a
deployment, keys certified at enrolment). In the simulation one ``Pki`` is
shared by the devices (each uses only its own signing key) and the server
(which puts the public halves into each round's ``SecAggConfig``); it is not
sent over the simulated network, and devices trust it, not the server.

Keys are drawn once per device, lazily, from ``seeds.secret("pki", device)``:
the seeded stream by default (reproducible, and known to anyone with the
seed), the operating system under ``randomness="system"``, which is why one
instance must be shared rather than derived twice.
"""

from __future__ import annotations

from collections.abc import Iterable

from fedactors.secagg import keys
from fedactors.secagg.envelopes import protocol_id
from fedactors.seeding import SeedTree


class Pki:
    """Every device's Ed25519 key pair, made on first use and kept for the run."""

    def __init__(self, seeds: SeedTree) -> None:
        self._seeds = seeds
        self._keys: dict[int, keys.SigningKey] = {}

    def signing_key(self, device: int) -> keys.SigningKey:
        """Fleet row ``device``'s long-term signing key (only that device uses it)."""
        key = self._keys.get(device)
        if key is None:
            key = self._keys[device] = keys.generate_signing_key(self._seeds.secret("pki", device))
        return key

    def verification_keys(self, devices: Iterable[int]) -> dict[int, bytes]:
        """The public keys of ``devices`` (fleet rows), keyed by protocol id."""
        return {protocol_id(d): self.signing_key(d).public for d in devices}
