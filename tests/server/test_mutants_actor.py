"""The synchronous server driver at exact simulated instants: what it logs for every update
it takes or refuses, rounds nobody can join, stale timers, and how a run stops."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from fedactors.aggregation.fedavg import WEIGHT, WEIGHTED_DELTA
from fedactors.devices.availability import Trace
from fedactors.messages import RoundDeadline, Update
from fedactors.runtime.loop import DELIVERY
from fedactors.server.rounds import Rounds
from tests.server.harness import build_world, device, events


def contribution(value: float, weight: float = 100.0) -> dict[str, np.ndarray]:
    return {WEIGHTED_DELTA: np.full(3, value * weight, np.float32),
            WEIGHT: np.array([weight], np.float32)}


def forge(server, t: float, message) -> None:
    asyncio.get_running_loop().call_at(t, server.mailbox.put_nowait, message, priority=DELIVERY)


@pytest.mark.asyncio
async def test_every_update_taken_or_refused_is_logged_with_its_round_sender_and_reason() -> None:
    world = build_world([device("a", 1.0), device("b", 2.0), device("c", 500.0)],
                        Rounds(cohort_size=3, deadline=10.0))
    server = world.actors.server
    forge(server, 1.5, Update(0, 1, contribution(1.0)))  # a round that is over
    forge(server, 1.6, "junk")  # not an update at all
    outcome = await server.run_round(1)
    assert outcome.rejected == {"late": 1, "malformed": 1}
    received = [{k: e[k] for k in ("t", "actor", "round", "sender")}
                for e in events(world, "update.received")]
    assert received == [{"t": pytest.approx(1.0), "actor": "server", "round": 1, "sender": 0},
                        {"t": pytest.approx(2.0), "actor": "server", "round": 1, "sender": 1}]
    (late,) = events(world, "update.late")
    assert late == {"t": 1.5, "actor": "server", "event": "update.late", "round": 1,
                    "sender": 1, "update_round": 0}
    (junk,) = events(world, "update.malformed")
    assert junk == {"t": 1.6, "actor": "server", "event": "update.malformed", "round": 1,
                    "sender": None, "update_round": None}


@pytest.mark.asyncio
async def test_an_outlier_is_logged_with_its_key_and_ratio() -> None:
    world = build_world([device("a", 1.0), device("b", 2.0), device("c", 500.0)],
                        Rounds(cohort_size=3, deadline=10.0, outlier_factor=10.0))
    server = world.actors.server
    forge(server, 1.5, Update(1, 2, contribution(300.0)))  # 100 x the lower median (device 0)
    outcome = await server.run_round(1)
    assert outcome.rejected == {"outlier": 1} and outcome.reported == (0, 1)
    (event,) = events(world, "update.outlier")
    assert {k: event[k] for k in ("t", "actor", "round", "sender", "update_round", "key")} == {
        "t": pytest.approx(2.0), "actor": "server", "round": 1, "sender": 2, "update_round": 1,
        "key": WEIGHTED_DELTA}
    assert event["norm_over_median"] == pytest.approx(150.0, rel=1e-5)


@pytest.mark.asyncio
async def test_a_round_nobody_is_online_for_is_closed_as_such_at_its_deadline() -> None:
    never = Trace([(1e9, 1e9 + 1)])
    world = build_world([device("asleep", 1.0, count=2, availability=never)],
                        Rounds(cohort_size=2, deadline=7.0))
    outcome = await world.actors.server.run_round(1)
    assert outcome.closed_by == "nobody-online" and outcome.selected == ()
    assert outcome.end == 7.0 and not outcome.applied and outcome.reported == ()
    (start,) = events(world, "round.start")
    assert (start["online"], start["selected"], start["deadline"]) == (0, 0, 7.0)


@pytest.mark.asyncio
async def test_a_deadline_of_another_round_does_not_close_this_one() -> None:
    world = build_world([device("a", 1.0), device("b", 2.0)], Rounds(cohort_size=2, deadline=10.0))
    server = world.actors.server
    forge(server, 0.5, RoundDeadline(0))  # e.g. the timer of a round that closed early
    forge(server, 0.6, RoundDeadline(2))
    outcome = await server.run_round(1)
    assert outcome.closed_by == "target" and outcome.reported == (0, 1)
    assert outcome.end == pytest.approx(2.0) and outcome.rejected == {}


@pytest.mark.asyncio
async def test_round_start_and_end_events() -> None:
    world = build_world([device("a", 1.0), device("b", 2.0), device("c", 3.0)],
                        Rounds(cohort_size=2, over_selection=1.5, deadline=10.0))
    outcome = await world.actors.server.run_round(1)
    (start,) = events(world, "round.start")
    assert {k: start[k] for k in ("t", "actor", "round", "online", "selected", "deadline")} == {
        "t": 0.0, "actor": "server", "round": 1, "online": 3, "selected": 3, "deadline": 10.0}
    assert list(start["cohort"]) == [0, 1, 2]
    (end,) = events(world, "round.end")
    assert {k: end[k] for k in ("actor", "round", "reported", "closed_by", "applied")} == {
        "actor": "server", "round": 1, "reported": 2, "closed_by": "target", "applied": True}
    assert end["t"] == pytest.approx(2.0) == outcome.end
    assert outcome.given_up == ((1, 2),) and outcome.selected == (0, 1, 2)


@pytest.mark.asyncio
async def test_run_counts_rounds_and_stops_when_told() -> None:
    world = build_world([device("a", 1.0), device("b", 2.0)], Rounds(cohort_size=2, deadline=10.0))
    server = world.actors.server
    seen: list[int] = []
    assert await server.run(3, lambda o: seen.append(o.round)) == "completed"
    assert seen == [1, 2, 3] and server.state.round == 3
    assert events(world, "run.stopped") == []
    stop_at_5 = await server.run(10, lambda o: "enough" if o.round == 5 else None)
    assert stop_at_5 == "enough" and server.state.round == 5
    (stopped,) = events(world, "run.stopped")
    assert (stopped["actor"], stopped["round"], stopped["reason"]) == ("server", 5, "enough")


@pytest.mark.asyncio
async def test_the_target_is_cohort_size_or_for_poisson_every_sampled_device() -> None:
    fixed = build_world([device("a", 1.0)], Rounds(cohort_size=1, deadline=10.0))
    assert fixed.actors.server.target(7) == 1
    poisson = build_world([device("a", 1.0)], Rounds(cohort_size=1, deadline=10.0,
                                                     sampling="poisson"))
    assert poisson.actors.server.target(7) == 7


@pytest.mark.asyncio
async def test_every_outlier_is_counted() -> None:
    world = build_world([device("a", 1.0), device("b", 2.0), device("c", 500.0),
                         device("d", 500.0), device("e", 3.0)],
                        Rounds(cohort_size=5, deadline=10.0, outlier_factor=10.0))
    server = world.actors.server
    forge(server, 1.5, Update(1, 2, contribution(300.0)))
    forge(server, 1.6, Update(1, 3, contribution(-400.0)))
    outcome = await server.run_round(1)
    assert outcome.rejected == {"outlier": 2} and outcome.reported == (0, 1, 4)
    assert [e["sender"] for e in events(world, "update.outlier")] == [2, 3]


@pytest.mark.asyncio
async def test_run_stops_before_a_round_that_would_pass_the_privacy_target() -> None:
    from fedactors import Privacy
    from fedactors.privacy.budget import STOPPED_BY_BUDGET
    from fedactors.privacy.dp_mean import DPMean

    classes = [device(f"d{i}", 1.0 + i) for i in range(4)]
    rounds = Rounds(cohort_size=2, deadline=10.0)
    probe = build_world(classes, rounds, aggregator=DPMean.fixed(1.0, 1.0, expected_count=2),
                        privacy=Privacy(delta=1e-5))
    ledger = probe.actors.server.state.privacy.ledger
    target = (ledger.compose(2).epsilon(1e-5) + ledger.compose(3).epsilon(1e-5)) / 2
    world = build_world(classes, rounds, aggregator=DPMean.fixed(1.0, 1.0, expected_count=2),
                        privacy=Privacy(target_epsilon=target, delta=1e-5))
    server = world.actors.server
    seen: list[int] = []
    assert await server.run(10, lambda o: seen.append(o.round)) == STOPPED_BY_BUDGET
    assert seen == [1, 2] and server.state.round == 2
    assert len(events(world, "privacy.assumption")) == 1
    (stopped,) = events(world, "run.stopped")
    assert (stopped["actor"], stopped["round"], stopped["reason"]) == (
        "server", 2, STOPPED_BY_BUDGET)


# -- who is selected: the documented seed paths --------------------------------------------
#
# A round's online set comes from the generator at ("availability", round) and its cohort
# from the one at ("cohort", round): that is what makes a run reproducible from its seed and
# independent of how many draws other parts of the run made.


def _fleet_world(rounds: Rounds, seed: int = 3, aggregator=None):
    from fedactors.devices.availability import OnlineShare

    return build_world([device("phone", 1.0, count=12, availability=OnlineShare(0.6))], rounds,
                       seed=seed, aggregator=aggregator)


@pytest.mark.asyncio
@pytest.mark.parametrize("r", [1, 2])
async def test_a_fixed_size_cohort_is_drawn_from_the_online_devices_on_the_seed_paths(
        r: int) -> None:
    from fedactors.seeding import SeedTree

    world = _fleet_world(Rounds(cohort_size=3, deadline=10.0))
    start = asyncio.get_running_loop().time()
    outcome = await world.actors.server.run_round(r)
    seeds = SeedTree(3)
    online = world.fleet.online(start, seeds.generator("availability", r))
    assert 3 < len(online) < 12  # the availability draw matters here
    expected = np.sort(seeds.generator("cohort", r).choice(online, 3, replace=False))
    assert outcome.selected == tuple(int(d) for d in expected)
    (started,) = events(world, "round.start")
    assert started["online"] == len(online) and started["selected"] == 3


@pytest.mark.asyncio
async def test_a_poisson_cohort_keeps_each_online_device_with_its_own_draw() -> None:
    from fedactors.seeding import SeedTree

    rounds = Rounds(cohort_size=4, deadline=10.0, sampling="poisson")
    world = _fleet_world(rounds)
    outcome = await world.actors.server.run_round(1)
    seeds = SeedTree(3)
    online = world.fleet.online(0.0, seeds.generator("availability", 1))
    keep = seeds.generator("cohort", 1).random(len(online)) < rounds.poisson_rate(12)
    assert outcome.selected == tuple(int(d) for d in online[keep])
    # Not a fixed-size draw: a fixed-size cohort of 4 from the same generator differs.
    fixed = np.sort(seeds.generator("cohort", 1).choice(online, 4, replace=False))
    assert outcome.selected != tuple(int(d) for d in fixed)


@pytest.mark.asyncio
async def test_the_aggregator_is_told_how_many_were_selected_and_how_many_are_expected() -> None:
    # RoundContext is public API: a custom stage may weigh by the over-selected count.
    from fedactors.aggregation.fedavg import WeightedMean

    seen: list = []

    class Recording(WeightedMean):
        def aggregate(self, state, contributions, ctx):
            seen.append((ctx.round, ctx.expected_count, ctx.selected, ctx.rng.random()))
            return super().aggregate(state, contributions, ctx)

    world = build_world([device("a", 1.0, count=5)],
                        Rounds(cohort_size=2, over_selection=2.0, deadline=10.0),
                        aggregator=Recording())
    outcome = await world.actors.server.run_round(1)
    assert len(outcome.selected) == 4
    # Its generator is the server's secret stream of that round (seeded: the documented path).
    from fedactors.seeding import SeedTree

    assert seen == [(1, 2, 4, SeedTree(0).secret("server", 1).random())]


@pytest.mark.asyncio
async def test_dp_ftrl_with_nobody_online_has_nobody_eligible() -> None:
    # The separation rule filters the online devices; an empty online set stays an empty
    # set of device ids (an index array of no devices), not an error.
    from fedactors.privacy.dp_mean import DPMean
    from fedactors.privacy.spec import Privacy

    world = build_world([device("a", 1.0, count=4)], Rounds(cohort_size=2, deadline=10.0),
                        aggregator=DPMean.tree(1.0, 1.0, 2), privacy=Privacy(min_separation=1))
    server = world.actors.server
    none = server.step.eligible(server.state, np.array([], np.int64))
    assert none.size == 0 and none.dtype.kind == "i"
    everyone = server.step.eligible(server.state, np.arange(4))
    assert everyone.tolist() == [0, 1, 2, 3]


@pytest.mark.asyncio
@pytest.mark.parametrize("over_selection, cut", [(2.0, 1), (1.0, 0)])
async def test_a_round_closed_at_its_target_below_the_selection_is_counted_as_cut(
        over_selection: float, cut: int, monkeypatch) -> None:
    # Over-selected: the two fastest of four close the round at its target while the two
    # slow ones still train; the audit says "cut at the target", not "missing reports".
    # Without over-selection the same fleet closes with everyone: nothing cut, nothing missing.
    from fedactors.privacy.dp_mean import DPMean
    from fedactors.privacy.spec import Privacy

    world = build_world([device("fast", 1.0, count=2), device("slow", 5.0, count=2)],
                        Rounds(cohort_size=2 if over_selection > 1 else 4,
                               over_selection=over_selection, deadline=10.0),
                        aggregator=DPMean.fixed(1.0, 1.0, 2 if over_selection > 1 else 4),
                        privacy=Privacy(target_epsilon=100.0))
    server = world.actors.server
    seen = []
    release = type(server.step).release

    def recording(step, *args, **kwargs):
        seen.append(kwargs["participation"])
        return release(step, *args, **kwargs)

    monkeypatch.setattr(type(server.step), "release", recording)
    outcome = await server.run_round(1)
    assert len(outcome.selected) == 4
    assert outcome.closed_by == "target"  # reached the target either way
    assert (server.state.privacy.rounds_cut_at_target,
            server.state.privacy.rounds_missing_reports) == (cut, 0)
    # The audit is told the count the round waited for (a secure round's sum can fall short).
    assert [p.target for p in seen] == [2 if over_selection > 1 else 4]


@pytest.mark.asyncio
async def test_the_round_end_event_carries_the_evaluation() -> None:
    from dataclasses import replace

    world = build_world([device("a", 1.0), device("b", 2.0)], Rounds(cohort_size=2, deadline=10.0))
    server = world.actors.server
    server.step = replace(server.step, evaluate=lambda w: {"loss": float(w.sum())})
    outcome = await server.run_round(1)
    (end,) = events(world, "round.end")
    assert end["loss"] == outcome.metrics["loss"] == pytest.approx(3 * 1.5)
    assert (end["round"], end["reported"], end["closed_by"], end["applied"]) == (
        1, 2, outcome.closed_by, True)


@pytest.mark.asyncio
async def test_mail_of_the_instant_a_round_closes_is_the_next_rounds_to_read() -> None:
    """Updates queued with the one that closes a round are read, in order, by the next
    round (as late), not lost because the server read the whole instant's mail at once."""
    world = build_world([device("a", 1.0, count=3)],
                        Rounds(cohort_size=1, over_selection=3.0, deadline=10.0))
    server = world.actors.server
    first = await server.run_round(1)  # all three report at one instant; the first closes it
    assert first.closed_by == "target" and first.reported == (0,) and first.rejected == {}
    second = await server.run_round(2)
    assert second.rejected == {"late": 2}
    assert [(e["sender"], e["update_round"]) for e in events(world, "update.late")] == [
        (1, 1), (2, 1)]


@pytest.mark.asyncio
async def test_a_second_update_from_a_sender_is_a_duplicate_whatever_it_holds() -> None:
    world = build_world([device("a", 1.0), device("b", 2.0), device("c", 500.0)],
                        Rounds(cohort_size=3, deadline=10.0))
    server = world.actors.server
    forge(server, 1.5, Update(1, 0, contribution(float("nan"))))  # device 0 reports again
    forge(server, 1.5, Update(1, 2, contribution(float("inf"))))  # and 2's is not finite
    outcome = await server.run_round(1)
    assert outcome.rejected == {"duplicate": 1, "nonfinite": 1}
