"""The secure collection phase: its tally, forged envelopes, closing causes, events, measurements."""

from __future__ import annotations

import asyncio
import time

import pytest

from fedactors.errors import ConfigError
from fedactors.messages import RoundDeadline
from fedactors.reporting.events import EventLog
from fedactors.runtime.mailbox import Mailbox
from fedactors.secagg import encoding
from fedactors.secagg import server as secagg_server
from fedactors.secagg.envelopes import (
    ADVERTISE,
    MASKED,
    SHARE,
    UNMASK,
    StepDeadline,
    ToDevice,
    ToServer,
)
from fedactors.secagg.graph import harary_graph
from fedactors.secagg.option import SecureAggregation
from fedactors.seeding import SeedTree
from fedactors.server.outcome import metrics_row
from fedactors.server.rounds import Rounds
from fedactors.server.secure_collection import SecureCollection, _Tally
from tests.server.harness import DIM, device, events
from tests.server.secure_harness import (
    Recording,
    build_secure_world,
    clipped_mean,
    patch_protocol,
)


def test_the_tally_adds_up_the_server_time_of_every_timed_step() -> None:
    tally = _Tally()
    assert tally.timed(lambda a, b: (time.sleep(0.02), a + b)[1], 2, 3) == 5
    tally.timed(time.sleep, 0.02)
    assert 0.04 <= tally.seconds < 1.0
    with pytest.raises(ZeroDivisionError):
        tally.timed(lambda: 1 / 0)  # a failing step's time still counts
    assert 0.04 <= tally.seconds < 1.0


# -- a secure round under attack: forged envelopes of every kind ------------------------------

NEAREST = dict(stochastic_rounding=False)
# No dropout or collusion assumed: a 6-device complete graph meets the targets (not reported);
# a majority threshold, t = 4 of 6, set explicitly (by default t would be the largest meeting them).
NO_RISK = dict(max_dropout=0.0, max_corrupt=0.0, threshold_fraction=0.5)
SMALL_SPARSE = dict(max_dropout=0.2, max_corrupt=0.05, failure_log2=4, security_log2=8)
SECAGG_KEYS = {"secagg_bytes_up_per_device", "secagg_bytes_down_per_device",
               "secagg_server_seconds", "secagg_survivors", "secagg_aborted",
               "secagg_modulus_bits", "secagg_max_degree", "secagg_below_target",
               "secagg_server_compute_s", "secagg_threshold", "secagg_advertised"}


def fleet(n: int, seconds: float = 1.0):
    return [device(f"d{i}", seconds * (i + 1)) for i in range(n)]


def secagg_measurements(outcome) -> dict:
    return {k: v for k, v in outcome.measurements.items() if k.startswith("secagg_")}


def rejections(world) -> list[tuple]:
    return [(e["event"], e["actor"], e["round"], e["step"], e["sender"], e["update_round"],
             e["update_step"]) for e in world.log.records if e["event"].startswith("update.")]


def slow(fn, seconds: float = 0.03):
    def run(*args, **kwargs):
        time.sleep(seconds)
        return fn(*args, **kwargs)
    return run


@pytest.mark.asyncio
async def test_forged_envelopes_during_a_secure_step_are_refused_by_reason_logged_and_unpaid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Server compute that takes measurable time: two timed steps and the decode.
    patch_protocol(monkeypatch, collect_keys=slow(secagg_server.collect_keys),
                   finish=slow(secagg_server.finish))
    monkeypatch.setattr(encoding, "decode_sum", slow(encoding.decode_sum))
    # SecAgg+ over 6 devices misses the default targets (degree 5, t = 3).
    world = build_secure_world(fleet(6), Rounds(cohort_size=6, deadline=20.0),
                               SecureAggregation.sparse(**NEAREST), Recording(clipped_mean()))
    server = world.actors.server
    coll = server.secure
    genuine: list = []
    sent: list = []
    setups: list = []
    keys: dict = {}
    mailbox = server.mailbox
    put = mailbox.put_nowait
    forged_once = []

    def forging_put(message) -> None:
        if isinstance(message, ToServer):
            genuine.append(message)
            if message.step == ADVERTISE:
                keys[message.sender] = message.payload
            if message.step == SHARE and not forged_once:
                forged_once.append(message)
                x = message.sender
                y = (x + 1) % 6
                for m in ["not a protocol message",
                          ToServer(1, x, "bogus_step", message.payload),
                          RoundDeadline(1), RoundDeadline(0),
                          StepDeadline(1, UNMASK), StepDeadline(0, SHARE), StepDeadline(1, ADVERTISE),
                          ToServer(0, x, SHARE, message.payload),
                          ToServer(2, x, SHARE, message.payload),
                          ToServer(1, x, ADVERTISE, keys[x]),
                          ToServer(1, 99, SHARE, message.payload),
                          ToServer(1, x, MASKED, message.payload),
                          ToServer(1, x, SHARE, keys[x]),
                          ToServer(1, y, SHARE, message.payload),
                          message]:
                    put(m)
                put(message)  # the same envelope again: a duplicate
                return
        put(message)

    mailbox.put_nowait = forging_put
    network = coll.network
    to_device = network.to_device

    def recording_to_device(d, message) -> None:
        sent.append(message)
        to_device(d, message)

    network.to_device = recording_to_device
    make, collect = coll.setup, coll.collect

    def recording_setup(*args, **kwargs):
        setups.append(make(*args, **kwargs))
        return setups[-1]

    coll.setup = recording_setup
    coll.collect = lambda r, setup, cohort, admit=None: collect(r, setup, cohort)  # the default
    outcome = await server.run_round(1)

    assert outcome.applied and outcome.reported == (0, 1, 2, 3, 4, 5)
    assert outcome.closed_by == "target"
    assert outcome.rejected == {"malformed": 5, "late": 2, "future": 1, "foreign": 1,
                                "duplicate": 1}
    row = metrics_row(outcome, world.actors.tally, (0, 0))
    assert row["closed_by"] == "target" and row["rejected_malformed"] == 5
    x = forged_once[0].sender
    y = (x + 1) % 6
    head = ("server", 1, SHARE)
    # step: where the server was; the last field: the message's own step (the late key
    # message is logged as an advertise message).
    assert rejections(world) == [
        ("update.malformed", *head, None, None, None),
        ("update.malformed", *head, x, 1, "bogus_step"),
        ("update.late", *head, x, 0, SHARE),
        ("update.future", *head, x, 2, SHARE),
        ("update.late", *head, x, 1, ADVERTISE),
        ("update.foreign", *head, 99, 1, SHARE),
        ("update.malformed", *head, x, 1, MASKED),
        ("update.malformed", *head, x, 1, SHARE),
        ("update.malformed", *head, y, 1, SHARE),
        ("update.duplicate", *head, x, 1, SHARE),
    ]
    received = [(e["actor"], e["round"], e["step"], e["sender"])
                for e in events(world, "secagg.received")]
    assert received == [("server", 1, m.step, m.sender) for m in genuine]
    assert [s for _, _, s, _ in received] == [ADVERTISE] * 6 + [SHARE] * 6 + [MASKED] * 6 + [
        UNMASK] * 6
    (done,) = events(world, "secagg.done")
    assert (done["actor"], done["round"], done["advertised"], done["survivors"]) == (
        "server", 1, 6, 6)
    config = setups[0].config
    (below,) = events(world, "secagg.parameters_below_target")
    plus = coll.option.plus_parameters(6, 6)
    assert not plus.meets_targets
    got = secagg_measurements(outcome)
    assert got.keys() == SECAGG_KEYS | {"secagg_failure_log2", "secagg_security_log2"}
    seconds = got.pop("secagg_server_seconds")
    assert 0.09 <= seconds < 3.0
    assert got == {
        "secagg_bytes_up_per_device": sum(m.nbytes for m in genuine) / 6,
        "secagg_bytes_down_per_device": sum(
            m.nbytes for m in sent if isinstance(m, ToDevice)) / 6,
        "secagg_survivors": 6, "secagg_aborted": 0,
        "secagg_modulus_bits": config.modulus_bits, "secagg_max_degree": 5,
        "secagg_below_target": 1, "secagg_server_compute_s": 0.0,  # free crypto (harness)
        "secagg_threshold": config.graph.thresholds[1], "secagg_advertised": 6,
        "secagg_failure_log2": plus.failure_log2, "secagg_security_log2": plus.security_log2,
    }
    assert below["round"] == 1 and below["failure_log2"] == plus.failure_log2
    assert len([m for m in sent if isinstance(m, ToDevice)]) == 18


@pytest.mark.asyncio
async def test_a_round_whose_keys_stop_at_the_deadline_or_at_admit_says_so() -> None:
    # Devices finish at 1..6 s; the deadline at 4.5 s lets 0-3 in (t = 4 of 6: no abort).
    world = build_secure_world(fleet(6), Rounds(cohort_size=6, deadline=4.5),
                               SecureAggregation.complete(**NEAREST, **NO_RISK))
    outcome = await world.actors.server.run_round(1)
    assert outcome.closed_by == "deadline" and outcome.reported == (0, 1, 2, 3)
    assert outcome.rejected == {}
    m = secagg_measurements(outcome)
    assert m.keys() == SECAGG_KEYS
    assert m["secagg_survivors"] == 4 and m["secagg_below_target"] == 0
    up = [e for e in events(world, "secagg.received")]
    assert len(up) == 16
    (done,) = events(world, "secagg.done")
    assert (done["advertised"], done["survivors"]) == (4, 4)

    # Admitting 4 of 6 closes the keys at the target.
    world = build_secure_world(fleet(6), Rounds(cohort_size=6, deadline=20.0),
                               SecureAggregation.complete(**NEAREST))
    coll = world.actors.server.secure
    collect = coll.collect
    coll.collect = lambda r, setup, cohort, admit=None: collect(r, setup, cohort, admit=4)
    outcome = await world.actors.server.run_round(1)
    assert outcome.closed_by == "target" and outcome.reported == (0, 1, 2, 3)


@pytest.mark.asyncio
async def test_nobody_training_in_time_under_secure_aggregation_is_a_deadline_skip() -> None:
    world = build_secure_world(fleet(3, seconds=10.0), Rounds(cohort_size=3, deadline=5.0),
                               SecureAggregation.complete(**NEAREST))
    outcome = await world.actors.server.run_round(1)
    assert outcome.closed_by == "deadline" and outcome.reported == ()
    assert outcome.rejected == {} and not outcome.applied
    assert outcome.end == pytest.approx(5.0)
    assert not secagg_measurements(outcome)
    assert not events(world, "secagg.done") and not events(world, "secagg.aborted")


@pytest.mark.asyncio
async def test_an_abort_logs_its_step_and_reason_and_measures_no_survivors() -> None:
    world = build_secure_world(fleet(6), Rounds(cohort_size=6, deadline=20.0),
                               SecureAggregation.complete(step_timeout=5.0, **NEAREST, **NO_RISK))
    participants = world.actors.directory.world.secagg
    participants.goes_silent = lambda d, r, step: r == 1 and d in (0, 2, 4) and step == MASKED
    outcome = await world.actors.server.run_round(1)
    assert not outcome.applied and outcome.reported == ()
    assert outcome.closed_by == "target" and outcome.rejected == {}
    (aborted,) = events(world, "secagg.aborted")
    assert (aborted["actor"], aborted["round"], aborted["step"], aborted["advertised"]) == (
        "server", 1, "collect_masked", 6)
    assert "threshold 4" in aborted["reason"]
    m = secagg_measurements(outcome)
    assert m.keys() == SECAGG_KEYS
    assert (m["secagg_survivors"], m["secagg_aborted"], m["secagg_max_degree"]) == (0, 1, 5)


def bare_collection(option: SecureAggregation, aggregator=None, cohort_size: int = 10):
    log = EventLog(lambda: 0.0, keep=True)
    coll = SecureCollection(option, aggregator=aggregator or clipped_mean(), seeds=SeedTree(7),
                            log=log, mailbox=Mailbox(), network=None,
                            cohort_size=cohort_size)
    return coll, log


@pytest.mark.asyncio
async def test_nobody_online_reads_until_the_round_deadline_and_refuses_everyone() -> None:
    coll, log = bare_collection(SecureAggregation.complete())
    for m in [ToServer(1, 0, ADVERTISE, "keys"), ToServer(2, 0, ADVERTISE, "keys"),
              StepDeadline(1, ADVERTISE), RoundDeadline(0), RoundDeadline(1),
              ToServer(1, 1, ADVERTISE, "keys")]:
        coll.mailbox.put_nowait(m)
    out = await asyncio.wait_for(coll.collect(1, None, set()), 100.0)
    # The empty sum, not an abort (None): a release over nobody is the noise alone.
    assert out.contributions is not None and out.contributions.count == 0
    assert (out.contributors, out.closed_by) == ((), "nobody-online")
    assert out.rejected == {"foreign": 1, "future": 1} and out.measurements == {}
    assert coll.mailbox.qsize() == 1  # the message after the deadline is left alone
    got = [(e["event"], e["actor"], e["round"], e["step"], e["sender"], e["update_round"],
            e["update_step"]) for e in log.records]
    assert got == [("update.foreign", "server", 1, ADVERTISE, 0, 1, ADVERTISE),
                   ("update.future", "server", 1, ADVERTISE, 0, 2, ADVERTISE)]
    # Wanting nobody: done at once, nothing read.
    got_, closed = await coll._gather(1, ADVERTISE, {1}, 0, _Tally(), round_deadline=True)
    assert (got_, closed) == ({}, "target") and coll.mailbox.qsize() == 1


def test_setup_graph_layout_and_below_target_report() -> None:
    agg = clipped_mean()
    params = agg.client_params(agg.initial_state(DIM))
    option = SecureAggregation.sparse(stochastic_rounding=True, **SMALL_SPARSE)
    coll, log = bare_collection(option)
    s = coll.setup(3, range(10), params, DIM)
    plus = option.plus_parameters(10, 10)
    assert plus.meets_targets and plus.degree == 8
    want = harary_graph(list(range(1, 11)), plus.degree, SeedTree(7).generator("secagg-graph", 3),
                        plus.threshold)
    assert s.config.graph == want
    assert s.stochastic_rounding is True and s.step_dropout == option.step_dropout
    assert s.layout.m_max == 10 and not log.records and not coll._below_target
    # Eight devices miss the targets: logged and kept for the round's measurements.
    s8 = coll.setup(5, range(8), params, DIM)
    plus8 = option.plus_parameters(8, 8)
    assert not plus8.meets_targets
    (rec,) = log.records
    assert {k: rec[k] for k in ("event", "actor", "round", "selected", "degree", "threshold",
                                "failure_log2", "security_log2")} == {
        "event": "secagg.parameters_below_target", "actor": "server", "round": 5,
        "selected": 8, "degree": plus8.degree, "threshold": plus8.threshold,
        "failure_log2": plus8.failure_log2, "security_log2": plus8.security_log2}
    assert coll._below_target == {5: (plus8.failure_log2, plus8.security_log2)}
    assert s8.config.graph.max_degree() == plus8.degree
    # "auto" picks the complete graph for a small cohort.
    auto, _ = bare_collection(SecureAggregation(**NEAREST), cohort_size=5)
    small = auto.setup(1, [4, 2, 9], params, DIM)
    assert auto.setup(1, range(6), params, DIM).layout.m_max == 5
    assert auto.setup(1, range(6), params, DIM, admit=4).layout.m_max == 4
    assert small.config.graph.max_degree() == 2 and small.stochastic_rounding is False
    assert coll.setup(1, [], params, DIM) is None


class BoundsVanish(Recording):
    gone = False

    def contribution_bounds(self, params, dim):
        return {} if self.gone else self.inner.contribution_bounds(params, dim)


def test_an_aggregator_without_bounds_at_setup_is_a_config_error_naming_it() -> None:
    agg = BoundsVanish(clipped_mean())
    coll, _ = bare_collection(SecureAggregation.complete(), aggregator=agg)
    params = agg.client_params(agg.initial_state(DIM))
    agg.gone = True
    with pytest.raises(ConfigError) as err:
        coll.setup(4, [0, 1], params, DIM)
    assert err.value.field == "aggregator"
    text = str(err.value)
    assert f"BoundsVanish gave no contribution_bounds for round 4 (params {dict(params)!r})" in text
