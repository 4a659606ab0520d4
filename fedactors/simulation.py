"""Assemble a scenario into actors on a virtual clock, run it, write its outputs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from fedactors.data.federated import FederatedData
from fedactors.data.generated import GeneratedData
from fedactors.devices.actor import DeviceDirectory, DeviceWorld, RoundTally
from fedactors.devices.fleet import Fleet
from fedactors.errors import ConfigError, ScenarioError
from fedactors.reporting.events import EventLog
from fedactors.runtime.loop import VirtualTimeLoop
from fedactors.runtime.network import Network
from fedactors.scenarios.spec import Scenario
from fedactors.seeding import SeedTree
from fedactors.server.actor import RoundOutcome, ServerActor
from fedactors.training.executor import Executor
from fedactors.training.model_runner import Evaluator, ModelRunner
from fedactors.training.vectorized import make_executor
from fedactors.training.weights import weights_sha256

REJECT_REASONS = ("late", "future", "foreign", "duplicate", "malformed")
#: Metric keys that depend on the machine, not the simulation; excluded from
#: reproducibility comparisons.
WALL_CLOCK_KEYS = ("wall_seconds",)


@dataclass(frozen=True)
class RunOptions:
    seed: Optional[int] = None  # None: the scenario's own seed
    rounds: Optional[int] = None  # None: the scenario's round count
    out_dir: Optional[Path] = None
    device_events: bool = True
    keep_events: bool = False  # keep events in memory (tests)
    executor: str = "auto"  # "auto" | "vectorized" | "sequential" (see training.vectorized)


@dataclass
class RunResult:
    scenario: Scenario
    seed: int
    records: list[dict[str, Any]]
    weights: np.ndarray = field(repr=False)
    summary: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list, repr=False)


def configure_tensorflow(seeds: SeedTree) -> None:
    """Deterministic kernels and seeded Keras initializers and dropout."""
    import keras
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seeds.integer("keras"))


def build_data(
    scenario: Scenario, fleet: Fleet, seeds: SeedTree
) -> Union[FederatedData, GeneratedData]:
    try:
        data = scenario.data(fleet, seeds.generator("data"))
    except ConfigError as exc:
        raise ScenarioError(f"data: {exc}") from None
    if not isinstance(data, (FederatedData, GeneratedData)):
        raise ScenarioError(
            f"data: must return a FederatedData or GeneratedData, got {type(data).__name__}"
        )
    if data.num_devices != fleet.size:
        raise ScenarioError(
            f"data: returned data for {data.num_devices} devices, but the fleet has {fleet.size}"
        )
    return data


def metrics_row(outcome: RoundOutcome, tally: RoundTally, traffic: tuple[int, int]) -> dict:
    """One metrics.jsonl line: the server's view plus the simulator's ground truth."""
    selected, reported = set(outcome.selected), set(outcome.reported)
    dropped = tally.dropped_by(outcome.round, outcome.end) & (selected - reported)
    missing = len(selected) - len(reported) - len(dropped)
    row: dict[str, Any] = {
        "round": outcome.round,
        "time": outcome.end,
        "duration": outcome.end - outcome.start,
        "selected": len(selected),
        "reported": len(reported),
        "dropped": len(dropped),
        # Stragglers still working when the deadline cut them off; when the
        # target was met first, the rest were simply not needed ("surplus").
        "late": missing if outcome.closed_by == "deadline" else 0,
        "surplus": missing if outcome.closed_by == "target" else 0,
        "closed_by": outcome.closed_by,
        "applied": outcome.applied,
        "bytes_down": traffic[0],
        "bytes_up": traffic[1],
    }
    for reason in REJECT_REASONS:
        row[f"rejected_{reason}"] = outcome.rejected.get(reason, 0)
    row.update(outcome.measurements)
    row.update(outcome.metrics)
    return row


class _Outputs:
    """The run directory: events.jsonl, metrics.jsonl, summary.json, model.keras."""

    def __init__(self, out_dir: Optional[Path], stack: ExitStack) -> None:
        self.dir = out_dir
        self.events = self.metrics = None
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            self.events = stack.enter_context(open(out_dir / "events.jsonl", "w"))
            self.metrics = stack.enter_context(open(out_dir / "metrics.jsonl", "w"))

    def write_row(self, row: dict) -> None:
        if self.metrics is not None:
            self.metrics.write(json.dumps(row, separators=(",", ":")) + "\n")
            self.metrics.flush()


def run_scenario(
    scenario: Scenario,
    options: RunOptions = RunOptions(),
    on_round: Sequence[Callable[[dict], None]] = (),
    executor_factory: Optional[Callable[[ModelRunner], Executor]] = None,
) -> RunResult:
    wall_start = time.perf_counter()
    seed = scenario.seed if options.seed is None else options.seed
    rounds = scenario.rounds.count if options.rounds is None else options.rounds
    seeds = SeedTree(seed)
    configure_tensorflow(seeds)

    fleet = Fleet.build(scenario.fleet, seeds.generator("fleet"))
    data = build_data(scenario, fleet, seeds)
    # The server's model is built first, right after seeding, so the initial
    # global weights depend on the seed alone.
    evaluator = Evaluator(_model_spec(scenario), *data.test)
    runner = ModelRunner(_model_spec(scenario), scenario.training)
    initial = evaluator.layout.flatten(evaluator.model.get_weights())
    executor = (executor_factory or partial(make_executor, options.executor))(runner)

    loop = VirtualTimeLoop()
    records: list[dict] = []
    with ExitStack() as stack:
        outputs = _Outputs(options.out_dir, stack)
        log = EventLog(loop.time, outputs.events, keep=options.keep_events,
                       device_events=options.device_events)
        server_mailbox: asyncio.Queue = asyncio.Queue()
        tally = RoundTally.empty()
        world = DeviceWorld(fleet, data, executor, scenario.aggregator, seeds, None, log, tally,
                            scenario.training.epochs)
        failures: list[BaseException] = []
        directory = DeviceDirectory(world, failures.append)
        network = Network(loop, fleet, server_mailbox, directory.deliver)
        world.network = network
        server = ServerActor(
            rounds=scenario.rounds, fleet=fleet, aggregator=scenario.aggregator,
            optimizer=scenario.server_optimizer, evaluate=evaluator.evaluate, seeds=seeds,
            log=log, mailbox=server_mailbox, network=network, initial_weights=initial,
        )
        traffic = [0, 0]

        def record(outcome: RoundOutcome) -> Optional[str]:
            if failures:
                raise failures[0]
            row = metrics_row(outcome, tally, (network.bytes_down - traffic[0],
                                               network.bytes_up - traffic[1]))
            traffic[:] = [network.bytes_down, network.bytes_up]
            row["wall_seconds"] = round(time.perf_counter() - wall_start, 3)
            records.append(row)
            outputs.write_row(row)
            for callback in on_round:
                callback(row)
            return None

        log.emit("simulator", "run.start", scenario=scenario.name, seed=seed,
                 devices=fleet.size, parameters=int(initial.shape[0]))
        try:
            asyncio.set_event_loop(loop)
            stopped = loop.run_until_complete(server.run(rounds, record))
            loop.run_until_complete(directory.shutdown())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
        if failures:
            raise failures[0]
        weights = server.state.weights
        final = next((r for r in reversed(records) if "loss" in r), None)
        final_metrics = (
            {k: final[k] for k in final if k in evaluator.metric_names or k == "loss"}
            if final and final["round"] == records[-1]["round"]
            else evaluator.evaluate(weights)
        )
        log.emit("simulator", "run.end", rounds=len(records), reason=stopped)

    summary = {
        "scenario": scenario.name,
        "seed": seed,
        "rounds": len(records),
        "stopped": stopped,
        "final": final_metrics,
        "simulated_seconds": loop.time(),
        "wall_seconds": round(time.perf_counter() - wall_start, 3),
        "devices": fleet.size,
        "parameters": int(weights.shape[0]),
        "weights_sha256": weights_sha256(weights),
    }
    if options.out_dir is not None:
        save_model(scenario, evaluator, weights, options.out_dir / "model.keras")
        (options.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return RunResult(scenario, seed, records, weights, summary, log.records)


def save_model(scenario: Scenario, evaluator: Evaluator, weights: np.ndarray, path: Path) -> None:
    """The final global model, loadable with ``keras.models.load_model``."""
    model = evaluator.model
    model.set_weights(evaluator.layout.unflatten(weights))
    model.compile(optimizer=scenario.training.optimizer(), loss=scenario.loss,
                  metrics=list(scenario.metrics))
    model.save(path)


def _model_spec(scenario: Scenario):
    from fedactors.training.spec import ModelSpec

    return ModelSpec(scenario.model, scenario.loss, tuple(scenario.metrics))
