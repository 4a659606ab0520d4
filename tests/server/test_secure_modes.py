"""``mode="modeled"`` against ``mode="real"``: the same rounds, to the bit and the nanosecond.

Modeled mode skips the cryptography but must keep everything else: who is in
the sum and the sum itself, which rounds abort and why, every metric, every
byte on the simulated network and every simulated instant (the cost model
charges both modes from the same counts). Each test runs one world per mode
with the same seed and compares everything observable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from fedactors.devices.profile import DeviceClass, NetworkProfile
from fedactors.privacy.dp_mean import DPMean
from fedactors.runtime import loop as virtual_time
from fedactors.scenarios.loader import load_scenario
from fedactors.secagg.envelopes import ADVERTISE, MASKED, SHARE, SIGN, UNMASK
from fedactors.secagg.option import SecureAggregation
from fedactors.server.rounds import Rounds
from fedactors.simulation import WALL_CLOCK_KEYS, RunOptions, run_scenario
from tests.server.secure_harness import Recording, build_secure_world, clipped_mean

ROOT = Path(__file__).resolve().parents[2]
NEAREST = dict(stochastic_rounding=False)
SMALL_SPARSE = dict(max_dropout=0.2, max_corrupt=0.05, failure_log2=4, security_log2=8)
# A network with real latency and bandwidth, so message sizes show in the instants.
PHONE_LINK = NetworkProfile(rtt=0.08, uplink=2e6, downlink=20e6)


def fleet(n: int) -> list[DeviceClass]:
    # Devices of different speeds: crypto time differs per device, as on a real fleet.
    return [DeviceClass(f"d{i}", count=1, compute=100.0 * (i + 1), network=PHONE_LINK,
                        examples=100) for i in range(n)]


PATTERNS: Mapping[str, Mapping[tuple[int, int], str]] = {
    "nobody-drops": {},
    "one-at-every-step": {(1, 0): ADVERTISE, (1, 1): SHARE, (1, 2): MASKED, (1, 3): UNMASK,
                          (2, 4): SHARE, (2, 5): UNMASK},
    # Round 1 aborts: too few masked inputs around some device; round 2 then goes on.
    "abort-then-recover": {(1, 0): MASKED, (1, 1): MASKED, (1, 2): MASKED, (1, 3): MASKED,
                           (1, 4): MASKED, (1, 5): MASKED},
    "abort-at-unmasking": {(1, d): UNMASK for d in range(7)},
    # Eight masked inputs in round 1, nine in round 2.
    "two-then-one-before-masking": {(1, 0): MASKED, (1, 1): MASKED, (2, 2): MASKED},
    # Malicious-server mode: silent before signing its view, or after.
    "drops-around-the-consistency-check": {(1, 0): SIGN, (1, 1): UNMASK, (2, 2): SIGN},
}


def drop_pattern(world, pattern: Mapping[tuple[int, int], str]) -> None:
    participants = world.actors.directory.world.secagg
    participants.goes_silent = lambda d, r, step: pattern.get((r, d)) == step


async def run_world(mode: str, graph: str, pattern: str, rounds: int = 2,
                    server: str = "honest-but-curious", n: int = 10,
                    assumptions: Mapping = SMALL_SPARSE, stage=None) -> dict:
    agg = Recording(clipped_mean(5.0) if stage is None else stage)
    option = SecureAggregation(graph=graph, mode=mode, step_timeout=3.0, server=server,
                               **NEAREST, **assumptions)
    world = build_secure_world(fleet(n), Rounds(cohort_size=n, deadline=30.0), option, agg,
                               crypto_time=True)
    drop_pattern(world, PATTERNS[pattern])
    server = world.actors.server
    outcomes = [await server.run_round(r) for r in range(1, rounds + 1)]
    network = world.actors.network
    return {
        "outcomes": [dataclasses.replace(
            o, measurements={k: v for k, v in o.measurements.items()
                             if k not in WALL_CLOCK_KEYS}) for o in outcomes],
        "sums": [{k: v.tobytes() for k, v in c.sum().items()} for c in agg.seen],
        "weights": server.state.weights.tobytes(),
        "events": world.log.records,
        "bytes": (network.bytes_up, network.bytes_down),
    }


CASES = [(graph, pattern, "honest-but-curious") for graph in ("complete", "sparse")
         for pattern in PATTERNS if pattern not in ("drops-around-the-consistency-check",
                                                    "two-then-one-before-masking")]
CASES += [("complete", pattern, "malicious") for pattern in
          ("nobody-drops", "drops-around-the-consistency-check", "abort-at-unmasking")]


@pytest.mark.parametrize("graph, pattern, server", CASES,
                         ids=[f"{g}-{p}-{s.split('-')[0]}" for g, p, s in CASES])
def test_modeled_mode_matches_real_mode_in_everything_observable(graph: str, pattern: str,
                                                                 server: str) -> None:
    # Each world on its own virtual clock from 0, as a run has.
    real = virtual_time.run(run_world("real", graph, pattern, server=server))
    modeled = virtual_time.run(run_world("modeled", graph, pattern, server=server))
    # The scenario does what its name says, so the comparison covers that path.
    aborted = [o.measurements["secagg_aborted"] for o in real["outcomes"]]
    assert aborted == ([1, 0] if pattern.startswith("abort") else [0, 0])
    for key in ("outcomes", "sums", "weights", "bytes"):
        assert modeled[key] == real[key], key
    assert len(modeled["events"]) == len(real["events"])
    for got, want in zip(modeled["events"], real["events"]):
        assert got == want
    # The protocol's compute took simulated time: the comparison is not of zeros.
    # (Unmasking only picks shares: its price is zero unless views are checked.)
    sent = [e for e in real["events"] if e["event"] == "secagg.sent"
            and (e["step"] != UNMASK or server == "malicious")]
    assert sent and all(e["compute_s"] > 0 for e in sent)
    steps = {e["step"] for e in real["events"] if e["event"] == "secagg.received"}
    assert (SIGN in steps) == (server == "malicious")
    done = [o for o in real["outcomes"] if o.measurements["secagg_aborted"] == 0]
    assert all(o.measurements["secagg_server_compute_s"] > 0 for o in done)


def test_a_sparse_malicious_round_forwards_the_same_views_in_both_modes() -> None:
    # 24 devices under mild assumptions: a sparse graph (k = 8, t = 6) even for a malicious
    # server, so each signer gets the views of its two-hop neighbourhood, not everyone's.
    mild = dict(max_dropout=0.05, max_corrupt=0.01, failure_log2=4, security_log2=8)
    runs = [virtual_time.run(run_world(mode, "sparse", "drops-around-the-consistency-check",
                                       server="malicious", n=24, assumptions=mild))
            for mode in ("real", "modeled")]
    for key in ("outcomes", "sums", "weights", "bytes", "events"):
        assert runs[1][key] == runs[0][key], key
    degree = runs[0]["outcomes"][0].measurements["secagg_max_degree"]
    assert degree < 23  # sparse indeed


def _with_mode(mode: str, **changes):
    base = load_scenario(ROOT / "scenarios/smart_home_secure.py")
    option = dataclasses.replace(base.secure_aggregation, mode=mode, **changes)
    return dataclasses.replace(base, secure_aggregation=option)


@pytest.mark.slow
@pytest.mark.parametrize("changes", [dict(step_dropout=0.05),
                                     dict(graph="sparse", step_dropout=0.03, **SMALL_SPARSE)],
                         ids=["complete", "sparse"])
def test_a_shipped_scenario_runs_the_same_in_both_modes(changes: dict) -> None:
    # smart_home_secure with real training: thermostats and plugs are slow at crypto too.
    runs = {mode: run_scenario(_with_mode(mode, **changes),
                               RunOptions(rounds=5, keep_events=True, checkpoint=False))
            for mode in ("real", "modeled")}
    real, modeled = runs["real"], runs["modeled"]
    strip = [[{k: v for k, v in row.items() if k not in WALL_CLOCK_KEYS} for row in run.records]
             for run in (real, modeled)]
    assert strip[0] == strip[1]
    assert real.summary["weights_sha256"] == modeled.summary["weights_sha256"]
    assert np.array_equal(real.weights, modeled.weights)
    assert real.events == modeled.events
    assert any(row["secagg_survivors"] for row in real.records)
    # Only the summary says which mode ran, and the modeled one says what it did not prove.
    assert (real.summary["secure_aggregation"]["mode"],
            modeled.summary["secure_aggregation"]["mode"]) == ("real", "modeled")
    assert [w for w in modeled.summary["warnings"] if w not in real.summary["warnings"]] == [
        f"secure aggregation ran modeled: {modeled.summary['secure_aggregation']['proves']}"]


@pytest.mark.parametrize("graph", ["complete", "sparse"])
def test_a_sum_of_fewer_noise_shares_than_min_survivors_is_never_unmasked(graph: str) -> None:
    # Distributed noise sized for 9 shares: round 1 keeps 8 masked inputs, which every
    # neighbourhood could still unmask (t is lower), so only the floor stops it.
    stage = DPMean.fixed(5.0, 1.0, 10, distributed_noise=True, min_survivors=9)
    real, modeled = (virtual_time.run(run_world(mode, graph, "two-then-one-before-masking",
                                                stage=stage)) for mode in ("real", "modeled"))
    assert [o.measurements["secagg_aborted"] for o in real["outcomes"]] == [1, 0]
    reasons = [e["reason"] for e in real["events"] if e["event"] == "secagg.aborted"]
    assert len(reasons) == 1 and "min_survivors is 9" in reasons[0]
    done = [e for e in real["events"] if e["event"] == "secagg.done"]
    assert [e["survivors"] for e in done] == [9]
    for key in ("outcomes", "sums", "weights", "bytes", "events"):
        assert modeled[key] == real[key], key
