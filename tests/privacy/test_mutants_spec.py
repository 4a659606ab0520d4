"""Privacy options: which field a bad value is reported under, and the default δ
(found by mutation testing)."""

from __future__ import annotations

import pytest

from fedactors.errors import ConfigError
from fedactors.privacy.spec import Privacy, default_delta


@pytest.mark.parametrize("kwargs, field", [
    ({"target_epsilon": True}, "target_epsilon"),
    ({"target_epsilon": 0.0}, "target_epsilon"),
    ({"target_epsilon": -1.0}, "target_epsilon"),
    ({"delta": 0.0}, "delta"),
    ({"delta": 1.0}, "delta"),
    ({"delta": 1.5}, "delta"),
    ({"method": "exact"}, "method"),
])
def test_a_bad_option_is_reported_under_its_own_field(kwargs, field) -> None:
    with pytest.raises(ConfigError) as err:
        Privacy(**kwargs)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")
    value = next(iter(kwargs.values()))
    assert repr(value) in err.value.message


def test_method_error_lists_the_choices() -> None:
    with pytest.raises(ConfigError) as err:
        Privacy(method="exact")
    assert all(m in err.value.message for m in ("best", "rdp", "pld"))


def test_delta_strictly_inside_zero_one_is_accepted() -> None:
    assert Privacy(delta=1e-9).delta_for(10) == 1e-9
    assert Privacy(delta=0.999).delta_for(10) == 0.999


def test_an_explicit_delta_wins_over_the_default() -> None:
    assert Privacy(delta=1e-3).delta_for(100) == 1e-3
    assert Privacy().delta_for(100) == default_delta(100) == 1e-5


def test_default_delta_stays_well_below_one_over_the_fleet_size() -> None:
    for n in (10, 1_000, 34_000, 100_000, 10**7):
        d = default_delta(n)
        assert 0 < d <= 1e-5
        assert d < 1 / n
    assert default_delta(100_000) == pytest.approx(100_000 ** -1.1)
    assert default_delta(10**7) < 1e-7


@pytest.mark.parametrize("kwargs, field, shown", [
    ({"min_separation": -1}, "min_separation", "-1"),
    ({"min_separation": 2.5}, "min_separation", "2.5"),
    ({"canaries": 1}, "canaries", "must be 0 (none) or at least 2, got 1"),
    ({"canaries": -3}, "canaries", "-3"),
])
def test_separation_and_canaries_are_refused_under_their_field(kwargs, field, shown) -> None:
    with pytest.raises(ConfigError) as err:
        Privacy(**kwargs)
    assert err.value.field == field and str(err.value).endswith(shown)
    assert Privacy(min_separation=0, canaries=0) == Privacy()
    assert Privacy(canaries=2).canaries == 2
