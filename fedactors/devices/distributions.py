"""Per-device parameter distributions for fleet profiles.

A device class says "cameras compute at about 400 examples/s, give or take";
these turn that into one value per device, drawn from the fleet's generator.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from fedactors.errors import ConfigError
from fedactors.validation import finite, non_negative, positive


def _at_least(field: str, value: float, minimum: float, strict: bool) -> None:
    if value < minimum or (strict and value <= minimum):
        raise ConfigError(field, f"must be {'>' if strict else '>='} {minimum:g}, got {value!r}")


class Distribution(abc.ABC):
    """A source of one value per device."""

    @abc.abstractmethod
    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray: ...

    @abc.abstractmethod
    def check(self, field: str, minimum: float, strict: bool) -> None:
        """Raise ConfigError if any value could fall below ``minimum``."""


def as_distribution(value: float | Distribution) -> Distribution:
    """Plain numbers are constants."""
    return value if isinstance(value, Distribution) else Constant(value)


@dataclass(frozen=True)
class Constant(Distribution):
    """The same value for every device.

    Anywhere a distribution is accepted (``DeviceClass.compute``,
    ``DeviceClass.examples``, the ``NetworkProfile`` values,
    ``Diurnal.tz_offset``) a plain number means ``Constant(number)``.

    Args:
        value: The value every device gets, in the unit of the field it is
            given for (e.g. examples per simulated second for ``compute``,
            seconds for ``rtt``); it must be finite and at least that field's
            minimum.

    Examples:
        >>> import numpy as np
        >>> from fedactors import Constant, DeviceClass
        >>> Constant(3.0).sample(np.random.default_rng(0), 3)
        array([3., 3., 3.])
        >>> DeviceClass("laptop", count=5, compute=2000.0).compute  # a number becomes a Constant
        Constant(value=2000.0)
    """

    value: float

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return np.full(size, float(self.value))

    def check(self, field: str, minimum: float, strict: bool) -> None:
        _at_least(field, finite(field, self.value), minimum, strict)


@dataclass(frozen=True)
class Uniform(Distribution):
    """Values spread evenly between ``low`` and ``high``, drawn once per device.

    Args:
        low: Smallest value (inclusive), in the unit of the field it is given
            for; it must be at least that field's minimum (> 0 for ``compute``
            and the bandwidths, >= 0 for ``rtt``, >= 1 for ``examples``).
        high: Upper end of the range (as in ``numpy``'s ``uniform``, reached
            only by rounding), >= ``low``; ``high == low`` gives a constant.

    Examples:
        >>> import numpy as np
        >>> from fedactors import Uniform
        >>> Uniform(1.0, 2.0).sample(np.random.default_rng(0), 3).round(3)
        array([1.637, 1.27 , 1.041])
    """

    low: float
    high: float

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.uniform(self.low, self.high, size)

    def check(self, field: str, minimum: float, strict: bool) -> None:
        lo, hi = finite(f"{field}.low", self.low), finite(f"{field}.high", self.high)
        if hi < lo:
            raise ConfigError(field, f"high must be >= low, got Uniform({lo!r}, {hi!r})")
        _at_least(f"{field}.low", lo, minimum, strict)


@dataclass(frozen=True)
class LogNormal(Distribution):
    """Heavy-tailed positive values: ``median * exp(sigma * N(0, 1))``.

    Half the devices fall below ``median`` and half above, and a few are many
    times faster (or slower) than typical: how compute speeds, bandwidths and
    data sizes spread across a real fleet.

    Args:
        median: The median value (> 0), in the unit of the field it is given
            for (e.g. examples per simulated second for ``compute``).
        sigma: Spread on the log scale (>= 0; 0 gives exactly ``median``).
            About two devices in three fall within ``median * exp(-sigma)``
            and ``median * exp(sigma)``: for ``sigma=0.5``, 0.6x to 1.65x the
            median.

    Examples:
        >>> import numpy as np
        >>> from fedactors import LogNormal
        >>> speeds = LogNormal(median=300, sigma=0.4).sample(np.random.default_rng(0), 10_001)
        >>> speeds[:3].round(1)
        array([315.5, 284.6, 387.6])
        >>> round(float(np.median(speeds)), -1)
        300.0
    """

    median: float
    sigma: float

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return self.median * np.exp(self.sigma * rng.standard_normal(size))

    def check(self, field: str, minimum: float, strict: bool) -> None:
        positive(f"{field}.median", self.median)
        non_negative(f"{field}.sigma", self.sigma)
