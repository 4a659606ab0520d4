"""Edges of the ledger and the budget search (found by mutation testing)."""

from __future__ import annotations

import dp_accounting
import pytest

from fedactors.errors import ConfigError
from fedactors.privacy import accounting
from fedactors.privacy.accounting import PrivacyLedger, rounds_within_budget
from fedactors.privacy.dp_mean import DPMean

N, M, DELTA = 5_000, 100, 1e-5
NR = dp_accounting.NeighboringRelation


def test_an_old_checkpoint_with_zero_rounds_loads_as_an_empty_ledger() -> None:
    fresh = PrivacyLedger(N, M, 1.1)
    old = PrivacyLedger.__new__(PrivacyLedger)
    old.__setstate__({"population": N, "cohort_size": M, "noise_multiplier": 1.1,
                      "sampling": "fixed_size", "method": "best", "rounds": 0})
    assert old == fresh and hash(old) == hash(fresh)
    assert old.rounds == 0 and old.epsilon(DELTA) == 0.0


def test_for_dp_mean_defaults_to_fixed_size_sampling_and_the_best_bound() -> None:
    dp = DPMean.fixed(1.0, 1.1, M)
    ledger = PrivacyLedger.for_dp_mean(dp, N)
    assert (ledger.sampling, ledger.method) == ("fixed_size", "best")
    assert ledger.cohort_size == M and ledger.population == N


def test_the_search_refuses_bad_arguments_by_name() -> None:
    ledger = PrivacyLedger(N, M, 2.0)
    with pytest.raises(ConfigError, match="target_epsilon"):
        rounds_within_budget(ledger, 0.0, DELTA)
    with pytest.raises(ConfigError, match="max_rounds"):
        rounds_within_budget(ledger, 1.0, DELTA, max_rounds=-1)


def test_the_search_is_capped_at_100_000_releases_by_default() -> None:
    ledger = PrivacyLedger(N, M, 50.0, "fixed_size", "rdp")
    assert rounds_within_budget(ledger, 1e6, DELTA) == 100_000


@pytest.mark.parametrize("sampling, method", [("fixed_size", "rdp"), ("poisson", "rdp"),
                                              ("poisson", "pld"), ("poisson", "best")])
def test_a_target_equal_to_the_epsilon_of_n_releases_allows_exactly_n(sampling, method) -> None:
    base = PrivacyLedger(N, M, 2.0, sampling, method)
    n = 9
    target = base.compose(n).epsilon(DELTA)
    assert rounds_within_budget(base, target, DELTA, max_rounds=64) == n


def test_pld_search_returns_zero_when_not_even_one_release_fits() -> None:
    ledger = PrivacyLedger(N, M, 2.0, "poisson", "pld")
    assert ledger.compose(1).epsilon(DELTA) > 1e-6
    assert rounds_within_budget(ledger, 1e-6, DELTA, max_rounds=64) == 0


def test_only_fixed_size_sampling_uses_replace_one_neighbours() -> None:
    rel = accounting.neighboring_relation
    assert rel("fixed_size") == NR.REPLACE_ONE
    assert rel("poisson") == NR.ADD_OR_REMOVE_ONE
    assert rel("none") == NR.ADD_OR_REMOVE_ONE


def test_epsilon_refuses_a_bad_delta_by_name() -> None:
    ledger = PrivacyLedger(N, M, 2.0, "poisson").compose(3)
    for bad in (-0.1, 1.5):
        with pytest.raises(ConfigError) as err:
            ledger.epsilon(bad)
        assert err.value.field == "delta"


def test_best_takes_the_rdp_bound_where_it_is_the_tighter_one(monkeypatch) -> None:
    ledger = PrivacyLedger(N, M, 2.0, "poisson", "best").compose(3)
    rdp = ledger.epsilon_rdp(DELTA)
    monkeypatch.setattr(accounting, "_epsilon_pld", lambda s, n, m, releases, d: rdp + 1.0)
    assert ledger.epsilon(DELTA) == rdp
    pld_only = PrivacyLedger(N, M, 2.0, "poisson", "pld").compose(3)
    assert pld_only.epsilon(DELTA) == rdp + 1.0


def test_pld_search_does_not_start_from_the_rdp_bound(monkeypatch) -> None:
    # With method="pld" epsilon is PLD alone, which may exceed the RDP bound: the RDP answer
    # is then no lower bound, and the search must start from zero.
    monkeypatch.setattr(accounting, "_epsilon_pld", lambda s, n, m, releases, d: 1e3)
    ledger = PrivacyLedger(N, M, 2.0, "poisson", "pld")
    assert ledger.compose(5).epsilon_rdp(DELTA) < 5.0
    assert rounds_within_budget(ledger, 5.0, DELTA, max_rounds=64) == 0
