"""Byzantine devices: a chosen fraction of the fleet tampers with its model delta.

``Scenario(..., byzantine=Byzantine(0.2, SignFlip(scale=4.0)))`` marks 20% of
the fleet's devices as attackers. An attacker trains honestly, then replaces
its delta with ``attack.apply(delta)`` *before* the aggregator's ``encode``:
the attack is on what the device reports, so device-side stages (clipping,
weighting) still apply to it, as they would to a real compromised device
running the stock client. Which devices attack is drawn once, from the
scenario's seed path ``("byzantine",)``, so it never shifts any other stream.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from fedactors.errors import ConfigError
from fedactors.validation import finite, probability


class Attack(abc.ABC):
    """How an attacker changes its honest delta."""

    @abc.abstractmethod
    def apply(self, delta: np.ndarray) -> np.ndarray: ...

    def validate(self, field: str) -> None:
        """Raise ConfigError naming ``field`` for a bad option."""


@dataclass(frozen=True)
class SignFlip(Attack):
    """Send ``-scale * delta``: push the model the other way, ``scale`` times harder."""

    scale: float = 1.0

    def validate(self, field: str) -> None:
        if finite(f"{field}.scale", self.scale) <= 0:
            raise ConfigError(f"{field}.scale", f"must be > 0, got {self.scale!r}")

    def apply(self, delta: np.ndarray) -> np.ndarray:
        return (-self.scale * np.asarray(delta, np.float64)).astype(np.float32)


@dataclass(frozen=True)
class Scaling(Attack):
    """Send ``scale * delta`` (model replacement: one device drags the mean its way)."""

    scale: float = 10.0

    def validate(self, field: str) -> None:
        finite(f"{field}.scale", self.scale)

    def apply(self, delta: np.ndarray) -> np.ndarray:
        return (self.scale * np.asarray(delta, np.float64)).astype(np.float32)


@dataclass(frozen=True)
class Byzantine:
    """``fraction`` of the fleet (rounded to the nearest device) runs ``attack``."""

    fraction: float
    attack: Attack

    def __post_init__(self) -> None:
        probability("fraction", self.fraction)
        if not isinstance(self.attack, Attack):
            raise ConfigError("attack", f"must be an Attack (SignFlip, Scaling), got {self.attack!r}")
        self.attack.validate("attack")

    def choose(self, num_devices: int, rng: np.random.Generator) -> np.ndarray:
        """The attackers' ids, ascending: exactly ``round(fraction * num_devices)`` of them."""
        k = int(round(self.fraction * num_devices))
        return np.sort(rng.choice(num_devices, k, replace=False))
