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
        return len(self.class_index)

    @property
    def kinds(self) -> np.ndarray:
        """Each device's class name."""
        return np.asarray([c.name for c in self.classes])[self.class_index]

    def kind(self, device: int) -> str:
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
        return float(self.rtt[device] / 2 + nbytes * 8 / self.downlink[device])

    def upload_time(self, device: int, nbytes: int) -> float:
        return float(self.rtt[device] / 2 + nbytes * 8 / self.uplink[device])
