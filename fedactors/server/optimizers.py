"""Server optimizers: how the aggregated delta moves the global model.

Pure functions of explicit state (Reddi et al. 2021, "Adaptive Federated
Optimization"): the aggregated delta is treated as a pseudo-gradient.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedactors.validation import positive, probability


class ServerOptimizer(abc.ABC):
    """How the server turns an aggregated delta into new global weights.

    A subclass is a frozen value: its state lives outside it, created by
    ``init`` and threaded through ``apply``, so a step can be tested
    alone and checkpointed as data.
    """

    def init(self, weights: np.ndarray) -> Any:
        """The optimizer state before the first update (``None`` if it keeps none)."""
        return None

    @abc.abstractmethod
    def apply(self, state: Any, weights: np.ndarray, delta: np.ndarray) -> tuple[np.ndarray, Any]:
        """New global weights and optimizer state; neither input is modified."""


@dataclass(frozen=True)
class FedAvgStep(ServerOptimizer):
    """x + lr * delta; lr = 1 is plain FedAvg.

    The server adds the aggregated delta (the aggregator's combination of the
    devices' ``local - global`` weights) to the global weights ``x``, scaled by
    ``learning_rate``. It keeps no state. This is the default ``Scenario.server_optimizer``.

    Args:
        learning_rate: Server learning rate (> 0), a dimensionless multiplier of
            the aggregated delta. 1.0 (default) applies the mean delta as is
            (McMahan et al. 2017); below 1 damps each step, above 1 extrapolates.

    Examples:
        >>> import numpy as np
        >>> from fedactors import FedAvgStep
        >>> weights, state = FedAvgStep(learning_rate=0.5).apply(
        ...     None, np.ones(2, np.float32), np.array([0.2, -0.4], np.float32))
        >>> weights
        array([1.1, 0.8], dtype=float32)
    """

    learning_rate: float = 1.0

    def __post_init__(self) -> None:
        positive("learning_rate", self.learning_rate)

    def apply(self, state: Any, weights: np.ndarray, delta: np.ndarray) -> tuple[np.ndarray, Any]:
        return (weights + np.float32(self.learning_rate) * delta).astype(np.float32), state


@dataclass(frozen=True)
class AdaptiveState:
    """FedAdam/FedYogi state: first moment ``m`` and second moment ``v``, float32."""

    m: np.ndarray
    v: np.ndarray


@dataclass(frozen=True)
class _Adaptive(ServerOptimizer):
    learning_rate: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        positive("learning_rate", self.learning_rate)
        probability("beta1", self.beta1)
        probability("beta2", self.beta2)
        positive("tau", self.tau)

    def init(self, weights: np.ndarray) -> AdaptiveState:
        zeros = np.zeros_like(weights, np.float32)
        return AdaptiveState(zeros, np.full_like(weights, self.tau**2, np.float32))

    @abc.abstractmethod
    def _second_moment(self, v: np.ndarray, g2: np.ndarray) -> np.ndarray: ...

    def apply(
        self, state: AdaptiveState, weights: np.ndarray, delta: np.ndarray
    ) -> tuple[np.ndarray, AdaptiveState]:
        m = self.beta1 * state.m + (1 - self.beta1) * delta
        v = self._second_moment(state.v, delta * delta)
        new = weights + self.learning_rate * m / (np.sqrt(v) + self.tau)
        return new.astype(np.float32), AdaptiveState(m.astype(np.float32), v.astype(np.float32))


@dataclass(frozen=True)
class FedAdam(_Adaptive):
    """Adam on the server (Reddi et al. 2021, "Adaptive Federated Optimization").

    The aggregated delta ``g`` is treated as a pseudo-gradient (it already
    points downhill, so it is added). Per coordinate, each server step:

    * ``m = beta1 * m + (1 - beta1) * g``
    * ``v = beta2 * v + (1 - beta2) * g**2``
    * ``x = x + learning_rate * m / (sqrt(v) + tau)``

    starting from ``m = 0`` and ``v = tau**2`` (the paper's Algorithm 2; like
    the paper, without Adam's bias correction). The step is normalized per
    coordinate, so coordinates with small deltas move about as fast as those
    with large ones, which helps with sparse or badly scaled updates. State:
    an ``AdaptiveState(m, v)``, the size of the model.

    Args:
        learning_rate: Server learning rate eta (> 0). A coordinate's step is
            on the order of ``learning_rate``, whatever the scale of its deltas.
            Default 0.01; tune it per task on a log grid, as Reddi et al. do.
        beta1: Decay of the first moment (momentum), in [0, 1]: the fraction of
            the previous ``m`` kept each step; 0 means no momentum. Default 0.9.
        beta2: Decay of the second moment (the running mean of ``g**2`` that
            normalizes the step), in [0, 1]. Default 0.99, as in the paper.
        tau: Adaptivity (> 0): added to ``sqrt(v)`` in the denominator, and
            ``v`` starts at ``tau**2``. In the units of the model's weights;
            smaller is more adaptive, larger makes the step closer to momentum
            SGD with rate ``learning_rate / tau``. Default 1e-3 (the paper tunes
            it too).

    Examples:
        >>> import numpy as np
        >>> from fedactors import FedAdam
        >>> opt = FedAdam(learning_rate=0.1)
        >>> state = opt.init(np.zeros(2, np.float32))
        >>> weights, state = opt.apply(state, np.zeros(2, np.float32),
        ...                            np.array([1.0, -0.01], np.float32))
        >>> np.round(weights, 3)  # a 100x smaller delta still gets a comparable step
        array([ 0.099, -0.041], dtype=float32)
    """

    def _second_moment(self, v: np.ndarray, g2: np.ndarray) -> np.ndarray:
        return self.beta2 * v + (1 - self.beta2) * g2


@dataclass(frozen=True)
class FedYogi(_Adaptive):
    """Yogi on the server (Reddi et al. 2021, "Adaptive Federated Optimization").

    Like ``FedAdam`` (same ``m`` and step, ``v`` starts at ``tau**2``)
    except for the second moment, which moves additively toward ``g**2``:

    * ``v = v - (1 - beta2) * g**2 * sign(v - g**2)``

    (Zaheer et al. 2018), so after a burst of large deltas ``v`` shrinks slowly
    and the step stays small instead of growing back as Adam's does.

    Args:
        learning_rate: Server learning rate eta (> 0); a coordinate's step is on
            the order of ``learning_rate``. Default 0.01.
        beta1: Decay of the first moment (momentum), in [0, 1]. Default 0.9.
        beta2: Sets how fast ``v`` moves: by ``(1 - beta2) * g**2`` per step,
            in [0, 1]. Default 0.99.
        tau: Adaptivity (> 0), in the units of the weights: added to
            ``sqrt(v)`` in the denominator, and ``v`` starts at ``tau**2``.
            Default 1e-3.

    Examples:
        >>> import numpy as np
        >>> from fedactors import FedYogi
        >>> opt = FedYogi()
        >>> weights = np.zeros(1, np.float32)
        >>> state = opt.init(weights)
        >>> weights, state = opt.apply(state, weights, np.ones(1, np.float32))
        >>> for _ in range(10):  # quiet rounds: Yogi's v does not decay
        ...     weights, state = opt.apply(state, weights, np.zeros(1, np.float32))
        >>> state.v
        array([0.010001], dtype=float32)
    """

    def _second_moment(self, v: np.ndarray, g2: np.ndarray) -> np.ndarray:
        # Yogi moves v toward g² by at most (1 - beta2) * g² per round, so
        # after a burst of large deltas v decays slowly: the step size stays
        # small for a while instead of jumping back up as Adam's does.
        return v - (1 - self.beta2) * g2 * np.sign(v - g2)
