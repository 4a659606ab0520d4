"""Protocol compute on the virtual clock: devices and the server take the cost model's time."""

from __future__ import annotations

import pytest

from fedactors.devices.profile import DeviceClass
from fedactors.secagg.costs import CryptoCosts
from fedactors.secagg.envelopes import ADVERTISE, MASKED, SHARE, UNMASK
from fedactors.secagg.option import SecureAggregation
from fedactors.server.outcome import metrics_row
from fedactors.server.rounds import Rounds
from tests.server.harness import device, events
from tests.server.secure_harness import build_secure_world

# Round numbers: a device at 100 examples/s (reference speed) takes 0.5 s per key pair,
# 1 s per agreement; the server 0.25 s per share it combines. Everything else is free.
COSTS = CryptoCosts(keygen=0.5, agree=1.0, reconstruct=0.25, reference_compute=100.0)
SECURE = SecureAggregation.complete(stochastic_rounding=False, step_timeout=10.0, costs=COSTS)


def fleet(seconds: list[float]) -> list[DeviceClass]:
    # 100 examples in ``seconds``: compute 100 / seconds, so crypto is ``seconds`` x slower.
    return [device(f"d{i}", s) for i, s in enumerate(seconds)]


def arrivals(world, step: str) -> dict[int, float]:
    return {e["sender"]: e["t"] for e in events(world, "secagg.received") if e["step"] == step}


@pytest.mark.asyncio
async def test_each_step_arrives_after_the_devices_crypto_and_the_round_after_unmasking() -> None:
    world = build_secure_world(fleet([1.0] * 4), Rounds(cohort_size=4, deadline=100.0), SECURE,
                               crypto_time=True)
    outcome = await world.actors.server.run_round(1)
    assert outcome.applied and outcome.reported == (0, 1, 2, 3)
    # Trained at 1; two key pairs: 1 s. Four holders: 3 agreements. Three bundles: 3 pairwise
    # seeds. Unmasking only picks shares. (The instant network adds nanoseconds.)
    for step, t in ((ADVERTISE, 2.0), (SHARE, 5.0), (MASKED, 8.0), (UNMASK, 8.0)):
        assert list(arrivals(world, step).values()) == pytest.approx([t] * 4, abs=1e-6), step
    sent = {(e["actor"], e["step"]): e["compute_s"] for e in events(world, "secagg.sent")}
    assert sent[("device-0", SHARE)] == 3.0 and sent[("device-0", UNMASK)] == 0.0
    # t = 3 of 4: four b_u rebuilt from 3 shares each at 0.25 s.
    assert outcome.measurements["secagg_server_compute_s"] == 3.0
    assert outcome.end == pytest.approx(11.0, abs=1e-6)


@pytest.mark.asyncio
async def test_a_device_too_slow_at_crypto_misses_the_step_deadline() -> None:
    # Device 4 trains 8x slower, so its crypto is 8x slower too: sharing keys with four
    # peers takes it 32 s, past the 10 s step deadline; the others need 4 s.
    rounds = Rounds(cohort_size=5, deadline=100.0)
    slow = build_secure_world(fleet([1.0] * 4 + [8.0]), rounds, SECURE, crypto_time=True)
    outcome = await slow.actors.server.run_round(1)
    assert outcome.applied and outcome.reported == (0, 1, 2, 3)
    assert 4 in arrivals(slow, ADVERTISE) and 4 not in arrivals(slow, SHARE)
    (share,) = [e for e in events(slow, "secagg.sent") if e["actor"] == "device-4"
                and e["step"] == SHARE]
    assert share["compute_s"] == 32.0
    # Cut by the share step's deadline while computing: late, not surplus (the key phase
    # closed at its target, which says nothing about this device).
    row = metrics_row(outcome, slow.actors.tally, (0, 0))
    assert (row["reported"], row["dropped"], row["late"], row["surplus"]) == (4, 0, 1, 0)
    # The same fleet with free crypto: device 4 is in the sum.
    free = build_secure_world(fleet([1.0] * 4 + [8.0]), rounds, SECURE)
    assert (await free.actors.server.run_round(1)).reported == (0, 1, 2, 3, 4)


@pytest.mark.asyncio
async def test_an_aborted_round_charges_no_unmasking() -> None:
    # Complete graph over 4: t = 3. Two go silent before masked input: the server aborts
    # before unmasking anything, so the round takes no server compute.
    world = build_secure_world(fleet([1.0] * 4), Rounds(cohort_size=4, deadline=100.0), SECURE,
                               crypto_time=True)
    participants = world.actors.directory.world.secagg
    participants.goes_silent = lambda d, r, step: d in (0, 1) and step == MASKED
    outcome = await world.actors.server.run_round(1)
    assert not outcome.applied and outcome.measurements["secagg_aborted"] == 1
    assert outcome.measurements["secagg_server_compute_s"] == 0.0
    # Two went silent; the other two finished their part, which the abort discarded.
    row = metrics_row(outcome, world.actors.tally, (0, 0))
    assert (row["dropped"], row["late"], row["surplus"]) == (2, 0, 2)


@pytest.mark.asyncio
async def test_unmasking_is_charged_only_for_masks_that_exist() -> None:
    # Device 0 never advertises (no keys, no mask to remove); device 1 shares its keys and
    # drops before masking: its s^SK (t = 4 of 6 shares) is rebuilt and its pairwise masks
    # with the 4 survivors regenerated. The four survivors' b_u: 4 shares each.
    costs = CryptoCosts(keygen=0.5, agree=1.0, reconstruct=0.25, reference_compute=100.0)
    option = SecureAggregation.complete(stochastic_rounding=False, step_timeout=10.0,
                                        costs=costs)
    world = build_secure_world(fleet([1.0] * 6), Rounds(cohort_size=6, deadline=100.0), option,
                               crypto_time=True)
    participants = world.actors.directory.world.secagg
    participants.goes_silent = lambda d, r, step: (d, step) in {(0, ADVERTISE), (1, MASKED)}
    outcome = await world.actors.server.run_round(1)
    assert outcome.applied and outcome.reported == (2, 3, 4, 5)
    assert outcome.measurements["secagg_threshold"] == 4
    survivors = 4 * 4 * 0.25
    dropped = 4 * 0.25 + 0.5 + 4 * 1.0
    assert outcome.measurements["secagg_server_compute_s"] == survivors + dropped
