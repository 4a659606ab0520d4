"""The fleet: every device's drawn profile, held column by column.

Columns (one numpy array per attribute) rather than an object per device keep
a 100,000-device fleet to a few megabytes and let the server ask "who is
online now?" in one vectorized call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedactors.devices.profile import DeviceClass
from fedactors.errors import ConfigError


@dataclass(frozen=True)
class Fleet:
    """Every device's drawn profile: one numpy array per attribute, indexed by device id.

    The simulator builds it with ``Fleet.build(scenario.fleet, rng)`` and passes
    it to the scenario's ``data(fleet, rng)`` function, which must return data
    for exactly ``fleet.size`` devices, in device-id order. Ids run class by
    class, in the order the classes are listed: the first class's ``count``
    devices are 0, 1, ..., the next class's follow on. Everything a data
    function needs is below; it usually reads ``size``, ``examples``, ``kinds``
    and ``classes``.

    Attributes:
        classes: The ``DeviceClass`` objects, in the order given (a tuple).
        class_index: int32 array, one entry per device: the index into
            ``classes`` of the device's class.
        compute: float64 array: each device's training speed in examples per
            simulated second.
        rtt: float64 array: each device's round-trip time in seconds.
        uplink: float64 array: each device's upload bandwidth in bits per second.
        downlink: float64 array: each device's download bandwidth in bits per
            second.
        dropout: float64 array: each device's probability of going silent in a
            round it is selected for (its class's ``dropout``).
        examples: int64 array: each device's suggested number of examples
            (>= 1), drawn from its class's ``examples``; what a data function
            usually sizes each device's data by.
        availability_profiles: One entry per class: the per-device values its
            availability model drew at build time (for ``Diurnal``, a float64
            array of time-zone offsets in hours), or None for a model that needs
            none.
        size: Number of devices (a property).
        kinds: str array: each device's class name (a property);
            ``fleet.kind(device)`` gives one device's.

    Examples:
        >>> import numpy as np
        >>> from fedactors import DeviceClass, FederatedData, Fleet, Uniform
        >>> fleet = Fleet.build([DeviceClass("camera", count=2, examples=50),
        ...                      DeviceClass("plug", count=3, examples=Uniform(10, 20))],
        ...                     np.random.default_rng(0))
        >>> fleet.size, fleet.kinds.tolist()
        (5, ['camera', 'camera', 'plug', 'plug', 'plug'])
        >>> fleet.examples
        array([50, 50, 16, 13, 10])
        >>> fleet.upload_time(0, nbytes=125_000)  # 0.05 s / 2 + 1e6 bits / 10e6 bits/s
        0.125

        A scenario's data function sizes each device's data from the fleet:

        >>> def data(fleet, rng):
        ...     def draw(n):
        ...         x = rng.normal(size=(n, 4)).astype(np.float32)
        ...         return x, (x[:, 0] > 0).astype(np.int32)
        ...     return FederatedData.from_arrays([draw(int(n)) for n in fleet.examples], draw(100))
        >>> data(fleet, np.random.default_rng(1)).num_examples(4)
        10
    """

    classes: tuple[DeviceClass, ...]
    class_index: np.ndarray = field(repr=False)  # device -> index into classes
    compute: np.ndarray = field(repr=False)  # examples per simulated second
    rtt: np.ndarray = field(repr=False)  # seconds
    uplink: np.ndarray = field(repr=False)  # bits per second
    downlink: np.ndarray = field(repr=False)
    dropout: np.ndarray = field(repr=False)
    examples: np.ndarray = field(repr=False)  # suggested examples per device
    #: Per class, the availability model's per-device values (e.g. time zones), or None.
    availability_profiles: tuple = field(default=(), repr=False)

    @classmethod
    def build(cls, classes: Sequence[DeviceClass], rng: np.random.Generator) -> Fleet:
        """Draw every device of ``classes`` (at least one, with unique names) from ``rng``."""
        classes = tuple(classes)
        if not classes:
            raise ConfigError("fleet", "must list at least one DeviceClass")
        names = [c.name for c in classes]
        for name in names:
            if names.count(name) > 1:
                raise ConfigError("fleet", f"device class names must be unique, {name!r} repeats")

        def column(draw) -> np.ndarray:
            return np.concatenate([draw(c) for c in classes])

        return cls(
            classes=classes,
            class_index=column(lambda c: np.full(c.count, names.index(c.name), np.int32)),
            compute=column(lambda c: c.compute.sample(rng, c.count)),
            rtt=column(lambda c: c.network.rtt.sample(rng, c.count)),
            uplink=column(lambda c: c.network.uplink.sample(rng, c.count)),
            downlink=column(lambda c: c.network.downlink.sample(rng, c.count)),
            dropout=column(lambda c: np.full(c.count, c.dropout)),
            examples=column(
                lambda c: np.maximum(1, np.rint(c.examples.sample(rng, c.count))).astype(np.int64)
            ),
            # Drawn last, so adding an availability model changes no other column.
            availability_profiles=tuple(c.availability.draw_profile(rng, c.count) for c in classes),
        )

    @property
    def size(self) -> int:
        """Number of devices."""
        return len(self.class_index)

    @property
    def kinds(self) -> np.ndarray:
        """Each device's class name."""
        return np.asarray([c.name for c in self.classes])[self.class_index]

    def kind(self, device: int) -> str:
        """Device ``device``'s class name."""
        return self.classes[self.class_index[device]].name

    def online(self, t: float, rng: np.random.Generator) -> np.ndarray:
        """Ids of the devices online at simulated time ``t``, ascending."""
        mask = np.zeros(self.size, bool)
        for i, cls_ in enumerate(self.classes):
            ids = np.flatnonzero(self.class_index == i)
            profile = self.availability_profiles[i] if self.availability_profiles else None
            if profile is None:
                mask[ids] = cls_.availability.online(t, ids, rng)
            else:
                mask[ids] = cls_.availability.online_profiled(t, ids, rng, profile)
        return np.flatnonzero(mask)

    def download_time(self, device: int, nbytes: int) -> float:
        """Seconds for device ``device`` to receive ``nbytes`` bytes: ``rtt / 2 + 8 * nbytes / downlink``."""
        return float(self.rtt[device] / 2 + nbytes * 8 / self.downlink[device])

    def upload_time(self, device: int, nbytes: int) -> float:
        """Seconds for device ``device`` to send ``nbytes`` bytes: ``rtt / 2 + 8 * nbytes / uplink``."""
        return float(self.rtt[device] / 2 + nbytes * 8 / self.uplink[device])
