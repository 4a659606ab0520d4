"""The run directory: events.jsonl, metrics.jsonl, summary.json, model.keras."""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path
from typing import Optional

import numpy as np

from fedactors.reporting import strict_json
from fedactors.runtime import checkpoint
from fedactors.scenarios.spec import Scenario
from fedactors.training.model_runner import Evaluator


class RunDirectory:
    """The run directory: events.jsonl, metrics.jsonl, summary.json, model.keras."""

    def __init__(self, out_dir: Optional[Path], stack: ExitStack,
                 resume_from: Optional[checkpoint.Checkpoint] = None) -> None:
        self.dir = out_dir
        self.events = self.metrics = None
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            events, metrics = out_dir / "events.jsonl", out_dir / "metrics.jsonl"
            if resume_from is not None:
                # Whatever was logged after the checkpoint is replayed, so cut it.
                os.truncate(events, resume_from.events_bytes)
                os.truncate(metrics, resume_from.metrics_bytes)
            mode = "a" if resume_from is not None else "w"
            self.events = stack.enter_context(open(events, mode))
            self.metrics = stack.enter_context(open(metrics, mode))

    def sizes(self) -> tuple[int, int]:
        """Bytes written so far to events.jsonl and metrics.jsonl (flushed)."""
        assert self.events is not None and self.metrics is not None
        self.events.flush()
        self.metrics.flush()
        return self.events.tell(), self.metrics.tell()

    def write_row(self, row: dict) -> None:
        if self.metrics is not None:
            self.metrics.write(strict_json.dumps(row, separators=(",", ":")) + "\n")
            self.metrics.flush()


def save_model(scenario: Scenario, evaluator: Evaluator, weights: np.ndarray, path: Path) -> None:
    """The final global model, loadable with ``keras.models.load_model``."""
    model = evaluator.model
    model.set_weights(evaluator.layout.unflatten(weights))
    model.compile(optimizer=scenario.training.optimizer(), loss=scenario.loss,
                  metrics=list(scenario.metrics))
    model.save(path)
