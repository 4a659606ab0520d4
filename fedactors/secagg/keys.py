"""Key pairs, key agreement, key derivation, authenticated encryption of share bundles, and
the Ed25519 signatures of the malicious-server mode's consistency check.

Private keys (X25519 and Ed25519) are derived from ``rng.bytes(32)``, so the caller chooses the
entropy: the simulation's default is a stream seeded from the run's seed (so
it replays, and anyone who knows the seed knows every key); under
``randomness="system"`` it is a generator on the OS CSPRNG
(``fedactors.seeding.SystemBits``). Do not reuse this module for real keys.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PUBLIC_KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SIGNATURE_BYTES = 64
VERIFICATION_KEY_BYTES = 32

# Distinct HKDF "info" labels make the AEAD key and the mask seed independent
# even though both come from an X25519 agreement.
_INFO_AEAD = b"fedactors/secagg/v1/aead"
_INFO_MASK = b"fedactors/secagg/v1/pairwise-mask"


class DecryptionError(ValueError):
    """A ciphertext failed authentication: tampered, or bound to another pair/round."""


@dataclass(frozen=True)
class KeyPair:
    private: X25519PrivateKey
    public: bytes

    def private_bytes(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )


def keypair_from_private_bytes(raw: bytes) -> KeyPair:
    if len(raw) != 32:
        raise ValueError(f"X25519 private key must be 32 bytes, got {len(raw)}")
    priv = X25519PrivateKey.from_private_bytes(bytes(raw))
    pub = priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KeyPair(priv, pub)


def generate_keypair(rng: np.random.Generator) -> KeyPair:
    """A key pair drawn from ``rng`` (reproducible, see module docstring)."""
    return keypair_from_private_bytes(rng.bytes(32))


def _hkdf(shared: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def agree(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    return private.exchange(X25519PublicKey.from_public_bytes(peer_public))


def aead_key(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """Symmetric key for share bundles between two devices (same from either side)."""
    return _hkdf(agree(private, peer_public), _INFO_AEAD)


def mask_seed(private: X25519PrivateKey, peer_public: bytes, round_id: int) -> bytes:
    """Pairwise mask seed s_uv; the round id keeps seeds fresh if keys were ever reused."""
    return _hkdf(agree(private, peer_public), _INFO_MASK + struct.pack("<Q", round_id))


def _associated_data(sender: int, recipient: int, round_id: int) -> bytes:
    return struct.pack("<IIQ", sender, recipient, round_id)


def encrypt(
    key: bytes, plaintext: bytes, sender: int, recipient: int, round_id: int,
    rng: np.random.Generator,
) -> bytes:
    """nonce || ChaCha20-Poly1305(plaintext), authenticated with (sender, recipient, round)."""
    nonce = rng.bytes(NONCE_BYTES)
    ad = _associated_data(sender, recipient, round_id)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, ad)


def decrypt(key: bytes, ciphertext: bytes, sender: int, recipient: int, round_id: int) -> bytes:
    if len(ciphertext) < NONCE_BYTES + TAG_BYTES:
        raise DecryptionError(f"ciphertext too short ({len(ciphertext)} bytes)")
    nonce, body = ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:]
    try:
        return ChaCha20Poly1305(key).decrypt(
            nonce, body, _associated_data(sender, recipient, round_id)
        )
    except InvalidTag:
        raise DecryptionError(
            f"share bundle {sender}->{recipient} (round {round_id}) failed authentication"
        ) from None


@dataclass(frozen=True)
class SigningKey:
    """A device's long-term Ed25519 key; ``public`` is what the PKI lists for it."""

    private: Ed25519PrivateKey
    public: bytes


def signing_key_from_private_bytes(raw: bytes) -> SigningKey:
    if len(raw) != 32:
        raise ValueError(f"Ed25519 private key must be 32 bytes, got {len(raw)}")
    priv = Ed25519PrivateKey.from_private_bytes(bytes(raw))
    pub = priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return SigningKey(priv, pub)


def generate_signing_key(rng: np.random.Generator) -> SigningKey:
    """A signing key drawn from ``rng`` (reproducible, see module docstring)."""
    return signing_key_from_private_bytes(rng.bytes(32))


def sign(key: SigningKey, data: bytes) -> bytes:
    """The 64-byte Ed25519 signature of ``data`` (deterministic: no randomness needed)."""
    return key.private.sign(data)


def verify(public: bytes, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` is a valid signature of ``data`` under ``public``.

    Malformed keys or signatures are simply invalid: the caller aborts either way.
    """
    if len(public) != VERIFICATION_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes(public)).verify(bytes(signature), data)
    except (InvalidSignature, ValueError):
        return False
    return True
