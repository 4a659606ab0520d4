"""Contributions <-> one fixed-point vector in Z_{2^k}: the layout both sides agree on.

A contribution is a mapping of named float arrays (``Aggregator.encode``).
SecAgg sums one integer vector, so each key is clipped to its bound from
``Aggregator.contribution_bounds``, quantized with the same scale 2**f, and the
keys are concatenated in sorted order. One modulus serves every key: the
smallest k such that ``m_max`` copies of the largest key's levels cannot wrap
(``quantize.choose_modulus_bits``), so every key's sum decodes exactly.
Pure functions; the device's generator is passed in for stochastic rounding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from fedactors.errors import ConfigError
from fedactors.secagg.quantize import (
    check_parameters,
    choose_modulus_bits,
    dequantize_sum,
    error_bound,
    quantize_finite,
)


@dataclass(frozen=True)
class Field:
    key: str
    shape: tuple[int, ...]
    bound: float

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class Layout:
    """Where each contribution key lives in the summed vector, and how it is scaled."""

    fields: tuple[Field, ...]
    scale_bits: int
    modulus_bits: int
    m_max: int
    bounds: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # quantize's parameter checks, once here instead of per device and round:
        # encode quantizes with quantize_finite, which trusts them.
        for f in self.fields:
            check_parameters(f.bound, self.scale_bits, self.modulus_bits)
        # Each element's bound, in the order of the summed vector (encode's per-element
        # clip). Made once here: a functools.cached_property takes a lock on every read.
        bounds = np.concatenate([np.full(f.size, f.bound) for f in self.fields] or [np.zeros(0)])
        bounds.setflags(write=False)
        object.__setattr__(self, "bounds", bounds)

    @property
    def dim(self) -> int:
        return sum(f.size for f in self.fields)

    def error_bound(self, m: int, stochastic: bool) -> float:
        """Worst element-wise |decoded sum - sum of clipped values| for m devices."""
        return error_bound(m, self.scale_bits, stochastic)


def make_layout(
    shapes: Mapping[str, tuple[int, ...]], bounds: Mapping[str, float], m_max: int,
    scale_bits: int,
) -> Layout:
    """The layout for contributions shaped ``shapes`` summed over at most ``m_max`` devices."""
    missing = sorted(set(shapes) - set(bounds))
    if missing:
        raise ConfigError("aggregator", f"contribution keys {missing} have no contribution_bounds "
                                        f"(bounds given for {sorted(bounds)})")
    fields = tuple(Field(k, tuple(int(s) for s in shapes[k]), float(bounds[k]))
                   for k in sorted(shapes))
    k = max(choose_modulus_bits(f.bound, m_max, scale_bits) for f in fields)
    return Layout(fields, scale_bits, k, m_max)


def encode(
    contribution: Mapping[str, np.ndarray], layout: Layout, rng: Optional[np.random.Generator]
) -> np.ndarray:
    """Quantize and concatenate; values beyond a key's bound are clipped to it.

    Raises ValueError naming the key if a value is NaN or infinite."""
    if set(contribution) != {f.key for f in layout.fields}:
        raise ValueError(f"contribution keys {sorted(contribution)} do not match the layout "
                         f"{[f.key for f in layout.fields]}")
    parts = []
    for f in layout.fields:
        x = np.asarray(contribution[f.key], dtype=np.float64).reshape(-1)
        if x.size != f.size:
            raise ValueError(f"contribution {f.key!r} has {x.size} values, layout says {f.size}")
        parts.append(x)
    x = np.concatenate(parts)
    if not np.isfinite(x).all():
        bad = next(f.key for f, part in zip(layout.fields, parts) if not np.isfinite(part).all())
        raise ValueError(f"contribution {bad!r} holds NaN or inf values: a non-finite "
                         "contribution cannot be encoded for secure aggregation")
    # All keys in one call, each element against its key's bound: the same values as key
    # by key (stochastic rounding draws them in the same order), at one call per device.
    # The layout's bounds and modulus were checked when it was made.
    return quantize_finite(x, layout.bounds, layout.scale_bits, layout.modulus_bits, rng)


def decode_sum(total: np.ndarray, layout: Layout) -> dict[str, np.ndarray]:
    """The float64 per-key sums encoded in ``total`` (exact if at most m_max devices)."""
    flat = dequantize_sum(total, layout.scale_bits, layout.modulus_bits)
    out, at = {}, 0
    for f in layout.fields:
        out[f.key] = flat[at : at + f.size].reshape(f.shape)
        at += f.size
    return out
