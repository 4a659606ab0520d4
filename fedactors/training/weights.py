"""Model weights as one flat float32 vector, and back.

Aggregation, clipping, quantization and hashing all want one vector per
device; Keras wants a list of shaped arrays. The layout is the bridge.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WeightsLayout:
    """The shapes of a model's weight arrays, in ``model.weights`` order."""

    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, arrays: Sequence[np.ndarray]) -> WeightsLayout:
        return cls(tuple(tuple(int(d) for d in np.shape(a)) for a in arrays))

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(np.prod(s, dtype=np.int64)) for s in self.shapes)

    @property
    def dim(self) -> int:
        return sum(self.sizes)

    def flatten(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        if len(arrays) != len(self.shapes):
            raise ValueError(f"expected {len(self.shapes)} arrays, got {len(arrays)}")
        if not arrays:
            return np.zeros(0, np.float32)
        return np.concatenate([np.asarray(a, np.float32).reshape(-1) for a in arrays])

    def check_flat(self, flat: np.ndarray) -> None:
        """Raise ValueError unless ``flat`` is one vector of this layout's ``dim``."""
        if flat.shape != (self.dim,):
            raise ValueError(f"expected a flat vector of {self.dim}, got shape {flat.shape}")

    def unflatten(self, flat: np.ndarray) -> list[np.ndarray]:
        self.check_flat(flat)
        out, start = [], 0
        for shape, size in zip(self.shapes, self.sizes):
            out.append(flat[start : start + size].reshape(shape))
            start += size
        return out


def weights_sha256(flat: np.ndarray) -> str:
    """A hash of the exact bits of a flat float32 weight vector."""
    return hashlib.sha256(np.ascontiguousarray(flat, np.float32).tobytes()).hexdigest()
