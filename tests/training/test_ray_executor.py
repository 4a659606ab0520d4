"""The Ray backend trains exactly what the local sequential executor trains, bit for bit."""

from __future__ import annotations

import dataclasses
import time

import pytest

from fedactors.privacy.dp_mean import DPMean
from fedactors.scenarios.loader import load_scenario
from fedactors.server.fedbuff import FedBuff
from fedactors.server.rounds import Rounds
from fedactors.simulation import WALL_CLOCK_KEYS, RunOptions, run_scenario
from fedactors.training.ray_executor import chunk_bounds

SCENARIO = "tests/training/ray_scenario.py"


def test_chunks_are_contiguous_balanced_and_cover_everything() -> None:
    assert chunk_bounds(10, 3) == [(0, 3), (3, 7), (7, 10)]
    assert chunk_bounds(2, 4) == [(0, 1), (1, 2)]
    assert chunk_bounds(5, 1) == [(0, 5)]


def _rows(result) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK_KEYS} for r in result.records]



@pytest.mark.parametrize("address", [None, "ray://head:10001"])
def test_connecting_keeps_rays_own_chatter_off_the_users_terminal(address, monkeypatch) -> None:
    """A run shows only fedactors' own output (README): found from outside, Ray's INFO
    start-up line and a FutureWarning tip printed even with --quiet."""
    import logging
    import sys
    import types
    import warnings

    from fedactors.training import ray_executor

    asked: dict = {}

    def init(**kwargs):
        asked.update(kwargs)
        warnings.warn("Tip: In future versions of Ray, ...", FutureWarning, stacklevel=2)

    fake = types.SimpleNamespace(is_initialized=lambda: False, init=init)
    monkeypatch.setitem(sys.modules, "ray", fake)
    if address:
        monkeypatch.setenv("RAY_ADDRESS", address)
    else:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        ray_executor._connect(2)
    assert not shown
    assert asked["logging_level"] == logging.WARNING and asked["log_to_driver"] is False
    assert asked.get("address") == address

@pytest.mark.slow
def test_ray_backend_is_bit_identical_to_local() -> None:
    pytest.importorskip("ray", reason="the Ray backend needs ray: pip install 'fedactors[ray]'")
    import ray

    sync = load_scenario(SCENARIO)
    asynchronous = dataclasses.replace(sync, mode=FedBuff(buffer_size=4, concurrency=6),
                                       # FedBuff uses only these of Rounds (refuses the rest)
                                       rounds=Rounds(count=sync.rounds.count,
                                                     deadline=sync.rounds.deadline),
                                       # and central noise only (device-added noise would be
                                       # scaled down by the staleness weights)
                                       aggregator=DPMean.fixed(1.0, 0.3, 4))
    try:
        for scenario in (sync, asynchronous):
            t0 = time.perf_counter()
            local = run_scenario(scenario, RunOptions(executor="sequential"))
            t1 = time.perf_counter()
            remote = run_scenario(scenario, RunOptions(backend="ray", ray_workers=2))
            t2 = time.perf_counter()
            print(f"{scenario.mode}: local {t1 - t0:.1f} s, ray {t2 - t1:.1f} s")
            assert remote.summary["weights_sha256"] == local.summary["weights_sha256"]
            assert _rows(remote) == _rows(local)
    finally:
        ray.shutdown()
