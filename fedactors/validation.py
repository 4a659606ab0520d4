"""Small checks shared by the named constructors; each quotes the bad value."""

from __future__ import annotations

import argparse
import math

import numpy as np

from fedactors.errors import ConfigError


def whole_number(minimum: int):
    """An argparse type: a whole number >= ``minimum``, quoting a bad value."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text!r}")
        return value

    return parse


def number(field: str, value: float) -> float:
    """``value`` as a float, if it is a number (NaN and infinities included)."""
    # A number, not something float() happens to parse: "5" or True accepted here would
    # reach the simulation as a string or a 1 (callers keep the value they were given).
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(field, f"must be a number, got {value!r}")
    return float(value)


def open_unit(field: str, value: float) -> float:
    """A number strictly between 0 and 1: one message for 0, 1, 2, -1, inf and NaN alike."""
    v = number(field, value)
    if not 0.0 < v < 1.0:  # NaN fails the comparison too
        raise ConfigError(field, f"must be strictly between 0 and 1, got {value!r}")
    return v


def finite(field: str, value: float) -> float:
    v = number(field, value)
    if not math.isfinite(v):
        raise ConfigError(field, f"must be finite, got {value!r}")
    return v


def positive(field: str, value: float) -> float:
    v = finite(field, value)
    if v <= 0:
        raise ConfigError(field, f"must be > 0, got {value!r}")
    return v


def non_negative(field: str, value: float) -> float:
    v = finite(field, value)
    if v < 0:
        raise ConfigError(field, f"must be >= 0, got {value!r}")
    return v


def probability(field: str, value: float) -> float:
    v = finite(field, value)
    if not 0.0 <= v <= 1.0:
        raise ConfigError(field, f"must be in [0, 1], got {value!r}")
    return v


def positive_int(field: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
        hasattr(value, "__index__")
    ):
        raise ConfigError(field, f"must be a whole number, got {value!r}")
    v = int(value)
    if v <= 0:
        raise ConfigError(field, f"must be >= 1, got {value!r}")
    return v


def non_negative_int(field: str, value: int) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ConfigError(field, f"must be a whole number, got {value!r}")
    v = int(value)
    if v < 0:
        raise ConfigError(field, f"must be >= 0, got {value!r}")
    return v
