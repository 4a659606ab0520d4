"""When a device is online and can be selected.

Availability is asked of the whole fleet at once (vectorized over device ids)
because a server samples its cohort from every device online *now*.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedactors.errors import ConfigError
from fedactors.validation import non_negative, positive, probability


class Availability(abc.ABC):
    """Which of ``devices`` are online at simulated time ``t``."""

    @abc.abstractmethod
    def online(self, t: float, devices: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...

    def validate(self, field: str) -> None:
        """Raise ConfigError naming ``field`` for a bad option."""


@dataclass(frozen=True)
class AlwaysOnline(Availability):
    def online(self, t: float, devices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.ones(len(devices), bool)


@dataclass(frozen=True)
class OnlineShare(Availability):
    """Online a fixed share of the time, independently at each selection."""

    share: float

    def validate(self, field: str) -> None:
        probability(f"{field}.share", self.share)

    def online(self, t: float, devices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rng.random(len(devices)) < self.share


@dataclass(frozen=True)
class Trace(Availability):
    """An explicit schedule: online during each ``(start, end)`` window, repeating
    every ``period`` seconds if given (e.g. 86400 for a daily routine)."""

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
