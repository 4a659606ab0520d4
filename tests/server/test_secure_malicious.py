"""Malicious-server mode between the actors: a consistency check round, and a lie detected."""

from __future__ import annotations

import numpy as np
import pytest

from fedactors.aggregation.base import SummedContributions
from fedactors.secagg import server as secagg_server
from fedactors.secagg.costs import CryptoCosts
from fedactors.secagg.envelopes import SIGN, UNMASK
from fedactors.secagg.messages import ConsistencyRequest, SignedView, UnmaskRequest
from fedactors.secagg.option import SecureAggregation
from fedactors.server.rounds import Rounds
from tests.server.harness import events
from tests.server.secure_harness import (
    Recording,
    build_secure_world,
    clipped_mean,
    patch_protocol,
)
from tests.server.test_secure_rounds import capture_layouts, expected_sum, fleet

MALICIOUS = SecureAggregation.complete(server="malicious", stochastic_rounding=False,
                                       max_dropout=0.05, max_corrupt=0.05, failure_log2=4,
                                       security_log2=4)


@pytest.mark.asyncio
async def test_an_honest_round_adds_a_signed_consistency_check_and_sums_exactly() -> None:
    agg = Recording(clipped_mean())
    world = build_secure_world(fleet(8), Rounds(cohort_size=8, deadline=30.0), MALICIOUS, agg)
    setups = capture_layouts(world)
    outcome = await world.actors.server.run_round(1)
    assert outcome.applied and outcome.reported == tuple(range(8))
    config = setups[0].config
    assert config.malicious and len(config.verification_keys) == 8
    # A majority threshold, as the equivocation bound needs: 2t > k + 1.
    assert 2 * config.graph.thresholds[1] > config.graph.max_degree() + 1
    (contributions,) = agg.seen
    assert isinstance(contributions, SummedContributions)
    got, want = contributions.sum(), expected_sum(world, setups[0].layout, range(8))
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])
    steps = [e["step"] for e in events(world, "secagg.received")]
    assert steps.count(SIGN) == 8 and steps.index(SIGN) < steps.index(UNMASK)


@pytest.mark.asyncio
async def test_checking_the_forwarded_views_costs_each_device_simulated_time() -> None:
    costs = CryptoCosts(sign=0.5, verify=0.25, reference_compute=100.0)
    option = SecureAggregation.complete(server="malicious", stochastic_rounding=False,
                                        max_dropout=0.05, max_corrupt=0.05, failure_log2=4,
                                        security_log2=4, costs=costs)
    world = build_secure_world(fleet(6), Rounds(cohort_size=6, deadline=30.0), option,
                               crypto_time=True)
    outcome = await world.actors.server.run_round(1)
    assert outcome.applied
    sent = {(e["actor"], e["step"]): e["compute_s"] for e in events(world, "secagg.sent")}
    # Device 0 trains in 1 s (compute 100 = the reference): one signature, then the six
    # views of its complete graph checked before it unmasks.
    assert sent[("device-0", SIGN)] == 0.5
    assert sent[("device-0", UNMASK)] == 6 * 0.25
    # The server checked every view it was sent before forwarding any.
    assert outcome.measurements["secagg_server_compute_s"] == 6 * 0.25


def split(victim: int, told_dropped: set[int]):
    """A server lying between the actors: it tells ``told_dropped`` that ``victim`` dropped
    and the others that it is alive, then forwards every view it got."""
    honest_masked, honest_views = secagg_server.collect_masked, secagg_server.collect_views

    def collect_masked(state, msgs):
        state, replies = honest_masked(state, msgs)
        return state, {v: (ConsistencyRequest(v, tuple(x for x in r.alive if x != victim),
                                              tuple(sorted(r.dropped + (victim,))))
                           if v in told_dropped else r) for v, r in replies.items()}

    def collect_views(state, msgs):
        honest_views(state, msgs)  # moves the state on; its refusals are ignored
        views = {m.sender: m for m in msgs if isinstance(m, SignedView)}
        state = state.__class__(**{**state.__dict__, "phase": "unmask",
                                   "u4": frozenset(views)})
        return state, {v: UnmaskRequest(v, view.alive, view.dropped, views)
                       for v, view in views.items()}

    return dict(collect_masked=collect_masked, collect_views=collect_views)


@pytest.mark.asyncio
async def test_a_server_telling_holders_different_stories_gets_no_share_at_all(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Protocol id 7 (device 6) is "alive" to 1, 2, 3, 7 and "dropped" to 4, 5, 6 (ids).
    patch_protocol(monkeypatch, **split(7, {4, 5, 6}))
    world = build_secure_world(fleet(7), Rounds(cohort_size=7, deadline=30.0), MALICIOUS)
    outcome = await world.actors.server.run_round(1)
    assert not outcome.applied
    aborts = events(world, "secagg.device_abort")
    assert {a["actor"] for a in aborts} == {f"device-{d}" for d in range(7)}
    assert all(a["step"] == UNMASK and "inconsistent views: device 7" in a["reason"]
               for a in aborts)
    # Nobody unmasked: the server holds no share of anyone, let alone both kinds.
    assert not [e for e in events(world, "secagg.received") if e["step"] == UNMASK]
