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
    def init(self, weights: np.ndarray) -> Any:
        return None

    @abc.abstractmethod
    def apply(self, state: Any, weights: np.ndarray, delta: np.ndarray) -> tuple[np.ndarray, Any]:
        """New global weights and optimizer state; neither input is modified."""


@dataclass(frozen=True)
class FedAvgStep(ServerOptimizer):
    """x + lr * delta; lr = 1 is plain FedAvg."""

    learning_rate: float = 1.0

    def __post_init__(self) -> None:
        positive("learning_rate", self.learning_rate)

    def apply(self, state: Any, weights: np.ndarray, delta: np.ndarray) -> tuple[np.ndarray, Any]:
        return (weights + np.float32(self.learning_rate) * delta).astype(np.float32), state


@dataclass(frozen=True)
class AdaptiveState:
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
    def _second_moment(self, v: np.ndarray, g2: np.ndarray) -> np.ndarray:
        return self.beta2 * v + (1 - self.beta2) * g2


@dataclass(frozen=True)
class FedYogi(_Adaptive):
    def _second_moment(self, v: np.ndarray, g2: np.ndarray) -> np.ndarray:
        # Yogi moves v toward g² by at most (1 - beta2) * g² per round, so
        # after a burst of large deltas v decays slowly: the step size stays
        # small for a while instead of jumping back up as Adam's does.
        return v - (1 - self.beta2) * g2 * np.sign(v - g2)
