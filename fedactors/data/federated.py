"""The one shape every scenario's data takes: private per-device arrays plus a server test set.

A scenario builds its data however it likes and hands the simulator a
:class:`FederatedData`. Validating once, here, means a wrong dtype or a
mismatched feature shape is reported as "device 12's x is float64" when the
scenario loads, not as a shape error deep inside round 40 of a Keras fit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from fedactors.errors import ConfigError

#: Label dtypes the simulator trains on: int32 class ids or float32 regression targets.
LABEL_DTYPES = (np.dtype(np.int32), np.dtype(np.float32))


def arrays_sha256(arrays: Iterable[np.ndarray]) -> str:
    """SHA-256 over each array's dtype, shape and bytes, in order."""
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(a.data)
    return digest.hexdigest()


def _frozen(a: np.ndarray) -> np.ndarray:
    """A private read-only copy, so no device's training can edit another's data
    (or the caller's array) in place."""
    out = np.array(a, copy=True, order="C")
    out.flags.writeable = False
    return out


def _same_kind(field: str, who: str, x: np.ndarray, y: np.ndarray, other: str,
               ox: np.ndarray, oy: np.ndarray) -> None:
    """Refuse, naming ``field``, arrays whose features or labels differ from ``other``'s."""
    verb = "have" if other == "the devices" else "has"
    if x.shape[1:] != ox.shape[1:]:
        raise ConfigError(f"{field}.x", f"{who} has feature shape {x.shape[1:]}, but {other} "
                                        f"{verb} {ox.shape[1:]}")
    if y.dtype != oy.dtype or y.shape[1:] != oy.shape[1:]:
        raise ConfigError(f"{field}.y", f"{who} has labels {y.dtype}{list(y.shape[1:])}, but "
                                        f"{other} {verb} {oy.dtype}{list(oy.shape[1:])}")


def _check_pair(field: str, pair: object) -> tuple[np.ndarray, np.ndarray]:
    """One ``(x, y)`` pair's own checks: types, dtypes, lengths, finiteness."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ConfigError(field, f"must be an (x, y) pair of arrays, got {type(pair).__name__}")
    x, y = pair
    for name, a in (("x", x), ("y", y)):
        if not isinstance(a, np.ndarray):
            raise ConfigError(f"{field}.{name}", f"must be a numpy array, got {type(a).__name__}")
    if x.dtype != np.float32:
        raise ConfigError(
            f"{field}.x", f"must be float32, got dtype {x.dtype} (use .astype(np.float32))"
        )
    if x.ndim < 2:
        raise ConfigError(
            f"{field}.x", f"must have shape (examples, *features), got shape {x.shape}"
        )
    if y.dtype not in LABEL_DTYPES:
        raise ConfigError(
            f"{field}.y",
            f"must be int32 (classes) or float32 (regression), got dtype {y.dtype}",
        )
    if y.ndim < 1 or len(y) != len(x):
        raise ConfigError(
            f"{field}.y",
            f"must have one label per example: x has {len(x)} examples, y has shape {y.shape}",
        )
    if len(x) < 1:
        raise ConfigError(field, "must hold at least 1 example, got 0")
    # NaN/inf would silently poison the global model through the average.
    if not np.all(np.isfinite(x)):
        raise ConfigError(f"{field}.x", "must be finite, found NaN or inf")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise ConfigError(f"{field}.y", "must be finite, found NaN or inf")
    return x, y


@dataclass(frozen=True)
class FederatedData:
    """Each device's private arrays plus a held-out test set for the server.

    ``clients[i]`` is device ``i``'s ``(x, y)``; only device ``i``'s actor may
    read it. ``test`` belongs to the server and is used only for evaluation.
    Build it with ``from_arrays``, which checks the contract; the arrays
    it stores are read-only copies.

    Attributes:
        clients: One ``(x, y)`` pair per device, indexed by device id: ``x`` a
            float32 array of shape ``(examples, *features)``, ``y`` int32 class
            ids or float32 regression targets, one label per example. Read it
            through ``client(device)``; ``num_examples(device)`` is ``len(x)``,
            the device's FedAvg weight.
        test: The server's held-out ``(x, y)``, with the same feature shape and
            label dtype as every device's.
        num_devices: Number of devices, ``len(clients)`` (a property); a
            scenario's data must have one per fleet device.
        feature_shape: ``x.shape[1:]``, shared by every device and the test set
            (a property).

    Examples:
        >>> import numpy as np
        >>> from fedactors import FederatedData
        >>> rng = np.random.default_rng(0)
        >>> def draw(n):
        ...     x = rng.normal(size=(n, 3)).astype(np.float32)
        ...     return x, (x.sum(axis=1) > 0).astype(np.int32)
        >>> data = FederatedData.from_arrays([draw(10), draw(25)], test=draw(50))
        >>> data.num_devices, data.num_examples(1), data.feature_shape
        (2, 25, (3,))
        >>> x, y = data.client(0)
        >>> x.shape, y.dtype, x.flags.writeable
        ((10, 3), dtype('int32'), False)
        >>> FederatedData.from_arrays([(np.zeros((4, 3)), np.zeros(4, np.int32))], test=draw(50))
        Traceback (most recent call last):
            ...
        fedactors.errors.ConfigError: clients[0].x: must be float32, got dtype float64 (use .astype(...))
    """

    clients: tuple[tuple[np.ndarray, np.ndarray], ...]
    test: tuple[np.ndarray, np.ndarray]

    @property
    def num_devices(self) -> int:
        """Number of devices."""
        return len(self.clients)

    def client(self, device: int) -> tuple[np.ndarray, np.ndarray]:
        """Device ``device``'s private ``(x, y)``."""
        # Reject negatives explicitly: tuple indexing would quietly wrap
        # device -1 to the last device's data.
        if isinstance(device, bool) or not 0 <= int(device) < len(self.clients):
            raise IndexError(
                f"device {device!r} out of range: there are {len(self.clients)} devices"
            )
        return self.clients[int(device)]

    def num_examples(self, device: int) -> int:
        """How many examples device ``device`` holds (its FedAvg weight)."""
        return len(self.client(device)[0])

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """The shape of one example's features, ``x.shape[1:]``."""
        return tuple(self.test[0].shape[1:])

    def sha256(self) -> str:
        """A digest of every array, device by device, then the test set: a checkpoint
        records it, so a run resumes only on the data its rounds trained on."""
        return arrays_sha256(a for pair in (*self.clients, self.test) for a in pair)

    @classmethod
    def from_arrays(
        cls,
        clients: Sequence[tuple[np.ndarray, np.ndarray]],
        test: tuple[np.ndarray, np.ndarray],
    ) -> FederatedData:
        """Validate and freeze per-device ``(x, y)`` pairs and the server's test pair.

        Checks: at least one device; ``x`` float32 of shape ``(n, *features)``
        with the same ``features`` everywhere; ``y`` int32 or float32, one
        label per example, the same dtype and label shape everywhere; every
        device and the test set hold >= 1 example; all values finite.
        Raises ``ConfigError`` naming the device.
        """
        if isinstance(clients, (str, bytes)) or not isinstance(clients, Sequence):
            raise ConfigError(
                "clients", f"must be a sequence of (x, y) pairs, got {type(clients).__name__}"
            )
        if len(clients) == 0:
            raise ConfigError("clients", "must hold at least 1 device, got 0")
        tx, ty = _check_pair("test", test)
        pairs = [_check_pair(f"clients[{i}]", pair) for i, pair in enumerate(clients)]
        # A model has one input and one label shape; a mismatch is a scenario bug. The
        # devices are held to device 0, then the test set to them: when several devices
        # agree and the test set does not, the test set is the one to name.
        x0, y0 = pairs[0]
        for i, (x, y) in enumerate(pairs[1:], start=1):
            _same_kind(f"clients[{i}]", f"device {i}", x, y, "device 0", x0, y0)
        if len(pairs) > 1:
            _same_kind("test", "the test set", tx, ty, "the devices", x0, y0)
        else:
            _same_kind("clients[0]", "device 0", x0, y0, "the test set", tx, ty)
        checked = tuple((_frozen(x), _frozen(y)) for x, y in pairs)
        return cls(clients=checked, test=(_frozen(tx), _frozen(ty)))
