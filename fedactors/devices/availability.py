"""When a device is online and can be selected.

Availability is asked of the whole fleet at once (vectorized over device ids)
because a server samples its cohort from every device online *now*.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from fedactors.devices.distributions import Distribution, Uniform, as_distribution
from fedactors.errors import ConfigError
from fedactors.validation import non_negative, positive, probability


class Availability(abc.ABC):
    """Which of ``devices`` are online at simulated time ``t``."""

    @abc.abstractmethod
    def online(self, t: float, devices: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...

    def validate(self, field: str) -> None:
        """Raise ConfigError naming ``field`` for a bad option."""

    def draw_profile(self, rng: np.random.Generator, count: int) -> Optional[np.ndarray]:
        """Per-device values drawn once, when the fleet is built (None: the model needs none)."""
        return None

    def online_profiled(
        self, t: float, devices: np.ndarray, rng: np.random.Generator, profile: np.ndarray
    ) -> np.ndarray:
        """``online`` for models with a per-device profile (aligned with ``devices``)."""
        return self.online(t, devices, rng)


@dataclass(frozen=True)
class AlwaysOnline(Availability):
    """Every device is online at every selection: the default availability.

    It takes no options; a ``DeviceClass`` without an ``availability``
    gets ``AlwaysOnline()``.

    Examples:
        >>> import numpy as np
        >>> from fedactors import AlwaysOnline, DeviceClass
        >>> DeviceClass("laptop", count=3).availability
        AlwaysOnline()
        >>> AlwaysOnline().online(0.0, np.arange(4), np.random.default_rng(0))
        array([ True,  True,  True,  True])
    """

    def online(self, t: float, devices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.ones(len(devices), bool)


@dataclass(frozen=True)
class OnlineShare(Availability):
    """Online a fixed share of the time, independently at each selection.

    At every selection each device is online with probability ``share``, drawn
    afresh from the selection's generator, independently of the other devices
    and of its own earlier selections (no memory: a device offline now may be
    online a second later).

    Args:
        share: Probability in [0, 1] that a device is online at a given
            selection, which is also the long-run fraction of time it can be
            selected. Checked when the model is given to a ``DeviceClass``
            (a ``ConfigError`` naming ``availability.share``).

    Examples:
        >>> import numpy as np
        >>> from fedactors import DeviceClass, OnlineShare
        >>> phones = DeviceClass("phone", count=8, availability=OnlineShare(0.5))
        >>> phones.availability.online(0.0, np.arange(8), np.random.default_rng(0))
        array([False,  True,  True,  True, False, False, False, False])
        >>> DeviceClass("phone", count=8, availability=OnlineShare(1.5))
        Traceback (most recent call last):
            ...
        fedactors.errors.ConfigError: availability.share: must be in [0, 1], got 1.5
    """

    share: float

    def validate(self, field: str) -> None:
        probability(f"{field}.share", self.share)

    def online(self, t: float, devices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rng.random(len(devices)) < self.share


@dataclass(frozen=True)
class Trace(Availability):
    """An explicit schedule: online during each ``(start, end)`` window, repeating
    every ``period`` seconds if given (e.g. 86400 for a daily routine).

    Times are simulated seconds since the start of the run, and a window covers
    ``start <= t < end``. The schedule is shared: every device of the class is
    online or offline together (use several classes, or ``Diurnal``, for
    devices on different schedules). With a ``period``, ``t`` is first taken
    modulo ``period``, so a window that crosses the end of the period must be
    given as two windows (22:00-06:00 daily is ``[(79200, 86400), (0, 21600)]``).

    Args:
        windows: ``(start, end)`` pairs in simulated seconds, with
            ``0 <= start < end``; the devices are online while ``t`` (modulo
            ``period``) lies in any of them.
        period: Length in seconds (> 0) of the cycle the windows repeat in, or
            ``None`` (the default) for a one-off schedule: after the last window
            ends the devices stay offline for the rest of the run.

    Both are checked when the model is given to a ``DeviceClass``.

    Examples:
        >>> import numpy as np
        >>> from fedactors import Trace
        >>> nights = Trace([(0, 6 * 3600)], period=86400)  # 00:00-06:00 every day
        >>> rng = np.random.default_rng(0)
        >>> nights.online(86400 + 3600.0, np.arange(3), rng)  # 01:00 on day 2
        array([ True,  True,  True])
        >>> nights.online(12 * 3600.0, np.arange(3), rng)  # noon
        array([False, False, False])
    """

    windows: Sequence[tuple[float, float]]
    period: float | None = None

    def validate(self, field: str) -> None:
        if self.period is not None:
            positive(f"{field}.period", self.period)
        for i, window in enumerate(self.windows):
            try:
                start, end = window
            except (TypeError, ValueError):
                raise ConfigError(
                    f"{field}.windows[{i}]", f"must be a (start, end) pair, got {window!r}"
                ) from None
            non_negative(f"{field}.windows[{i}]", start)
            if end <= start:
                raise ConfigError(f"{field}.windows[{i}]", f"end must be > start, got {window!r}")

    def online(self, t: float, devices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        tt = t % self.period if self.period else t
        up = any(start <= tt < end for start, end in self.windows)
        return np.full(len(devices), up)


HOUR = 3600.0


def local_hours(t: float, tz_offset_h: np.ndarray) -> np.ndarray:
    """Each device's local time of day in hours [0, 24), at simulated time ``t`` (t = 0 is
    midnight UTC)."""
    return np.mod(t / HOUR + np.asarray(tz_offset_h, np.float64), 24.0)


def in_window(hours: np.ndarray, start_h: float, length_h: float) -> np.ndarray:
    """Whether each local hour lies in the daily window [start, start + length), which may
    wrap past midnight (22:00 + 8 h ends at 06:00)."""
    return np.mod(np.asarray(hours, np.float64) - start_h, 24.0) < length_h


@dataclass(frozen=True)
class Diurnal(Availability):
    """Phones that can train mostly at night, in their own time zone.

    Production FL only trains on phones that are charging, idle and on an
    unmetered network, which in practice means at night local time (Bonawitz
    et al. 2019, "Towards federated learning at scale", sec. 2 and fig. 7). Each
    device gets a time-zone offset (hours added to UTC) drawn once from
    ``tz_offset`` when the fleet is built; at each selection it is online with
    probability ``share_in_window`` while its local time is in the daily window
    ``[window_start_h, window_start_h + window_hours)`` and ``share_outside``
    otherwise, independently per device and per selection (drawn from the
    selection's generator, so the server's view is reproducible).

    Args:
        window_start_h: Local hour the daily window opens, in [0, 24).
            Default 22.0 (22:00).
        window_hours: Length of the window in hours, in (0, 24]; it may wrap
            past midnight (the default 22:00 + 8 h ends at 06:00). Default 8.0.
        tz_offset: Each device's time-zone offset in hours added to UTC
            (in winter -5 for New York, 1 for Paris): a number, the same for
            every device, or a distribution of hours (``Constant``,
            ``Uniform``, ``LogNormal``) drawn once per device when the fleet
            is built. Values below -24 are rejected. Default
            ``Uniform(-8.0, 3.0)`` (US Pacific to Moscow).
        share_in_window: Probability in [0, 1] that a device is online at a
            selection while its local time is inside the window. Default 0.5.
        share_outside: Probability in [0, 1] that it is online at a selection
            outside the window. Default 0.02.

    The options are checked when the model is given to a ``DeviceClass``.
    Used on its own, without a fleet, every device is taken to be on UTC.

    Examples:
        >>> import numpy as np
        >>> from fedactors import Diurnal
        >>> nights = Diurnal()  # online 22:00-06:00 local time with probability 0.5
        >>> tz = np.array([0.0, -8.0, 3.0])  # UTC, UTC-8 and UTC+3
        >>> nights.online_share(0.0, tz)  # midnight UTC: 00:00, 16:00 and 03:00 local
        array([0.5 , 0.02, 0.5 ])
        >>> nights.online_share(12 * 3600.0, tz)  # noon UTC: 12:00, 04:00 and 15:00 local
        array([0.02, 0.5 , 0.02])
    """

    window_start_h: float = 22.0
    window_hours: float = 8.0
    tz_offset: Union[float, Distribution] = Uniform(-8.0, 3.0)
    share_in_window: float = 0.5
    share_outside: float = 0.02

    def validate(self, field: str) -> None:
        start = non_negative(f"{field}.window_start_h", self.window_start_h)
        if start >= 24.0:
            raise ConfigError(f"{field}.window_start_h", f"must be < 24, got {self.window_start_h!r}")
        length = positive(f"{field}.window_hours", self.window_hours)
        if length > 24.0:
            raise ConfigError(f"{field}.window_hours", f"must be <= 24, got {self.window_hours!r}")
        if not isinstance(self.tz_offset, (int, float, Distribution)) or isinstance(self.tz_offset, bool):
            raise ConfigError(f"{field}.tz_offset",
                              f"must be hours or a Distribution of hours, got {self.tz_offset!r}")
        as_distribution(self.tz_offset).check(f"{field}.tz_offset", -24.0, False)
        probability(f"{field}.share_in_window", self.share_in_window)
        probability(f"{field}.share_outside", self.share_outside)

    def draw_profile(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return as_distribution(self.tz_offset).sample(rng, count).astype(np.float64)

    def online_share(self, t: float, tz_offset_h: np.ndarray) -> np.ndarray:
        """Each device's probability of being online at ``t``."""
        inside = in_window(local_hours(t, tz_offset_h), self.window_start_h, self.window_hours)
        return np.where(inside, self.share_in_window, self.share_outside)

    def online_profiled(
        self, t: float, devices: np.ndarray, rng: np.random.Generator, profile: np.ndarray
    ) -> np.ndarray:
        return rng.random(len(devices)) < self.online_share(t, profile)

    def online(self, t: float, devices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Without a fleet profile every device is taken to be on UTC."""
        return self.online_profiled(t, devices, rng, np.zeros(len(devices)))
