"""The executor's failure path: whose task raised, found by bisection."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from fedactors.training.executor import Executor, TrainingFailed, TrainResult, TrainTask


class Flaky(Executor):
    """Fails any batch holding a bad device; with ``limit``, any batch larger than it."""

    def __init__(self, bad: set[int], limit: int = 10**9) -> None:
        super().__init__()
        self.bad, self.limit, self.batches = bad, limit, 0

    def run_batch(self, tasks: Sequence[TrainTask]) -> list[TrainResult]:
        self.batches += 1
        if len(tasks) > self.limit:
            raise MemoryError("cohort too large")
        for t in tasks:
            if t.device in self.bad:
                raise ValueError(f"labels of {t.device} out of range")
        return [TrainResult(t.device, t.round, np.zeros(1, np.float32), 0.0) for t in tasks]


def _submit(ex: Executor, devices: range) -> list[int]:
    z = np.zeros(1, np.float32)
    return [ex.submit(TrainTask(d, 3, z, z, z, np.random.default_rng(d))) for d in devices]


@pytest.mark.parametrize("bad", [0, 517, 1023])
def test_the_device_whose_task_fails_on_its_own_is_named(bad: int) -> None:
    ex = Flaky({bad})
    tickets = _submit(ex, range(1024))
    with pytest.raises(TrainingFailed) as caught:
        ex.collect(tickets[0])
    assert caught.value.device == bad and caught.value.round == 3
    assert isinstance(caught.value.cause, ValueError) and str(bad) in str(caught.value.cause)
    assert ex.batches <= 1 + 2 * 10  # bisection, not one retry per device


def test_a_failure_no_single_device_causes_names_none() -> None:
    ex = Flaky(set(), limit=3)
    tickets = _submit(ex, range(8))
    with pytest.raises(TrainingFailed) as caught:
        ex.collect(tickets[0])
    assert caught.value.device is None and isinstance(caught.value.cause, MemoryError)
