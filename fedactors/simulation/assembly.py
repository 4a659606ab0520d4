"""Assemble a scenario into a world: seeded TensorFlow, data, model, actors on a clock.

The server gets the fleet's profiles and its own evaluation; only the devices
get the data. A FedBuff checkpoint's world is put back here too.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from fedactors.data.federated import FederatedData
from fedactors.data.generated import GeneratedData
from fedactors.data.partitioned import PartitionedData
from fedactors.devices.actor import DeviceDirectory, DeviceWorld, RoundTally
from fedactors.devices.fleet import Fleet
from fedactors.devices.secagg_participant import SecAggParticipants
from fedactors.errors import ConfigError, ScenarioError, one_line
from fedactors.messages import HEADER_BYTES
from fedactors.reporting.events import EventLog
from fedactors.runtime import snapshot
from fedactors.runtime.loop import VirtualTimeLoop
from fedactors.runtime.mailbox import Mailbox
from fedactors.runtime.network import Network
from fedactors.runtime.snapshot import WorldSnapshot
from fedactors.scenarios.loader import line_in
from fedactors.scenarios.spec import Scenario
from fedactors.secagg.pki import Pki
from fedactors.seeding import SeedTree
from fedactors.server.actor import ServerActor
from fedactors.server.fedbuff import FedBuffServer, server_class
from fedactors.server.release import ReleaseStep
from fedactors.training.executor import Executor
from fedactors.training.model_runner import Evaluator, MetricFailed


def configure_tensorflow(seeds: SeedTree) -> None:
    """Deterministic kernels and seeded Keras initializers and dropout.

    Keras seeds Python's ``random``, NumPy's global generator and TensorFlow's global
    seed along with its own; :func:`callers_randomness_kept` gives the caller back
    what they were.
    """
    import keras
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seeds.integer("keras"))


@contextmanager
def callers_randomness_kept() -> Iterator[None]:
    """Leave the process's global random state as the caller had it, whatever the run sets.

    Found from outside: a notebook's random search drew ``np.random.uniform`` between
    runs and got the same value after every run, since each run seeded the global
    generators to the same state. The run's own draws come from its seed tree and
    Keras' seeded generator; this restores Python's ``random``, NumPy's global
    generator, Keras' global seed and generator, TensorFlow's global seed (its
    per-op counter starts afresh from it) and op determinism.
    """
    import random

    import tensorflow as tf
    from keras.src.backend.common import global_state
    from keras.src.random.seed_generator import GLOBAL_SEED_GENERATOR
    from keras.src.utils.rng_utils import GLOBAL_RANDOM_SEED
    from tensorflow.python.eager import context
    from tensorflow.python.framework import config as tf_config

    python, numpy = random.getstate(), np.random.get_state()
    keras_state = {key: global_state.get_global_attribute(key)
                   for key in (GLOBAL_RANDOM_SEED, GLOBAL_SEED_GENERATOR)}
    tf_seed, deterministic = context.global_seed(), tf_config.is_op_determinism_enabled()
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)
        for key, value in keras_state.items():
            global_state.set_global_attribute(key, value)
        tf.random.set_seed(tf_seed)
        if not deterministic:
            tf_config.disable_op_determinism()


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
            f"{path if path is not None else 'scenario'}: data: must return a FederatedData "
            f"or GeneratedData, got {type(data).__name__}"
        )
    if data.num_devices != fleet.size:
        hint = ""
        if isinstance(data, PartitionedData):
            total = int(data.partitioner.num_partitions)
            hint = ("; pass devices=fleet.size (or an order of fleet.size partitions)"
                    if total >= fleet.size else
                    f"; its partitioner has {total} partitions, and each device needs its "
                    f"own: partition into at least {fleet.size} "
                    f"(num_partitions={fleet.size}) or use a fleet of at most {total}")
        raise ScenarioError(
            f"{path if path is not None else 'scenario'}: data: returned data for "
            f"{data.num_devices} devices, but the fleet has {fleet.size}{hint}"
        )
    return data


def dry_run(scenario: Scenario, evaluator: Evaluator, data: Union[FederatedData, GeneratedData],
            path: Optional[Path]) -> None:
    """Before round 1: one device's data and the test set through the model, loss and metrics.

    A model whose output does not fit the labels (too few classes, a missing
    pooling layer) would otherwise fail on every device and only surface at
    the deadline; here it is one line naming the shapes, the label range and
    the loss.
    """
    where = str(path) if path is not None else "scenario"
    if "sparse_categorical" in evaluator.loss_fn.name and data.test[1].dtype.kind == "f":
        # Keras would cast 2.5 to class 2 without a word; the contract's class ids are int32.
        raise ScenarioError(
            f"{where}: data: labels are {data.test[1].dtype} (regression targets?) but loss "
            f"{evaluator.loss_fn.name!r} takes int32 class ids: cast them with "
            ".astype(np.int32), or use a regression loss")
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
            wanted = evaluator.input_shape()
            if wanted and not _fits(wanted[1:], x.shape[1:]):
                # Keras' own message for this names no shape (found from outside:
                # "ValueError: • kwargs=<class 'inspect._empty'>"), and the labels are fine.
                raise ScenarioError(
                    f"{where}: model: input shape {wanted} does not fit the examples of {what} "
                    f"(shape {x.shape[1:]} per example)") from None
            labels = np.asarray(y[:8])
            span = (f", range {labels.min():g}..{labels.max():g}"
                    if labels.size and np.issubdtype(labels.dtype, np.number) else "")
            if isinstance(exc, MetricFailed):
                # The loss took them; a metric meant for other labels did not (found from
                # outside: AUC on class ids was blamed on the loss).
                raise ScenarioError(
                    f"{where}: metrics: {exc.name!r} does not fit the model's output "
                    f"{evaluator.output_shape()} and the labels of {what} (shape "
                    f"{labels.shape[1:] or '()'} per example{span}), though loss "
                    f"{evaluator.loss_fn.name!r} does: {one_line(exc.cause)[:300]}") from None
            raise ScenarioError(
                f"{where}: model: output shape {evaluator.output_shape()} does not fit the labels "
                f"of {what} (shape {labels.shape[1:] or '()'} per example{span}) under loss "
                f"{evaluator.loss_fn.name!r}: {one_line(exc)[:300]}"
            ) from None
    _check_class_ids(where, evaluator, data)


def check_one_model(evaluator: Evaluator, trained: Any, path: Optional[Path]) -> None:
    """Refuse a ``model`` function that does not build one architecture afresh per call.

    The server evaluates its own build and the devices train another (a third per
    Ray worker). Found from outside: a function returning a growing model failed as
    "device 27 failed in round 1" with a TensorFlow split error, and one returning a
    cached object had the run train the caller's model in place, so two runs of one
    Scenario differed.
    """
    where = str(path) if path is not None else "scenario"
    if trained is evaluator.model:
        raise ScenarioError(
            f"{where}: model: returned the same keras.Model object on two calls; it must "
            "build a new model each call (the server and the devices each hold their own)")
    mine = [tuple(w.shape) for w in evaluator.model.weights]
    theirs = [tuple(w.shape) for w in trained.weights]
    if mine != theirs:
        raise ScenarioError(
            f"{where}: model: returned a different architecture on its second call "
            f"({sum(int(np.prod(s)) for s in mine)} parameters in {len(mine)} arrays, then "
            f"{sum(int(np.prod(s)) for s in theirs)} in {len(theirs)}); it must build the same "
            "model each call")


def _fits(declared: tuple, actual: tuple) -> bool:
    """Whether examples of shape ``actual`` fit an input declared ``declared`` (None: any)."""
    return len(declared) == len(actual) and all(
        d is None or d == a for d, a in zip(declared, actual))


def _check_class_ids(where: str, evaluator: Evaluator,
                     data: Union[FederatedData, GeneratedData]) -> None:
    """Every class id in memory within the model's outputs, under a sparse categorical loss.

    The dry run checks the test set and the first device; a class id out of range on
    another device would fail only when it trains, mid-run, as "indices[0] = 6 is not
    in [0, 2)". Data held in memory (``FederatedData``) is checked whole here;
    generated data is made on demand, so it is not.
    """
    shape = evaluator.output_shape()
    if ("sparse_categorical" not in evaluator.loss_fn.name or not shape
            or not isinstance(shape[-1], int)):
        return
    classes = shape[-1]
    owners = [("the test set", data.test[1])]
    if isinstance(data, FederatedData):
        owners += [(f"device {d}", data.client(d)[1]) for d in range(data.num_devices)]
    for who, y in owners:
        if y.size and y.dtype.kind in "iu" and (y.min() < 0 or y.max() >= classes):
            raise ScenarioError(
                f"{where}: model: output shape {shape} does not fit the labels of {who}: "
                f"class ids {y.min()}..{y.max()}, but the model outputs {classes} classes "
                f"(ids 0..{classes - 1}) under loss {evaluator.loss_fn.name!r}")


def check_deadline(scenario: Scenario, fleet: Fleet, data: Union[FederatedData, GeneratedData],
                   weights_bytes: int, path: Optional[Path]) -> None:
    """Refuse synchronous rounds whose deadline too few devices can ever meet.

    A device's report takes at least its round trip, the download of the global
    weights, its epochs over its examples at its compute speed and the upload of a
    header. Those are fixed once the fleet is drawn, so when fewer devices than
    ``min_reports`` (1 by default) can report in time, every round would be skipped:
    found out after the whole run, as a warning. Secure aggregation's extra steps
    only add time, so a deadline refused here is never one that would have worked.
    """
    if scenario.mode is not None:
        return  # FedBuff's per-device timeout is its own (docs/async.md)
    rounds = scenario.rounds
    examples = (np.asarray(data.sizes, np.float64) if isinstance(data, GeneratedData)
                else np.fromiter((data.num_examples(d) for d in range(data.num_devices)),
                                 np.float64, data.num_devices))
    fastest = (fleet.rtt + 8.0 * (HEADER_BYTES + weights_bytes) / fleet.downlink
               + scenario.training.epochs * examples / fleet.compute
               + 8.0 * HEADER_BYTES / fleet.uplink)
    able = int(np.count_nonzero(fastest <= rounds.deadline))
    if able >= rounds.min_reports:
        return
    where = str(path) if path is not None else "scenario"
    who = "no device" if able == 0 else f"only {able} of {fleet.size} devices"
    need = (f"; min_reports is {rounds.min_reports}" if rounds.min_reports > 1 else "")
    raise ScenarioError(
        f"{where}: rounds.deadline: {rounds.deadline:g} s, but {who} can report in time "
        f"(the fastest needs at least {float(fastest.min()):.4g} s to download the weights, "
        f"train {scenario.training.epochs} epoch(s) and answer{need}): every round would be "
        "skipped")


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
    canaries: Any = None,
) -> Actors:
    """Wire the server, the device directory and the network on ``loop``.

    The server gets the fleet's profiles (to know who is online) and its own
    evaluation function; only the devices get ``data``. With a ``CanaryPlan``
    (``canaries``), the server's release step inserts the canaries into every
    release (:class:`~fedactors.privacy.canaries.CanaryInsertion`); the devices
    keep the scenario's aggregator.
    """
    server_mailbox = Mailbox()
    # Clip diagnostics per round need rounds to close: synchronous mode only.
    tally = RoundTally.empty(clip_norms=scenario.mode is None)
    failures: list[BaseException] = []
    attackers = (() if scenario.byzantine is None
                 else scenario.byzantine.choose(fleet.size, seeds.generator("byzantine")))
    world = DeviceWorld(fleet, data, executor, scenario.aggregator, seeds, None, log, tally,
                        scenario.training.epochs,
                        {int(d): scenario.byzantine.attack for d in attackers},
                        work="round" if scenario.mode is None else "dispatch")
    pki = None
    if scenario.secure_aggregation is not None:
        # One PKI for devices and server: under system randomness keys cannot be re-derived.
        pki = Pki(seeds) if scenario.secure_aggregation.malicious else None
        world.secagg = SecAggParticipants(world, pki)
    directory = DeviceDirectory(world, failures.append)
    network = Network(loop, fleet, server_mailbox, directory.deliver)
    world.network = network
    aggregator = scenario.aggregator
    if canaries is not None:
        from fedactors.privacy.canaries import CanaryInsertion

        aggregator = CanaryInsertion(aggregator, canaries)
    step = ReleaseStep(
        aggregator, scenario.server_optimizer, evaluate, seeds, log,
        # A FedBuff buffer is always full when released: K reports.
        min_reports=scenario.rounds.min_reports if scenario.mode is None else 1,
        eval_every=scenario.rounds.eval_every, privacy=privacy,
    )
    server = server_class(scenario.mode)(
        rounds=scenario.rounds, fleet=fleet, step=step, seeds=seeds, log=log,
        mailbox=server_mailbox, network=network, initial_weights=initial_weights,
        stop_devices=lambda r: (network.drop_round(r), directory.cancel_round(r)),
        secure_aggregation=scenario.secure_aggregation, pki=pki,
    )
    return Actors(server, directory, network, tally, failures)


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


def privacy_budget(scenario: Scenario, population: int, path: Optional[Path] = None,
                   dim: Optional[int] = None) -> Any:
    """The run's PrivacyBudget, or None for an aggregator that declares no DP release."""
    if scenario.aggregator.private_release() is None:
        return None  # don't import dp-accounting for non-private runs
    from fedactors.privacy.budget import PrivacyBudget

    try:
        return PrivacyBudget.for_scenario(scenario, population, dim)
    except ConfigError as exc:
        raise ScenarioError(f"{path}: {exc}" if path is not None else str(exc)) from None


def canary_plan(scenario: Scenario, privacy: Any, seeds: SeedTree, dim: int,
                path: Optional[Path] = None) -> Any:
    """The run's ``CanaryPlan`` for ``Privacy(canaries=k)``, or None.

    Each canary takes part in a release with the probability the accountant
    assumes for a device (``privacy``'s ledger: ``sample / N``); as many
    canaries again are held out, never inserted. A model too small for the
    estimate's null to be Gaussian is refused here, the first moment its size
    is known (before any round).
    """
    k = scenario.privacy.canaries if scenario.privacy is not None else 0
    if not k or privacy is None:
        return None
    from fedactors.privacy.canaries import MIN_PARAMETERS, CanaryPlan

    if dim < MIN_PARAMETERS:
        exc = ConfigError(
            "privacy.canaries",
            f"needs a model of at least {MIN_PARAMETERS:,} parameters, this one has {dim:,}: "
            "below that the cosine of a random direction is too far from Gaussian for the "
            "estimate to mean anything",
        )
        raise ScenarioError(f"{path}: {exc}" if path is not None else str(exc))
    return CanaryPlan(seeds, inserted=k, held_out=k,
                      rate=privacy.initial_ledger.sampling_probability, dim=int(dim))


def model_spec(scenario: Scenario):
    from fedactors.training.spec import ModelSpec

    return ModelSpec(scenario.model, scenario.loss, tuple(scenario.metrics))
