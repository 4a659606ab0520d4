from __future__ import annotations

import dataclasses
import math
import pickle

import dp_accounting
import numpy as np
import pytest
from dp_accounting import pld, rdp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from fedactors.errors import ConfigError
from fedactors.privacy import accounting
from fedactors.privacy.accounting import PrivacyLedger, rounds_within_budget
from fedactors.privacy.dp_mean import DPMean

N, M, Z, DELTA = 5_000, 100, 1.1, 1e-5
NR = dp_accounting.NeighboringRelation
HOMOGENEOUS = ((Z, 30),)
HETEROGENEOUS = ((1.0, 3), (2.0, 2))


# -- independent references: fresh dp-accounting accountants, as before the cache


def reference_event(sampling: str, z: float) -> dp_accounting.DpEvent:
    """Written out here, not taken from the module, so a wrong event there is caught."""
    gaussian = dp_accounting.GaussianDpEvent
    if sampling == "fixed_size":
        # Replace-one neighbours: sensitivity 2C, so the multiplier is z/2.
        return dp_accounting.SampledWithoutReplacementDpEvent(N, M, gaussian(z / 2))
    if sampling == "poisson":
        return dp_accounting.PoissonSampledDpEvent(M / N, gaussian(z))
    return gaussian(z)


def reference_rdp(sampling: str, releases, delta: float = DELTA) -> float:
    relation = NR.REPLACE_ONE if sampling == "fixed_size" else NR.ADD_OR_REMOVE_ONE
    acc = rdp.RdpAccountant(neighboring_relation=relation)
    for z, n in releases:
        acc.compose(reference_event(sampling, z), n)
    return acc.get_epsilon(delta)


def reference_pld(sampling: str, releases, delta: float = DELTA) -> float:
    acc = pld.PLDAccountant(value_discretization_interval=accounting.PLD_DISCRETIZATION)
    for z, n in releases:
        acc.compose(reference_event(sampling, z), n)
    return acc.get_epsilon(delta)


def ledger_with(sampling: str, releases, method: str = "best") -> PrivacyLedger:
    ledger = PrivacyLedger(N, M, Z, sampling, method)
    for z, n in releases:
        ledger = ledger.compose(n, noise_multiplier=z)
    return ledger


def analytic_gaussian_epsilon(z: float, delta: float) -> float:
    """Exact epsilon of one Gaussian mechanism (Balle & Wang 2018), by bisection."""
    mu = 1.0 / z

    def delta_at(eps: float) -> float:
        return norm.cdf(mu / 2 - eps / mu) - math.exp(eps) * norm.cdf(-mu / 2 - eps / mu)

    lo, hi = 0.0, 100.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if delta_at(mid) <= delta else (mid, hi)
    return hi


# -- the cheap RDP path equals dp-accounting's RdpAccountant ------------------


@pytest.mark.parametrize("releases", [HOMOGENEOUS, HETEROGENEOUS], ids=["homogeneous", "heterogeneous"])
@pytest.mark.parametrize("sampling", ["fixed_size", "poisson", "none"])
def test_cached_rdp_equals_a_fresh_rdp_accountant(sampling: str, releases) -> None:
    ledger = ledger_with(sampling, releases)
    assert ledger.epsilon_rdp(DELTA) == pytest.approx(reference_rdp(sampling, releases), rel=1e-9)


def test_fixed_size_epsilon_is_the_rdp_bound() -> None:
    ledger = ledger_with("fixed_size", HETEROGENEOUS)
    assert ledger.epsilon(DELTA) == pytest.approx(reference_rdp("fixed_size", HETEROGENEOUS), rel=1e-9)


def test_heterogeneous_releases_compose_as_separate_events() -> None:
    # 3 releases at z=1 and 2 at z=2 are neither 5 at z=1 nor 5 at z=2.
    mixed = ledger_with("poisson", HETEROGENEOUS).epsilon_rdp(DELTA)
    assert ledger_with("poisson", ((2.0, 5),)).epsilon_rdp(DELTA) < mixed
    assert mixed < ledger_with("poisson", ((1.0, 5),)).epsilon_rdp(DELTA)


def test_dp_accounting_machinery_is_still_there() -> None:
    # The cheap path relies on these (see accounting.py); fail loudly if they move.
    assert callable(rdp.compute_epsilon)
    acc = rdp.RdpAccountant()
    np.testing.assert_array_equal(accounting.RDP_ORDERS, acc.orders)
    acc.compose(reference_event("poisson", Z), 7)
    assert rdp.compute_epsilon(acc.orders, acc.rdp, DELTA)[0] == acc.get_epsilon(DELTA)
    cached = accounting.release_rdp("poisson", N, M, Z)
    np.testing.assert_allclose(7 * cached, acc.rdp, rtol=1e-12)
    with pytest.raises(ValueError):
        cached[0] = 0.0  # the cache's vectors are shared: read-only


# -- the exact bound ----------------------------------------------------------


@pytest.mark.parametrize("releases", [((Z, 200),), HETEROGENEOUS], ids=["homogeneous", "heterogeneous"])
def test_poisson_best_is_min_of_rdp_and_pld(releases) -> None:
    eps_rdp, eps_pld = reference_rdp("poisson", releases), reference_pld("poisson", releases)
    assert ledger_with("poisson", releases).epsilon(DELTA) == pytest.approx(min(eps_rdp, eps_pld), rel=1e-9)
    assert ledger_with("poisson", releases, "pld").epsilon(DELTA) == pytest.approx(eps_pld, rel=1e-9)
    assert ledger_with("poisson", releases, "rdp").epsilon(DELTA) == pytest.approx(eps_rdp, rel=1e-9)


def test_poisson_pld_is_the_tighter_bound_at_200_rounds() -> None:
    ledger = ledger_with("poisson", ((Z, 200),))
    assert ledger.epsilon(DELTA) < ledger.epsilon_rdp(DELTA)


def test_none_is_a_plain_composed_gaussian() -> None:
    releases = ((4.0, 10),)
    best = ledger_with("none", releases).epsilon(DELTA)
    assert best == pytest.approx(
        min(reference_rdp("none", releases), reference_pld("none", releases)), rel=1e-9
    )
    # And that is the Gaussian mechanism with z / sqrt(10), no amplification.
    exact = analytic_gaussian_epsilon(4.0 / math.sqrt(10), DELTA)
    assert exact <= best <= exact * 1.01


def test_none_heterogeneous_pld_is_one_gaussian_at_z_eff() -> None:
    releases = ((3.0, 4), (6.0, 8))
    ledger = ledger_with("none", releases, "pld")
    z_eff = (4 / 3.0**2 + 8 / 6.0**2) ** -0.5
    exact = analytic_gaussian_epsilon(z_eff, DELTA)
    assert exact <= ledger.epsilon(DELTA) <= exact * 1.01
    # Convolving the two discretized PLDs is a valid but looser bound.
    assert ledger.epsilon(DELTA) <= reference_pld("none", releases) * (1 + 1e-9)


def test_no_releases_and_no_noise() -> None:
    for sampling in accounting.SAMPLINGS:
        ledger = PrivacyLedger(N, M, Z, sampling)
        assert ledger.epsilon(DELTA) == ledger.epsilon_rdp(DELTA) == 0.0
        noiseless = ledger.compose(5).compose(1, noise_multiplier=0.0)
        assert noiseless.epsilon(DELTA) == noiseless.epsilon_rdp(DELTA) == math.inf
    assert PrivacyLedger(N, M, 0.0).compose(1).epsilon(DELTA) == math.inf


def test_tiny_sampling_rate_rounding_does_not_raise() -> None:
    # The library's RDP here has an entry of -2.6e-16: RdpAccountant.get_epsilon raises.
    ledger = PrivacyLedger(10**6, 1, 100.0, "poisson").compose(1)
    assert 0.0 <= ledger.epsilon_rdp(DELTA) < 0.1


def test_adaptive_clipping_accounts_both_gaussians() -> None:
    agg = DPMean.adaptive_clipping(1.0, Z, M)  # count noise std M/20
    ledger = PrivacyLedger.for_dp_mean(agg, N, "poisson", method="rdp").compose(50)
    # Independent: dp-accounting composes the query's two Gaussians itself.
    acc = rdp.RdpAccountant()
    acc.compose(dp_accounting.PoissonSampledDpEvent(M / N, agg.dp_event()), 50)
    assert ledger.epsilon(DELTA) == pytest.approx(acc.get_epsilon(DELTA), rel=1e-9)
    assert ledger.noise_multiplier == pytest.approx((Z**-2 + (2 * M / 20) ** -2) ** -0.5)


# -- monotonicity ---------------------------------------------------------------

ZS = (0.8, 1.0, 1.5, 3.0)  # few distinct values: each costs one cached RDP vector


@settings(max_examples=60, deadline=None)
@given(
    sampling=st.sampled_from(accounting.SAMPLINGS),
    history=st.lists(st.tuples(st.sampled_from(ZS), st.integers(1, 300)), max_size=3),
    extra=st.integers(1, 300),
    pair=st.lists(st.sampled_from(ZS), min_size=2, max_size=2, unique=True),
)
def test_epsilon_rdp_grows_with_releases_and_falls_with_noise(sampling, history, extra, pair) -> None:
    ledger = ledger_with(sampling, history)
    lo_z, hi_z = sorted(pair)
    before = ledger.epsilon_rdp(DELTA)
    more_noise = ledger.compose(extra, hi_z).epsilon_rdp(DELTA)
    less_noise = ledger.compose(extra, lo_z).epsilon_rdp(DELTA)
    assert before <= more_noise < less_noise


@pytest.mark.parametrize("sampling", ["poisson", "none"])
def test_exact_epsilon_grows_with_releases_and_falls_with_noise(sampling: str) -> None:
    base = PrivacyLedger(N, M, 3.0, sampling).compose(10)
    eps = [base.compose(n).epsilon(DELTA) for n in (0, 5, 20)]
    assert eps == sorted(eps) and eps[0] < eps[-1]
    by_z = [base.compose(5, z).epsilon(DELTA) for z in (2.0, 3.0, 5.0)]
    assert by_z == sorted(by_z, reverse=True) and by_z[0] > by_z[-1]


# -- the stop check -----------------------------------------------------------


@pytest.mark.parametrize("method", ["best", "pld"])
@pytest.mark.parametrize("sampling", ["poisson", "none"])
def test_would_exceed_agrees_with_the_exact_comparison(sampling: str, method: str) -> None:
    ledger = PrivacyLedger(N, M, 2.0, sampling, method).compose(40, 3.0)
    nxt = ledger.compose(1)
    eps, eps_rdp = nxt.epsilon(DELTA), nxt.epsilon_rdp(DELTA)
    between = (min(eps, eps_rdp) + max(eps, eps_rdp)) / 2
    for target in (eps * (1 - 1e-9), eps, eps * (1 + 1e-9), eps_rdp, between, eps / 2, eps_rdp * 2):
        assert ledger.would_exceed(target, DELTA) == (eps > target), target
    assert ledger.would_exceed(eps, DELTA, noise_multiplier=1.0)  # a noisier release fits less
    assert not ledger.would_exceed(eps, DELTA, noise_multiplier=4.0)


def test_would_exceed_skips_pld_when_rdp_suffices() -> None:
    ledger = PrivacyLedger(N, M, 1.7, "poisson").compose(123)
    target = ledger.compose(1).epsilon_rdp(DELTA)  # at the bound: RDP alone says "fits"
    before = accounting._epsilon_pld.cache_info()
    assert not ledger.would_exceed(target, DELTA)
    after = accounting._epsilon_pld.cache_info()
    assert (after.hits, after.misses) == (before.hits, before.misses)


def test_would_exceed_with_pld_only_never_trusts_rdp(monkeypatch: pytest.MonkeyPatch) -> None:
    # The pessimistic PLD bound could in principle exceed RDP (not seen in
    # practice); with method="pld" the RDP shortcut would then answer wrongly.
    monkeypatch.setattr(accounting, "_epsilon_pld", lambda s, n, m, releases, d: 1e3)
    ledger = PrivacyLedger(N, M, 2.0, "poisson", "pld").compose(5)
    assert ledger.would_exceed(ledger.compose(1).epsilon_rdp(DELTA), DELTA)
    best = PrivacyLedger(N, M, 2.0, "poisson", "best").compose(5)
    assert not best.would_exceed(best.compose(1).epsilon_rdp(DELTA), DELTA)


@pytest.mark.parametrize(
    "sampling, method, target",
    [("poisson", "best", 0.3), ("poisson", "pld", 0.3), ("fixed_size", "best", 2.0), ("none", "best", 3.0)],
)
def test_budget_stop_fires_at_the_right_round(sampling: str, method: str, target: float) -> None:
    ledger = PrivacyLedger(N, M, 2.0, sampling, method).compose(7, 0.5)  # ignored: counted from zero
    n = rounds_within_budget(ledger, target, DELTA, max_rounds=128)
    base = PrivacyLedger(N, M, 2.0, sampling, method)
    assert 0 < n < 128
    assert base.compose(n).epsilon(DELTA) <= target < base.compose(n + 1).epsilon(DELTA)
    # The server's per-round check says "stop" exactly after n rounds.
    assert not base.compose(n - 1).would_exceed(target, DELTA)
    assert base.compose(n).would_exceed(target, DELTA)


def test_budget_search_is_capped() -> None:
    ledger = PrivacyLedger(N, M, 2.0, "poisson")
    assert rounds_within_budget(ledger, 50.0, DELTA, max_rounds=64) == 64
    assert rounds_within_budget(ledger, 1e-6, DELTA, max_rounds=64) == 0


# -- the ledger as data -------------------------------------------------------


def test_ledger_is_immutable_and_composes() -> None:
    a = PrivacyLedger(N, M, Z)
    b = a.compose(3).compose(2)
    assert (a.rounds, b.rounds) == (0, 5) and a.epsilon(DELTA) == 0.0
    assert b.releases == ((Z, 5),)
    assert b.epsilon(DELTA) == PrivacyLedger(N, M, Z, releases=[(Z, 5)]).epsilon(DELTA)
    assert a.compose(0) == a
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.releases = ()  # type: ignore[misc]


def test_ledger_is_a_hashable_picklable_histogram() -> None:
    a = PrivacyLedger(N, M, Z, "poisson")
    one = a.compose(3, 2.0).compose(2).compose(1, 2.0)
    other = a.compose(2).compose(4, 2.0)
    assert one == other and hash(one) == hash(other)
    assert one.releases == ((Z, 2), (2.0, 4)) and one.rounds == 6
    assert pickle.loads(pickle.dumps(one)) == one
    for f in dataclasses.fields(one):  # plain data only, no dp-accounting objects
        assert isinstance(getattr(one, f.name), (int, float, str, tuple))
    assert PrivacyLedger(N, M, Z, releases=[(2.0, 1), (Z, 0), (2, 3)]).releases == ((2.0, 4),)


def test_checkpoint_written_with_a_rounds_field_still_loads() -> None:
    legacy = PrivacyLedger.__new__(PrivacyLedger)
    legacy.__setstate__(dict(population=N, cohort_size=M, noise_multiplier=Z,
                             sampling="fixed_size", method="best", rounds=4))
    assert legacy == PrivacyLedger(N, M, Z).compose(4)


def test_bad_ledger_config() -> None:
    with pytest.raises(ConfigError, match="cohort_size"):
        PrivacyLedger(10, 11, 1.0)
    with pytest.raises(ConfigError, match="cohort_size"):
        PrivacyLedger(10, 11, 1.0, "none")
    with pytest.raises(ConfigError, match="sampling.*'uniform'"):
        PrivacyLedger(10, 5, 1.0, "uniform")
    with pytest.raises(ConfigError, match="method"):
        PrivacyLedger(10, 5, 1.0, "fixed_size", method="pld")
    assert PrivacyLedger(10, 5, 1.0, "none", method="pld").sampling_probability == 1.0
    assert PrivacyLedger(10, 5, 1.0, "poisson").sampling_probability == 0.5
    with pytest.raises(ConfigError, match="noise_multiplier"):
        PrivacyLedger(10, 5, 1.0).compose(1, noise_multiplier=-1.0)
    with pytest.raises(ConfigError, match="rounds"):
        PrivacyLedger(10, 5, 1.0).compose(-1)
