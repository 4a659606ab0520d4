"""Robust stages, Byzantine attacks and their options."""

from __future__ import annotations

import numpy as np
import pytest

from fedactors.aggregation.base import PlainContributions, RoundContext
from fedactors.aggregation.clipping import Clipped
from fedactors.aggregation.fedavg import WeightedMean
from fedactors.aggregation.robust import (
    DELTA,
    Krum,
    Median,
    TrimmedMean,
    krum_select,
    trimmed_mean,
)
from fedactors.devices.byzantine import Byzantine, Scaling, SignFlip
from fedactors.errors import ConfigError
from fedactors.server.rounds import Rounds
from fedactors.server.screening import Expectation, norm_outliers, screen_contribution


def aggregate(stage, rows):
    contributions = PlainContributions([{DELTA: np.asarray(r, np.float32)} for r in rows])
    return stage.aggregate(None, contributions, RoundContext(1, len(rows), len(rows),
                                                             np.random.default_rng(0)))


def test_median_and_trimmed_mean_shrug_off_a_minority_of_huge_values() -> None:
    rows = [[1.0, -1.0], [2.0, -2.0], [3.0, -3.0], [1e9, 1e9]]
    np.testing.assert_allclose(aggregate(Median(), rows).delta, [2.5, -1.5])
    # beta=0.25 of 4 rows trims one value at each end of every coordinate.
    np.testing.assert_allclose(trimmed_mean(np.array(rows), 0.25), [2.5, -1.5])
    assert aggregate(TrimmedMean(0.25), rows).measurements["trimmed_each_side"] == 1.0


def test_krum_picks_from_the_honest_cluster() -> None:
    rng = np.random.default_rng(0)
    honest = 1.0 + 0.01 * rng.standard_normal((7, 4))
    attackers = np.full((2, 4), -20.0)
    rows = np.concatenate([attackers, honest])
    assert set(krum_select(rows, f=2, m=5)) <= set(range(2, 9))
    result = aggregate(Krum(f=2, m=5), rows)
    assert np.all(np.abs(result.delta - 1.0) < 0.05)
    assert result.measurements["krum_guaranteed"] == 1.0  # 9 >= 2*2 + 3


def test_krum_still_answers_below_its_guarantee() -> None:
    result = aggregate(Krum(f=3, m=2), [[0.0], [1.0], [5.0]])
    assert result.measurements == {"robust_inputs": 3.0, "krum_selected": 2.0, "krum_guaranteed": 0.0}
    np.testing.assert_allclose(result.delta, [0.5])


def test_robust_stages_need_individual_updates_even_when_clipped() -> None:
    for stage in (Median(), TrimmedMean(0.1), Krum(1), Clipped(1.0, Median())):
        assert stage.needs_individual_updates
    assert Clipped(2.0, Median()).contribution_bounds({}, 5) == {DELTA: 2.0}


def test_attacks_and_the_choice_of_attackers_are_deterministic() -> None:
    d = np.array([1.0, -2.0], np.float32)
    np.testing.assert_array_equal(SignFlip(3.0).apply(d), [-3.0, 6.0])
    np.testing.assert_array_equal(Scaling(10.0).apply(d), [10.0, -20.0])
    byz = Byzantine(0.2, SignFlip())
    a = byz.choose(280, np.random.default_rng(7))
    assert len(a) == 56 and np.array_equal(a, byz.choose(280, np.random.default_rng(7)))
    assert len(set(a)) == 56 and np.all(np.diff(a) > 0)


def test_the_default_contribution_spec_is_what_encode_produces() -> None:
    spec = WeightedMean().contribution_spec({}, 4)
    assert spec == {"weighted_delta": ((4,), np.float32), "weight": ((1,), np.float32)}
    assert Median().contribution_spec({}, 3) == {DELTA: ((3,), np.float32)}


def test_screening_functions_alone() -> None:
    expect = Expectation.for_round(Clipped(1.0, Median()), {}, 2)
    assert expect.unbounded_keys == ()
    assert screen_contribution({DELTA: np.array([0.5, 0.5], np.float32)}, expect) is None
    assert screen_contribution({DELTA: np.array([2.0, 0.0], np.float32)}, expect) == "out_of_bounds"
    assert screen_contribution({DELTA: np.array([np.nan, 0.0], np.float32)}, expect) == "nonfinite"
    rows = {0: {DELTA: np.ones(2)}, 1: {DELTA: np.ones(2)}, 2: {DELTA: np.full(2, 1e7)}}
    assert list(norm_outliers(rows, (DELTA,), 1e6)) == [2]
    assert norm_outliers(rows, (DELTA,), None) == {}
    # Two updates, one huge: the lower median lets the honest one set the scale.
    assert list(norm_outliers({0: rows[0], 2: rows[2]}, (DELTA,), 1e6)) == [2]
    # A median norm of zero gives nothing to compare against.
    zeros = {i: {DELTA: np.zeros(2)} for i in range(3)}
    assert norm_outliers({**zeros, 9: rows[2]}, (DELTA,), 1e6) == {}


@pytest.mark.parametrize("build, field, bad", [
    (lambda v: TrimmedMean(v), "beta", 0.5),
    (lambda v: TrimmedMean(v), "beta", -0.1),
    (lambda v: TrimmedMean(v), "beta", float("nan")),
    (lambda v: TrimmedMean(v), "beta", "a lot"),
    (lambda v: Krum(v), "f", -1),
    (lambda v: Krum(v), "f", 1.5),
    (lambda v: Krum(1, v), "m", 0),
    (lambda v: Byzantine(v, SignFlip()), "fraction", 1.2),
    (lambda v: Byzantine(v, SignFlip()), "fraction", float("inf")),
    (lambda v: Byzantine(0.1, v), "attack", "flip"),
    (lambda v: Byzantine(0.1, SignFlip(v)), "attack.scale", 0.0),
    (lambda v: Byzantine(0.1, SignFlip(v)), "attack.scale", float("nan")),
    (lambda v: Byzantine(0.1, Scaling(v)), "attack.scale", float("inf")),
    (lambda v: Rounds(outlier_factor=v), "outlier_factor", 0.5),
    (lambda v: Rounds(outlier_factor=v), "outlier_factor", float("nan")),
    (lambda v: Rounds(outlier_factor=v), "outlier_factor", "big"),
])
def test_bad_options_are_config_errors_that_quote_the_value(build, field: str, bad) -> None:
    with pytest.raises(ConfigError) as info:
        build(bad)
    assert info.value.field == field
    assert repr(bad) in info.value.message


def test_a_scenario_rejects_a_byzantine_that_is_not_one() -> None:
    from fedactors.devices.profile import DeviceClass
    from fedactors.scenarios.spec import Scenario

    with pytest.raises(ConfigError) as info:
        Scenario(name="x", model=lambda: None, loss="mse", data=lambda f, r: None,
                 fleet=[DeviceClass("a", 10)], rounds=Rounds(cohort_size=2), byzantine=0.2)
    assert info.value.field == "byzantine" and "0.2" in info.value.message
