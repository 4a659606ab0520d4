"""Server optimizers: FedAvg's step and the adaptive ones of Reddi et al. 2021."""

from __future__ import annotations

import numpy as np
import pytest

from fedactors.errors import ConfigError
from fedactors.server.optimizers import FedAdam, FedAvgStep, FedYogi

W = np.array([1.0, -2.0, 0.5], np.float32)
D = np.array([0.2, 0.0, -0.4], np.float32)


def test_fedavg_step_adds_the_scaled_delta_and_keeps_no_state() -> None:
    new, state = FedAvgStep().apply(None, W, D)
    np.testing.assert_array_equal(new, W + D)
    new, _ = FedAvgStep(learning_rate=0.5).apply(state, W, D)
    np.testing.assert_allclose(new, W + 0.5 * D)


@pytest.mark.parametrize("opt", [FedAdam(learning_rate=0.1), FedYogi(learning_rate=0.1)])
def test_first_adaptive_step_matches_the_formula(opt) -> None:
    state = opt.init(W)
    new, after = opt.apply(state, W, D)
    m = (1 - opt.beta1) * D
    g2 = D * D
    v0 = np.full_like(W, opt.tau**2)
    v = (opt.beta2 * v0 + (1 - opt.beta2) * g2 if isinstance(opt, FedAdam)
         else v0 - (1 - opt.beta2) * g2 * np.sign(v0 - g2))
    np.testing.assert_allclose(after.m, m, rtol=1e-6)
    np.testing.assert_allclose(after.v, v, rtol=1e-6)
    np.testing.assert_allclose(new, W + 0.1 * m / (np.sqrt(v) + opt.tau), rtol=1e-5)
    # Inputs are never modified: the state is returned anew.
    np.testing.assert_array_equal(state.m, np.zeros(3))
    assert new.dtype == np.float32


def test_yogi_forgets_a_burst_more_slowly_than_adam() -> None:
    # After large deltas, small ones: Adam's v decays by a factor beta2 per
    # round, Yogi's by at most (1 - beta2) * g² — the stability Yogi is for.
    adam, yogi = FedAdam(learning_rate=0.1), FedYogi(learning_rate=0.1)
    big, small = np.full(3, 10.0, np.float32), np.full(3, 0.01, np.float32)
    sa, sy = adam.init(W), yogi.init(W)
    for delta in [big] * 3 + [small] * 20:
        _, sa = adam.apply(sa, W, delta)
        before = sy.v
        _, sy = yogi.apply(sy, W, delta)
        assert np.all(np.abs(sy.v - before) <= (1 - yogi.beta2) * delta**2 * (1 + 1e-5))
    assert np.all(sy.v > sa.v)


@pytest.mark.parametrize(("make", "field"), [
    (lambda: FedAvgStep(learning_rate=0), "learning_rate"),
    (lambda: FedAdam(beta1=1.5), "beta1"),
    (lambda: FedYogi(tau=-1), "tau"),
])
def test_bad_hyperparameters_name_their_field(make, field) -> None:
    with pytest.raises(ConfigError, match=field):
        make()
