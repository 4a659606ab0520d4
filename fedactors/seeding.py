"""One root seed, many independent named streams.

Every random draw in a run comes from a generator derived here from the
scenario's root seed and a *path* such as ``("dropout", round, device)``.
Deriving by path rather than by spawning in call order means a stream does not
depend on how many other streams were created before it, so the draws of
device 17 in round 3 are the same whatever else the run did.

A stream's state is a keyed hash (BLAKE2b) of the root entropy and the path,
fed to a PCG64 generator through a minimal seed-sequence object. A big round
derives two streams per selected device (its own and its data's); numpy's
``SeedSequence`` mixing plus the OS entropy read that every bit generator's
constructor makes cost ~10 us per stream, the hash ~2 us.
"""

from __future__ import annotations

import hashlib
from typing import Union

import numpy as np
from numpy.random.bit_generator import ISeedSequence

PathPart = Union[str, int]


def _check_part(part: PathPart) -> PathPart:
    if type(part) is int or type(part) is str:  # the common case, checked cheaply
        if type(part) is int and part < 0:
            raise ValueError(f"seed path integers must be >= 0, got {part}")
        return part
    if isinstance(part, bool) or not isinstance(part, (str, int, np.integer)):
        raise TypeError(f"seed path parts are str or int, got {part!r}")
    if isinstance(part, str):
        return str(part)
    return _check_part(int(part))


class PathSeed(ISeedSequence):
    """The seed material of one stream: a hash of (root entropy, path).

    ``repr`` of the tuple is an unambiguous encoding (a name and a number
    never look alike), and BLAKE2b of any length is a uniform draw, so
    streams of different paths are independent for every practical purpose.
    """

    __slots__ = ("_material",)

    def __init__(self, entropy: int, path: tuple[PathPart, ...]) -> None:
        self._material = repr((int(entropy), *(_check_part(p) for p in path))).encode()

    def generate_state(self, n_words: int, dtype=np.uint32) -> np.ndarray:
        dtype = np.dtype(dtype)
        size = n_words * dtype.itemsize
        if size <= 64:  # BLAKE2b's longest digest; PCG64 asks for 32 bytes
            digest = hashlib.blake2b(self._material, digest_size=size).digest()
        else:
            digest = hashlib.shake_256(self._material).digest(size)
        # Little-endian whatever the machine, so a seed means the same everywhere.
        return np.frombuffer(digest, dtype.newbyteorder("<")).astype(dtype)


def path_generator(entropy: int, path: tuple[PathPart, ...]) -> np.random.Generator:
    """The generator of ``path`` under root ``entropy`` (the same on every call)."""
    return np.random.Generator(np.random.PCG64(PathSeed(entropy, path)))


class SeedTree:
    """Derives ``np.random.Generator`` streams from a root seed by path."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    def generator(self, *path: PathPart) -> np.random.Generator:
        return path_generator(self.seed, path)

    def integer(self, *path: PathPart) -> int:
        """A 31-bit seed for libraries that take an int (Keras, TensorFlow)."""
        return int(PathSeed(self.seed, path).generate_state(1, np.uint32)[0] >> 1)
