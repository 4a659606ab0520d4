"""Run a scenario: assemble its world, drive the server on the clock, record, summarise."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from functools import partial
from typing import Optional

from fedactors.aggregation.base import TreeRelease
from fedactors.data.partitioned import PartitionedData
from fedactors.devices.fleet import Fleet
from fedactors.errors import ConfigError, ScenarioError
from fedactors.reporting import strict_json
from fedactors.reporting.events import EventLog
from fedactors.reporting.partitions import write_partitions
from fedactors.reporting.warnings import run_warnings
from fedactors.runtime import checkpoint
from fedactors.runtime.loop import VirtualTimeLoop
from fedactors.scenarios.spec import Scenario
from fedactors.seeding import SYSTEM, SeedTree
from fedactors.simulation import recorder
from fedactors.simulation.assembly import (
    assemble,
    build_data,
    callers_randomness_kept,
    canary_plan,
    check_deadline,
    check_one_model,
    configure_tensorflow,
    dry_run,
    model_spec,
    privacy_budget,
    restore_world,
    scenario_code,
)
from fedactors.simulation.options import RunOptions, RunResult, built_sha256
from fedactors.simulation.outputs import RunDirectory, check_writable, save_model
from fedactors.training.choice import executor_for
from fedactors.training.executor import Executor
from fedactors.training.model_runner import Evaluator, ModelRunner
from fedactors.training.weights import weights_sha256

_DEFAULTS = RunOptions()

#: summary.json's ``reproducible_note`` under ``randomness="system"``.
NOT_REPRODUCIBLE = ("DP noise and secure-aggregation secrets came from the operating system's CSPRNG, "
                    "not the seed: every other draw (fleet, data, cohorts, dropouts, batch order) "
                    "is still seeded, but the noise, the secrets and so the weights differ from "
                    "run to run")
#: The same for DP-FTRL, whose tree noise is TensorFlow's, from one seed drawn from the OS.
NOT_REPRODUCIBLE_TREE = (
    "DP-FTRL's tree noise came from TensorFlow's counter-based (Philox) sampler seeded once "
    "with 62 bits from the operating system's CSPRNG, and that seed is kept in the run's state "
    "and checkpoint.pkl: whoever reads the checkpoint can regenerate the noise. Secure-"
    "aggregation secrets came from the CSPRNG; every other draw is still seeded, but the noise "
    "and so the weights differ from run to run")


def run_scenario(
    scenario: Scenario,
    options: RunOptions = _DEFAULTS,
    on_round: Sequence[Callable[[dict], Optional[str]]] = (),
    executor_factory: Optional[Callable[[ModelRunner], Executor]] = None,
    interrupt: Callable[[], Optional[str]] = lambda: None,
) -> RunResult:
    """Run ``scenario`` as ``options`` say; ``on_round`` callbacks get each metrics row and
    may return a reason to stop; ``executor_factory`` replaces the chosen executor (tests).

    ``interrupt`` is polled and may return a reason to stop (the CLI's Ctrl-C): a
    FedBuff run polls it at every event and stops at the end of the current instant
    even when no update comes; synchronous rounds poll it at each round's end and
    stop there. The reason becomes ``summary["stopped"]``.

    ``on_round`` callbacks get a copy of each row: what they change is theirs, not the
    run's records.

    The run draws only from its own seed; the process's global random state (Python's
    ``random``, ``np.random``, Keras' and TensorFlow's global seeds) is left as it was.

    Args:
        scenario: What to simulate (``load_scenario(path)``, or a ``Scenario`` built
            in code).
        options: How to run it (``RunOptions``); by default the scenario's seed and
            round count, and nothing written.
        on_round: Callables, each given a copy of every metrics row as it is made;
            one that returns a string stops the run there (the string becomes
            ``summary["stopped"]``). A list, even of one.
        executor_factory: Replaces the executor ``options`` choose (tests).
        interrupt: Polled for a reason to stop, as above.

    A scenario or option that cannot run raises ``ConfigError`` / ``ScenarioError``
    (one line naming the file, field or device) before round 1; a device whose
    training fails stops the run with a ``ScenarioError`` naming it.

    Examples:
        >>> from fedactors.scenarios.loader import load_scenario
        >>> from fedactors.simulation import RunOptions, run_scenario
        >>> scenario = load_scenario("scenarios/linear_regression.py")
        >>> losses = []
        >>> result = run_scenario(scenario, RunOptions(rounds=3, seed=1),
        ...                       on_round=[lambda row: losses.append(row["loss"])])
        >>> len(losses), result.summary["rounds"], result.seed
        (3, 3, 1)
        >>> run_scenario(scenario, RunOptions(rounds=5), on_round=[
        ...     lambda row: "enough" if row["round"] == 2 else None]).summary["stopped"]
        'enough'
    """
    with callers_randomness_kept():
        return _run(scenario, options, on_round, executor_factory, interrupt)


def _run(
    scenario: Scenario,
    options: RunOptions,
    on_round: Sequence[Callable[[dict], Optional[str]]],
    executor_factory: Optional[Callable[[ModelRunner], Executor]],
    interrupt: Callable[[], Optional[str]],
) -> RunResult:
    wall_start = time.perf_counter()
    if options.out_dir is not None:
        check_writable(options.out_dir)  # one line naming it, before any work
    seed = scenario.seed if options.seed is None else options.seed
    rounds = scenario.rounds.count if options.rounds is None else options.rounds
    seeds = SeedTree(seed, scenario.randomness)
    configure_tensorflow(seeds)

    fleet = Fleet.build(scenario.fleet, seeds.generator("fleet"))
    data = build_data(scenario, fleet, seeds, options.scenario_path)
    # The server's model is built first, right after seeding, so the initial
    # global weights depend on the seed alone.
    with scenario_code("model", options.scenario_path):
        evaluator = Evaluator(model_spec(scenario), *data.test)
        runner = ModelRunner(model_spec(scenario), scenario.training)
    check_one_model(evaluator, runner.model, options.scenario_path)
    initial = evaluator.layout.flatten(evaluator.model.get_weights())
    dry_run(scenario, evaluator, data, options.scenario_path)
    check_deadline(scenario, fleet, data, int(initial.nbytes), options.scenario_path)
    # Round 0 of every learning curve: the initial model, before any training (the same
    # weights for a seed, so a resumed run evaluates it again to the same figures).
    initial_metrics = evaluator.evaluate(initial)
    privacy = privacy_budget(scenario, fleet.size, options.scenario_path, int(initial.shape[0]))
    canaries = canary_plan(scenario, privacy, seeds, initial.shape[0], options.scenario_path)
    with scenario_code("data", options.scenario_path):
        # Only a run with a directory checkpoints or resumes. (It makes generated data.)
        digest = data.sha256() if options.out_dir is not None else ""
    fingerprint_with = partial(options.fingerprint, scenario, seed,
                               built_sha256(evaluator.model, scenario), data=digest)
    resumed = _checkpoint_to_resume(options, rounds)
    if resumed is not None:
        # Everything but the executor's fallback is checked before the executor starts:
        # a resume that will be refused must not first start a Ray cluster.
        _check_resume(options, fingerprint_with(fell_back=resumed.fingerprint.fell_back),
                      resumed)
    executor = _executor(scenario, options, seeds, runner, executor_factory)
    fingerprint = fingerprint_with(fell_back=executor.fallback_reason is not None)
    if resumed is not None:
        _check_resume(options, fingerprint, resumed)
    loop = VirtualTimeLoop(resumed.clock if resumed else 0.0)
    records: list[dict] = list(resumed.records) if resumed else []
    with ExitStack() as stack:
        directory = RunDirectory(options.out_dir, stack, resumed)
        stack.callback(executor.close)
        log = EventLog(loop.time, directory.events, keep=options.keep_events,
                       device_events=options.device_events)
        executor.incident = partial(log.emit, "executor")
        actors = assemble(
            loop=loop, fleet=fleet, data=data, executor=executor, scenario=scenario,
            evaluate=evaluator.evaluate, seeds=seeds, log=log, initial_weights=initial,
            privacy=privacy, canaries=canaries,
        )
        traffic = recorder.Traffic(actors.network, resumed.traffic if resumed else (0, 0))
        timed = {"network": actors.network, "server": actors.server, "devices": actors.directory}
        if resumed:
            actors.server.state = resumed.server_state
            actors.network.bytes_down, actors.network.bytes_up = resumed.traffic
            if resumed.world is not None:  # FedBuff: the world as it was mid-run
                restore_world(resumed.world, loop, actors, timed)

        checkpointer = None
        if options.out_dir is not None and options.checkpoint:
            checkpointer = recorder.Checkpointer(
                directory=directory, fingerprint=fingerprint, scenario_path=options.scenario_path,
                rounds=rounds, loop=loop, actors=actors, records=records, traffic=traffic,
                timed=timed, whole_world=scenario.mode is not None)
        # Who attacks (the simulator's ground truth; the server is never told).
        byzantine = sorted(actors.directory.world.attacks)
        record = recorder.Recorder([
            recorder.stop_on_failure(actors.failures, options.scenario_path),
            recorder.ground_truth_row(actors.tally, traffic),
            recorder.clipping(actors.tally),
            *([recorder.withheld(actors.tally)] if scenario.secure_aggregation is not None
              else []),
            *([recorder.attackers(frozenset(byzantine))] if scenario.byzantine is not None
              else []),
            recorder.wall_clock(wall_start),
            recorder.keep(records),
            recorder.write(directory),
            *([checkpointer] if checkpointer is not None else []),
            # A callback may stop the run here, at a round's end: its checkpoint is saved.
            recorder.callbacks(on_round),
            recorder.time_limit(options.until),
        ])

        if resumed is None and options.out_dir is not None and isinstance(data, PartitionedData):
            # The data is live only now; the report draws this table after the fact.
            table = data.label_counts()
            if table is not None:  # class labels (regression targets have no table)
                write_partitions(options.out_dir, data.description, *table)
        if resumed is None:
            log.emit("simulator", "run.start", scenario=scenario.name, seed=seed,
                     classes=[[c.name, c.count] for c in fleet.classes],
                     executor=type(executor).__name__,
                     # Why cohorts are not vectorized, if they are not (also a warning).
                     executor_fallback=executor.fallback_reason,
                     devices=fleet.size, parameters=int(initial.shape[0]),
                     initial=initial_metrics,
                     **({"byzantine": byzantine} if scenario.byzantine is not None else {}),
                     # Said only when it is not the seed tree: seeded logs stay as they were.
                     **({"randomness": SYSTEM} if scenario.randomness == SYSTEM else {}))
        stopped = _drive(loop, actors, rounds - (resumed.round if resumed else 0), record,
                         interrupt)
        if checkpointer is not None:
            checkpointer.close()
        if actors.failures:
            raise recorder.failure_line(actors.failures[0], options.scenario_path)
        weights = actors.server.state.weights
        final = next((r for r in reversed(records) if "loss" in r), None)
        # The final model's metrics: its round's evaluation, or (eval_every skipped that
        # round) one more evaluation now, which only summary.json then holds.
        final_logged = bool(final and final["round"] == records[-1]["round"])
        final_metrics = (
            {k: final[k] for k in final if k in evaluator.metric_names or k == "loss"}
            if final_logged else evaluator.evaluate(weights)
        )
        privacy_summary = (
            privacy.summary(actors.server.state.privacy, stopped) if privacy is not None else None
        )
        if privacy_summary is not None and canaries is not None:
            privacy_summary["empirical"] = canaries.summary(
                initial, weights, privacy.delta, actors.server.state.privacy.ledger,
                participations=sum(int(r.get("canaries", 0)) for r in records))
            log.emit("simulator", "privacy.empirical", **privacy_summary["empirical"])
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
        "initial": initial_metrics,
        "final": final_metrics,
        # The round whose model "final" evaluates, and whether metrics.jsonl has it too.
        "final_round": records[-1]["round"] if records else 0,
        "final_in_metrics": final_logged if records else False,
        "simulated_seconds": loop.time(),
        "wall_seconds": round(time.perf_counter() - wall_start, 3),
        "devices": fleet.size,
        "parameters": int(weights.shape[0]),
        "weights_sha256": weights_sha256(weights),
        "randomness": scenario.randomness,
    }
    if scenario.randomness == SYSTEM:
        summary["reproducible"] = False
        summary["reproducible_note"] = (
            NOT_REPRODUCIBLE_TREE if isinstance(scenario.aggregator.private_release(), TreeRelease)
            else NOT_REPRODUCIBLE)
    if scenario.byzantine is not None:
        summary["byzantine"] = {"devices": byzantine, "fraction": scenario.byzantine.fraction,
                                "attack": repr(scenario.byzantine.attack)}
    if scenario.secure_aggregation is not None:
        summary["secure_aggregation"] = scenario.secure_aggregation.describe()
    if privacy_summary is not None:
        summary["privacy"] = privacy_summary
    summary["warnings"] = run_warnings(records, privacy_summary, executor.fallback_reason,
                                       randomness=scenario.randomness,
                                       secure=summary.get("secure_aggregation"),
                                       selection=None if scenario.mode is not None else
                                       # (at most the fleet: a Poisson rate is capped at 1)
                                       (min(scenario.rounds.selected_size, fleet.size),
                                        scenario.rounds.sampling))
    if actors.server.stall is not None:
        summary["warnings"].append(f"stalled: {actors.server.stall}")
    if options.out_dir is not None:
        save_model(scenario, evaluator, weights, options.out_dir / "model.keras")
        (options.out_dir / "summary.json").write_text(strict_json.dumps(summary, indent=2) + "\n")
    return RunResult(scenario, seed, records, weights, summary, log.records)


def _drive(loop: VirtualTimeLoop, actors, remaining: int, record: recorder.Recorder,
           interrupt: Callable[[], Optional[str]]) -> str:
    """Run the server for ``remaining`` releases on ``loop``; why it stopped."""
    try:
        asyncio.set_event_loop(loop)
        stopped = "completed"
        if remaining > 0:
            main = loop.create_task(actors.server.run(remaining, record, interrupt))

            def fail(exc: BaseException) -> None:
                # Stop at once, not at the round's deadline: nothing after this is valid.
                actors.failures.append(exc)
                main.cancel()

            actors.directory.on_failure = fail
            try:
                stopped = loop.run_until_complete(main)
            except asyncio.CancelledError:
                if not actors.failures:
                    raise
        loop.run_until_complete(actors.directory.shutdown())
        return stopped
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def _executor(scenario: Scenario, options: RunOptions, seeds: SeedTree, runner: ModelRunner,
              factory: Optional[Callable[[ModelRunner], Executor]]) -> Executor:
    if factory is None:
        return executor_for(options.executor, options.backend, runner, spec=model_spec(scenario),
                            keras_seed=seeds.integer("keras"), ray_workers=options.ray_workers)
    if options.backend != "local":
        raise ConfigError("backend", f"{options.backend!r} cannot be combined with an executor_factory")
    return factory(runner)


def _checkpoint_to_resume(options: RunOptions, rounds: int) -> Optional[checkpoint.Checkpoint]:
    """The checkpoint ``--resume`` continues (None without it), once it is known to hold
    no more rounds than the run is asked for."""
    if not options.resume:
        return None
    if options.out_dir is None:
        raise ScenarioError("--resume needs the run directory")
    saved = checkpoint.load(options.out_dir)
    # The directory may hold more than its checkpoint (a FedBuff run's last update is
    # after it): resuming to fewer rounds would overwrite finished work with less.
    done = max(saved.round, _rounds_reported(options.out_dir))
    if rounds < done:
        raise ScenarioError(f"{options.out_dir}: cannot resume: the run already has {done} rounds, "
                            f"more than the {rounds} asked for (--rounds)")
    return saved


def _check_resume(options: RunOptions, fingerprint: checkpoint.Fingerprint,
                  saved: checkpoint.Checkpoint) -> None:
    problem = fingerprint.mismatch(saved.fingerprint)
    if problem:
        raise ScenarioError(f"{options.out_dir}: cannot resume: {problem}")


def _rounds_reported(out_dir) -> int:
    """The round count in a run directory's summary.json, or 0 if it has none yet."""
    try:
        return int(json.loads((out_dir / "summary.json").read_text())["rounds"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0
