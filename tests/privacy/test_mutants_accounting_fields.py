"""Every refusal of the accountant names the option that is wrong and quotes what it got;
compose() and the noise multiplier of a composed release (found by mutation testing: the
older tests matched a substring of the message, which a misspelt field still contains)."""

from __future__ import annotations

import math

import dp_accounting
import pytest

from fedactors.errors import ConfigError
from fedactors.privacy.accounting import (
    PrivacyLedger,
    effective_noise_multiplier,
    rounds_within_budget,
)

N, M, Z, DELTA = 1_000, 50, 1.5, 1e-5


def refusal(make) -> ConfigError:
    """The ConfigError ``make()`` raises, checked to be one clear ``field: message`` line."""
    with pytest.raises(ConfigError) as err:
        make()
    exc = err.value
    assert isinstance(exc.field, str) and isinstance(exc.message, str)
    assert str(exc) == f"{exc.field}: {exc.message}"
    assert "\n" not in str(exc)
    return exc


@pytest.mark.parametrize("make, field, got", [
    (lambda: PrivacyLedger(0, M, Z), "population", "0"),
    (lambda: PrivacyLedger(-5, M, Z), "population", "-5"),
    (lambda: PrivacyLedger(N, 0, Z), "cohort_size", "0"),
    (lambda: PrivacyLedger(N, 2.5, Z), "cohort_size", "2.5"),
    (lambda: PrivacyLedger(N, M, -1.0), "noise_multiplier", "-1.0"),
    (lambda: PrivacyLedger(N, M, math.nan), "noise_multiplier", "nan"),
    (lambda: PrivacyLedger(N, M, Z, "uniform"), "sampling", "'uniform'"),
    (lambda: PrivacyLedger(N, M, Z, "poisson", "exact"), "method", "'exact'"),
    (lambda: PrivacyLedger(N, M, Z, releases=((-0.5, 1),)), "noise_multiplier", "-0.5"),
    (lambda: PrivacyLedger(N, M, Z, releases=((Z, -2),)), "releases", "-2"),
    (lambda: PrivacyLedger(N, M, Z, releases=((Z, 1.5),)), "releases", "1.5"),
    (lambda: PrivacyLedger(N, M, Z).compose(-1), "rounds", "-1"),
    (lambda: PrivacyLedger(N, M, Z).compose(2.0), "rounds", "2.0"),
    (lambda: PrivacyLedger(N, M, Z).compose(1, noise_multiplier=-2.0), "noise_multiplier", "-2.0"),
    (lambda: PrivacyLedger(N, M, Z).compose(3).epsilon_rdp(-0.1), "delta", "-0.1"),
    (lambda: PrivacyLedger(N, M, Z).compose(3).epsilon_rdp(1.5), "delta", "1.5"),
    (lambda: rounds_within_budget(PrivacyLedger(N, M, Z), 0.0, DELTA), "target_epsilon", "0.0"),
    (lambda: rounds_within_budget(PrivacyLedger(N, M, Z), -1.0, DELTA), "target_epsilon", "-1.0"),
    (lambda: rounds_within_budget(PrivacyLedger(N, M, Z), 1.0, DELTA, max_rounds=-3),
     "max_rounds", "-3"),
])
def test_a_refusal_names_its_field_and_quotes_the_value(make, field, got) -> None:
    exc = refusal(make)
    assert exc.field == field
    assert got in exc.message


@pytest.mark.parametrize("sampling", ["fixed_size", "poisson", "none"])
def test_a_cohort_above_the_population_is_refused_with_both_figures(sampling) -> None:
    exc = refusal(lambda: PrivacyLedger(10, 11, 1.0, sampling))
    assert exc.field == "cohort_size"
    assert "population (10)" in exc.message and "11" in exc.message
    # The whole fleet is a valid cohort.
    assert PrivacyLedger(10, 10, 1.0, sampling).cohort_size == 10


def test_the_choices_are_listed_when_sampling_or_method_is_unknown() -> None:
    sampling = refusal(lambda: PrivacyLedger(N, M, Z, "uniform"))
    assert all(s in sampling.message for s in ("fixed_size", "poisson", "none"))
    method = refusal(lambda: PrivacyLedger(N, M, Z, "poisson", "exact"))
    assert all(m in method.message for m in ("best", "rdp", "pld"))


def test_pld_with_fixed_size_sampling_says_why_it_is_refused() -> None:
    exc = refusal(lambda: PrivacyLedger(N, M, Z, "fixed_size", "pld"))
    assert exc.field == "method"
    assert "'pld'" in exc.message and "'fixed_size'" in exc.message
    assert "without replacement" in exc.message
    assert "poisson" in exc.message and "none" in exc.message  # what it would accept


def test_a_non_gaussian_release_is_refused_naming_the_event() -> None:
    laplace = dp_accounting.LaplaceDpEvent(1.0)
    for event in (laplace, dp_accounting.ComposedDpEvent([dp_accounting.GaussianDpEvent(1.0),
                                                          laplace])):
        exc = refusal(lambda e=event: effective_noise_multiplier(e))
        assert exc.field == "round_event"
        assert "Gaussian" in exc.message and "LaplaceDpEvent" in exc.message


def test_compose_with_no_count_adds_exactly_one_release() -> None:
    ledger = PrivacyLedger(N, M, Z, "poisson", "rdp")
    once = ledger.compose()
    assert once.rounds == 1 and once.releases == ((Z, 1),)
    assert once == ledger.compose(1)
    assert once.compose().compose() == ledger.compose(3)
    assert ledger.compose(noise_multiplier=2.0).releases == ((2.0, 1),)
    assert once.epsilon_rdp(DELTA) < ledger.compose(2).epsilon_rdp(DELTA)


def test_a_composed_release_with_a_noiseless_part_has_no_privacy() -> None:
    g = dp_accounting.GaussianDpEvent
    assert effective_noise_multiplier(dp_accounting.ComposedDpEvent([g(0.0), g(1.0)])) == 0.0
    assert effective_noise_multiplier(dp_accounting.ComposedDpEvent([g(1.0), g(0.0)])) == 0.0
    # Without a noiseless part, the combination is below every part and above zero.
    z = effective_noise_multiplier(dp_accounting.ComposedDpEvent([g(1.0), g(2.0)]))
    assert 0.0 < z < 1.0 and z == pytest.approx((1.0 + 0.25) ** -0.5)
    # A ledger built from the noiseless release reports ε = ∞, never a finite figure.
    ledger = PrivacyLedger(N, M, Z, "poisson").compose(
        1, noise_multiplier=effective_noise_multiplier(dp_accounting.ComposedDpEvent([g(0.0), g(1.0)])))
    assert ledger.epsilon(DELTA) == math.inf and ledger.epsilon_rdp(DELTA) == math.inf


@pytest.mark.parametrize("sampling", ["fixed_size", "poisson", "none"])
def test_a_release_event_is_the_sampled_gaussian_the_ledger_accounts(sampling: str) -> None:
    # What benchmarks and users read as "one release": the same event the ε is composed from.
    import dp_accounting

    from fedactors.privacy.accounting import PrivacyLedger

    ledger = PrivacyLedger(population=100, cohort_size=10, noise_multiplier=1.5, sampling=sampling,
                           method="rdp")
    gaussian = {"fixed_size": 0.75, "poisson": 1.5, "none": 1.5}[sampling]  # replace-one halves z
    expected = {
        "fixed_size": dp_accounting.SampledWithoutReplacementDpEvent(
            100, 10, dp_accounting.GaussianDpEvent(gaussian)),
        "poisson": dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(gaussian)),
        "none": dp_accounting.GaussianDpEvent(gaussian),
    }[sampling]
    assert ledger.round_event() == ledger.release_event() == expected
    other = ledger.release_event(3.0)
    assert other != expected and other == PrivacyLedger(
        population=100, cohort_size=10, noise_multiplier=3.0, sampling=sampling,
        method="rdp").round_event()
    accountant = dp_accounting.rdp.RdpAccountant(neighboring_relation=(
        dp_accounting.NeighboringRelation.REPLACE_ONE if sampling == "fixed_size"
        else dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE))
    accountant.compose(ledger.round_event(), 1)
    assert ledger.compose(1).epsilon_rdp(1e-5) == pytest.approx(accountant.get_epsilon(1e-5))
