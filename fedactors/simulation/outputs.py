"""The run directory: events.jsonl, metrics.jsonl, summary.json, model.keras."""

from __future__ import annotations

import os
import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Optional

import numpy as np

from fedactors.errors import ScenarioError
from fedactors.reporting import strict_json
from fedactors.runtime import checkpoint
from fedactors.scenarios.spec import Scenario
from fedactors.training.model_runner import Evaluator

#: What a run writes besides events.jsonl and metrics.jsonl (which a fresh run truncates).
PREVIOUS_RUN_FILES = ("summary.json", "model.keras", "checkpoint.pkl", "partitions.json")


def clear_previous_run(out: Path) -> None:
    """Remove what an earlier run left in ``out`` that this fresh run would not overwrite.

    Called when the fresh run starts writing (:class:`RunDirectory`), after the
    scenario has loaded and passed its checks: a run refused at load leaves the
    earlier run whole (summary, model, checkpoint, report: still resumable).

    The default directory is the same for every run of a scenario and seed, so
    runs are redone in place: an old report, TensorBoard event file or
    checkpoint left beside the new run's files would describe another run (the
    old report under --no-report; TensorBoard would plot both runs as one).
    Only what fedactors itself writes there is removed.
    """
    for name in PREVIOUS_RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for stale in (out / "tensorboard").glob("events.out.tfevents.*"):
        stale.unlink()
    report = out / "report"
    if (report / "report.html").is_file():
        shutil.rmtree(report)


def check_writable(out: Path) -> None:
    """Refuse, before any training, a run directory that cannot be written."""
    if out.exists() and not out.is_dir():
        raise ScenarioError(f"{out}: the run directory is a file, not a directory")
    probe = out / ".fedactors-write-probe"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as exc:
        raise ScenarioError(f"{out}: cannot write the run directory ({exc.strerror or exc})") from None


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
            if resume_from is None:
                clear_previous_run(out_dir)
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
