"""Secure aggregation between the actors, at exact simulated instants.

The protocol's own guarantees are tested in tests/secagg; here: the actor
runtime delivers exactly the survivors' sum, aborts cleanly, never lets an
unmasked update reach the server, and composes with DP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import numpy as np
import pytest

from fedactors.aggregation.base import Aggregator, SummedContributions
from fedactors.aggregation.fedavg import WeightedMean
from fedactors.devices.profile import DeviceClass, NetworkProfile
from fedactors.errors import ConfigError
from fedactors.messages import Update
from fedactors.privacy.dp_mean import DPMean
from fedactors.scenarios.spec import Scenario
from fedactors.secagg import client as secagg_client
from fedactors.secagg import encoding
from fedactors.secagg import server as secagg_server
from fedactors.secagg.envelopes import ADVERTISE, MASKED, SHARE, UNMASK, ToServer
from fedactors.secagg.messages import MaskedInput, UnmaskRequest
from fedactors.secagg.option import SecureAggregation
from fedactors.server.outcome import metrics_row
from fedactors.server.rounds import Rounds
from tests.server.harness import DIM, device, events
from tests.server.secure_harness import (
    Recording,
    build_secure_world,
    clipped_mean,
    patch_protocol,
)

NEAREST = dict(stochastic_rounding=False)
# Loose SecAgg+ assumptions so a 10-device cohort still gets a sparse graph (k = 8, t = 4);
# under the defaults plus_parameters falls back to the complete graph below ~100 devices.
SMALL_SPARSE = dict(max_dropout=0.2, max_corrupt=0.05, failure_log2=4, security_log2=8)


def fleet(n: int) -> list[DeviceClass]:
    # Device i finishes training at i + 1 s: arrival order is the id order.
    return [device(f"d{i}", float(i + 1)) for i in range(n)]


def drop_pattern(world, pattern: Mapping[tuple[int, int], str]) -> None:
    """Make device d go silent before its ``step`` message in round r, for (r, d) in pattern."""
    participants = world.actors.directory.world.secagg
    participants.goes_silent = lambda d, r, step: pattern.get((r, d)) == step


def record_server_mail(world) -> list:
    seen: list = []
    mailbox = world.actors.server.mailbox
    put = mailbox.put_nowait

    def recording_put(message) -> None:
        seen.append(message)
        put(message)

    mailbox.put_nowait = recording_put  # every delivery and timer goes through here
    return seen


def expected_sum(world, layout_of_round: encoding.Layout, devices) -> dict[str, np.ndarray]:
    """The plain sum (mod 2**k, decoded) of the devices' quantized contributions."""
    agg = world.actors.server.aggregator
    params = agg.client_params(world.actors.server.state.aggregator_state)
    total = np.zeros(layout_of_round.dim, np.uint64)
    for d in devices:
        # The stand-in trainer's delta for device d is d + 1 everywhere.
        c = agg.encode(params, np.full(DIM, d + 1.0, np.float32), 100, np.random.default_rng(0))
        total += encoding.encode(c, layout_of_round, None)
    total &= np.uint64((1 << layout_of_round.modulus_bits) - 1)
    return encoding.decode_sum(total, layout_of_round)


def capture_layouts(world) -> list:
    setups: list = []
    collection = world.actors.server.secure
    make = collection.setup

    def recording_setup(*args, **kwargs):
        s = make(*args, **kwargs)
        setups.append(s)
        return s

    collection.setup = recording_setup
    return setups


PATTERNS = {
    "nobody-drops": {},
    "drop-before-keys": {(1, 2): ADVERTISE},
    "drop-before-shares": {(1, 5): SHARE, (1, 1): SHARE},
    "drop-before-masked-input": {(1, 0): MASKED, (1, 7): MASKED},
    "drop-before-unmasking": {(1, 3): UNMASK, (1, 4): UNMASK},
    "one-at-every-step": {(1, 0): ADVERTISE, (1, 1): SHARE, (1, 2): MASKED, (1, 3): UNMASK},
}


@pytest.mark.asyncio
@pytest.mark.parametrize("graph", ["complete", "sparse"])
@pytest.mark.parametrize("pattern", list(PATTERNS), ids=list(PATTERNS))
async def test_the_secure_sum_is_exactly_the_plain_sum_of_the_survivors_quantized_updates(
    graph: str, pattern: str
) -> None:
    agg = Recording(clipped_mean(5.0))  # clips devices 2.. (norm (d+1)*sqrt(3) > 5)
    world = build_secure_world(fleet(10), Rounds(cohort_size=10, deadline=20.0),
                               SecureAggregation(graph=graph, **NEAREST, **SMALL_SPARSE), agg)
    drop_pattern(world, PATTERNS[pattern])
    setups = capture_layouts(world)
    outcome = await world.actors.server.run_round(1)
    # Everyone who did not go silent before masked input is in the sum (U3).
    gone = {d for (r, d), step in PATTERNS[pattern].items() if step != UNMASK}
    survivors = sorted(set(range(10)) - gone)
    assert outcome.reported == tuple(survivors) and outcome.applied
    assert outcome.measurements["secagg_survivors"] == len(survivors)
    assert outcome.measurements["secagg_aborted"] == 0
    (contributions,) = agg.seen
    assert isinstance(contributions, SummedContributions)
    assert contributions.count == len(survivors)
    got, want = contributions.sum(), expected_sum(world, setups[0].layout, survivors)
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])
    degree = setups[0].config.graph.max_degree()
    assert degree == (9 if graph == "complete" else 8)
    row = metrics_row(outcome, world.actors.tally, (0, 0))
    assert row["dropped"] == len(PATTERNS[pattern]) - sum(
        1 for s in PATTERNS[pattern].values() if s == UNMASK)


@pytest.mark.asyncio
async def test_fewer_than_t_survivors_aborts_cleanly_and_the_next_round_proceeds() -> None:
    # Complete graph over 6: t = 4. Three go silent before masked input: 3 < 4.
    world = build_secure_world(fleet(6), Rounds(cohort_size=6, deadline=20.0),
                               SecureAggregation.complete(step_timeout=5.0, **NEAREST))
    drop_pattern(world, {(1, 0): MASKED, (1, 2): MASKED, (1, 4): MASKED})
    server = world.actors.server
    before = server.state.weights.copy()
    outcome = await server.run_round(1)
    assert not outcome.applied and outcome.reported == ()
    np.testing.assert_array_equal(server.state.weights, before)
    assert outcome.measurements["secagg_aborted"] == 1
    (aborted,) = events(world, "secagg.aborted")
    assert aborted["step"] == "collect_masked" and "threshold 4" in aborted["reason"]
    # Named by fleet id, as every other output names devices: dropped device 0's secret
    # has only survivors 1, 3 and 5 to rebuild it (the protocol's own id for 0 is 1).
    assert aborted["reason"].startswith("device 0: only 3 of its share holders remain")
    # Training ends at 6 s; keys, shares: no waiting; masked input waits the 5 s step timeout.
    assert outcome.end == pytest.approx(11.0)
    assert len(events(world, "round.skipped")) == 1
    nxt = await server.run_round(2)
    assert nxt.applied and nxt.reported == (0, 1, 2, 3, 4, 5)
    np.testing.assert_allclose(server.state.weights, np.full(DIM, 3.5), atol=1e-4)


@pytest.mark.asyncio
async def test_no_message_reaching_the_server_holds_an_unmasked_update() -> None:
    world = build_secure_world(fleet(8), Rounds(cohort_size=8, deadline=20.0),
                               SecureAggregation.sparse(**NEAREST))
    drop_pattern(world, {(1, 6): MASKED})  # forces the recovery path (s^SK reconstruction)
    mail = record_server_mail(world)
    setups = capture_layouts(world)
    outcome = await world.actors.server.run_round(1)
    assert outcome.applied
    layout = setups[0].layout
    protocol = [m for m in mail if isinstance(m, ToServer)]
    assert protocol and not any(isinstance(m, Update) for m in mail)
    agg = world.actors.server.aggregator
    params = agg.client_params(agg.initial_state(DIM))
    masked = [m.payload for m in protocol if isinstance(m.payload, MaskedInput)]
    assert len(masked) == 7
    for m in masked:
        d = m.sender - 1
        c = agg.encode(params, np.full(DIM, d + 1.0, np.float32), 100, np.random.default_rng(0))
        x = encoding.encode(c, layout, None)
        assert not np.array_equal(m.y, x)
        # Masked values look uniform in Z_{2^k}, nothing like the small quantized inputs.
        assert np.abs(encoding.decode_sum(m.y, layout)[next(iter(c))]).max() > 5.0
    for m in protocol:  # the only arrays the server ever receives are masked vectors
        arrays = [v for v in vars(m.payload).values() if isinstance(v, np.ndarray)]
        assert all(isinstance(m.payload, MaskedInput) for _ in arrays)


@pytest.mark.asyncio
async def test_a_device_told_a_peer_is_both_alive_and_dropped_aborts_and_sends_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    honest = secagg_server.collect_masked

    def lying(state, msgs):
        state, replies = honest(state, msgs)
        r = replies[1]  # to device 0 (protocol id 1): also call its peer 2 dropped
        replies[1] = UnmaskRequest(r.recipient, r.alive, tuple(sorted(r.dropped + (2,))))
        return state, replies

    patch_protocol(monkeypatch, collect_masked=lying)
    world = build_secure_world(fleet(6), Rounds(cohort_size=6, deadline=20.0),
                               SecureAggregation.complete(**NEAREST))
    mail = record_server_mail(world)
    outcome = await world.actors.server.run_round(1)
    (abort,) = events(world, "secagg.device_abort")
    assert abort["actor"] == "device-0" and "both alive and dropped" in abort["reason"]
    unmask_from = {m.sender for m in mail if isinstance(m, ToServer) and m.step == UNMASK}
    assert unmask_from == {1, 2, 3, 4, 5}
    # The other five (>= t = 4) still unmask every survivor: the round completes.
    assert outcome.applied and outcome.reported == (0, 1, 2, 3, 4, 5)


class NeedsEachUpdate(WeightedMean):
    needs_individual_updates = True


@pytest.mark.parametrize("aggregator, words", [
    (WeightedMean(), "no contribution_bounds"),
    (NeedsEachUpdate(), "needs_individual_updates"),
])
def test_aggregators_secure_aggregation_cannot_run_are_refused(
    aggregator: Aggregator, words: str
) -> None:
    with pytest.raises(ConfigError) as err:
        Scenario(name="x", model=lambda: None, loss="mse", data=lambda f, r: None,
                 fleet=fleet(2), rounds=Rounds(cohort_size=2), aggregator=aggregator,
                 secure_aggregation=SecureAggregation())
    assert err.value.field == "aggregator" and words in str(err.value)


@pytest.mark.parametrize("kwargs, field", [
    (dict(graph="ring"), "secure_aggregation.graph"),
    (dict(step_dropout=1.5), "secure_aggregation.step_dropout"),
    (dict(scale_bits=60), "secure_aggregation.scale_bits"),
    (dict(threshold_fraction=1.0), "secure_aggregation.threshold_fraction"),
])
def test_bad_options_name_their_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        SecureAggregation(**kwargs)
    assert err.value.field == field


@pytest.mark.asyncio
async def test_step_dropout_is_deterministic_and_counted_as_dropped() -> None:
    async def one_run():
        world = build_secure_world(fleet(10), Rounds(cohort_size=10, deadline=20.0),
                                   SecureAggregation.complete(step_dropout=0.1))
        outcome = await world.actors.server.run_round(1)
        return outcome, metrics_row(outcome, world.actors.tally, (0, 0)), world

    (a, row_a, world), (b, row_b, _) = await one_run(), await one_run()
    same = ("reported", "dropped", "secagg_survivors", "secagg_bytes_up_per_device", "duration")
    assert a.reported == b.reported
    assert {k: row_a[k] for k in same} == pytest.approx({k: row_b[k] for k in same})
    silent = {int(e["actor"].split("-")[1]) for e in events(world, "dropped")}
    assert silent and row_a["dropped"] == len(silent - set(a.reported))
    np.testing.assert_array_equal(world.actors.server.state.weights.shape, (DIM,))


@pytest.mark.asyncio
async def test_protocol_traffic_takes_simulated_time() -> None:
    slow = NetworkProfile(rtt=0.2, uplink=1e5, downlink=1e6)
    classes = [DeviceClass(f"d{i}", count=1, compute=100.0, network=slow, examples=100)
               for i in range(4)]
    plain = build_secure_world(classes, Rounds(cohort_size=4, deadline=60.0), None)
    secure = build_secure_world(classes, Rounds(cohort_size=4, deadline=60.0),
                                SecureAggregation.complete(**NEAREST))
    p = await plain.actors.server.run_round(1)
    s = await secure.actors.server.run_round(1)
    # Three more round trips (>= 3 x RTT) plus the protocol's bytes over the links.
    assert s.end - p.end > 3 * 0.2
    assert s.measurements["secagg_bytes_up_per_device"] > 0
    assert s.measurements["secagg_bytes_down_per_device"] > 0


@pytest.mark.asyncio
@pytest.mark.parametrize("distributed_noise", [False, True])
async def test_dp_mean_under_secure_aggregation_matches_the_plain_run(
    distributed_noise: bool,
) -> None:
    """Clip on the device, sum securely, noise by the server or by the devices' shares."""
    option = SecureAggregation.complete(scale_bits=20)
    weights = []
    for secure in (None, option):
        dp = DPMean.fixed(2.0, 0.5, expected_count=6, distributed_noise=distributed_noise)
        world = build_secure_world(fleet(6), Rounds(cohort_size=6, deadline=20.0), secure, dp)
        outcome = await world.actors.server.run_round(1)
        assert outcome.applied
        weights.append(world.actors.server.state.weights.astype(np.float64))
    # Same device and server streams, so only quantization differs: at most
    # m * 2**-f on the sum (stochastic rounding), divided by m = 6 for the mean.
    layout_bound = encoding.Layout((), 20, 30, 6).error_bound(6, stochastic=True) / 6
    assert np.abs(weights[0] - weights[1]).max() <= layout_bound + 1e-6
    assert not np.array_equal(weights[0], np.zeros(DIM))


# -- input checks: malformed masked vectors, non-finite updates ------------------------------

TAMPERED_MASKED = {
    "float64": lambda y: y.astype(np.float64),
    "float32": lambda y: y.astype(np.float32),
    "wrong-shape": lambda y: np.concatenate([y, y[:1]]),
    "beyond-modulus": lambda y: y | np.uint64(1 << 62),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("tamper", list(TAMPERED_MASKED), ids=list(TAMPERED_MASKED))
async def test_a_malformed_masked_input_is_rejected_counted_and_the_rest_sum_exactly(
    tamper: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    honest = secagg_client.masked_input

    def tampering(state, msg, x):
        state, out = honest(state, msg, x)
        if isinstance(out, MaskedInput) and out.sender == 4:  # device 3
            out = MaskedInput(out.sender, TAMPERED_MASKED[tamper](out.y), out.modulus_bits)
        return state, out

    patch_protocol(monkeypatch, masked_input=tampering)
    agg = Recording(clipped_mean())
    world = build_secure_world(fleet(6), Rounds(cohort_size=6, deadline=20.0),
                               SecureAggregation.complete(step_timeout=5.0, **NEAREST), agg)
    setups = capture_layouts(world)
    outcome = await world.actors.server.run_round(1)
    others = [0, 1, 2, 4, 5]
    assert outcome.applied and outcome.reported == tuple(others)
    assert outcome.measurements["secagg_survivors"] == 5
    assert outcome.rejected == {"malformed": 1}
    (refused,) = events(world, "update.malformed")
    assert refused["step"] == MASKED and refused["sender"] == 3
    assert metrics_row(outcome, world.actors.tally, (0, 0))["rejected_malformed"] == 1
    (contributions,) = agg.seen
    assert contributions.count == 5
    got, want = contributions.sum(), expected_sum(world, setups[0].layout, others)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])


def nan_for(world, device_: int, bad: float) -> None:
    """Make the stand-in trainer return a delta holding ``bad`` for ``device_``."""
    executor = world.actors.directory.world.executor
    honest = executor.run_batch

    def run_batch(tasks):
        results = honest(tasks)
        for r in results:
            if r.device == device_:
                r.delta[1] = bad
        return results

    executor.run_batch = run_batch


@pytest.mark.asyncio
@pytest.mark.parametrize("bad", [np.nan, np.inf])
async def test_a_device_with_a_non_finite_delta_stays_out_of_the_secure_sum(bad: float) -> None:
    # WeightedMean / Clipped zero a non-finite delta in encode; under SecAgg the server could
    # not tell those zeros (weight 1) from a real update, so the device must not take part.
    agg = Recording(clipped_mean())
    world = build_secure_world(fleet(6), Rounds(cohort_size=6, deadline=20.0),
                               SecureAggregation.complete(**NEAREST), agg)
    nan_for(world, 2, bad)
    setups = capture_layouts(world)
    outcome = await world.actors.server.run_round(1)
    others = [0, 1, 3, 4, 5]
    assert outcome.applied and outcome.reported == tuple(others)
    assert outcome.measurements["secagg_survivors"] == 5
    (skipped,) = events(world, "secagg.nonfinite_update")
    assert skipped["actor"] == "device-2" and skipped["where"] == "delta"
    assert not [e for e in events(world, "secagg.sent") if e["actor"] == "device-2"]
    (contributions,) = agg.seen
    assert contributions.count == 5
    got, want = contributions.sum(), expected_sum(world, setups[0].layout, others)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])
    # The mean over the other five (deltas d + 1), not a sixth zero pulling it down.
    np.testing.assert_allclose(world.actors.server.state.weights,
                               np.full(DIM, np.mean([d + 1.0 for d in others])), atol=1e-4)
    assert metrics_row(outcome, world.actors.tally, (0, 0))["dropped"] == 1


class PassesNaN(Recording):
    """An encode that lets a NaN through to the contribution (no zeroing)."""

    def encode(self, params, delta, num_examples, rng):
        c = self.inner.encode(params, delta, num_examples, rng)
        if float(delta[0]) == 3.0:  # device 2
            c = {k: np.full_like(v, np.nan) for k, v in c.items()}
        return c


@pytest.mark.asyncio
async def test_a_non_finite_contribution_keeps_the_device_out_instead_of_failing_the_run(
) -> None:
    agg = PassesNaN(clipped_mean())
    world = build_secure_world(fleet(6), Rounds(cohort_size=6, deadline=20.0),
                               SecureAggregation.complete(**NEAREST), agg)
    outcome = await world.actors.server.run_round(1)
    assert not world.actors.failures
    assert outcome.applied and outcome.reported == (0, 1, 3, 4, 5)
    (skipped,) = events(world, "secagg.nonfinite_update")
    assert skipped["actor"] == "device-2" and skipped["where"].startswith("contribution:")


@pytest.mark.asyncio
async def test_the_plain_path_still_sends_a_non_finite_delta_encoded_as_zeros() -> None:
    # Only the secure path changed: without SecAgg the device reports as before.
    world = build_secure_world(fleet(4), Rounds(cohort_size=4, deadline=20.0), None,
                               clipped_mean())
    nan_for(world, 2, np.nan)
    outcome = await world.actors.server.run_round(1)
    assert outcome.reported == (0, 1, 2, 3)
    assert not events(world, "secagg.nonfinite_update")


# (Secure aggregation on Poisson rounds with this DP is refused at load: an abort there
# depends on one device's presence; tests/privacy/test_runtime_privacy.py.)
@pytest.mark.parametrize("secure", [False], ids=["plain"])
def test_a_poisson_round_nobody_trained_in_time_releases_the_noise_either_way(secure) -> None:
    # Nobody finishes training before the deadline: the sum is the empty one, so
    # central-noise DP-FedAvg on Poisson rounds releases the noise alone.
    import dataclasses

    from fedactors import Privacy
    from fedactors.data.federated import FederatedData
    from fedactors.devices.fleet import Fleet
    from fedactors.privacy.budget import PrivacyBudget
    from fedactors.reporting.events import EventLog
    from fedactors.runtime import loop as virtual_time
    from fedactors.secagg.costs import CryptoCosts
    from fedactors.seeding import SeedTree
    from tests.server.harness import DeviceIdDelta, assemble

    async def one_round():
        loop = asyncio.get_running_loop()
        seeds = SeedTree(0)
        classes = [device(f"d{i}", 100.0) for i in range(6)]  # 100 s of training
        fleet = Fleet.build(classes, seeds.generator("fleet"))
        clients = [(np.zeros((int(n), 1), np.float32), np.zeros(int(n), np.float32))
                   for n in fleet.examples]
        data = FederatedData.from_arrays(clients, clients[0])
        option = (dataclasses.replace(SecureAggregation.complete(), costs=CryptoCosts.free())
                  if secure else None)
        scenario = Scenario(name="p", model=lambda: None, loss="mse", data=lambda f, r: data,
                            fleet=classes, aggregator=DPMean.fixed(1.0, 1.0, 3),
                            rounds=Rounds(count=1, cohort_size=3, deadline=5.0,
                                          sampling="poisson"),
                            secure_aggregation=option, privacy=Privacy())
        budget = PrivacyBudget.for_scenario(scenario, fleet.size)
        actors = assemble(loop=loop, fleet=fleet, data=data, executor=DeviceIdDelta(),
                          scenario=scenario, evaluate=lambda w: {}, seeds=seeds,
                          log=EventLog(loop.time, keep=True),
                          initial_weights=np.zeros(DIM, np.float32), privacy=budget)
        return await actors.server.run_round(1), actors.server.state

    outcome, state = virtual_time.run(one_round())
    assert outcome.selected and not outcome.reported  # sampled, and nobody made it in time
    assert outcome.applied and state.privacy.rounds_not_released == 0
    assert not np.array_equal(state.weights, np.zeros(DIM))  # the noise was released
