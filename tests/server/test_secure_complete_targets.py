"""A complete-graph round whose threshold misses the stated targets says so, end to end:
the event, the round's metrics and the run's warnings (found by a new-user trial, where
t = 2 of 20 at max_corrupt 0.3 was reported as meeting its targets)."""

from __future__ import annotations

import pytest

from fedactors.reporting.warnings import run_warnings
from fedactors.secagg.option import SecureAggregation
from fedactors.server.rounds import Rounds
from tests.server.harness import device, events
from tests.server.secure_harness import build_secure_world


def fleet(n: int) -> list:
    return [device(f"d{i}", 1.0 + 0.1 * i) for i in range(n)]


@pytest.mark.asyncio
async def test_a_threshold_that_corrupt_devices_break_is_reported_below_target() -> None:
    option = SecureAggregation.complete(threshold_fraction=0.05, max_corrupt=0.3)
    world = build_secure_world(fleet(20), Rounds(cohort_size=20, deadline=60.0), option)
    outcome = await world.actors.server.run_round(1)
    m = outcome.measurements
    assert m["secagg_threshold"] == 2 and m["secagg_max_degree"] == 19
    assert m["secagg_below_target"] == 1
    assert m["secagg_security_log2"] <= 0  # collusion is not bounded below 1
    (below,) = events(world, "secagg.parameters_below_target")
    assert below["threshold"] == 2 and below["security_log2"] == m["secagg_security_log2"]
    warnings = run_warnings([{"round": 1, **m}], None, None, secure=option.describe())
    assert any("missed the stated targets" in w and "no guarantee" in w for w in warnings)


@pytest.mark.asyncio
async def test_a_threshold_that_meets_the_stated_targets_is_not_reported() -> None:
    # No dropout and no corrupt device assumed: nothing can abort or collude.
    option = SecureAggregation.complete(max_dropout=0.0, max_corrupt=0.0)
    world = build_secure_world(fleet(6), Rounds(cohort_size=6, deadline=60.0), option)
    outcome = await world.actors.server.run_round(1)
    assert outcome.measurements["secagg_below_target"] == 0
    assert not events(world, "secagg.parameters_below_target")
