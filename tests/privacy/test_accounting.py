from __future__ import annotations

import dp_accounting
import pytest
from dp_accounting import pld, rdp

from fedactors.errors import ConfigError
from fedactors.privacy.accounting import PrivacyLedger, rounds_within_budget
from fedactors.privacy.dp_mean import DPMean

N, M, Z, DELTA = 5_000, 100, 1.1, 1e-5


def test_fixed_size_epsilon_matches_dp_accounting() -> None:
    ledger = PrivacyLedger(N, M, Z, "fixed_size").compose(30)
    # Independent: RDP, sampling without replacement, replace-one neighbours,
    # sensitivity 2C so the noise multiplier is Z/2.
    acc = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    acc.compose(dp_accounting.SampledWithoutReplacementDpEvent(
        N, M, dp_accounting.GaussianDpEvent(Z / 2)), 30)
    assert ledger.epsilon(DELTA) == pytest.approx(acc.get_epsilon(DELTA), rel=1e-12)


def test_poisson_epsilon_is_min_of_rdp_and_pld() -> None:
    event = dp_accounting.PoissonSampledDpEvent(M / N, dp_accounting.GaussianDpEvent(Z))
    r = rdp.RdpAccountant()
    r.compose(event, 200)
    p = pld.PLDAccountant(value_discretization_interval=1e-3)
    p.compose(event, 200)
    eps_rdp, eps_pld = r.get_epsilon(DELTA), p.get_epsilon(DELTA)
    ledger = PrivacyLedger(N, M, Z, "poisson").compose(200)
    assert ledger.epsilon(DELTA) == pytest.approx(min(eps_rdp, eps_pld), rel=1e-12)
    assert eps_pld < eps_rdp  # PLD is the tighter one here
    rdp_only = PrivacyLedger(N, M, Z, "poisson", method="rdp").compose(200)
    assert rdp_only.epsilon(DELTA) == pytest.approx(eps_rdp, rel=1e-12)


def test_adaptive_clipping_accounts_both_gaussians() -> None:
    agg = DPMean.adaptive_clipping(1.0, Z, M)  # count noise std M/20
    ledger = PrivacyLedger.for_dp_mean(agg, N, "poisson", method="rdp").compose(50)
    # Independent: dp-accounting composes the query's two Gaussians itself.
    acc = rdp.RdpAccountant()
    acc.compose(dp_accounting.PoissonSampledDpEvent(M / N, agg.dp_event()), 50)
    assert ledger.epsilon(DELTA) == pytest.approx(acc.get_epsilon(DELTA), rel=1e-9)
    assert ledger.noise_multiplier == pytest.approx((Z**-2 + (2 * M / 20) ** -2) ** -0.5)


def test_ledger_is_immutable_and_composes() -> None:
    a = PrivacyLedger(N, M, Z)
    b = a.compose(3).compose(2)
    assert (a.rounds, b.rounds) == (0, 5) and a.epsilon(DELTA) == 0.0
    assert b.epsilon(DELTA) == PrivacyLedger(N, M, Z, rounds=5).epsilon(DELTA)
    assert PrivacyLedger(N, M, 0.0, rounds=1).epsilon(DELTA) == float("inf")


@pytest.mark.parametrize("sampling, target", [("poisson", 0.3), ("fixed_size", 2.0)])
def test_budget_stop_fires_at_the_right_round(sampling: str, target: float) -> None:
    ledger = PrivacyLedger(N, M, 2.0, sampling)
    n = rounds_within_budget(ledger, target, DELTA, max_rounds=128)
    assert 0 < n < 128
    assert ledger.compose(n).epsilon(DELTA) <= target < ledger.compose(n + 1).epsilon(DELTA)
    # The server's per-round check says "stop" exactly after n rounds.
    assert not ledger.compose(n - 1).would_exceed(target, DELTA)
    assert ledger.compose(n).would_exceed(target, DELTA)


def test_bad_ledger_config() -> None:
    with pytest.raises(ConfigError, match="cohort_size"):
        PrivacyLedger(10, 11, 1.0)
    with pytest.raises(ConfigError, match="sampling.*'uniform'"):
        PrivacyLedger(10, 5, 1.0, "uniform")
    with pytest.raises(ConfigError, match="method"):
        PrivacyLedger(10, 5, 1.0, "fixed_size", method="pld")
