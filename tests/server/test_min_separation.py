"""DP-FTRL in the server: the minimum separation enforced in rounds and under FedBuff, the
summary's ε for the participation that happened, and a release at every step.

Worlds of the stand-in trainer (tests/server/harness.py) on the virtual clock. The
contributors of each release are read from the released outcomes (``reported``: the
devices whose updates were summed), and checked against the rule: contributions of one
device to releases x < y are y - x - 1 apart, which must be at least ``b``.
"""

from __future__ import annotations

import functools
import json
from typing import Optional

import numpy as np
import pytest

from fedactors import DeviceClass, LocalTraining, Privacy, Rounds, Scenario
from fedactors.aggregation.base import PlainContributions
from fedactors.privacy.budget import PrivacyBudget
from fedactors.privacy.dp_mean import DPMean
from fedactors.privacy.participation import Participation
from fedactors.privacy.tree_accounting import most_participations
from fedactors.reporting.events import EventLog
from fedactors.seeding import SeedTree
from fedactors.server.fedbuff import FedBuff
from fedactors.server.optimizers import FedAvgStep
from fedactors.server.release import ReleaseStep
from fedactors.server.staleness import Unweighted
from tests.privacy.test_tree_accounting import brute_epsilon
from tests.server.harness import DIM, build_world, device, events

Z, C = 1.0, 1.0


@functools.cache
def tree(m: int):
    """One DP-FTRL stage per cohort size, shared: its TensorFlow functions trace once."""
    return DPMean.tree(C, Z, m)


def fewest_between(releases: list[tuple[int, ...]]) -> Optional[int]:
    """The fewest releases between two contributions of one device (None: nobody twice)."""
    at: dict[int, list[int]] = {}
    for r, contributors in enumerate(releases, start=1):
        for d in contributors:
            at.setdefault(d, []).append(r)
    gaps = [y - x - 1 for rs in at.values() for x, y in zip(rs, rs[1:])]
    return min(gaps) if gaps else None


def most_by_one(releases: list[tuple[int, ...]]) -> int:
    counts: dict[int, int] = {}
    for contributors in releases:
        for d in contributors:
            counts[d] = counts.get(d, 0) + 1
    return max(counts.values())


async def sync_run(b: int, rounds: int = 15, n: int = 7, cohort: int = 2, seed: int = 0):
    # Distinct speeds, all well inside the deadline: every selected device reports.
    classes = [device(f"d{i}", 1.0 + 0.25 * i) for i in range(n)]
    world = build_world(classes, Rounds(count=rounds, cohort_size=cohort, deadline=10.0),
                        seed=seed, aggregator=tree(cohort), privacy=Privacy(min_separation=b))
    outcomes: list = []
    assert await world.actors.server.run(rounds, outcomes.append) == "completed"
    return world, outcomes


async def fedbuff_run(b: int, releases: int = 14, k: int = 2, seed: int = 0):
    # Two fast devices would take every buffer if the rule let them.
    classes = [device("fast", 1.0, count=2), device("mid", 3.0, count=3),
               device("slow", 7.0, count=3)]
    world = build_world(classes, Rounds(count=releases, deadline=100.0), seed=seed,
                        aggregator=tree(k), privacy=Privacy(min_separation=b),
                        mode=FedBuff(buffer_size=k, concurrency=4, staleness=Unweighted()))
    outcomes: list = []
    assert await world.actors.server.run(releases, outcomes.append) == "completed"
    return world, outcomes


def check_summary(world, outcomes, b: int) -> None:
    """The run's summary ε is the guarantee for its releases under the rule, and the
    observed figure the bound for the participation in its outcomes."""
    server = world.actors.server
    block = server.step.privacy.summary(server.state.privacy, "completed")
    json.dumps(block, allow_nan=False)
    t = len(outcomes)
    reports = [o.reported for o in outcomes]
    assert block["rounds_accounted"] == t and block["releases_skipped"] == 0
    assert block["epsilon"] == pytest.approx(
        brute_epsilon(Z, [(t, most_participations(t, b), b)]), rel=1e-9)
    gap = fewest_between(reports)
    assert block["epsilon_observed_participation"] == pytest.approx(
        brute_epsilon(Z, [(t, most_by_one(reports), t if gap is None else gap)]), rel=1e-9)
    assert block["observed_participation"]["trees"] == [
        {"releases": t, "most_participations": most_by_one(reports),
         "fewest_releases_between": gap}]
    assert block["observed_participation"]["devices_contributed"] == len(
        {d for r in reports for d in r})
    # Each release's row carries a bound on the guarantee so far (never below it).
    for r, o in enumerate(outcomes, start=1):
        assert o.measurements["epsilon"] >= brute_epsilon(
            Z, [(r, most_participations(r, b), b)]) * (1 - 1e-9)


# -- the rule, enforced ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_rounds_never_take_a_device_back_within_b_releases() -> None:
    b = 2
    world, outcomes = await sync_run(b)
    reports = [o.reported for o in outcomes]
    assert all(len(r) == 2 for r in reports)  # every round full: the rule was binding
    assert fewest_between(reports) >= b
    # Selection, not only what was summed, respects it: the cohort of each round.
    cohorts = [tuple(e["cohort"]) for e in events(world, "round.start")]
    assert cohorts == [o.selected for o in outcomes]
    assert fewest_between(cohorts) >= b
    check_summary(world, outcomes, b)


@pytest.mark.asyncio
async def test_without_the_rule_the_same_world_takes_devices_back_sooner() -> None:
    """The world above can show a violation: without the rule it has one."""
    _, outcomes = await sync_run(0)
    assert fewest_between([o.reported for o in outcomes]) < 2


@pytest.mark.asyncio
async def test_fedbuff_never_gives_work_that_would_land_within_b_releases() -> None:
    b = 2
    world, outcomes = await fedbuff_run(b)
    reports = [o.reported for o in outcomes]
    assert all(len(r) == 2 for r in reports)
    assert fewest_between(reports) >= b
    check_summary(world, outcomes, b)
    assert world.actors.server.step.privacy.summary(
        world.actors.server.state.privacy, "completed")["releases"] == "buffers"


@pytest.mark.asyncio
async def test_without_the_rule_fedbuff_takes_the_fast_devices_back_at_once() -> None:
    _, outcomes = await fedbuff_run(0)
    assert fewest_between([o.reported for o in outcomes]) < 2


def test_an_aborted_release_does_not_shorten_the_separation() -> None:
    """A release the server skipped (a secure round that aborted) is no tree leaf: a
    device that contributed to the leaf before it still sits out the next b leaves."""
    b, m = 1, 2
    agg = tree(m)
    sc = Scenario(name="sep", model=lambda: None, loss="mse", data=lambda f, r: None,
                  fleet=[DeviceClass("d", count=5)], rounds=Rounds(cohort_size=m),
                  aggregator=agg, privacy=Privacy(min_separation=b))
    step = ReleaseStep(agg, FedAvgStep(), lambda w: {}, SeedTree(0),
                       EventLog(lambda: 0.0, keep=True),
                       privacy=PrivacyBudget.for_scenario(sc, 5))
    row = agg.encode(agg.client_params(agg.initial_state(DIM)), np.ones(DIM), 1, None)
    state = step.initial_state(np.zeros(DIM, np.float32))
    state = step.release(state, PlainContributions([row]), expected_count=m, selected=m,
                         participation=Participation(contributors=(0,))).state
    state = step.release(state, None, expected_count=m, selected=m,
                         participation=Participation()).state  # aborted: skipped
    assert state.round == 2 and state.privacy.ledger.releases == 1
    # The next leaf is 2, right after device 0's: it must sit this one out.
    assert list(step.eligible(state, np.arange(3))) == [1, 2]
    state = step.release(state, PlainContributions([row]), expected_count=m, selected=m,
                         participation=Participation(contributors=(1,))).state
    assert list(step.eligible(state, np.arange(3))) == [0, 2]


@pytest.mark.asyncio
async def test_when_the_rule_leaves_nobody_to_select_the_round_still_releases() -> None:
    world = build_world([device("a", 1.0, count=2)], Rounds(count=4, cohort_size=2, deadline=5.0),
                        aggregator=tree(2), privacy=Privacy(min_separation=1))
    outcomes: list = []
    await world.actors.server.run(4, outcomes.append)
    assert [o.selected for o in outcomes] == [(0, 1), (), (0, 1), ()]
    # Both devices were online: nobody was *selected* (the rule), not nobody online.
    assert [o.closed_by for o in outcomes][1::2] == ["nobody-selected"] * 2
    assert all(o.applied for o in outcomes)
    assert [o.measurements["tree_leaf"] for o in outcomes] == [1, 2, 3, 4]
    assert fewest_between([o.reported for o in outcomes]) == 1


# -- a release at every step ----------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("dropout", [[0.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
async def test_dp_ftrl_releases_whatever_the_number_of_reports(dropout) -> None:
    # (A min_reports above 1 is refused at load for DP-FTRL: tests/scenarios/test_spec.py.)
    classes = [device(f"d{i}", 1.0, dropout=p) for i, p in enumerate(dropout)]
    world = build_world(classes, Rounds(count=3, cohort_size=3, deadline=5.0),
                        aggregator=tree(3), privacy=Privacy())
    server = world.actors.server
    assert server.step.releases_every_step
    outcomes = [await server.run_round(r) for r in (1, 2, 3)]
    assert [len(o.reported) for o in outcomes] == [dropout.count(0.0)] * 3
    assert events(world, "round.skipped") == []
    assert all(o.applied for o in outcomes)
    # The tree advanced once per round, and every round was charged.
    assert [o.measurements["tree_leaf"] for o in outcomes] == [1, 2, 3]
    assert server.state.privacy.ledger.releases == 3
    assert not np.array_equal(server.state.weights, np.zeros(DIM))  # the noise was released


@pytest.mark.asyncio
async def test_dp_fedavg_still_skips_below_min_reports() -> None:
    classes = [device(f"d{i}", 1.0, dropout=p) for i, p in enumerate([0.0, 0.0, 1.0])]
    world = build_world(classes, Rounds(count=1, cohort_size=3, min_reports=3, deadline=5.0),
                        aggregator=DPMean.fixed(C, Z, 3))
    assert not world.actors.server.step.releases_every_step
    outcome = await world.actors.server.run_round(1)
    assert not outcome.applied and len(events(world, "round.skipped")) == 1


# -- end to end --------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_reports_the_tree_budgets_epsilon_and_keeps_the_separation() -> None:
    import keras

    from fedactors.data.federated import FederatedData
    from fedactors.simulation import RunOptions, run_scenario

    def data(fleet, rng):
        w = np.array([1.0, -2.0, 0.5], np.float32)
        clients = []
        for _ in range(fleet.size):
            x = rng.normal(size=(10, 3)).astype(np.float32)
            clients.append((x, (x @ w > 0).astype(np.int32)))
        xt = rng.normal(size=(50, 3)).astype(np.float32)
        return FederatedData.from_arrays(clients, (xt, (xt @ w > 0).astype(np.int32)))

    b, m, rounds = 2, 3, 8
    sc = Scenario(
        name="tiny_ftrl",
        model=lambda: keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), data=data,
        fleet=[DeviceClass("d", count=10)], rounds=Rounds(count=rounds, cohort_size=m),
        training=LocalTraining(batch_size=10, optimizer=lambda: keras.optimizers.SGD(0.1)),
        aggregator=DPMean.tree(C, Z, m), privacy=Privacy(min_separation=b, delta=1e-5))
    result = run_scenario(sc, RunOptions(keep_events=True))
    p = result.summary["privacy"]
    assert p["accounting"]["mechanism"] == "dp-ftrl-tree-aggregation"
    assert p["epsilon"] == pytest.approx(
        brute_epsilon(Z, [(rounds, most_participations(rounds, b), b)]), rel=1e-9)
    received: dict[int, list[int]] = {}
    for e in result.events:
        if e["event"] == "update.received":
            received.setdefault(e["round"], []).append(e["sender"])
    reports = [tuple(received.get(r, ())) for r in range(1, rounds + 1)]
    assert sum(map(len, reports)) == rounds * m
    assert fewest_between(reports) >= b
    assert p["observed_participation"]["trees"][0]["fewest_releases_between"] == (
        fewest_between(reports))


def test_fedbuff_with_too_few_devices_for_the_rule_is_refused_at_load():
    # With (b + 1) * buffer_size devices or more FedBuff can always find eligible ones;
    # with fewer it would stall (nobody may be given work), so the scenario is refused.
    import dataclasses

    from fedactors import DPMean, Privacy
    from fedactors.errors import ConfigError
    from fedactors.scenarios.loader import load_scenario
    from fedactors.server.fedbuff import FedBuff

    base = load_scenario("scenarios/healthcare.py")
    assert base.fleet_size == 40
    tree = DPMean.tree(clip_norm=1.0, noise_multiplier=1.0, expected_count=8)
    fits = dataclasses.replace(base, mode=FedBuff(buffer_size=8, concurrency=8),
                               rounds=Rounds(count=base.rounds.count,  # what FedBuff uses
                                             deadline=base.rounds.deadline),
                               aggregator=tree, privacy=Privacy(min_separation=4))
    assert fits.privacy.min_separation == 4  # 5 * 8 = 40 devices: accepted
    with pytest.raises(ConfigError) as err:
        dataclasses.replace(fits, privacy=Privacy(min_separation=5))  # needs 48
    assert err.value.field == "privacy.min_separation"
    assert "48" in str(err.value) and "40" in str(err.value)


def test_min_separation_with_dp_fedavg_is_refused_at_load():
    import dataclasses

    from fedactors import Privacy
    from fedactors.errors import ConfigError
    from fedactors.scenarios.loader import load_scenario

    base = load_scenario("scenarios/healthcare.py")
    with pytest.raises(ConfigError) as err:
        dataclasses.replace(base, privacy=Privacy(min_separation=2))
    assert err.value.field == "privacy.min_separation"


@pytest.mark.slow
def test_a_fedbuff_run_left_with_only_too_slow_devices_stops_as_stalled(tmp_path) -> None:
    # Found from outside: with the separation rule only slow devices stayed eligible, each
    # missed the deadline, no buffer was ever released, and the run never ended (max_idle
    # counts time with nobody training). It must stop, with its summary written.
    import json

    import keras
    import numpy as np

    from fedactors import (
        DeviceClass,
        DPMean,
        FedBuff,
        FederatedData,
        LocalTraining,
        LogNormal,
        NetworkProfile,
        OnlineShare,
        Privacy,
        Rounds,
        Scenario,
    )
    from fedactors.simulation import RunOptions, run_scenario

    def data(fleet, rng):
        w = rng.normal(size=(16, 3))

        def draw(n):
            x = rng.normal(size=(n, 16)).astype(np.float32)
            return x, (x @ w).argmax(1).astype(np.int32)
        return FederatedData.from_arrays([draw(int(n)) for n in fleet.examples], draw(50))

    scenario = Scenario(
        name="stall",
        model=lambda: keras.Sequential([keras.Input((16,)), keras.layers.Dense(3)]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), data=data,
        fleet=[DeviceClass("dev", count=9, compute=LogNormal(200, 0.5),
                           network=NetworkProfile(rtt=0.05, uplink=5e6, downlink=20e6),
                           availability=OnlineShare(0.8), dropout=0.2, examples=LogNormal(60, 0.4))],
        rounds=Rounds(count=30, deadline=0.5),
        mode=FedBuff(buffer_size=2, concurrency=8, poll_interval=1.0, max_idle=100.0),
        training=LocalTraining(batch_size=16, optimizer=lambda: keras.optimizers.SGD(0.1)),
        aggregator=DPMean.tree(clip_norm=1.0, noise_multiplier=2.0, expected_count=2),
        privacy=Privacy(min_separation=3), seed=1,
    )
    import signal

    def give_up(signum, frame):  # a regression would hang: fail instead
        raise TimeoutError("the stalled FedBuff run did not stop")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(300)
    try:
        run_scenario(scenario, RunOptions(out_dir=tmp_path / "run"))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stopped"] == "stalled"
    assert summary["privacy"]["rounds_accounted"] < 30


@pytest.mark.slow
def test_a_fedbuff_run_that_makes_all_its_updates_is_completed_not_stopped_by_the_budget(
        tmp_path) -> None:
    # Found from outside: with a target that the next, never-planned update would pass,
    # the run that had made all its updates said stopped: "privacy-budget".
    import json

    import keras
    import numpy as np

    from fedactors import (
        DeviceClass,
        DPMean,
        FedBuff,
        FederatedData,
        LocalTraining,
        Privacy,
        Rounds,
        Scenario,
    )
    from fedactors.privacy.tree_accounting import TreeLedger
    from fedactors.simulation import RunOptions, run_scenario

    def data(fleet, rng):
        return FederatedData.from_arrays(
            [(rng.normal(size=(8, 4)).astype(np.float32), np.zeros(8, np.int32))
             for _ in fleet.examples], (np.zeros((4, 4), np.float32), np.zeros(4, np.int32)))

    ledger = TreeLedger(noise_multiplier=2.0, restart_every=None)
    for _ in range(3):
        ledger = ledger.record(())
    target = (ledger.epsilon_planned_bound(1e-5)
              + ledger.with_one_more().epsilon_planned_bound(1e-5)) / 2
    scenario = Scenario(
        name="last", model=lambda: keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), data=data,
        fleet=[DeviceClass("dev", count=6, compute=100.0, examples=8)],
        rounds=Rounds(count=3, deadline=60.0),
        mode=FedBuff(buffer_size=2, concurrency=4),
        training=LocalTraining(batch_size=8, optimizer=lambda: keras.optimizers.SGD(0.1)),
        aggregator=DPMean.tree(clip_norm=1.0, noise_multiplier=2.0, expected_count=2),
        privacy=Privacy(target_epsilon=target, delta=1e-5), seed=0,
    )
    run_scenario(scenario, RunOptions(out_dir=tmp_path / "run"))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["privacy"]["rounds_accounted"] == 3
    assert summary["stopped"] == "completed"
