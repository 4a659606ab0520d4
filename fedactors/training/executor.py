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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Optional

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


class TrainingFailed(Exception):
    """Local training raised. ``device`` is the device whose task fails on its own
    (found by retrying the batch in halves), or None if only the whole batch fails."""

    def __init__(self, device: Optional[int], round_: int, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.device = device
        self.round = round_
        self.cause = cause


class Executor(abc.ABC):
    """Runs pending train tasks in batches, in submission order."""

    #: Why this executor does not do what was asked of it (a vectorized executor
    #: training one device at a time), or None; reported as a run warning.
    fallback_reason: Optional[str] = None

    def __init__(self) -> None:
        #: Called with (event, fields) when the executor recovers from something the
        #: run should record (a remote worker died and its work was re-run); the
        #: simulation points it at the event log.
        self.incident: Callable[..., None] = lambda event, **fields: None
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
            tasks = list(batch.values())
            try:
                results = self.run_batch(tasks)
            except Exception as exc:  # a user's model or data: find whose task it is
                raise self._blame(tasks, exc) from None
            for t, result in zip(batch, results):
                self._done[t] = result
        return self._done.pop(ticket)

    def _blame(self, tasks: Sequence[TrainTask], exc: BaseException) -> TrainingFailed:
        """The first task that fails on its own, by bisection: a failing cohort of
        10,000 costs ~2 log2(10,000) = 28 retried batches, not 10,000."""
        tasks = list(tasks)
        while len(tasks) > 1:
            for half in (tasks[: len(tasks) // 2], tasks[len(tasks) // 2 :]):
                try:
                    self.run_batch(half)
                except Exception as own:
                    tasks, exc = half, own
                    break
            else:  # each half trains alone: the failure is the batch's, not a device's
                return TrainingFailed(None, tasks[0].round, exc)
        round_ = tasks[0].round if tasks else -1
        return TrainingFailed(tasks[0].device if tasks else None, round_, exc)

    def result_if_done(self, ticket: int) -> Optional[TrainResult]:
        """The result of ``ticket`` if its batch already ran (None: still pending)."""
        return self._done.get(ticket)

    def put_result(self, result: TrainResult) -> int:
        """Hold a result computed before a checkpoint; the ticket to collect it by."""
        ticket = self._next_ticket
        self._next_ticket += 1
        self._done[ticket] = result
        return ticket

    def cancel(self, ticket: int) -> None:
        """Forget a task whose device went silent before collecting it."""
        self._pending.pop(ticket, None)
        self._done.pop(ticket, None)

    def close(self) -> None:
        """Release what the executor holds outside this process (Ray workers)."""

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
