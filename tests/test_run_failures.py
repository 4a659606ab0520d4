"""Failures after load: a model that does not fit the labels is refused before round 1;
a device whose training raises stops the run at once, named, with what was written intact."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from fedactors import DeviceClass, FederatedData, LocalTraining, Rounds, Scenario
from fedactors.data.generated import GeneratedData
from fedactors.errors import ScenarioError
from fedactors.simulation import RunOptions, run_scenario

BAD = 5


def _data(bad_device=None, generated=False):
    """Every device's data in memory, or (``generated``) made when a device trains:
    in memory, a class the model does not have is refused at load; generated, the
    device's training fails mid-run."""
    def pair(d, n, rng):
        x = rng.normal(size=(n, 3)).astype(np.float32)
        y = (x[:, 0] > 0).astype(np.int32)
        if d is not None and d == bad_device:  # (the test set is d=None)
            y = np.full_like(y, 9)  # a class the model does not have
        return x, y

    def build(fleet, rng):
        test = pair(None, 40, rng)
        if generated:
            return GeneratedData.create(np.full(fleet.size, 20), pair, test, rng)
        return FederatedData.from_arrays([pair(d, 20, rng) for d in range(fleet.size)], test)
    return build


def _scenario(**changes) -> Scenario:
    base = Scenario(
        name="failures", model=lambda: keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), data=_data(),
        fleet=[DeviceClass("phone", count=4, compute=10.0), DeviceClass("hub", count=4, compute=10.0)],
        rounds=Rounds(count=6, cohort_size=3, deadline=100.0),
        training=LocalTraining(batch_size=10, optimizer=lambda: keras.optimizers.SGD(0.1)),
    )
    return dataclasses.replace(base, **changes)


def test_a_model_whose_output_does_not_fit_the_labels_is_refused_before_round_one(
        tmp_path: Path) -> None:
    scenario = _scenario(model=lambda: keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]))
    with pytest.raises(ScenarioError) as caught:
        run_scenario(scenario, RunOptions(out_dir=tmp_path, scenario_path=Path("s.py")))
    message = str(caught.value)
    assert "\n" not in message and message.startswith("s.py: model: output shape (None, 1)")
    assert "range 0..1" in message and "sparse_categorical_crossentropy" in message
    assert not (tmp_path / "metrics.jsonl").exists()  # no round was simulated


@pytest.mark.parametrize("width", [8, 7])
def test_a_regression_loss_on_class_ids_is_refused_whatever_the_output_width(
        width: int, tmp_path: Path) -> None:
    """Labels of shape (n,) broadcast against an (n, n) output: a dry run of 8 rows let
    loss="mse" on an 8-class model through, to a traceback at the first evaluation
    (found by a new-user trial). Every width is refused before round 1."""
    scenario = _scenario(loss="mse", model=lambda: keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(width)]))
    with pytest.raises(ScenarioError) as caught:
        run_scenario(scenario, RunOptions(out_dir=tmp_path, scenario_path=Path("s.py")))
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"s.py: model: output shape (None, {width})")
    assert "mean_squared_error" in message and "Incompatible shapes" in message
    assert not (tmp_path / "metrics.jsonl").exists()


def test_a_class_id_the_model_lacks_on_any_device_in_memory_is_refused_before_round_one(
        tmp_path: Path) -> None:
    scenario = _scenario(data=_data(bad_device=BAD))
    with pytest.raises(ScenarioError) as caught:
        run_scenario(scenario, RunOptions(out_dir=tmp_path, scenario_path=Path("s.py")))
    assert str(caught.value) == (
        f"s.py: model: output shape (None, 2) does not fit the labels of device {BAD}: class "
        "ids 9..9, but the model outputs 2 classes (ids 0..1) under loss "
        "'sparse_categorical_crossentropy'")
    assert not (tmp_path / "metrics.jsonl").exists()


@pytest.mark.parametrize("executor", ["vectorized", "sequential"])
def test_a_failing_device_stops_the_run_at_once_and_is_named(tmp_path: Path, executor: str) -> None:
    scenario = _scenario(data=_data(bad_device=BAD, generated=True))
    path, out = tmp_path / "s.py", tmp_path / "run"
    path.write_text("# stands for the scenario file\n")
    with pytest.raises(ScenarioError) as caught:
        run_scenario(scenario, RunOptions(out_dir=out, executor=executor, scenario_path=path))
    message = str(caught.value)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    # The first round that selected the bad device is the one that failed.
    starts = {e["round"]: e for e in events if e["event"] == "round.start"}
    failed = min(r for r, e in starts.items() if BAD in e["cohort"])
    assert message == (f"{path}: device {BAD} (hub) failed in round {failed}: "
                       "InvalidArgumentError: " + message.split("InvalidArgumentError: ")[1])
    assert "\n" not in message and "is not in [0, 2)" in message
    # At once: nothing happens after the failing device's training, not even the deadline.
    assert [r["round"] for r in rows] == list(range(1, failed))
    assert max(e["t"] for e in events) < starts[failed]["deadline"]
    assert not any(e["event"] == "round.end" and e["round"] == failed for e in events)
    # The checkpoint of the last finished round is intact and resumable.
    if failed > 1:
        from fedactors.runtime import checkpoint

        assert checkpoint.load(out).round == failed - 1


@pytest.mark.parametrize("labels", [np.float32(0.5), np.float32(0.0)], ids=["fractional", "whole"])
def test_float_labels_under_a_sparse_categorical_loss_are_refused_before_round_one(
        tmp_path: Path, labels) -> None:
    def build(fleet, rng):
        def pair(n):
            x = rng.normal(size=(n, 3)).astype(np.float32)
            return x, (x[:, 0] > 0).astype(np.float32) + labels
        return FederatedData.from_arrays([pair(20) for _ in range(fleet.size)], pair(40))

    with pytest.raises(ScenarioError) as caught:
        run_scenario(_scenario(data=build), RunOptions(out_dir=tmp_path, scenario_path=Path("s.py")))
    message = str(caught.value)
    assert message.startswith("s.py: data: labels are float32") and "int32 class ids" in message
    assert not (tmp_path / "metrics.jsonl").exists()


@pytest.mark.parametrize("generated", [False, True])
def test_a_deadline_no_device_can_meet_is_refused_before_round_one(tmp_path: Path,
                                                                   generated: bool) -> None:
    # 20 examples at 10 examples/s is 2 s of training alone: a 1.5 s deadline would skip
    # every round, found out only after the whole run.
    scenario = _scenario(data=_data(generated=generated),
                         rounds=Rounds(count=6, cohort_size=3, deadline=1.5))
    with pytest.raises(ScenarioError) as caught:
        run_scenario(scenario, RunOptions(out_dir=tmp_path, scenario_path=Path("s.py")))
    message = str(caught.value)
    assert "\n" not in message and message.startswith("s.py: rounds.deadline: 1.5 s, but no device")
    assert "at least 2.05 s" in message  # 2 s of training + the 50 ms round trip (+ bytes)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_a_deadline_fewer_than_min_reports_devices_can_meet_is_refused() -> None:
    # Two fast hubs make it in time, the slow phones cannot: min_reports 3 is out of reach,
    # 2 is not (and those rounds aggregate the hubs' updates).
    fleet = [DeviceClass("phone", count=4, compute=1.0), DeviceClass("hub", count=2, compute=100.0)]
    tight = _scenario(fleet=fleet, rounds=Rounds(count=2, cohort_size=6, min_reports=3,
                                                 deadline=5.0))
    with pytest.raises(ScenarioError, match=r"rounds.deadline: 5 s, but only 2 of 6 devices can "
                                            r"report in time .*min_reports is 3"):
        run_scenario(tight)
    result = run_scenario(dataclasses.replace(
        tight, rounds=dataclasses.replace(tight.rounds, min_reports=2)))
    assert [r["reported"] for r in result.records] == [2, 2]


def test_the_refusal_bound_is_below_every_real_report_time() -> None:
    # The bound must never refuse a deadline that works: every update really arrives at
    # or after it, and a deadline at the first real arrival is accepted and met.
    scenario = _scenario(rounds=Rounds(count=1, cohort_size=8, deadline=100.0))
    probe = run_scenario(scenario, RunOptions(keep_events=True))
    first = min(e["t"] for e in probe.events if e["event"] == "update.received")
    with pytest.raises(ScenarioError, match="no device"):  # just below: refused
        run_scenario(_scenario(rounds=Rounds(count=1, cohort_size=8, deadline=first * 0.999)))
    met = run_scenario(_scenario(rounds=Rounds(count=1, cohort_size=8, deadline=first)))
    assert met.records[0]["reported"] >= 1


def test_a_model_whose_input_does_not_fit_the_examples_is_named_as_such(tmp_path: Path) -> None:
    # Found from outside: 3 features into an Input((5,)) was reported as an output that did
    # not fit the labels, quoting "ValueError: • kwargs=<class 'inspect._empty'>".
    scenario = _scenario(model=lambda: keras.Sequential([keras.Input((5,)), keras.layers.Dense(2)]))
    with pytest.raises(ScenarioError) as caught:
        run_scenario(scenario, RunOptions(out_dir=tmp_path, scenario_path=Path("s.py")))
    assert str(caught.value) == ("s.py: model: input shape (None, 5) does not fit the examples of "
                                 "device 0's data (shape (3,) per example)")


@pytest.mark.parametrize("out", [True, False])
def test_a_generator_that_raises_is_named_by_its_device(tmp_path: Path, out: bool) -> None:
    # With a run directory the data's digest makes every device's arrays at load; found
    # from outside, the generator's bare RuntimeError came through it with no field named.
    def build(fleet, rng):
        def pair(d, n, rng):
            if d == BAD:
                raise RuntimeError("oops")
            x = rng.normal(size=(n, 3)).astype(np.float32)
            return x, (x[:, 0] > 0).astype(np.int32)
        return GeneratedData.create(np.full(fleet.size, 20), pair, pair(None, 40, rng), rng)

    scenario = _scenario(data=build, rounds=Rounds(count=6, cohort_size=8, deadline=100.0))
    with pytest.raises(ScenarioError) as caught:
        run_scenario(scenario, RunOptions(out_dir=tmp_path) if out else RunOptions())
    message = str(caught.value)
    assert "\n" not in message and "RuntimeError: oops" in message
    assert (f"data: clients[{BAD}]: the generator raised" in message if out
            else f"device {BAD} (" in message)


def test_a_metric_that_does_not_fit_the_labels_is_named_not_the_loss(tmp_path: Path) -> None:
    # Found from outside: AUC on 3-class ids was reported as the output not fitting the
    # labels "under loss 'sparse_categorical_crossentropy'", which fitted them fine.
    scenario = _scenario(metrics=["accuracy", keras.metrics.AUC()])
    with pytest.raises(ScenarioError) as caught:
        run_scenario(scenario, RunOptions(out_dir=tmp_path, scenario_path=Path("s.py")))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("s.py: metrics: 'auc' does not fit the model's output (None, 2) "
                              "and the labels of device 0's data")
    assert "though loss 'sparse_categorical_crossentropy' does" in message


def test_a_model_function_that_builds_another_model_each_call_is_refused() -> None:
    calls: list[int] = []

    def growing():
        calls.append(1)
        return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2 * len(calls))])

    with pytest.raises(ScenarioError, match=r"^scenario: model: returned a different "
                                            r"architecture on its second call \(8 parameters"):
        run_scenario(_scenario(model=growing))


def test_a_model_function_that_returns_one_cached_object_is_refused() -> None:
    cached = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    before = [w.copy() for w in cached.get_weights()]
    with pytest.raises(ScenarioError, match=r"returned the same keras.Model object on two calls"):
        run_scenario(_scenario(model=lambda: cached))
    assert all(np.array_equal(a, b) for a, b in zip(before, cached.get_weights()))
