"""Fixed-point encoding of clipped float vectors into Z_{2^k} and decoding of their sum.

Encoding: clip x to [-B, B], scale by 2**scale_bits, round to an integer q
(|q| <= Q := ceil(B * 2**scale_bits)), and store q mod 2**k (two's complement).
The sum of m encodings is the encoding of the integer sum, which lies in
[-m*Q, m*Q]; if m*Q < 2**(k-1) it decodes without ambiguity.

Rounding (per element, before summing):
* deterministic (``rng=None``): round-half-to-even, |error| <= 2**-(scale_bits+1);
* stochastic (``rng`` given): round up with probability equal to the fractional
  part, unbiased, |error| < 2**-scale_bits.
The decoded sum of m vectors is therefore within m * 2**-(scale_bits+1)
(deterministic) or m * 2**-scale_bits (stochastic) of the sum of the clipped
inputs, element-wise.
"""

from __future__ import annotations

import math

import numpy as np

from fedactors.errors import ConfigError

MAX_MODULUS_BITS = 62


def _levels(bound: float, scale_bits: int) -> int:
    return math.ceil(bound * 2.0**scale_bits)


def _check(bound: float, scale_bits: int) -> None:
    if not (isinstance(bound, (int, float, np.floating)) and math.isfinite(bound) and bound > 0):
        raise ConfigError("bound", f"must be a finite number > 0, got {bound!r}")
    if isinstance(scale_bits, bool) or not isinstance(scale_bits, (int, np.integer)) or not (
        0 <= scale_bits <= 52
    ):
        raise ConfigError("scale_bits", f"must be an int in [0, 52], got {scale_bits!r}")


def check_parameters(bound: float, scale_bits: int, modulus_bits: int) -> None:
    """Refuse a bound, precision or modulus under which one value cannot be encoded."""
    _check(bound, scale_bits)
    if not 2 <= modulus_bits <= MAX_MODULUS_BITS:
        raise ConfigError(
            "modulus_bits", f"must be in [2, {MAX_MODULUS_BITS}], got {modulus_bits!r}"
        )
    if _levels(bound, scale_bits) >= 2 ** (modulus_bits - 1):
        raise ConfigError(
            "modulus_bits", f"{modulus_bits} bits cannot hold one value of bound {bound!r}"
        )


def choose_modulus_bits(bound: float, m_max: int, scale_bits: int) -> int:
    """Smallest k such that any sum of ``m_max`` encodings decodes exactly (m_max*Q < 2**(k-1))."""
    _check(bound, scale_bits)
    if isinstance(m_max, bool) or not isinstance(m_max, (int, np.integer)) or m_max < 1:
        raise ConfigError("m_max", f"must be an int >= 1, got {m_max!r}")
    k = (int(m_max) * _levels(bound, scale_bits)).bit_length() + 1
    if k > MAX_MODULUS_BITS:
        raise ConfigError(
            "scale_bits",
            f"bound={bound!r}, m_max={m_max!r}, scale_bits={scale_bits!r} needs a {k}-bit "
            f"modulus, more than the supported {MAX_MODULUS_BITS}; lower scale_bits or bound",
        )
    return k


def error_bound(m: int, scale_bits: int, stochastic: bool) -> float:
    """Worst-case element-wise |decoded sum - sum of clipped inputs| for m vectors."""
    return m * 2.0 ** (-scale_bits if stochastic else -(scale_bits + 1))


def quantize(
    x: np.ndarray, bound: float, scale_bits: int, modulus_bits: int,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Encode ``x`` as uint64 in [0, 2**modulus_bits); stochastic rounding iff ``rng`` is given.

    Raises ValueError if ``x`` holds a NaN or an infinity (it has no fixed-point encoding)."""
    check_parameters(bound, scale_bits, modulus_bits)
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        # Clipping keeps NaN and the int cast of NaN is undefined: refuse rather than encode junk.
        flat = x.reshape(-1)
        bad = np.flatnonzero(~np.isfinite(flat))
        raise ValueError(f"cannot quantize non-finite values: {bad.size} NaN/inf entries "
                         f"(first at flat index {int(bad[0])}: {float(flat[bad[0]])})")
    return quantize_finite(x, bound, scale_bits, modulus_bits, rng)


def quantize_finite(x: np.ndarray, bound: float | np.ndarray, scale_bits: int, modulus_bits: int,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """``quantize`` for float64 ``x`` already known finite, with checked parameters.

    The per-device hot path (``encoding.encode`` checks its layout once and its
    values itself): every numpy call here costs ~1 µs on a model-sized vector,
    and a round quantizes once per device."""
    # minimum/maximum rather than np.clip: the same values, without clip's Python layer.
    scaled = np.minimum(np.maximum(x, -bound), bound) * 2.0**scale_bits
    if rng is None:
        q = np.rint(scaled)
    else:
        low = np.floor(scaled)
        q = low + (rng.random(scaled.shape) < (scaled - low))
    return q.astype(np.int64).astype(np.uint64) & np.uint64((1 << modulus_bits) - 1)


def dequantize_sum(total: np.ndarray, scale_bits: int, modulus_bits: int) -> np.ndarray:
    """Decode a sum mod 2**modulus_bits of encodings (valid if it did not wrap, see module doc)."""
    if not 2 <= modulus_bits <= MAX_MODULUS_BITS:
        raise ConfigError(
            "modulus_bits", f"must be in [2, {MAX_MODULUS_BITS}], got {modulus_bits!r}"
        )
    t = np.asarray(total, dtype=np.uint64).astype(np.int64)
    half, full = 1 << (modulus_bits - 1), 1 << modulus_bits
    signed = np.where(t >= half, t - full, t)
    return signed.astype(np.float64) / 2.0**scale_bits
