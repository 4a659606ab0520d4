"""Per-device data made on demand, for fleets too big to hold every device's arrays.

:class:`FederatedData` stores (and copies) every device's arrays: 100,000
devices of 100x20 floats is 800 MB before the copy. Most devices of a big
fleet are never selected in a run, and a selected one needs its data only
while it trains, so :class:`GeneratedData` stores a generator recipe and each
device's example count, and makes ``client(d)`` when asked. Each device's
arrays come from its own seed stream, so they are the same on every call, in
any order, whatever other devices were asked for. Recently used devices are
kept up to a memory budget, since a device selected once is often selected
again (and a fleet that fits the budget is generated only once).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedactors.data.federated import _check_pair, _frozen, arrays_sha256
from fedactors.errors import ConfigError
from fedactors.seeding import SeedTree

#: The fleet size (bytes of every device's arrays) up to which a checkpoint's data digest
#: covers every device, and how many devices it covers beyond that.
DIGEST_BYTES = 64 * 2**20
DIGEST_SAMPLE = 64

#: ``generate(device, num_examples, rng) -> (x, y)`` for one device.
ClientGenerator = Callable[[int, int, np.random.Generator], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class GeneratedData:
    """The :class:`FederatedData` interface, with each device's arrays generated lazily.

    Build it with :meth:`create`; device 0 is generated once up front so a
    wrong dtype or shape is reported when the scenario loads.
    """

    sizes: np.ndarray = field(repr=False)  # examples per device
    generate: ClientGenerator = field(repr=False)
    test: tuple[np.ndarray, np.ndarray] = field(repr=False)
    seeds: SeedTree = field(repr=False)  # the data's own root: device d's stream is (d,)
    cache_bytes: int = 256 * 2**20
    _cache: OrderedDict = field(default_factory=OrderedDict, repr=False, compare=False)
    _cached: list = field(default_factory=lambda: [0], repr=False, compare=False)

    @classmethod
    def create(
        cls,
        sizes: np.ndarray,
        generate: ClientGenerator,
        test: tuple[np.ndarray, np.ndarray],
        rng: np.random.Generator,
        cache_bytes: int = 256 * 2**20,
    ) -> GeneratedData:
        sizes = np.asarray(sizes, np.int64)
        if sizes.ndim != 1 or len(sizes) == 0:
            raise ConfigError("sizes", "must be a non-empty 1-D array of example counts")
        if np.any(sizes < 1):
            raise ConfigError("sizes", "every device must hold at least 1 example")
        tx, ty = _check_pair("test", test)
        sizes.flags.writeable = False
        data = cls(sizes, generate, (_frozen(tx), _frozen(ty)),
                   SeedTree(int(rng.integers(2**63))), cache_bytes)
        x, y = _check_pair("clients[0]", data.generate(0, int(sizes[0]), data._rng(0)))
        if x.shape[1:] != tx.shape[1:] or y.dtype != ty.dtype or y.shape[1:] != ty.shape[1:]:
            raise ConfigError("clients[0]", f"device 0 has x{x.shape[1:]} y {y.dtype}"
                              f"{list(y.shape[1:])}, the test set x{tx.shape[1:]} "
                              f"y {ty.dtype}{list(ty.shape[1:])}")
        return data

    @property
    def num_devices(self) -> int:
        return len(self.sizes)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.test[0].shape[1:])

    def sha256(self) -> str:
        """A digest of the devices' sizes, the test set and the devices' arrays that a
        checkpoint records, so a resume on changed data is refused.

        Every device's arrays when the fleet's come to at most ``DIGEST_BYTES`` (making
        them costs about as much as one round that selects every device); beyond that,
        ``DIGEST_SAMPLE`` devices spread evenly over the fleet (device 0 first), since making
        a big fleet's data whole at every start would cost more than the run's rounds: a
        change to how another device's data is made then goes unseen.
        """
        return arrays_sha256([self.sizes, *self.test,
                              *(a for d in self.digest_devices() for a in self._made(d))])

    def _made(self, device: int) -> tuple[np.ndarray, np.ndarray]:
        """``client(device)``, a failure of the generator named by its device (found from
        outside: the digest made at load let the generator's bare exception through)."""
        try:
            return self.client(device)
        except ConfigError:
            raise
        except Exception as exc:  # the user's generator: whatever it raises
            raise ConfigError(f"clients[{device}]", f"the generator raised "
                                                   f"{type(exc).__name__}: {exc}") from exc

    def digest_devices(self) -> list[int]:
        """The devices whose arrays :meth:`sha256` covers (ascending)."""
        x, y = self.client(0)
        per_example = (x.nbytes + y.nbytes) / max(len(x), 1)
        if per_example * float(self.sizes.sum()) <= DIGEST_BYTES:
            return list(range(self.num_devices))
        spread = np.linspace(0, self.num_devices - 1, DIGEST_SAMPLE).astype(np.int64)
        return [int(d) for d in np.unique(spread)]  # the first and the last among them

    def num_examples(self, device: int) -> int:
        return int(self.sizes[self._check(device)])

    def client(self, device: int) -> tuple[np.ndarray, np.ndarray]:
        """Device ``device``'s private ``(x, y)``, the same on every call."""
        d = self._check(device)
        hit = self._cache.get(d)
        if hit is not None:
            self._cache.move_to_end(d)
            return hit
        rng = self._rng(d)
        x, y = self.generate(d, int(self.sizes[d]), rng)
        # Cheap structural checks on every call; the full check (finiteness
        # too) ran on device 0 in create(), since scanning every array on
        # every call would cost more than generating it.
        if (not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray)
                or x.dtype != self.test[0].dtype or y.dtype != self.test[1].dtype
                or x.shape[1:] != self.test[0].shape[1:] or len(x) != self.sizes[d]
                or len(y) != len(x)):
            raise ConfigError(f"clients[{d}]", _mismatch(x, y, int(self.sizes[d]), self.test))
        # Generated fresh, so no copy is needed to keep it private: just freeze it.
        x.flags.writeable = False
        y.flags.writeable = False
        self._remember(d, (x, y))
        return x, y

    def _remember(self, device: int, pair: tuple[np.ndarray, np.ndarray]) -> None:
        size = pair[0].nbytes + pair[1].nbytes
        if size > self.cache_bytes:
            return
        self._cache[device] = pair
        self._cached[0] += size
        while self._cached[0] > self.cache_bytes:
            _, (x, y) = self._cache.popitem(last=False)
            self._cached[0] -= x.nbytes + y.nbytes

    def _rng(self, device: int) -> np.random.Generator:
        """Device ``device``'s own stream: independent of which devices were asked before."""
        return self.seeds.generator(device)

    def _check(self, device: int) -> int:
        if isinstance(device, bool) or not 0 <= int(device) < len(self.sizes):
            raise IndexError(f"device {device!r} out of range: there are {len(self.sizes)} devices")
        return int(device)


def _mismatch(x: Any, y: Any, n: int, test: tuple[np.ndarray, np.ndarray]) -> str:
    """What is wrong with a device's generated ``(x, y)``: the first difference from
    the test set's dtypes and example shapes, or from the device's ``n`` examples."""
    tx, ty = test
    for name, a, t in (("x", x, tx), ("y", y, ty)):
        if not isinstance(a, np.ndarray):
            return f"generated {name} is a {type(a).__name__}, not a numpy array"
        if a.dtype != t.dtype:
            return f"generated {name} is {a.dtype}, the test set's {t.dtype}"
        if a.shape[1:] != t.shape[1:]:
            return (f"generated {name} has examples of shape {a.shape[1:]}, the test set's "
                    f"{t.shape[1:]}")
    if len(x) != n:
        return f"generated {len(x)} examples, but sizes gives the device {n}"
    return f"generated {len(y)} labels for {len(x)} examples"
