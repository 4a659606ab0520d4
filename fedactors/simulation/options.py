"""What a run is asked to do (RunOptions) and what it returns (RunResult)."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from fedactors.errors import ConfigError
from fedactors.runtime import checkpoint
from fedactors.scenarios.spec import Scenario
from fedactors.seeding import SEEDED, STREAMS_VERSION
from fedactors.training.choice import BACKENDS, EXECUTORS
from fedactors.validation import non_negative, non_negative_int, positive_int

#: Metric keys that depend on the machine, not the simulation; excluded from
#: reproducibility comparisons.
WALL_CLOCK_KEYS = ("wall_seconds", "secagg_server_seconds")


@dataclass(frozen=True)
class RunOptions:
    """How to run a scenario; every field is checked when the options are made.

    A bad value is a ``ConfigError`` naming the field, before anything is read or
    written: a notebook's ``rounds="3"`` used to start the run, clear the finished
    run in ``out_dir`` and fail inside the server. ``out_dir`` and ``scenario_path``
    take a ``str`` or any path-like; NumPy whole numbers are taken as ints.
    """

    seed: Optional[int] = None  # None: the scenario's own seed
    rounds: Optional[int] = None  # None: the scenario's round count
    out_dir: Optional[Path] = None
    device_events: bool = True
    keep_events: bool = False  # keep events in memory (tests)
    #: The scenario's file, for the checkpoint's fingerprint and for resuming.
    scenario_path: Optional[Path] = None
    #: Write out_dir/checkpoint.pkl after every round.
    checkpoint: bool = True
    #: Continue the run checkpointed in out_dir instead of starting afresh.
    resume: bool = False
    executor: str = "auto"  # "auto" | "vectorized" | "sequential" (see training.choice)
    backend: str = "local"  # "local" or "ray": where local training runs (docs/distributed.md)
    ray_workers: Optional[int] = None  # Ray workers (and local Ray CPUs); None: all CPUs
    until: Optional[float] = None  # stop after the first round ending at/after this simulated second

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)  # frozen: the checked, converted value

        if self.seed is not None:
            put("seed", non_negative_int("seed", self.seed))
        if self.rounds is not None:
            put("rounds", positive_int("rounds", self.rounds))
        if self.ray_workers is not None:
            put("ray_workers", positive_int("ray_workers", self.ray_workers))
        if self.until is not None:
            put("until", non_negative("until", self.until))
        for name in ("out_dir", "scenario_path"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, bytes) or not isinstance(value, (str, os.PathLike)):
                    raise ConfigError(name, f"must be a path (str or pathlib.Path), got {value!r}")
                put(name, Path(value))
        for name in ("device_events", "keep_events", "checkpoint", "resume"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, f"must be True or False, got {getattr(self, name)!r}")
        if self.executor not in EXECUTORS:
            raise ConfigError("executor", f"must be one of {EXECUTORS}, got {self.executor!r}")
        if self.backend not in BACKENDS:
            raise ConfigError("backend", f"must be one of {BACKENDS}, got {self.backend!r}")

    def fingerprint(self, scenario: Scenario, seed: int, built: str = "",
                    fell_back: bool = False, data: str = "") -> checkpoint.Fingerprint:
        """What a resumed run must share with the checkpointed one to replay it bit for bit.

        ``built``: a digest of what the scenario's functions built (the model's
        architecture, the local optimizer's settings), see ``built_sha256``.
        ``fell_back``: the executor asked for does not train this run, the
        per-device one does (the machine decides that too: TensorFlow's kernels,
        ``TF_ENABLE_ONEDNN_OPTS``); named only when it did, so fingerprints
        without a fallback are unchanged. Only the fact, not its reason: the
        reason names Keras layers, whose numbering depends on the process.
        ``data``: the data's digest (``FederatedData.sha256``, ``GeneratedData.sha256``).
        """
        digest = checkpoint.file_sha256(self.scenario_path) if self.scenario_path else ""
        # Randomness is named only when it is "system", so seeded fingerprints (and the
        # checkpoints written before the option existed) are unchanged.
        system = () if scenario.randomness == SEEDED else (("randomness", scenario.randomness),)
        fallback = (("executor_fell_back", True),) if fell_back else ()
        return checkpoint.Fingerprint(scenario.name, digest, seed, (
            ("device_events", self.device_events), ("executor", self.executor),
            ("backend", self.backend), ("settings", settings_sha256(scenario)),
            ("built", built), ("streams", STREAMS_VERSION), *system, *fallback,
            *((("data", data),) if data else ()),
        ))


def settings_sha256(scenario: Scenario) -> str:
    """A digest of the scenario as built: its fleet, rounds, aggregator chain, mode,
    secure aggregation and privacy options.

    The scenario file's own hash misses what it imports (a shared module of
    constants, a base scenario); a resumed run whose noise or sampling changed
    that way would carry the old aggregator state while being accounted at the
    new settings. Memory addresses in default reprs are dropped, so an object
    without a repr of its own is compared by its type.
    """
    text = repr((scenario.fleet, scenario.rounds, scenario.aggregator, scenario.mode,
                 scenario.secure_aggregation, scenario.privacy, scenario.server_optimizer,
                 scenario.byzantine))
    return hashlib.sha256(re.sub(r" at 0x[0-9a-f]+", "", text).encode()).hexdigest()[:16]


def built_sha256(model: Any, scenario: Scenario) -> str:
    """A digest of what the scenario's functions build: the Keras model's architecture
    and the local training (epochs, batch size, the optimizer's class and settings).

    ``settings_sha256`` sees the scenario's objects, not what its ``model`` and
    ``training.optimizer`` functions return; a module they import could change a
    layer or a learning rate under an unchanged scenario file. (The data a
    ``data`` function returns is not digested.)
    """
    import json

    optimizer = scenario.training.optimizer()
    # Layer by layer, without names: Keras numbers auto-named layers per process.
    layers = [(type(layer).__name__, {k: v for k, v in layer.get_config().items() if k != "name"})
              for layer in model.layers]
    shapes = [tuple(w.shape) for w in model.weights]
    settings = {k: v for k, v in optimizer.get_config().items() if k != "name"}
    text = json.dumps([layers, shapes, scenario.training.epochs, scenario.training.batch_size,
                       type(optimizer).__name__, settings], sort_keys=True, default=repr)
    return hashlib.sha256(re.sub(r" at 0x[0-9a-f]+", "", text).encode()).hexdigest()[:16]


@dataclass
class RunResult:
    scenario: Scenario
    seed: int
    records: list[dict[str, Any]]
    weights: np.ndarray = field(repr=False)
    summary: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list, repr=False)
