"""DP-FTRL's accounting, budget and aggregators: what the mutation run found unchecked.

Found by the mutation run of docs/testing.md ("Mutation testing") on
``tree_accounting``, ``tree_budget``, ``tree_mean`` and ``adaptive_tree``: the
closed-form sensitivity bound and the RDP built on it, checked against their
documented formulas; the ledger's smallest gap; zero noise; the budget's
boundaries (a target exactly at one release's ε, a next release exactly at the
target); the privacy block's fixed fields and texts (summary.json is read by
people); the aggregators' field names in refusals, documented defaults,
per-release measurements, one-report releases, one tree that never restarts
however long the run, and the contribution bounds secure aggregation sizes its
range with.

The accounting and budget tests are pure functions. The aggregator tests build
TensorFlow-backed queries inside the tests only (never at collection time) and
share one aggregator per configuration, so each tree is traced once.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import tensorflow as tf

from fedactors.aggregation.base import PlainContributions, RoundContext, TreeRelease
from fedactors.errors import ConfigError
from fedactors.privacy.accounting import RDP_ORDERS
from fedactors.privacy.adaptive_clip import BELOW_CLIP, AdaptiveClipping
from fedactors.privacy.adaptive_tree import AdaptiveTreeDPMean
from fedactors.privacy.gaussian_mean import CLIPPED_DELTA, FLOAT32_SLACK
from fedactors.privacy.participation import Participation
from fedactors.privacy.tree_accounting import TreeLedger, TreeStats, sensitivity_bound
from fedactors.privacy.tree_budget import TreeBudget
from fedactors.privacy.tree_mean import TreeDPMean, TreeMeanState

DELTA = 1e-5
Z, C, M, N = 2.5, 0.5, 4, 20


# -- the closed-form sensitivity bound and its RDP ---------------------------------------


def most_by_greedy(steps: int, gap: int) -> int:
    """Contributions at releases 1, gap + 2, 2 gap + 3, ...: the most that fit in ``steps``."""
    return len(range(1, steps + 1, gap + 1))


def documented_bound(steps: int, k: int, gap: int) -> float:
    """sensitivity_bound's docstring: k capped at what the separation allows, then per level
    h of the tree (nodes of 2**h leaves, floor(log2 T) + 1 levels) k * min(k, ceil(2**h /
    (b + 1)))."""
    k = min(k, most_by_greedy(steps, gap))
    total, h = 0, 0
    while steps and 2**h <= steps:
        total += k * min(k, math.ceil(2**h / (gap + 1)))
        h += 1
    return float(total)


def test_the_sensitivity_bound_is_its_documented_sum_over_levels() -> None:
    for steps in range(0, 41):
        for gap in range(0, 6):
            for k in (0, 1, 2, 3, steps):
                assert sensitivity_bound(steps, k, gap) == documented_bound(steps, k, gap), (
                    steps, k, gap)


def test_nobody_contributing_has_no_sensitivity() -> None:
    assert sensitivity_bound(0, 0, 0) == 0.0
    assert sensitivity_bound(8, 0, 3) == 0.0


@pytest.mark.parametrize("z", [1.0, 2.5, 0.7])
@pytest.mark.parametrize(("steps", "gap"), [(1, 0), (8, 0), (13, 2), (30, 5)])
def test_the_planned_bound_is_the_gaussian_rdp_of_the_bounded_sensitivity(
        z: float, steps: int, gap: int) -> None:
    """A Gaussian mechanism of noise z over sensitivity sqrt(S) has RDP alpha S / (2 z**2)."""
    squares = documented_bound(steps, steps, gap)
    got = TreeStats(steps=steps).planned_rdp_bound(z, gap)
    np.testing.assert_allclose(got, RDP_ORDERS * squares / (2 * z**2), rtol=1e-12)
    # Never below the exact search (which tree_rdp runs).
    assert np.all(got >= TreeStats(steps=steps).planned_rdp(z, gap) * (1 - 1e-12))


def test_the_planned_bound_of_zero_noise_is_infinite_and_of_an_empty_tree_zero() -> None:
    zero_noise = TreeStats(steps=4).planned_rdp_bound(0.0, 1)
    assert zero_noise.shape == RDP_ORDERS.shape and np.all(zero_noise == np.inf)
    for z in (0.0, 2.0):
        empty = TreeStats().planned_rdp_bound(z, 1)
        assert empty.shape == RDP_ORDERS.shape and np.all(empty == 0.0)


def test_a_ledger_at_a_restart_bounds_only_the_trees_released() -> None:
    """After exactly restart_every releases the fresh tree is empty and costs nothing."""
    ledger = TreeLedger(Z, restart_every=4, min_separation=1)
    for contributors in [(0,), (1,), (0,), (2,)]:
        ledger = ledger.record(contributors)
    assert ledger.trees[-1] == TreeStats()
    np.testing.assert_allclose(ledger.rdp_planned_bound(),
                               TreeStats(steps=4).planned_rdp_bound(Z, 1), rtol=1e-12)


def test_zero_noise_is_infinite_observed_epsilon_even_if_nobody_contributed() -> None:
    """Nothing protects a release without noise: ε is infinite whoever took part."""
    ledger = TreeLedger(0.0, None, 0).record(())
    assert ledger.epsilon_observed(DELTA) == math.inf
    assert ledger.epsilon_planned_bound(DELTA) == math.inf


def test_the_ledger_keeps_the_smallest_gap_not_the_last() -> None:
    # Device 1 at releases 1, 2 (0 between) and 5 (2 between): the tree's gap is 0.
    ledger = TreeLedger(Z, None, 0)
    for contributors in [(1,), (1,), (), (), (1,)]:
        ledger = ledger.record(contributors)
    assert ledger.trees[-1] == TreeStats(steps=5, max_participations=3, min_separation=0)


# -- the budget ------------------------------------------------------------------------------


def tree_budget(target=None, gap: int = 0, restart_every=None) -> TreeBudget:
    return TreeBudget(TreeLedger(Z, restart_every, gap), DELTA, target,
                      TreeRelease(Z, expected_count=M, restart_every=restart_every),
                      population=N)


def charged(budget: TreeBudget, schedule, skipped: int = 0):
    state = budget.initial_state()
    for contributors in schedule:
        state = budget.charge(state, Participation(contributors=tuple(contributors)),
                              len(contributors), aggregated=True)
    for _ in range(skipped):
        state = budget.charge(state, Participation(), 0, aggregated=False)
    return state


def test_charging_without_saying_aggregated_records_a_release() -> None:
    budget = tree_budget()
    state = budget.charge(budget.initial_state(), Participation(contributors=(3,)), 1)
    assert state.ledger.releases == 1 and state.releases_skipped == 0
    assert dict(state.ledger.last) == {3: 1}


def test_a_target_equal_to_one_releases_epsilon_is_accepted() -> None:
    first = tree_budget().next_epsilon(tree_budget().initial_state())
    assert first > 0
    budget = tree_budget(target=first)
    assert budget.checked() is budget
    assert not budget.would_exceed(budget.initial_state())  # ε may reach the target


def test_the_budget_stops_only_when_the_next_release_would_pass_the_target() -> None:
    state = charged(tree_budget(), [(0,), (1,)])
    next_epsilon = tree_budget().next_epsilon(state)
    assert not tree_budget(target=next_epsilon).would_exceed(state)
    assert tree_budget(target=next_epsilon * (1 - 1e-9)).would_exceed(state)


def test_a_target_below_one_release_is_refused_naming_both_figures() -> None:
    first = tree_budget().next_epsilon(tree_budget().initial_state())
    with pytest.raises(ConfigError) as err:
        tree_budget(target=0.5).checked()
    assert err.value.field == "privacy.target_epsilon"
    assert err.value.message == (
        f"0.5 is below the ε of a single DP-FTRL release ({first:.4g} at δ=1e-05): no "
        "release could run; raise the target or the noise")


def test_a_skipped_release_is_a_violation_that_says_why_epsilon_may_not_hold() -> None:
    budget = tree_budget()
    state = charged(budget, [(0,)], skipped=2)
    assert budget.violations(state) == [
        "skipped releases: 2 releases were not made (secure aggregation aborted, or nobody "
        "was online); whether a release is made depends on how many devices took part, "
        "which the noise does not cover, so ε holds only if that does not depend on any one "
        "device"]


def test_the_privacy_block_names_the_neighbours_method_and_what_each_epsilon_bounds() -> None:
    budget = tree_budget()
    block = budget.summary(charged(budget, [(0,), (1,)]), "completed")
    assert block["accounting"]["neighboring"] == "add-or-remove-one"
    assert block["accounting"]["method"] == "rdp"
    assert block["observed_participation"]["note"] == (
        "epsilon_observed_participation bounds the participation that happened; it holds if "
        "when devices took part (online, charging, fast enough) did not depend on their data. "
        "epsilon bounds any participation the rules allow")


def test_the_assumption_of_one_tree_without_separation_says_so() -> None:
    text = tree_budget().assumption()
    # Whole phrases with their neighbours: the sentence reads as the docs give it.
    assert "(tree-aggregated Gaussian noise, one tree for the whole run; " in text
    assert "a new tree" not in text
    assert text.endswith(
        "release, and no separation rule (a device may contribute to consecutive releases)")
    assert "keeps each device out" not in text
    separated = tree_budget(gap=3, restart_every=8).assumption()
    assert "the server keeps each device out of the 3 releases after each of its " \
           "contributions" in separated
    assert "no separation rule" not in separated and "one tree" not in separated


# -- the aggregators: refusals name the field, documented defaults -------------------------


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"clip_norm": 0.0}, "clip_norm"), ({"noise_multiplier": -1.0}, "noise_multiplier"),
    ({"expected_count": 0}, "expected_count"), ({"restart_every": 0}, "restart_every")])
def test_tree_dp_mean_refusals_name_the_field(kwargs, field: str) -> None:
    args = {"clip_norm": C, "noise_multiplier": Z, "expected_count": M, **kwargs}
    with pytest.raises(ConfigError) as err:
        TreeDPMean(**args)
    assert err.value.field == field


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"initial_clip_norm": 0.0}, "clip_norm"), ({"noise_multiplier": -1.0}, "noise_multiplier"),
    ({"expected_count": 0}, "expected_count"), ({"restart_every": 0}, "restart_every")])
def test_adaptive_tree_refusals_name_the_field(kwargs, field: str) -> None:
    args = {"initial_clip_norm": C, "noise_multiplier": Z, "expected_count": M,
            "restart_every": 3, "adaptive": AdaptiveClipping(), **kwargs}
    with pytest.raises(ConfigError) as err:
        AdaptiveTreeDPMean(**args)
    assert err.value.field == field


def test_adaptive_tree_refusals_say_what_is_wrong() -> None:
    with pytest.raises(ConfigError) as err:
        AdaptiveTreeDPMean(C, Z, M, None, AdaptiveClipping())
    assert err.value.message == ("adaptive clipping needs restart_every: the clip only changes "
                                 "when the tree restarts, got None")
    with pytest.raises(ConfigError) as err:
        AdaptiveTreeDPMean(C, Z, M, 3, "median")
    assert err.value.message == "must be AdaptiveClipping or None, got 'median'"


@pytest.mark.parametrize("make", [lambda: TreeDPMean(C, Z, M),
                                  lambda: AdaptiveTreeDPMean(C, Z, M, 3, AdaptiveClipping())])
def test_a_model_without_weights_is_refused_naming_dim(make) -> None:
    with pytest.raises(ConfigError) as err:
        make().initial_state(0)
    assert err.value.field == "dim"


def test_the_tree_is_efficient_by_default() -> None:
    assert TreeDPMean(C, Z, M).efficient is True


# -- the aggregators: releases -----------------------------------------------------------


@functools.cache
def plain_tree(z: float = Z) -> TreeDPMean:
    """One aggregator per configuration, shared: its TensorFlow functions trace once."""
    return TreeDPMean(C, z, M, restart_every=3)


@functools.cache
def one_tree() -> TreeDPMean:
    return TreeDPMean(C, Z, M)


@functools.cache
def adaptive_tree(z: float = Z, count_stddev=None) -> AdaptiveTreeDPMean:
    return AdaptiveTreeDPMean(C, z, M, 3, AdaptiveClipping(
        target_quantile=0.5, learning_rate=0.2, clipped_count_stddev=count_stddev))


def ctx(r: int) -> RoundContext:
    return RoundContext(round=r, expected_count=M, selected=M, rng=np.random.default_rng(r))


def one_hot_rows(agg, state, dim: int, scale: float, n: int) -> list[dict[str, np.ndarray]]:
    """Devices whose deltas point along one axis each, ``scale`` long."""
    params = agg.client_params(state)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        delta = np.zeros(dim, np.float32)
        delta[i % dim] = scale
        rows.append(agg.encode(params, delta, 1, rng))
    return rows


@pytest.mark.parametrize("make", [plain_tree, adaptive_tree])
def test_a_release_of_one_report_adds_that_report_over_m(make) -> None:
    """The same state and round generator give the same tree noise, so a release with one
    report differs from one with none by exactly that report over m."""
    agg = make()
    state = agg.initial_state(3)
    [row] = one_hot_rows(agg, state, 3, 0.2, 1)  # below C: sent as is
    alone = agg.aggregate(state, PlainContributions([row]), ctx(1)).delta.astype(np.float64)
    empty = agg.aggregate(state, PlainContributions([]), ctx(1)).delta.astype(np.float64)
    np.testing.assert_allclose(alone - empty, row[CLIPPED_DELTA] / M, rtol=0, atol=1e-6)
    assert alone[0] - empty[0] == pytest.approx(0.2 / M, abs=1e-6)


def test_the_tree_reports_its_clip_norm() -> None:
    agg = plain_tree()
    out = agg.aggregate(agg.initial_state(3), PlainContributions([]), ctx(1))
    assert out.measurements["clip_norm"] == agg.clip_norm == C


@pytest.mark.parametrize("make", [plain_tree, adaptive_tree])
def test_contribution_bounds_cover_every_coordinate_a_device_can_send(make) -> None:
    """Secure aggregation sizes its range from these: no encoded coordinate may exceed them."""
    agg = make()
    state, dim = agg.initial_state(3), 3
    params = agg.client_params(state)
    bounds = agg.contribution_bounds(params, dim)
    assert bounds[CLIPPED_DELTA] == pytest.approx(params["clip_norm"] * FLOAT32_SLACK, rel=1e-12)
    # A huge update along one axis is clipped to C on that coordinate.
    rows = one_hot_rows(agg, state, dim, 1e6, 3)
    for row in rows:
        assert np.max(np.abs(row[CLIPPED_DELTA])) == pytest.approx(params["clip_norm"], rel=1e-6)
        for key, bound in bounds.items():
            assert np.max(np.abs(row[key])) <= bound, key
    if isinstance(agg, AdaptiveTreeDPMean):
        assert set(bounds) == {CLIPPED_DELTA, BELOW_CLIP}
        assert bounds[BELOW_CLIP] == pytest.approx(0.5 * FLOAT32_SLACK, rel=1e-12)
    else:
        assert set(bounds) == {CLIPPED_DELTA}


def test_adaptive_tree_measurements_count_leaves_restarts_and_the_node_noise() -> None:
    agg = adaptive_tree()
    state, seen = agg.initial_state(3), []
    for r in range(1, 5):
        rows = one_hot_rows(agg, state, 3, 5.0, M)  # far above C: the estimate grows
        out = agg.aggregate(state, PlainContributions(rows), ctx(r))
        state = out.state
        m = out.measurements
        seen.append((m["tree_leaf"], m["tree_restarted_after"]))
        # The node noise of the tree's C on the mean.
        assert m["tree_node_noise_stddev_on_mean"] == pytest.approx(Z * m["clip_norm"] / M)
    assert seen == [(1, 0.0), (2, 0.0), (3, 1.0), (1, 0.0)]


def test_devices_are_sent_the_trees_clip_not_the_moving_estimate() -> None:
    """Inside a tree C is fixed (its noise is z C): the estimate only becomes C at a restart."""
    agg = adaptive_tree()
    state = agg.initial_state(3)
    out = agg.aggregate(state, PlainContributions(one_hot_rows(agg, state, 3, 5.0, M)), ctx(1))
    assert out.measurements["clip_estimate"] > out.measurements["clip_norm"]  # it moved
    params = agg.client_params(out.state)
    assert params["clip_norm"] == out.measurements["next_clip_norm"] == pytest.approx(C)


def test_without_restart_every_the_release_count_never_restarts_the_tree() -> None:
    """One tree for the whole run, however long: a restart would reset the tree's nodes, and
    the accountant charges one tree. The state's restart counter is set forward as if the run
    had made that many releases; the next release must be the one it would be without."""
    agg = one_tree()
    first = agg.aggregate(agg.initial_state(3), PlainContributions([]), ctx(1)).state
    want = agg.aggregate(first, PlainContributions([]), ctx(2))
    for count in (60, 1000, 2**20):
        later = TreeMeanState(3, first.query_state._replace(
            indicator_state=np.asarray(count, np.int32)))
        got = agg.aggregate(later, PlainContributions([]), ctx(2))
        np.testing.assert_array_equal(got.delta, want.delta)
        for x, y in zip(tf.nest.flatten(got.state.query_state.inner_query_state),
                        tf.nest.flatten(want.state.query_state.inner_query_state), strict=True):
            np.testing.assert_array_equal(x, y)
