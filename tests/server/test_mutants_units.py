"""Pure pieces of the server, pinned where mutation testing showed the tests were loose:
the round policy, staleness weights, server optimizers, the update screens and the
metrics.jsonl row. No event loop, no actors: each test is milliseconds."""

from __future__ import annotations

import numpy as np
import pytest

from fedactors.aggregation.clipping import l2_norm
from fedactors.aggregation.fedavg import WEIGHT
from fedactors.devices.actor import RoundTally
from fedactors.errors import ConfigError
from fedactors.server.optimizers import FedAdam, FedAvgStep, FedYogi
from fedactors.server.outcome import ReleaseOutcome, metrics_row
from fedactors.server.rounds import Rounds
from fedactors.server.screening import (
    MALFORMED,
    NONFINITE,
    OUT_OF_BOUNDS,
    REJECT_REASONS,
    Expectation,
    norm_outliers,
    row_norms,
    screen_contribution,
)
from fedactors.server.staleness import Hinge, Polynomial, Unweighted, scale_delta

# -- the round policy ------------------------------------------------------------------------


def test_selected_size_rounds_the_over_selection_up() -> None:
    assert Rounds(cohort_size=10, over_selection=1.25).selected_size == 13
    assert Rounds(cohort_size=10, over_selection=1.0).selected_size == 10
    assert Rounds(cohort_size=3, over_selection=1.01).selected_size == 4


def test_poisson_rate_is_selected_over_population_capped_at_one() -> None:
    r = Rounds(cohort_size=10, over_selection=1.5, sampling="poisson")
    assert r.poisson_rate(100) == pytest.approx(0.15)
    assert r.poisson_rate(15) == 1.0
    assert r.poisson_rate(5) == 1.0  # never a "probability" above one


@pytest.mark.parametrize(("kwargs", "field"), [
    (dict(count=0), "count"),
    (dict(cohort_size=0), "cohort_size"),
    (dict(over_selection=0.99), "over_selection"),
    (dict(over_selection=float("nan")), "over_selection"),
    (dict(deadline=0.0), "deadline"),
    (dict(min_reports=0), "min_reports"),
    (dict(cohort_size=3, min_reports=4), "min_reports"),
    (dict(eval_every=0), "eval_every"),
    (dict(sampling="uniform"), "sampling"),
    (dict(outlier_factor=0.5), "outlier_factor"),
    (dict(outlier_factor=float("inf")), "outlier_factor"),
])
def test_a_bad_round_option_names_its_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        Rounds(**kwargs)
    assert err.value.field == field


def test_round_option_messages_say_what_is_wrong() -> None:
    with pytest.raises(ConfigError) as err:
        Rounds(over_selection=0.5)
    assert err.value.message == "must be >= 1 (select at least the target), got 0.5"
    with pytest.raises(ConfigError) as err:
        Rounds(cohort_size=3, min_reports=4)
    assert err.value.message == "4 is more than cohort_size 3: no round could ever be aggregated"
    with pytest.raises(ConfigError) as err:
        Rounds(sampling="uniform")
    assert err.value.message == "must be one of ('fixed_size', 'poisson'), got 'uniform'"
    with pytest.raises(ConfigError) as err:
        Rounds(outlier_factor=0.5)
    assert err.value.message == "must be >= 1 or None, got 0.5"


def test_round_options_at_their_limits_are_accepted() -> None:
    r = Rounds(cohort_size=3, min_reports=3, over_selection=1.0, outlier_factor=1.0)
    assert (r.min_reports, r.over_selection, r.outlier_factor) == (3, 1.0, 1.0)
    assert Rounds(outlier_factor=None).outlier_factor is None
    assert Rounds(sampling="poisson").sampling == "poisson"


# -- staleness weights -----------------------------------------------------------------------


@pytest.mark.parametrize(("make", "field"), [
    (lambda: Hinge(slope=0.0), "staleness.slope"),
    (lambda: Hinge(cutoff=-1.0), "staleness.cutoff"),
    (lambda: Polynomial(-0.5), "staleness.exponent"),
])
def test_a_bad_staleness_option_names_its_field(make, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        make()
    assert err.value.field == field


def test_staleness_weights_are_float64_of_the_input_shape() -> None:
    s = np.array([[0, 2], [5, 9]], np.int64)
    for weight in (Polynomial(0.5), Unweighted(), Hinge(slope=0.5, cutoff=1.0)):
        w = weight(s)
        assert w.shape == (2, 2) and w.dtype == np.float64
        assert np.all((w > 0) & (w <= 1))
    np.testing.assert_array_equal(Hinge(slope=0.5, cutoff=1.0)(s),
                                  [[1.0, 1 / 1.5], [1 / 3.0, 1 / 5.0]])


def test_scale_delta_scales_only_float_model_shaped_arrays_in_float64_then_rounds_once() -> None:
    dim = 3
    delta = np.array([1.0, 3.0, 1e-8], np.float32)
    c = {"delta": delta, "other": np.array([1.0, 2.0], np.float32),
         "counts": np.array([4, 5, 6], np.int64), WEIGHT: np.array([2.0], np.float32),
         "below_clip": np.ones(dim, np.float32)}
    factor = 1.0 / 3.0
    out = scale_delta(c, factor, dim)
    expected = (delta.astype(np.float64) * factor).astype(np.float32)
    np.testing.assert_array_equal(out["delta"], expected)
    assert out["delta"].dtype == np.float32
    np.testing.assert_array_equal(out["other"], c["other"])  # not model-shaped
    np.testing.assert_array_equal(out["counts"], c["counts"])  # not float
    np.testing.assert_array_equal(out["below_clip"], c["below_clip"])  # never a delta
    np.testing.assert_array_equal(out[WEIGHT], c[WEIGHT])
    # float64 keeps float64
    out64 = scale_delta({"d": np.ones(dim, np.float64)}, factor, dim)
    assert out64["d"].dtype == np.float64 and out64["d"][0] == factor


# -- server optimizers -----------------------------------------------------------------------


@pytest.mark.parametrize("opt", [FedAdam(tau=0.5), FedYogi(tau=0.5)])
def test_adaptive_state_is_float32_of_the_model_shape_even_for_float64_weights(opt) -> None:
    w = np.array([1.0, -2.0, 0.5], np.float64)
    state = opt.init(w)
    for arr, value in ((state.m, 0.0), (state.v, 0.25)):
        assert arr.shape == w.shape and arr.dtype == np.float32
        np.testing.assert_array_equal(arr, np.full(3, value, np.float32))
    _, after = opt.apply(state, w, np.array([0.1, 0.2, 0.3], np.float64))
    assert after.m.dtype == np.float32 and after.v.dtype == np.float32
    assert after.m.shape == w.shape and after.v.shape == w.shape


def test_yogi_leaves_v_alone_where_it_already_equals_the_squared_delta() -> None:
    opt = FedYogi(tau=0.5, learning_rate=0.1)  # v starts at tau**2 = 0.25, exactly
    w = np.zeros(2, np.float32)
    delta = np.array([0.5, 0.25], np.float32)  # 0.5**2 == 0.25 == v: sign(v - g2) = 0
    _, after = opt.apply(opt.init(w), w, delta)
    assert after.v[0] == np.float32(0.25)
    assert np.all(np.isfinite(after.v))
    assert after.v[1] == np.float32(0.25 - 0.01 * 0.0625)  # v > g2: v moves down


def test_fedavg_step_learning_rate_field() -> None:
    with pytest.raises(ConfigError) as err:
        FedAvgStep(learning_rate=-1.0)
    assert err.value.field == "learning_rate"


# -- update screens --------------------------------------------------------------------------


def test_norms_are_taken_in_float64_so_huge_float32_updates_do_not_overflow() -> None:
    x = np.full(4, 1e30, np.float32)  # each square overflows float32
    (norm,) = row_norms([x])
    assert norm == pytest.approx(2e30, rel=1e-6) and np.isfinite(norm)


@pytest.mark.parametrize("size", [1, 7, 738, 4097])
def test_row_norms_are_each_rows_l2_to_the_last_bit(size: int) -> None:
    rng = np.random.default_rng(size)
    rows = [(rng.standard_normal((size,)) * rng.uniform(1e-3, 1e3)).astype(np.float32)
            for _ in range(64)]
    rows[5] = np.full(size, 1e30, np.float32)  # squares beyond float32
    got = row_norms(rows)
    assert got.dtype == np.float64
    assert got.tolist() == [l2_norm(row) for row in rows]
    assert row_norms([]).shape == (0,)


def test_norm_outliers_with_float32_norms_that_overflow_still_finds_the_outlier() -> None:
    honest = {s: {"d": np.full(4, 1e25 * (s + 1), np.float32)} for s in range(3)}
    hostile = {9: {"d": np.full(4, 3e38, np.float32)}}
    out = norm_outliers({**honest, **hostile}, ("d",), 1e6)
    assert set(out) == {9}


def test_norm_outliers_uses_the_lower_median_and_reports_the_ratio() -> None:
    c = {s: {"d": np.array([n], np.float32)} for s, n in [(0, 1.0), (1, 2.0), (2, 3.0), (3, 100.0)]}
    # Lower median of [1, 2, 3, 100] is 2: 100 > 40 x 2 but not > 40 x 3 ... with factor 40.
    out = norm_outliers(c, ("d",), 40.0)
    assert out == {3: ("d", 50.0)}
    # A norm of exactly factor x median is not an outlier.
    assert norm_outliers(c, ("d",), 50.0) == {}
    # Two updates: the smaller one sets the scale.
    two = {0: {"d": np.array([1.0], np.float32)}, 1: {"d": np.array([1e9], np.float32)}}
    assert set(norm_outliers(two, ("d",), 1e6)) == {1}


def test_norm_outliers_skips_a_zero_median_key_and_reports_the_first_key_only() -> None:
    c = {0: {"a": np.zeros(2), "b": np.ones(2)},
         1: {"a": np.zeros(2), "b": np.ones(2)},
         2: {"a": np.full(2, 5.0), "b": np.full(2, 1e9)}}
    # "a": median 0, never screened; "b": sender 2 is one.
    assert norm_outliers(c, ("a", "b"), 10.0) == {2: ("b", pytest.approx(1e9))}
    c[2]["a"] = np.full(2, 1e9)
    c[0]["a"] = c[1]["a"] = np.ones(2)
    out = norm_outliers(c, ("a", "b"), 10.0)
    assert list(out) == [2] and out[2][0] == "a"  # the first key that flags it
    assert norm_outliers(c, ("a", "b"), None) == {}
    assert norm_outliers({}, ("a",), 10.0) == {}


def _expect() -> Expectation:
    return Expectation(
        spec={"d": ((3,), np.dtype(np.float32)), "w": ((1,), np.dtype(np.float32)),
              "n": ((1,), np.dtype(np.int64))},
        bounds={"w": 2.0})


def test_unbounded_keys_are_the_sorted_unbounded_float_keys() -> None:
    e = Expectation(spec={"z": ((1,), np.float64), "a": ((2,), np.float32),
                          "n": ((1,), np.int64), "b": ((1,), np.float32)},
                    bounds={"b": 1.0})
    assert e.unbounded_keys == ("a", "z")


def test_a_spec_given_with_list_shapes_and_scalar_types_screens_like_a_normalised_one() -> None:
    # An aggregator's contribution_spec may give shapes as lists and dtypes as numpy scalar
    # types; a well-formed update must still pass, and a wrong dtype still fail.
    e = Expectation(spec={"d": ([3], np.float32), "w": ([1], "float32")}, bounds={})
    assert e.spec == {"d": ((3,), np.dtype(np.float32)), "w": ((1,), np.dtype(np.float32))}
    good = {"d": np.zeros(3, np.float32), "w": np.ones(1, np.float32)}
    assert screen_contribution(good, e) is None
    assert screen_contribution({**good, "w": np.ones(1, np.float64)}, e) == MALFORMED


def test_screen_contribution_reasons() -> None:
    e = _expect()
    good = {"d": np.zeros(3, np.float32), "w": np.array([2.0], np.float32),
            "n": np.array([7], np.int64)}
    assert screen_contribution(good, e) is None  # a value exactly at its bound is fine
    assert screen_contribution({**good, "w": np.array([-2.5], np.float32)}, e) == OUT_OF_BOUNDS
    assert screen_contribution({**good, "d": np.array([0, np.nan, 0], np.float32)}, e) == NONFINITE
    assert screen_contribution({**good, "n": np.array([7], np.int32)}, e) == MALFORMED
    assert screen_contribution({**good, "d": np.zeros((1, 3), np.float32)}, e) == MALFORMED
    assert screen_contribution({k: v for k, v in good.items() if k != "n"}, e) == MALFORMED
    assert screen_contribution([good], e) == MALFORMED
    # Complex values are checked for finiteness too.
    ce = Expectation(spec={"c": ((2,), np.dtype(np.complex64))}, bounds={})
    assert screen_contribution({"c": np.array([1, np.inf], np.complex64)}, ce) == NONFINITE
    # An empty bounded array has nothing beyond its bound.
    ee = Expectation(spec={"e": ((0,), np.dtype(np.float32))}, bounds={"e": 1.0})
    assert screen_contribution({"e": np.zeros(0, np.float32)}, ee) is None


# -- the metrics.jsonl row -------------------------------------------------------------------


def outcome(**kw) -> ReleaseOutcome:
    base = dict(round=3, start=10.0, end=14.5, selected=(1, 2, 3, 4), reported=(1, 2),
                closed_by="deadline", applied=True, rejected={"late": 2, "outlier": 1},
                measurements={"m": 1.5}, metrics={"loss": 0.25}, given_up=((3, 3), (3, 4)))
    base.update(kw)
    return ReleaseOutcome(**base)


def test_metrics_row_fields() -> None:
    tally = RoundTally.empty()
    tally.record_drop(3, 3, 12.0)  # silent before the end: dropped
    tally.record_drop(3, 4, 15.0)  # silent after the end: only late
    row = metrics_row(outcome(), tally, (100, 7))
    assert row["round"] == 3 and row["time"] == 14.5 and row["duration"] == 4.5
    assert (row["selected"], row["reported"], row["dropped"], row["late"], row["surplus"]) == (
        4, 2, 1, 1, 0)
    assert row["closed_by"] == "deadline" and row["applied"] is True
    assert (row["bytes_down"], row["bytes_up"]) == (100, 7)
    assert row["m"] == 1.5 and row["loss"] == 0.25
    for reason in REJECT_REASONS:
        assert row[f"rejected_{reason}"] == {"late": 2, "outlier": 1}.get(reason, 0)
    assert "in_flight" not in row and "staleness_mean" not in row
    # Closed at its target: those given up and not silent are surplus, not late.
    tally.record_drop(3, 3, 12.0)
    row = metrics_row(outcome(closed_by="target"), tally, (0, 0))
    assert (row["dropped"], row["late"], row["surplus"]) == (1, 0, 1)
    # A Poisson round closed once all its sampled devices reported: not by the deadline
    # either (those given up then, e.g. rejected as outliers, were not late).
    tally.record_drop(3, 3, 12.0)
    row = metrics_row(outcome(closed_by="all-reported"), tally, (0, 0))
    assert (row["dropped"], row["late"], row["surplus"]) == (1, 0, 1)


def test_metrics_row_takes_each_given_up_key_once_and_counts_its_devices() -> None:
    tally = RoundTally.empty()
    for ticket, dev in ((5, 1), (6, 2), (7, 3)):
        tally.record_drop(ticket, dev, 1.0)
    o = outcome(given_up=((5, 1), (6, 2), (6, 9), (8, 4)), closed_by="buffer",
                staleness=(0, 3), weights=(1.0, 0.5), in_flight=2)
    row = metrics_row(o, tally, (0, 0))
    assert row["dropped"] == 2 and row["late"] == 2 and row["surplus"] == 0
    assert set(tally.dropped) == {7}  # the tickets of this row were taken, no other
    assert (row["in_flight"], row["staleness_mean"], row["staleness_max"]) == (2, 1.5, 3)
    assert isinstance(row["staleness_max"], int)
    empty = metrics_row(outcome(given_up=(), staleness=(), in_flight=0), RoundTally.empty(), (0, 0))
    assert (empty["in_flight"], empty["staleness_mean"], empty["staleness_max"]) == (0, 0.0, 0)



@pytest.mark.parametrize(("kwargs", "field"), [
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(beta1=1.5), "beta1"),
    (dict(beta2=-0.1), "beta2"),
    (dict(tau=0.0), "tau"),
])
@pytest.mark.parametrize("make", [FedAdam, FedYogi])
def test_a_bad_adaptive_option_names_its_field(make, kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        make(**kwargs)
    assert err.value.field == field
