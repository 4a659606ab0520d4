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
    """How to run a scenario (the CLI's options, from Python); every field is checked here.

    A bad value is a ``ConfigError`` naming the field, raised when the options are
    made, before anything is read or written (a finished run in ``out_dir`` is
    never cleared for a mistyped option). Paths take a ``str`` or any path-like;
    NumPy whole numbers are taken as ints.

    Args:
        seed: Root seed of every draw of the run (whole number >= 0); None: the
            scenario's own ``seed``.
        rounds: Releases to run (synchronous rounds, or FedBuff server updates),
            >= 1; None: the scenario's ``rounds.count``.
        out_dir: The run directory: ``events.jsonl``, ``metrics.jsonl``,
            ``summary.json``, ``model.keras`` and ``checkpoint.pkl`` are written
            there (README's table). None (the default) writes nothing: the run's
            figures are only in the returned ``RunResult``. The CLI's ``report/``
            and ``tensorboard/`` are the CLI's own
            (``fedactors.reporting.report.write_report`` makes the report).
        device_events: Log each device's steps in ``events.jsonl`` (the report's
            timeline needs them); False keeps only the server's events, for
            speed on big fleets.
        keep_events: Keep the events in memory too, as ``RunResult.events``
            (otherwise that list is empty). After a resume it holds the events
            of this process's part of the run; ``records`` hold every round.
        scenario_path: The scenario's file, if it came from one: error messages
            name it (``file:line``) and a checkpoint records its digest, so a
            resume with an edited file is refused.
        checkpoint: Write ``checkpoint.pkl`` after every round (needs ``out_dir``).
        resume: Continue the run checkpointed in ``out_dir`` (to ``rounds``, or
            to the round count it was started for) instead of starting afresh.
        executor: ``"auto"`` (default), ``"vectorized"`` or ``"sequential"``: how a
            cohort's local training is batched (docs/training.md).
        backend: ``"local"`` (default) or ``"ray"``: where local training runs
            (docs/distributed.md).
        ray_workers: Ray workers (>= 1) for ``backend="ray"``; None: every CPU.
        until: Stop after the first round that ends at or after this simulated
            second (>= 0); the summary's ``stopped`` is then ``"time-limit"``.

    Examples:
        >>> from fedactors.simulation import RunOptions
        >>> RunOptions(rounds=3, out_dir="runs/demo").out_dir
        PosixPath('runs/demo')
        >>> RunOptions(rounds="3")
        Traceback (most recent call last):
        ...
        fedactors.errors.ConfigError: rounds: must be a whole number, got '3'
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
            ("settings_parts", settings_parts(scenario)),
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
    return _digest(text)


#: The scenario fields ``settings_sha256`` covers, each digested on its own too, so a
#: refused resume can name the one that changed.
SETTINGS_PARTS = ("fleet", "rounds", "aggregator", "mode", "secure_aggregation", "privacy",
                  "server_optimizer", "byzantine")


def settings_parts(scenario: Scenario) -> tuple[tuple[str, str], ...]:
    """``(field, digest)`` for each field ``settings_sha256`` covers."""
    return tuple((name, _digest(repr(getattr(scenario, name)))) for name in SETTINGS_PARTS)


def _digest(text: str) -> str:
    # Memory addresses in default reprs differ per process: dropped.
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
    """What ``run_scenario`` returns: the same figures as the run directory's files.

    Args:
        scenario: The scenario that ran.
        seed: The root seed the run used (``RunOptions.seed`` when given, else
            ``scenario.seed``).
        records: One metrics row per release, as in ``metrics.jsonl`` (every round
            of the run, a resumed one's earlier rounds included): ``round``,
            ``selected``, ``reported``, ``accuracy``, ``epsilon``, ... (docs/reporting.md).
        weights: The final global weights, flattened to one float32 vector
            (``summary["weights_sha256"]`` is their digest).
        summary: As ``summary.json``: ``rounds``, ``stopped``, ``final``,
            ``weights_sha256``, ``privacy``, ``warnings``, ...
        events: The event log's records when ``RunOptions.keep_events`` is set,
            else empty.

    Examples:
        >>> from fedactors.scenarios.loader import load_scenario
        >>> from fedactors.simulation import RunOptions, run_scenario
        >>> result = run_scenario(load_scenario("scenarios/linear_regression.py"),
        ...                       RunOptions(rounds=2))
        >>> [row["round"] for row in result.records], result.summary["stopped"]
        ([1, 2], 'completed')
        >>> result.seed == result.scenario.seed  # no seed in the options
        True
    """

    scenario: Scenario
    seed: int
    records: list[dict[str, Any]]
    weights: np.ndarray = field(repr=False)
    summary: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list, repr=False)
