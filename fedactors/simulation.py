"""Assemble a scenario into actors on a virtual clock, run it, write its outputs."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from fedactors.data.federated import FederatedData
from fedactors.data.generated import GeneratedData
from fedactors.devices.actor import DeviceDirectory, DeviceFailed, DeviceWorld, RoundTally
from fedactors.devices.fleet import Fleet
from fedactors.devices.secagg_participant import SecAggParticipants
from fedactors.errors import ConfigError, ScenarioError, one_line
from fedactors.reporting.events import EventLog
from fedactors.reporting.warnings import run_warnings
from fedactors.runtime import checkpoint, snapshot
from fedactors.runtime.loop import VirtualTimeLoop
from fedactors.runtime.network import Network
from fedactors.runtime.snapshot import WorldSnapshot
from fedactors.scenarios.loader import line_in
from fedactors.scenarios.spec import Scenario
from fedactors.seeding import SeedTree
from fedactors.server.actor import ServerActor
from fedactors.server.fedbuff import FedBuffServer, server_class
from fedactors.server.outcome import ReleaseOutcome, metrics_row
from fedactors.server.release import ReleaseStep
from fedactors.training.executor import Executor
from fedactors.training.model_runner import Evaluator, ModelRunner
from fedactors.training.vectorized import make_executor
from fedactors.training.weights import weights_sha256

#: Metric keys that depend on the machine, not the simulation; excluded from
#: reproducibility comparisons.
WALL_CLOCK_KEYS = ("wall_seconds", "secagg_server_seconds")


@dataclass(frozen=True)
class RunOptions:
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
    executor: str = "auto"  # "auto" | "vectorized" | "sequential" (see training.vectorized)
    backend: str = "local"  # "local" or "ray": where local training runs (docs/distributed.md)
    ray_workers: Optional[int] = None  # Ray workers (and local Ray CPUs); None: all CPUs
    until: Optional[float] = None  # stop after the first round ending at/after this simulated second

    def fingerprint(self, scenario: Scenario, seed: int) -> checkpoint.Fingerprint:
        """What a resumed run must share with the checkpointed one to replay it bit for bit."""
        digest = checkpoint.file_sha256(self.scenario_path) if self.scenario_path else ""
        return checkpoint.Fingerprint(scenario.name, digest, seed, (
            ("device_events", self.device_events), ("executor", self.executor),
            ("backend", self.backend), ("settings", settings_sha256(scenario)),
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


@contextmanager
def scenario_code(field: str, path: Optional[Path]) -> Iterator[None]:
    """Run the scenario's own functions; a failure becomes one line naming the file,
    the line in it and the field, never a traceback."""
    try:
        yield
    except ScenarioError:
        raise
    except Exception as exc:  # user code: report it, whatever it is
        where = line_in(path, exc) if path is not None else "scenario"
        what = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
        prefix = "" if isinstance(exc, ConfigError) and exc.field.startswith(field) else f"{field}: "
        raise ScenarioError(f"{where}: {prefix}{what}") from None


def build_data(
    scenario: Scenario, fleet: Fleet, seeds: SeedTree, path: Optional[Path] = None
) -> Union[FederatedData, GeneratedData]:
    with scenario_code("data", path):
        data = scenario.data(fleet, seeds.generator("data"))
    if not isinstance(data, (FederatedData, GeneratedData)):
        raise ScenarioError(
            f"data: must return a FederatedData or GeneratedData, got {type(data).__name__}"
        )
    if data.num_devices != fleet.size:
        raise ScenarioError(
            f"data: returned data for {data.num_devices} devices, but the fleet has {fleet.size}"
        )
    return data


def _failure(exc: BaseException, path: Optional[Path]) -> BaseException:
    """A device's failure as the one line a user reads (other failures unchanged)."""
    if isinstance(exc, DeviceFailed):
        return ScenarioError(f"{path or 'scenario'}: {exc}")
    return exc


def dry_run(scenario: Scenario, evaluator: Evaluator, data: Union[FederatedData, GeneratedData],
            path: Optional[Path]) -> None:
    """Before round 1: one device's data and the test set through the model, loss and metrics.

    A model whose output does not fit the labels (too few classes, a missing
    pooling layer) would otherwise fail on every device and only surface at
    the deadline; here it is one line naming the shapes, the label range and
    the loss.
    """
    first = next((d for d in range(data.num_devices) if data.num_examples(d) > 0), None)
    samples = [("the test set", *data.test)]
    if first is not None:
        samples.insert(0, (f"device {first}'s data", *data.client(first)))
    for what, x, y in samples:
        if len(x) == 0:
            continue
        try:
            evaluator.dry_run(x, y)
        except Exception as exc:  # TensorFlow's errors: report them, in one line
            labels = np.asarray(y[:8])
            span = (f", range {labels.min():g}..{labels.max():g}"
                    if labels.size and np.issubdtype(labels.dtype, np.number) else "")
            where = str(path) if path is not None else "scenario"
            raise ScenarioError(
                f"{where}: model: output shape {evaluator.output_shape()} does not fit the labels "
                f"of {what} (shape {labels.shape[1:] or '()'} per example{span}) under loss "
                f"{evaluator.loss_fn.name!r}: {one_line(exc)[:300]}"
            ) from None


@dataclass
class Actors:
    """The simulated world of one run, wired together."""

    server: Union[ServerActor, FedBuffServer]
    directory: DeviceDirectory
    network: Network
    tally: RoundTally
    failures: list[BaseException]


def assemble(
    *,
    loop: VirtualTimeLoop,
    fleet: Fleet,
    data: FederatedData,
    executor: Executor,
    scenario: Scenario,
    evaluate: Callable[[np.ndarray], dict[str, float]],
    seeds: SeedTree,
    log: EventLog,
    initial_weights: np.ndarray,
    privacy: Any = None,
) -> Actors:
    """Wire the server, the device directory and the network on ``loop``.

    The server gets the fleet's profiles (to know who is online) and its own
    evaluation function; only the devices get ``data``.
    """
    server_mailbox: asyncio.Queue = asyncio.Queue()
    tally = RoundTally.empty()
    failures: list[BaseException] = []
    attackers = (() if scenario.byzantine is None
                 else scenario.byzantine.choose(fleet.size, seeds.generator("byzantine")))
    world = DeviceWorld(fleet, data, executor, scenario.aggregator, seeds, None, log, tally,
                        scenario.training.epochs,
                        {int(d): scenario.byzantine.attack for d in attackers})
    if scenario.secure_aggregation is not None:
        world.secagg = SecAggParticipants(world)
    directory = DeviceDirectory(world, failures.append)
    network = Network(loop, fleet, server_mailbox, directory.deliver)
    world.network = network
    step = ReleaseStep(
        scenario.aggregator, scenario.server_optimizer, evaluate, seeds, log,
        # A FedBuff buffer is always full when released: K reports.
        min_reports=scenario.rounds.min_reports if scenario.mode is None else 1,
        eval_every=scenario.rounds.eval_every, privacy=privacy,
    )
    server = server_class(scenario.mode)(
        rounds=scenario.rounds, fleet=fleet, step=step, seeds=seeds, log=log,
        mailbox=server_mailbox, network=network, initial_weights=initial_weights,
        stop_devices=lambda r: (network.drop_round(r), directory.cancel_round(r)),
        secure_aggregation=scenario.secure_aggregation,
    )
    return Actors(server, directory, network, tally, failures)


class _Outputs:
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
            self.metrics.write(json.dumps(row, separators=(",", ":")) + "\n")
            self.metrics.flush()


def run_scenario(
    scenario: Scenario,
    options: RunOptions = RunOptions(),
    on_round: Sequence[Callable[[dict], Optional[str]]] = (),
    executor_factory: Optional[Callable[[ModelRunner], Executor]] = None,
) -> RunResult:
    wall_start = time.perf_counter()
    seed = scenario.seed if options.seed is None else options.seed
    rounds = scenario.rounds.count if options.rounds is None else options.rounds
    seeds = SeedTree(seed)
    configure_tensorflow(seeds)

    fleet = Fleet.build(scenario.fleet, seeds.generator("fleet"))
    data = build_data(scenario, fleet, seeds, options.scenario_path)
    # The server's model is built first, right after seeding, so the initial
    # global weights depend on the seed alone.
    with scenario_code("model", options.scenario_path):
        evaluator = Evaluator(_model_spec(scenario), *data.test)
        runner = ModelRunner(_model_spec(scenario), scenario.training)
    initial = evaluator.layout.flatten(evaluator.model.get_weights())
    dry_run(scenario, evaluator, data, options.scenario_path)
    if options.backend != "local":
        executor_factory = _backend_factory(scenario, options, seeds, executor_factory)
    executor = (executor_factory or partial(make_executor, options.executor))(runner)

    privacy = _privacy_budget(scenario, fleet.size, options.scenario_path)
    fingerprint = options.fingerprint(scenario, seed)
    resumed = _checkpoint_to_resume(options, fingerprint, scenario)
    loop = VirtualTimeLoop(resumed.clock if resumed else 0.0)
    records: list[dict] = list(resumed.records) if resumed else []
    with ExitStack() as stack:
        outputs = _Outputs(options.out_dir, stack, resumed)
        if hasattr(executor, "close"):
            stack.callback(executor.close)
        log = EventLog(loop.time, outputs.events, keep=options.keep_events,
                       device_events=options.device_events)
        executor.incident = partial(log.emit, "executor")
        actors = assemble(
            loop=loop, fleet=fleet, data=data, executor=executor, scenario=scenario,
            evaluate=evaluator.evaluate, seeds=seeds, log=log, initial_weights=initial,
            privacy=privacy,
        )
        server, directory, network, tally, failures = (
            actors.server, actors.directory, actors.network, actors.tally, actors.failures
        )
        traffic = list(resumed.traffic) if resumed else [0, 0]
        timed = {"network": network, "server": server, "devices": directory}
        if resumed:
            server.state = resumed.server_state
            network.bytes_down, network.bytes_up = traffic
            if resumed.world is not None:  # FedBuff: the world as it was mid-run
                restore_world(resumed.world, loop, actors, timed)

        checkpoint_due = [False]  # a FedBuff checkpoint waits for the end of the instant

        def save_checkpoint(world: Optional[WorldSnapshot] = None) -> None:
            events_bytes, metrics_bytes = outputs.sizes()
            checkpoint.save(options.out_dir, checkpoint.Checkpoint(
                fingerprint, str(options.scenario_path or ""), server.state.round, loop.time(),
                server.state, tuple(records), (traffic[0], traffic[1]),
                events_bytes, metrics_bytes, rounds, world,
            ))

        def save_world() -> None:
            if not checkpoint_due[0]:
                return  # the run ended before this instant did
            checkpoint_due[0] = False
            save_checkpoint(WorldSnapshot(
                server.snapshot(), directory.snapshot(), snapshot.pending_timers(loop, timed),
                copy.deepcopy(tally.dropped), (network.bytes_down, network.bytes_up)))

        def record(outcome: ReleaseOutcome) -> Optional[str]:
            if failures:
                raise _failure(failures[0], options.scenario_path)
            row = metrics_row(outcome, tally, (network.bytes_down - traffic[0],
                                               network.bytes_up - traffic[1]))
            traffic[:] = [network.bytes_down, network.bytes_up]
            row["wall_seconds"] = round(time.perf_counter() - wall_start, 3)
            records.append(row)
            outputs.write_row(row)
            if options.out_dir is not None and options.checkpoint:
                if scenario.mode is None:
                    save_checkpoint()  # a round's end: no device is at work
                elif not checkpoint_due[0]:
                    # FedBuff: devices are always at work; the checkpoint is taken at
                    # the end of this instant, when every actor waits (runtime/snapshot.py).
                    checkpoint_due[0] = True
                    loop.call_when_idle(save_world)
            # A callback may ask the run to stop here, at a round boundary (the CLI's
            # Ctrl-C handling): the checkpoint above already holds this round.
            stop = None
            for callback in on_round:
                stop = callback(row) or stop
            if stop:
                return stop
            if options.until is not None and outcome.end >= options.until:
                return "time-limit"
            return None

        if resumed is None:
            log.emit("simulator", "run.start", scenario=scenario.name, seed=seed,
                     classes=[[c.name, c.count] for c in fleet.classes],
                     executor=type(executor).__name__,
                     # Why cohorts are not vectorized, if they are not (also a warning).
                     executor_fallback=getattr(executor, "fallback_reason", None),
                     devices=fleet.size, parameters=int(initial.shape[0]))
        try:
            asyncio.set_event_loop(loop)
            remaining = rounds - (resumed.round if resumed else 0)
            stopped = "completed"
            if remaining > 0:
                main = loop.create_task(server.run(remaining, record))

                def fail(exc: BaseException) -> None:
                    # Stop at once, not at the round's deadline: nothing after this is valid.
                    failures.append(exc)
                    main.cancel()

                directory.on_failure = fail
                try:
                    stopped = loop.run_until_complete(main)
                except asyncio.CancelledError:
                    if not failures:
                        raise
                checkpoint_due[0] = False  # the server is done: no instant left to save
            loop.run_until_complete(directory.shutdown())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
        if failures:
            raise _failure(failures[0], options.scenario_path)
        weights = server.state.weights
        final = next((r for r in reversed(records) if "loss" in r), None)
        final_metrics = (
            {k: final[k] for k in final if k in evaluator.metric_names or k == "loss"}
            if final and final["round"] == records[-1]["round"]
            else evaluator.evaluate(weights)
        )
        privacy_summary = (
            privacy.summary(server.state.privacy, stopped) if privacy is not None else None
        )
        if privacy_summary is not None:
            log.emit("simulator", "privacy.summary", epsilon=privacy_summary["epsilon"],
                     assumption_held=privacy_summary["assumption_held"],
                     violations=privacy_summary["violations"])
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
    if privacy_summary is not None:
        summary["privacy"] = privacy_summary
    summary["warnings"] = run_warnings(records, privacy_summary,
                                       getattr(executor, "fallback_reason", None))
    if options.out_dir is not None:
        save_model(scenario, evaluator, weights, options.out_dir / "model.keras")
        (options.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return RunResult(scenario, seed, records, weights, summary, log.records)


def restore_world(world: WorldSnapshot, loop: VirtualTimeLoop, actors: Actors,
                  timed: dict[str, snapshot.SetsTimers]) -> None:
    """Put a FedBuff checkpoint's world back: server, devices at work, tally, traffic,
    then every pending timer in its order, then the devices' tasks."""
    actors.server.restore(world.server)
    actors.network.bytes_down, actors.network.bytes_up = world.traffic
    actors.tally.dropped = copy.deepcopy(world.dropped)
    actors.directory.restore(loop, world.devices)
    snapshot.restore_timers(world.timers, timed)
    actors.directory.start_restored()


def _checkpoint_to_resume(
    options: RunOptions, fingerprint: checkpoint.Fingerprint, scenario: Scenario
) -> Optional[checkpoint.Checkpoint]:
    if not options.resume:
        return None
    if options.out_dir is None:
        raise ScenarioError("--resume needs the run directory")
    saved = checkpoint.load(options.out_dir)
    problem = fingerprint.mismatch(saved.fingerprint)
    if problem:
        raise ScenarioError(f"{options.out_dir}: cannot resume: {problem}")
    return saved


def save_model(scenario: Scenario, evaluator: Evaluator, weights: np.ndarray, path: Path) -> None:
    """The final global model, loadable with ``keras.models.load_model``."""
    model = evaluator.model
    model.set_weights(evaluator.layout.unflatten(weights))
    model.compile(optimizer=scenario.training.optimizer(), loss=scenario.loss,
                  metrics=list(scenario.metrics))
    model.save(path)


def _privacy_budget(scenario: Scenario, population: int, path: Optional[Path] = None) -> Any:
    """The run's PrivacyBudget, or None for an aggregator that declares no DP release."""
    if scenario.aggregator.private_release() is None:
        return None  # don't import dp-accounting for non-private runs
    from fedactors.privacy.budget import PrivacyBudget

    try:
        return PrivacyBudget.for_scenario(scenario, population)
    except ConfigError as exc:
        raise ScenarioError(f"{path}: {exc}" if path is not None else str(exc)) from None


def _model_spec(scenario: Scenario):
    from fedactors.training.spec import ModelSpec

    return ModelSpec(scenario.model, scenario.loss, tuple(scenario.metrics))


BACKENDS = ("local", "ray")


def _backend_factory(scenario: Scenario, options: RunOptions, seeds: SeedTree,
                     executor_factory: Optional[Callable[[ModelRunner], Executor]]):
    """The executor factory for a non-local ``options.backend``."""
    if options.backend not in BACKENDS:
        raise ConfigError("backend", f"must be one of {BACKENDS}, got {options.backend!r}")
    if executor_factory is not None:
        raise ConfigError("backend", f"{options.backend!r} cannot be combined with an executor_factory")
    from fedactors.training.ray_executor import RayExecutor

    return RayExecutor.factory(_model_spec(scenario), scenario.training, seeds.integer("keras"),
                               options.ray_workers)
