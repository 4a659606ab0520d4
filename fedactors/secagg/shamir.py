"""t-of-n Shamir secret sharing of byte strings.

The secret is cut into 16-bit chunks and each chunk is shared with its own
independent random polynomial over GF(65537). A small field lets every
polynomial evaluation and every Lagrange combination be a float64/int64 matrix
product that is still exact (entries < 2**17, so a sum of up to 2**19 products
stays below 2**53), which is what makes 1,000-device SecAgg affordable in
Python. Security is the same as one big field: each chunk is information-
theoretically hidden from any t-1 shares, and the chunks use independent
randomness. Share x-coordinates are the holders' 1-based device ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

PRIME = 65537
MAX_HOLDER_ID = PRIME - 1
_CHUNK_BYTES = 2
_Y_BYTES = 3  # a value < 2**17 serialized in 3 bytes


class ShamirError(ValueError):
    """Bad parameters or shares that cannot reconstruct a secret."""


@dataclass(frozen=True)
class Share:
    """One holder's share: its x-coordinate and one field element per 16-bit chunk."""

    x: int
    y: tuple[int, ...]

    def to_bytes(self) -> bytes:
        # Little-endian uint32 with the (always zero) top byte dropped.
        y = np.asarray(self.y, dtype="<u4").view(np.uint8).reshape(-1, 4)[:, :_Y_BYTES]
        return self.x.to_bytes(4, "little") + y.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        if len(data) < 4 or (len(data) - 4) % _Y_BYTES:
            raise ShamirError(f"share encoding has bad length {len(data)}")
        x = int.from_bytes(data[:4], "little")
        raw = np.frombuffer(data, dtype=np.uint8, offset=4).reshape(-1, _Y_BYTES).astype(np.uint32)
        y = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        return cls(x, tuple(y.tolist()))

    @property
    def nbytes(self) -> int:
        return 4 + _Y_BYTES * len(self.y)


def share_nbytes(secret_bytes: int) -> int:
    """``Share.nbytes`` of any share of a ``secret_bytes``-long secret (one y per 16-bit chunk)."""
    return 4 + _Y_BYTES * (secret_bytes // _CHUNK_BYTES)


def _check_threshold(threshold: int, n: int) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, np.integer)):
        raise ShamirError(f"threshold must be an int, got {threshold!r}")
    if not 1 <= threshold <= n:
        raise ShamirError(f"threshold must be in [1, {n}] (number of holders), got {threshold!r}")


def _check_xs(xs: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(x) for x in xs)
    bad = [x for x in out if not 1 <= x <= MAX_HOLDER_ID]
    if bad:
        raise ShamirError(f"holder ids must be in [1, {MAX_HOLDER_ID}], got {bad[0]!r}")
    if len(set(out)) != len(out):
        dup = sorted({x for x in out if out.count(x) > 1})
        raise ShamirError(f"duplicate holder ids {dup}")
    return out


@lru_cache(maxsize=64)
def _vandermonde(xs: tuple[int, ...], threshold: int) -> np.ndarray:
    # Cached because in complete-graph SecAgg every device shares to the same holders.
    x = np.asarray(xs, dtype=np.int64)
    v = np.empty((len(xs), threshold), dtype=np.int64)
    v[:, 0] = 1
    for j in range(1, threshold):
        v[:, j] = (v[:, j - 1] * x) % PRIME
    return v.astype(np.float64)


def split(
    secret: bytes, threshold: int, holders: Sequence[int], rng: np.random.Generator
) -> dict[int, Share]:
    """Share ``secret`` so any ``threshold`` of ``holders`` recover it and fewer learn nothing."""
    if not isinstance(secret, (bytes, bytearray)) or not secret or len(secret) % _CHUNK_BYTES:
        raise ShamirError(f"secret must be a non-empty even-length byte string, got {secret!r}")
    xs = _check_xs(holders)
    _check_threshold(threshold, len(xs))
    chunks = np.frombuffer(bytes(secret), dtype="<u2").astype(np.int64)
    coeffs = np.empty((threshold, chunks.size), dtype=np.int64)
    coeffs[0] = chunks
    coeffs[1:] = rng.integers(0, PRIME, size=(threshold - 1, chunks.size), dtype=np.int64)
    ys = (_vandermonde(xs, threshold) @ coeffs.astype(np.float64)).astype(np.int64) % PRIME
    return {x: Share(x, tuple(row)) for x, row in zip(xs, ys.tolist())}


def split_n(secret: bytes, threshold: int, n: int, rng: np.random.Generator) -> dict[int, Share]:
    """Classic t-of-n sharing to holders 1..n."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ShamirError(f"n must be an int >= 1, got {n!r}")
    return split(secret, threshold, range(1, int(n) + 1), rng)


@lru_cache(maxsize=256)
def _lagrange_at_zero(xs: tuple[int, ...]) -> np.ndarray:
    # Cached because the server reconstructs many secrets from the same responders.
    coeffs = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        coeffs.append(num * pow(den, PRIME - 2, PRIME) % PRIME)
    return np.asarray(coeffs, dtype=np.int64)


def reconstruct(shares: Sequence[Share], threshold: int) -> bytes:
    """Recover the secret from at least ``threshold`` shares (uses the ``threshold`` lowest x)."""
    if len(shares) < 1:
        raise ShamirError("no shares given")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, np.integer)) or threshold < 1:
        raise ShamirError(f"threshold must be an int >= 1, got {threshold!r}")
    if len(shares) < threshold:
        raise ShamirError(f"need {threshold} shares, got {len(shares)}")
    _check_xs([s.x for s in shares])
    lengths = {len(s.y) for s in shares}
    if len(lengths) != 1:
        raise ShamirError(f"shares disagree on secret length: {sorted(lengths)} chunks")
    chosen = sorted(shares, key=lambda s: s.x)[:threshold]
    lam = _lagrange_at_zero(tuple(s.x for s in chosen))
    ys = np.asarray([s.y for s in chosen], dtype=np.int64)
    if (ys < 0).any() or (ys >= PRIME).any():
        raise ShamirError("share value outside the field")
    # lam < 2**17 and ys < 2**17: int64 products and sums of <= 2**29 terms are exact.
    chunks = (lam @ ys) % PRIME
    if (chunks > 0xFFFF).any():
        raise ShamirError("shares are inconsistent: a reconstructed chunk exceeds 16 bits")
    return chunks.astype("<u2").tobytes()
