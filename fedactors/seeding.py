"""One root seed, many independent named streams; system randomness on request.

Every random draw in a run comes from a generator derived here from the
scenario's root seed and a *path* such as ``("dropout", round, device)``.
Deriving by path rather than by spawning in call order means a stream does not
depend on how many other streams were created before it, so the draws of
device 17 in round 3 are the same whatever else the run did. A stream's seed is
a counter-based key, BLAKE2b of (root seed, path) (:class:`StreamKey`), so
deriving one costs a hash, not a ``SeedSequence``: a big round derives one per
device.

The one exception is opt-in: DP noise and secure-aggregation secrets are taken
from :meth:`SeedTree.secret`, which under ``randomness="system"`` hands out
generators fed by the operating system's CSPRNG instead (``SystemBits``). A
seeded secret is no secret from anyone who knows the seed: they can redraw the
noise and subtract it, or recompute every key and unmask every update. That is
right for a simulator (the run replays bit for bit) and wrong for anything
protecting real data.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import threading
from functools import lru_cache
from typing import Any, Union

import numpy as np
from numpy.random.bit_generator import ISpawnableSeedSequence

PathPart = Union[str, int]

#: ``Scenario.randomness`` values: noise and secrets from the seed tree, or from the OS.
SEEDED, SYSTEM = "seeded", "system"
RANDOMNESS = (SEEDED, SYSTEM)


#: The version of the stream derivation below. A checkpoint records it: a run resumed under
#: another derivation would not replay (fedactors.simulation.options.RunOptions.fingerprint).
#: 1: ``SeedSequence(root, spawn_key=path)``; 2: BLAKE2b of (root, path), since 2026-12.
STREAMS_VERSION = 2
_DOMAIN = b"fedactors.seeding.v2"
_blake2b = hashlib.blake2b
_U64 = 2**64


def _encode_part(part: PathPart) -> bytes:
    """One path part as bytes no other part encodes to (type tag, then the value)."""
    if type(part) is int and 0 <= part < _U64:  # the common case, first: rounds and devices
        return b"i" + part.to_bytes(8, "little")
    if isinstance(part, bool) or not isinstance(part, (str, int, np.integer)):
        raise TypeError(f"seed path parts are str or int, got {part!r}")
    if isinstance(part, str):
        return _encode_name(part)
    value = int(part)
    if value < 0:
        raise ValueError(f"seed path integers must be >= 0, got {value}")
    if value >= _U64:
        raise ValueError(f"seed path integers must be < 2**64, got {value}")
    return b"i" + value.to_bytes(8, "little")


@lru_cache(maxsize=1024)
def _encode_name(name: str) -> bytes:
    # Length-prefixed, so ("ab", "c") and ("a", "bc") differ; cached because a big round
    # derives a stream per device from the same few names.
    raw = name.encode()
    return b"s" + len(raw).to_bytes(4, "little") + raw


#: The word types numpy's bit generators ask :meth:`StreamKey.generate_state` for, as they
#: pass them (the type, not a ``np.dtype``): a dictionary hit skips ``np.dtype``'s parsing.
_WORD_TYPES = {np.uint32: np.dtype(np.uint32), np.uint64: np.dtype(np.uint64)}


class StreamKey(ISpawnableSeedSequence):
    """The seed of one stream: 32 bytes of BLAKE2b over (root seed, path).

    A counter-based key: each stream is a pure function of the root and its
    path. A whole generator on it took 5 us against 29 us through a
    ``SeedSequence`` with that spawn key (measured side by side, 2026-12-02;
    the key itself ~3.5 us, most of it Python around one BLAKE2b). numpy's bit
    generators take it wherever they take a ``SeedSequence``: they ask it for
    their initial state words (:meth:`generate_state`).
    """

    __slots__ = ("digest", "n_children_spawned")

    def __init__(self, digest: bytes) -> None:
        self.digest = digest
        self.n_children_spawned = 0

    def generate_state(self, n_words: int, dtype: Any = np.uint32) -> np.ndarray:
        """``n_words`` words of ``dtype`` (uint32 or uint64) from the key: its own 32
        bytes first, then BLAKE2b of (key, block number) for as many more as asked."""
        word = _WORD_TYPES.get(dtype)  # numpy's bit generators pass the type and want <= 32 bytes
        if word is not None and 0 <= n_words * word.itemsize <= len(self.digest):
            return np.frombuffer(self.digest, word, count=n_words).copy()
        dtype = np.dtype(dtype)
        if dtype.kind != "u" or dtype.itemsize not in (4, 8):
            raise ValueError(f"dtype must be uint32 or uint64, got {dtype}")
        need = int(n_words) * dtype.itemsize
        data = self.digest
        block = 0
        while len(data) < need:
            data += hashlib.blake2b(self.digest + block.to_bytes(8, "little")).digest()
            block += 1
        return np.frombuffer(data, dtype, count=int(n_words)).copy()

    def spawn(self, n_children: int) -> list[StreamKey]:
        """Children keys, numbered on from earlier spawns (as ``SeedSequence.spawn``)."""
        first = self.n_children_spawned
        self.n_children_spawned += n_children
        return [StreamKey(hashlib.blake2b(b"spawn" + self.digest + i.to_bytes(8, "little"),
                                          digest_size=32).digest())
                for i in range(first, first + n_children)]


class SeedTree:
    """Derives ``np.random.Generator`` streams from the root seed by path.

    ``randomness`` (``"seeded"`` or ``"system"``) says where :meth:`secret`
    streams come from; every other stream is seeded either way.
    """

    def __init__(self, seed: int, randomness: str = SEEDED) -> None:
        if randomness not in RANDOMNESS:
            raise ValueError(f"randomness must be one of {RANDOMNESS}, got {randomness!r}")
        self.seed = int(seed)
        if self.seed < 0:
            raise ValueError(f"the root seed must be >= 0, got {self.seed}")
        self.randomness = randomness
        raw = self.seed.to_bytes((self.seed.bit_length() + 7) // 8 or 1, "little")
        self._prefix = _DOMAIN + len(raw).to_bytes(4, "little") + raw

    def key(self, *path: PathPart) -> StreamKey:
        """The stream at ``path``: independent of every other path and of call order."""
        data = b"".join([self._prefix, *map(_encode_part, path)])
        return StreamKey(_blake2b(data, digest_size=32).digest())

    def generator(self, *path: PathPart) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(self.key(*path)))

    def integer(self, *path: PathPart) -> int:
        """A 31-bit seed for libraries that take an int (Keras, TensorFlow)."""
        return int(self.key(*path).generate_state(1, np.uint32)[0] >> 1)

    def secret(self, *path: PathPart) -> np.random.Generator:
        """The generator for DP noise or secure-aggregation secrets at ``path``.

        Seeded (the default): ``generator(*path)``, so the run replays bit for
        bit, and anyone who knows the seed can redraw the noise or the keys.
        System: a new :func:`system_generator` on every call (``path`` then
        only names the draw; asking twice gives two independent streams).
        """
        return self.generator(*path) if self.randomness == SEEDED else system_generator()

    def secret_after(self, stream: np.random.Generator) -> np.random.Generator:
        """Like :meth:`secret`, for noise that by default continues ``stream``.

        A device's share of distributed noise has always been drawn from its
        round stream after its training draws; seeded, that stays so (same
        weights as before ``randomness`` existed), system, it is a fresh
        :func:`system_generator` and ``stream`` is left untouched.
        """
        return stream if self.randomness == SEEDED else system_generator()


# -- system randomness -------------------------------------------------------------

class _BitGen(ctypes.Structure):  # numpy's ``bitgen_t`` (numpy/random/bitgen.h)
    _fields_ = [
        ("state", ctypes.c_void_p),
        ("next_uint64", ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p)),
        ("next_uint32", ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_void_p)),
        ("next_double", ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_void_p)),
        ("next_raw", ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p)),
    ]


_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]

#: At most this many 64-bit words are fetched from ``os.urandom`` at a time (64 KiB):
#: one system call per 8,192 draws instead of one per draw. A stream starts with
#: ``_FIRST`` and doubles, since most (a device's keys) need only a few words.
_WORDS = 8192
_FIRST = 32
_DOUBLE = 1.0 / (1 << 53)


class _Words:
    """The OS words the callbacks hand out. Apart from ``SystemBits`` so that the
    callbacks do not point back at it: no cycle, freed as soon as its generator is."""

    def __init__(self) -> None:
        self.words: list[int] = []
        self.size = _FIRST

    def __call__(self, _state: Any) -> int:
        # Popped from the end: a list pop is the cheapest step per draw in Python.
        if not self.words:
            self.words = np.frombuffer(os.urandom(8 * self.size), "<u8").tolist()
            self.size = min(2 * self.size, _WORDS)
        return self.words.pop()


class SystemBits:
    """A numpy bit generator whose every bit comes from ``os.urandom``.

    ``os.urandom`` is the operating system's CSPRNG (Linux ``getrandom``), so
    no output can be predicted from other outputs, from the seed or from
    anything else the run wrote: numpy's own generators (PCG64, Philox, SFC64)
    give no such promise, PCG64's state can be recovered from its output, and
    a secure-aggregation server sees some outputs of a device's secret stream
    (AEAD nonces; the Shamir coefficients of every self-mask it reconstructs).
    Everything numpy derives from the bits (normals, bounded integers, bytes)
    is then as unpredictable as the bits; whether a floating-point Gaussian is
    a sound DP sampler is a separate matter (docs/privacy.md).

    Built for ``np.random.Generator``, which reads only ``capsule`` (numpy's
    ``bitgen_t``, here with Python callbacks) and ``lock``. It has no state
    to save: pickling a generator on it raises, so no secret can end up in a
    checkpoint. About 20-30x slower than PCG64 (a Python call per draw): about
    half a second per million normals. An exception inside a draw cannot cross numpy's C
    loop (ctypes prints it and numpy gets a zero word): ``os.urandom`` does not
    fail on Linux, but a ``KeyboardInterrupt`` from Python's default SIGINT
    handler could land there; the CLI's own handler never raises.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        words = _Words()
        fields = dict(_BitGen._fields_)
        # The callbacks must outlive the Generator's copy of the struct: kept here.
        self._callbacks = (
            fields["next_uint64"](words),
            fields["next_uint32"](lambda _state: words(None) >> 32),
            fields["next_double"](lambda _state: (words(None) >> 11) * _DOUBLE),
            fields["next_raw"](words),
        )
        self._struct = _BitGen(None, *self._callbacks)
        self.capsule = _capsule_new(ctypes.addressof(self._struct), b"BitGenerator", None)

    @property
    def state(self) -> dict:
        raise TypeError(_UNSAVEABLE)

    def __reduce__(self) -> Any:
        raise TypeError(_UNSAVEABLE)


_UNSAVEABLE = ("system randomness has no state to save: a generator on it cannot be pickled or "
               "checkpointed (docs/privacy.md, \"Seeded or system randomness\")")


def system_generator() -> np.random.Generator:
    """A ``np.random.Generator`` on :class:`SystemBits`: every bit from the OS CSPRNG.

    Examples:
        >>> a, b = system_generator(), system_generator()
        >>> bool(a.bytes(16) != b.bytes(16))
        True
    """
    return np.random.Generator(SystemBits())
