"""Expand a 32-byte seed into a mask vector with AES-256-CTR.

AES-CTR keystream is produced by OpenSSL at several GB/s, so a million-element
mask costs a few milliseconds; the only Python work is one call and a view.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MAX_BITS = 62
_ZERO_IV = bytes(16)  # safe: every seed (b_u or s_uv) keys exactly one stream


def _check(seed: bytes, dim: int, bits: int) -> None:
    if len(seed) != 32:
        raise ValueError(f"PRG seed must be 32 bytes, got {len(seed)}")
    if not isinstance(dim, (int, np.integer)) or dim < 0:
        raise ValueError(f"dim must be an int >= 0, got {dim!r}")
    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in [1, {MAX_BITS}], got {bits!r}")


def expand(seed: bytes, dim: int, bits: int) -> np.ndarray:
    """``dim`` uniform integers mod 2**bits as uint64 (low bits of uniform 64-bit words)."""
    _check(seed, dim, bits)
    enc = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_IV)).encryptor()
    stream = enc.update(bytes(8 * dim))
    out = np.frombuffer(stream, dtype="<u8").copy()
    out &= np.uint64((1 << bits) - 1)
    return out
