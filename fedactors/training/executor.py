"""Where local training runs, and how it is batched.

Devices *submit* work when their training starts and *collect* the result when
their simulated compute time is over. Compute takes no simulated time, so the
executor is free to run everything submitted so far in one go the first time
any result is collected: that is what lets a vectorized executor train a whole
cohort in one computation, and a remote one ship a batch to Ray, without
changing a single simulated timestamp.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class TrainTask:
    """One device's local training in one round."""

    device: int
    round: int
    weights: np.ndarray = field(repr=False)
    x: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    #: The device's own generator for this round (batch order).
    rng: np.random.Generator = field(repr=False)


@dataclass(frozen=True)
class TrainResult:
    device: int
    round: int
    delta: np.ndarray = field(repr=False)
    loss: float


class Executor(abc.ABC):
    """Runs pending train tasks in batches, in submission order."""

    def __init__(self) -> None:
        # Insertion-ordered, so batches run in submission order; a dict so a
        # cancelled ticket (a whole round's stragglers at once) costs O(1).
        self._pending: dict[int, TrainTask] = {}
        self._done: dict[int, TrainResult] = {}
        self._next_ticket = 0

    def submit(self, task: TrainTask) -> int:
        ticket = self._next_ticket
        self._next_ticket += 1
        self._pending[ticket] = task
        return ticket

    def collect(self, ticket: int) -> TrainResult:
        if ticket not in self._done:
            batch, self._pending = self._pending, {}
            for t, result in zip(batch, self.run_batch(list(batch.values()))):
                self._done[t] = result
        return self._done.pop(ticket)

    def cancel(self, ticket: int) -> None:
        """Forget a task whose device went silent before collecting it."""
        self._pending.pop(ticket, None)
        self._done.pop(ticket, None)

    @abc.abstractmethod
    def run_batch(self, tasks: Sequence[TrainTask]) -> list[TrainResult]:
        """Train every task; results in the same order."""


class SequentialExecutor(Executor):
    """One compiled TensorFlow loop per device, one device after another."""

    def __init__(self, runner) -> None:
        super().__init__()
        self.runner = runner

    def run_batch(self, tasks: Sequence[TrainTask]) -> list[TrainResult]:
        out = []
        for task in tasks:
            delta, loss = self.runner.train(task.weights, task.x, task.y, task.rng)
            out.append(TrainResult(task.device, task.round, delta, loss))
        return out
