"""One root seed, many independent named streams.

Every random draw in a run comes from a generator derived here from the
scenario's root seed and a *path* such as ``("dropout", round, device)``.
Deriving by path rather than by spawning in call order means a stream does not
depend on how many other streams were created before it, so the draws of
device 17 in round 3 are the same whatever else the run did.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Union

import numpy as np

PathPart = Union[str, int]


def _part_to_int(part: PathPart) -> int:
    if isinstance(part, (bool,)) or not isinstance(part, (str, int, np.integer)):
        raise TypeError(f"seed path parts are str or int, got {part!r}")
    if isinstance(part, str):
        return _name_to_int(part)
    value = int(part)
    if value < 0:
        raise ValueError(f"seed path integers must be >= 0, got {value}")
    return value


@lru_cache(maxsize=1024)
def _name_to_int(name: str) -> int:
    # A stable hash (unlike hash()) so names map to the same key every run;
    # cached because a big round derives a stream per device from the same names.
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


class SeedTree:
    """Derives ``np.random.Generator`` streams from a root ``SeedSequence``."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._root = np.random.SeedSequence(self.seed)

    def sequence(self, *path: PathPart) -> np.random.SeedSequence:
        key = tuple(_part_to_int(p) for p in path)
        return np.random.SeedSequence(self._root.entropy, spawn_key=key)

    def generator(self, *path: PathPart) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(self.sequence(*path)))

    def integer(self, *path: PathPart) -> int:
        """A 31-bit seed for libraries that take an int (Keras, TensorFlow)."""
        return int(self.sequence(*path).generate_state(1, np.uint32)[0] >> 1)
