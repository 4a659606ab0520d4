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
    RobustStage,
    TrimmedMean,
    coordinate_median,
    krum_scores,
    krum_select,
    multi_krum,
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


# -- Krum's scores, selection and guarantee, from their definitions ------------------


def _scores_by_definition(rows: np.ndarray, f: int) -> list[float]:
    """Each row's sum of squared distances to its ``n - f - 2`` nearest others (at least one)."""
    n = len(rows)
    k = max(n - f - 2, 1)
    return [float(sum(sorted(float(np.sum((rows[j] - rows[i]) ** 2)) for j in range(n) if j != i)[:k]))
            if n > 1 else 0.0 for i in range(n)]


@pytest.mark.parametrize("n", range(1, 8))
@pytest.mark.parametrize("f", range(0, 6))
def test_krum_scores_are_the_sums_of_squared_distances_to_the_nearest_others(n: int, f: int) -> None:
    rows = np.random.default_rng(100 * n + f).normal(3.0, 2.0, size=(n, 3))
    np.testing.assert_allclose(krum_scores(rows, f), _scores_by_definition(rows, f), rtol=1e-12)


def test_krum_ties_are_broken_by_the_rows_coordinates_in_order() -> None:
    # The six corners of an octahedron are all equally central (equal scores), so Krum's
    # selection is the rows in lexicographic order, coordinate 0 first, then 1, then 2,
    # wherever they sit in the cohort.
    corners = np.concatenate([np.eye(3), -np.eye(3)])
    for seed in range(4):
        rows = corners[np.random.default_rng(seed).permutation(6)]
        assert len(set(krum_scores(rows, 0))) == 1
        assert [tuple(rows[i]) for i in krum_select(rows, f=0, m=6)] == sorted(map(tuple, rows))
    square = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [-1.0, 0.0]])
    assert [tuple(square[i]) for i in krum_select(square, f=0, m=4)] == sorted(map(tuple, square))


@pytest.mark.parametrize("f", [0, 1, 2, 3])
def test_krum_reports_its_guarantee_from_exactly_2f_plus_3_updates(f: int) -> None:
    rng = np.random.default_rng(f)
    for n, guaranteed in [(2 * f + 2, 0.0), (2 * f + 3, 1.0), (2 * f + 4, 1.0)]:
        result = aggregate(Krum(f=f), rng.normal(size=(n, 2)))
        assert result.measurements["krum_guaranteed"] == guaranteed, (f, n)


def test_krum_by_default_is_the_original_single_update_rule() -> None:
    rows = np.array([[0.0], [0.1], [0.3], [5.0]])
    result = aggregate(Krum(f=0), rows)
    assert result.measurements["krum_selected"] == 1.0
    np.testing.assert_allclose(result.delta, rows[krum_select(rows, 0, 1)[0]])


def test_the_default_trimmed_mean_trims_a_tenth_at_each_end() -> None:
    rows = np.arange(20.0).reshape(20, 1) ** 2  # skewed: trimming changes the mean
    result = aggregate(TrimmedMean(), rows)
    assert result.measurements["trimmed_each_side"] == 2.0
    np.testing.assert_allclose(result.delta, [np.sort(rows[:, 0])[2:18].mean()], rtol=1e-6)


def test_a_trimmed_mean_that_trims_nothing_is_the_mean() -> None:
    rows = np.array([[1.0, 10.0], [2.0, -4.0], [6.0, 1.0]])
    result = aggregate(TrimmedMean(0.0), rows)
    assert result.measurements["trimmed_each_side"] == 0.0
    np.testing.assert_allclose(result.delta, rows.mean(axis=0), rtol=1e-6)


# -- precision: float32 updates are reduced in float64 --------------------------------

#: Finite float32 updates whose sums and squared differences overflow float32, and whose
#: small coordinates are lost when added to 1 in float32.
WIDE = np.array([[3e38, 1.0, 1.0], [3e38, 2.0**-30, 3.0], [3e38, 2.0**-29, 7.0],
                 [-3e38, 5.0, 1e-8]], np.float32)


@pytest.mark.parametrize("reduce", [
    coordinate_median,
    lambda rows: trimmed_mean(rows, 0.0),
    lambda rows: trimmed_mean(rows, 0.25),
    lambda rows: krum_scores(rows, 0),
    lambda rows: krum_scores(rows, 1),
    lambda rows: multi_krum(rows, 0, 4),
    lambda rows: multi_krum(rows, 1, 2),
], ids=["median", "mean", "trimmed_mean", "krum_scores_f0", "krum_scores_f1", "multi_krum_all",
        "multi_krum_2"])
def test_the_numerics_give_the_same_answer_for_float32_rows_as_for_their_float64_values(reduce) -> None:
    np.testing.assert_array_equal(reduce(WIDE), reduce(WIDE.astype(np.float64)))


@pytest.mark.parametrize("stage", [Median(), TrimmedMean(0.0), TrimmedMean(0.25), Krum(0, m=4),
                                   Krum(1, m=2)], ids=repr)
def test_a_robust_update_of_finite_float32_updates_is_finite_float32(stage) -> None:
    result = aggregate(stage, WIDE)
    assert result.delta.dtype == np.float32 and result.delta.shape == (3,)
    assert np.all(np.isfinite(result.delta))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
def test_robust_encode_sends_what_the_contribution_spec_promises(dtype) -> None:
    spec = Median().contribution_spec({}, 4)
    sent = Median().encode({}, np.arange(4).astype(dtype), 3, np.random.default_rng(0))
    assert {k: (v.shape, v.dtype) for k, v in sent.items()} == spec


@pytest.mark.parametrize("stage", [Median(), TrimmedMean(0.2), Krum(1)], ids=repr)
def test_an_empty_cohort_reports_no_robust_inputs(stage) -> None:
    result = aggregate(stage, [])
    assert result.delta is None and result.measurements == {"robust_inputs": 0.0}


@pytest.mark.parametrize("stage", [Median(), TrimmedMean(0.25), Krum(2, m=3),
                                   Clipped(1.5, Median()), WeightedMean(weighted=False),
                                   Clipped(0.5, WeightedMean())], ids=repr)
def test_a_stage_s_repr_builds_the_same_stage(stage) -> None:
    # The repr is the constructor call: it is what the run's settings digest records.
    again = eval(repr(stage), {"Median": Median, "TrimmedMean": TrimmedMean, "Krum": Krum,
                               "Clipped": Clipped, "WeightedMean": WeightedMean})
    assert type(again) is type(stage) and repr(again) == repr(stage)
    assert vars(again).keys() == vars(stage).keys()


def test_each_rows_share_in_a_robust_release() -> None:
    from fedactors.aggregation.robust import median_shares, multi_krum, trimmed_shares

    rows = np.array([[1.0, 40.0], [2.0, 30.0], [3.0, 20.0], [100.0, 10.0]])
    # Rows 0 and 3 are an extreme in both coordinates (one low, one high): trimmed.
    np.testing.assert_allclose(trimmed_shares(rows, 0.25), [0.0, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(median_shares(rows), [0.0, 0.5, 0.5, 0.0])
    np.testing.assert_allclose(median_shares(rows[:3]), [0.0, 1.0, 0.0])
    # An even count: the middle two each carry half of every coordinate.
    np.testing.assert_allclose(median_shares(rows[:, :1]), [0.0, 0.5, 0.5, 0.0])
    mixed = np.array([[1.0, 10.0], [2.0, 40.0], [3.0, 20.0], [4.0, 30.0]])
    np.testing.assert_allclose(trimmed_shares(mixed, 0.25), [0.0, 0.5, 1.0, 0.5])
    rng = np.random.default_rng(4)
    for n in (1, 2, 5, 8, 13):
        x = rng.standard_normal((n, 7))
        x[0] *= 1e3  # one far-out row
        k = int(np.floor(0.2 * n))
        assert trimmed_shares(x, 0.2).sum() == pytest.approx(n - 2 * k)
        assert median_shares(x).sum() == pytest.approx(1.0)
        stage = Krum(f=1, m=2)
        delta, _, shares = stage.reduce_with_shares(x)
        np.testing.assert_array_equal(delta, multi_krum(x, 1, 2))  # the same bits as before
        assert set(shares.tolist()) <= {0.0, 1.0} and shares.sum() == min(2, n)
        if n >= 5:  # the far-out row: never Krum's choice, trimmed in every coordinate
            assert shares[0] == 0.0 and trimmed_shares(x, 0.2)[0] == 0.0
            assert median_shares(x)[0] == 0.0
    # A stage that only overrides reduce reports no shares: every update counted in full.

    class Mean(RobustStage):
        def reduce(self, rows):
            return rows.mean(axis=0), {}

    assert Mean().reduce_with_shares(rows)[2] is None
