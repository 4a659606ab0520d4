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
    """Send ``-scale * delta``: push the model the other way, ``scale`` times harder.

    Args:
        scale: How many times the honest delta's size to push in the opposite
            direction; must be > 0. Default 1.0, the exact negation. Checked
            when the attack is given to ``Byzantine``.

    Examples:
        >>> import numpy as np
        >>> from fedactors import SignFlip
        >>> SignFlip(scale=2.0).apply(np.array([1.0, -0.5]))
        array([-2.,  1.], dtype=float32)
    """

    scale: float = 1.0

    def validate(self, field: str) -> None:
        if finite(f"{field}.scale", self.scale) <= 0:
            raise ConfigError(f"{field}.scale", f"must be > 0, got {self.scale!r}")

    def apply(self, delta: np.ndarray) -> np.ndarray:
        return (-self.scale * np.asarray(delta, np.float64)).astype(np.float32)


@dataclass(frozen=True)
class Scaling(Attack):
    """Send ``scale * delta`` (model replacement: one device drags the mean its way).

    Args:
        scale: Factor the honest delta is multiplied by; any finite number
            (a negative one also flips the sign). Default 10.0. Checked when
            the attack is given to ``Byzantine``.

    Examples:
        >>> import numpy as np
        >>> from fedactors import Scaling
        >>> Scaling(scale=10.0).apply(np.array([1.0, -0.5]))
        array([10., -5.], dtype=float32)
    """

    scale: float = 10.0

    def validate(self, field: str) -> None:
        finite(f"{field}.scale", self.scale)

    def apply(self, delta: np.ndarray) -> np.ndarray:
        return (self.scale * np.asarray(delta, np.float64)).astype(np.float32)


@dataclass(frozen=True)
class Byzantine:
    """``fraction`` of the fleet (rounded to the nearest device) runs ``attack``.

    Give it to a scenario as ``Scenario(..., byzantine=Byzantine(...))``. The
    attackers are drawn once per run, from the scenario's seed path
    ``("byzantine",)``; each trains honestly, then reports ``attack.apply(delta)``
    instead of its delta, before the aggregator's device-side stages
    (clipping, weighting) run on it.

    Args:
        fraction: Share of the fleet's devices that attack, in [0, 1]. The
            number of attackers is ``round(fraction * fleet size)``; Python
            rounds exact halves to even, so 0.5 of 5 devices is 2.
        attack: What each attacker sends instead of its honest delta:
            ``SignFlip`` or ``Scaling`` (any ``Attack`` subclass).

    Both are checked at construction and a bad value raises ``ConfigError``.

    Examples:
        >>> import numpy as np
        >>> from fedactors import Byzantine, SignFlip
        >>> byzantine = Byzantine(0.2, SignFlip(scale=4.0))
        >>> byzantine.choose(10, np.random.default_rng(0))  # the 2 attackers of 10 devices
        array([6, 7])
    """

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
