"""The tutorial example, done right: the global model learns y = 2x + 1 from two
devices, and nothing the server receives is device data."""

from __future__ import annotations

import numpy as np

from fedactors.messages import Update
from fedactors.scenarios.loader import load_scenario
from fedactors.server.actor import ServerActor
from fedactors.simulation import run_scenario

SCENARIO = "scenarios/linear_regression.py"


def test_global_model_converges_to_kernel_2_and_bias_1(monkeypatch) -> None:
    received: list = []
    original = ServerActor._screen

    def spy(self, message, *args):
        received.append(message)
        return original(self, message, *args)

    monkeypatch.setattr(ServerActor, "_screen", spy)
    result = run_scenario(load_scenario(SCENARIO))
    kernel, bias = result.weights
    assert abs(kernel - 2.0) < 0.01 and abs(bias - 1.0) < 0.01
    assert result.summary["final"]["loss"] < 1e-4

    # Everything the server received: one update per device per round, each a
    # 2-parameter weighted delta and a weight, never the 100 private samples.
    assert len(received) == 2 * 30
    for message in received:
        assert isinstance(message, Update)
        sizes = {k: np.asarray(v).size for k, v in message.contribution.items()}
        assert sizes == {"weighted_delta": 2, "weight": 1}
