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
    value: float

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return np.full(size, float(self.value))

    def check(self, field: str, minimum: float, strict: bool) -> None:
        _at_least(field, finite(field, self.value), minimum, strict)


@dataclass(frozen=True)
class Uniform(Distribution):
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
    """Heavy-tailed positive values: ``median * exp(sigma * N(0, 1))``."""

    median: float
    sigma: float

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return self.median * np.exp(self.sigma * rng.standard_normal(size))

    def check(self, field: str, minimum: float, strict: bool) -> None:
        positive(f"{field}.median", self.median)
        non_negative(f"{field}.sigma", self.sigma)
