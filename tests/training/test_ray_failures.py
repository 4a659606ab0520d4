"""A Ray worker killed mid-run: its work is re-run on a fresh worker, the result unchanged."""

from __future__ import annotations

import os
import signal

import pytest

from fedactors.scenarios.loader import load_scenario
from fedactors.simulation import RunOptions, run_scenario

SCENARIO = "tests/training/ray_scenario.py"


@pytest.mark.slow
def test_a_killed_worker_does_not_change_the_result() -> None:
    ray = pytest.importorskip("ray", reason="the Ray backend needs ray: pip install 'fedactors[ray]'")
    from fedactors.training.ray_executor import RayExecutor
    from fedactors.training.spec import ModelSpec

    scenario = load_scenario(SCENARIO)
    local = run_scenario(scenario, RunOptions(executor="sequential"))
    holder: dict = {}

    def make(runner):
        from fedactors.seeding import SeedTree

        spec = ModelSpec(scenario.model, scenario.loss, tuple(scenario.metrics))
        holder["ex"] = RayExecutor(spec, scenario.training, SeedTree(scenario.seed).integer("keras"), 2)
        return holder["ex"]

    killed: list[int] = []

    def kill_after_round_one(row: dict) -> None:
        if row["round"] == 1:
            pid = ray.get(holder["ex"].workers[0].pid.remote())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    try:
        remote = run_scenario(scenario, RunOptions(executor="sequential", keep_events=True),
                              on_round=[kill_after_round_one], executor_factory=make)
    finally:
        ray.shutdown()
    assert killed
    assert remote.summary["weights_sha256"] == local.summary["weights_sha256"]
    retries = [e for e in remote.events if e["event"] == "executor.retry"]
    assert retries and retries[0]["worker"] == 0 and retries[0]["actor"] == "executor"
