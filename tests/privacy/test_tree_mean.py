"""DP-FTRL's release (``DPMean.tree``): the tree's noise on every running sum, clipping,
reproducibility, the state's pickling, and what it refuses.

The statistical tests release zero updates, so the running sum of the released
deltas is pure noise, over 20,000 coordinates from one fixed seed: its sample
variance then has a relative standard error of sqrt(2 / 20,000) = 1%, and the
tolerance is 6% (six standard errors). The seeds are fixed, so each test is
deterministic; the tolerance only says how far from the truth a correct
implementation could land.
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedactors.aggregation.base import PlainContributions, PrivateRelease, RoundContext, TreeRelease
from fedactors.aggregation.clipping import l2_norm
from fedactors.privacy.dp_mean import DPMean
from fedactors.privacy.gaussian_mean import CLIPPED_DELTA

ROOT = Path(__file__).resolve().parents[2]

Z, C, M = 1.5, 0.5, 4
BIG = 20_000
#: Six relative standard errors of a variance estimated from BIG Gaussian samples.
RTOL = 6 * np.sqrt(2 / BIG)


@functools.cache
def tree(restart_every=None, efficient=None, z=Z):
    """One aggregator per configuration, shared by the tests: its TensorFlow functions are
    traced once (~0.7 s per tree depth), not once per test. A test that needs a new
    aggregator builds its own. ``efficient=None``: DPMean.tree's default."""
    extra = {} if efficient is None else {"efficient": efficient}
    return DPMean.tree(C, z, M, restart_every=restart_every, **extra)


def popcount(t: int) -> int:
    return bin(t).count("1")


def ctx(r: int, seed: int = 0, m: int = M) -> RoundContext:
    return RoundContext(round=r, expected_count=m, selected=m, rng=np.random.default_rng(seed))


def release(agg, state, rows, r: int = 1, seed: int = 0):
    return agg.aggregate(state, PlainContributions(list(rows)), ctx(r, seed, agg.expected_count))


def running_noise(agg, steps: int, dim: int = BIG, seed: int = 1) -> np.ndarray:
    """Running sums (rows t = 1..steps) of the deltas released for zero updates, in units
    of one tree node's standard deviation on the sum (z C): m * delta / (z C)."""
    state = agg.initial_state(dim)
    total, sums = np.zeros(dim), []
    for t in range(1, steps + 1):
        out = release(agg, state, [], r=t, seed=seed + t)
        state = out.state
        total = total + out.delta.astype(np.float64)
        sums.append(total * agg.expected_count / (agg.noise_multiplier * agg.clip_norm))
    return np.array(sums)


def leaves(state) -> list[np.ndarray]:
    return [np.asarray(x) for x in tf.nest.flatten(state.query_state)]


def assert_same_state(a, b) -> None:
    assert a.dim == b.dim
    la, lb = leaves(a), leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def update_rows(agg, dim: int, n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    params = agg.client_params(agg.initial_state(dim))
    return [agg.encode(params, rng.normal(size=dim).astype(np.float32), 1, rng) for _ in range(n)]


# -- the noise the tree implies ---------------------------------------------------


def test_the_plain_tree_puts_popcount_t_nodes_of_noise_on_the_running_sum() -> None:
    """Release t's running sum carries the nodes covering 1..t: one per 1-bit of t."""
    sums = running_noise(tree(efficient=False), steps=8)
    for t, s in enumerate(sums, start=1):
        assert s.var() == pytest.approx(popcount(t), rel=RTOL), t
        assert abs(s.mean()) < 6 * np.sqrt(popcount(t) / BIG), t  # centred


def test_the_default_efficient_tree_has_no_more_noise_and_honakers_variance() -> None:
    """Honaker's estimator (tensorflow-privacy's EfficientTreeAggregator docstring): a node
    d levels above the leaves contributes variance 1 / (2 - 2**-d) node variances, never
    more than the plain tree's 1, and less from the second release on."""
    sums = running_noise(tree(), steps=8)  # the default estimator
    for t, s in enumerate(sums, start=1):
        honaker = sum(1 / (2 - 2.0**-d) for d in range(t.bit_length()) if t >> d & 1)
        assert s.var() == pytest.approx(honaker, rel=RTOL), t
        assert s.var() <= popcount(t) * (1 + RTOL), t
        if t >= 2:
            assert s.var() < 0.9 * popcount(t), t


def test_restart_every_starts_a_fresh_independent_tree() -> None:
    r, trees = 3, 3
    sums = running_noise(tree(restart_every=r, efficient=False), steps=r * trees)
    before = np.vstack([np.zeros(BIG), sums])  # before[t]: the running sum after t releases
    per_tree = []
    for k in range(trees):
        for j in range(1, r + 1):
            # The releases since the restart carry the noise of a fresh tree after j releases.
            since = before[k * r + j] - before[k * r]
            assert since.var() == pytest.approx(popcount(j), rel=RTOL), (k, j)
        per_tree.append(before[(k + 1) * r] - before[k * r])
    # Fresh noise, not the first tree's again: the trees' sums are uncorrelated (the
    # correlation of independent samples has standard error 1 / sqrt(BIG) = 0.007).
    corr = np.corrcoef(per_tree)
    assert np.all(np.abs(corr[np.triu_indices(trees, 1)]) < 6 / np.sqrt(BIG))
    # So the whole running sum carries every closed tree's noise plus the open one's.
    assert sums[-1].var() == pytest.approx(trees * popcount(r), rel=RTOL)


def test_tree_measurements_count_leaves_and_restarts() -> None:
    agg = tree(restart_every=3)
    state, seen = agg.initial_state(4), []
    for t in range(1, 8):
        out = release(agg, state, [], r=t)
        state = out.state
        seen.append((out.measurements["tree_leaf"], out.measurements["tree_restarted_after"]))
        assert out.measurements["tree_node_noise_stddev_on_mean"] == pytest.approx(Z * C / M)
    assert seen == [(1, 0.0), (2, 0.0), (3, 1.0), (1, 0.0), (2, 0.0), (3, 1.0), (1, 0.0)]


# -- clipping -----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(np.float32, st.integers(1, 12),
               elements=st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False, width=32)),
    st.floats(1e-3, 1e3),
)
def test_every_encoded_delta_is_clipped_to_c_in_its_own_direction(delta: np.ndarray,
                                                                  c: float) -> None:
    agg = DPMean.tree(c, Z, M)
    params = agg.client_params(agg.initial_state(delta.size))
    enc = agg.encode(params, delta, 1, np.random.default_rng(0))[CLIPPED_DELTA]
    assert enc.dtype == np.float32 and enc.shape == delta.shape
    norm = l2_norm(delta.astype(np.float64))
    assert l2_norm(enc) <= agg.clip_norm * (1 + 1e-6)
    if norm <= agg.clip_norm:
        np.testing.assert_allclose(enc, delta, rtol=1e-6, atol=0)
    else:  # the same direction, scaled to C
        np.testing.assert_allclose(enc, delta * (agg.clip_norm / norm), rtol=1e-5, atol=1e-12)


def test_a_non_finite_delta_contributes_zero() -> None:
    agg = DPMean.tree(C, Z, M)
    params = agg.client_params(agg.initial_state(3))
    enc = agg.encode(params, np.array([1.0, np.nan, np.inf], np.float32), 1, None)
    np.testing.assert_array_equal(enc[CLIPPED_DELTA], np.zeros(3, np.float32))


def test_without_noise_the_release_is_the_clipped_sum_over_m() -> None:
    agg = tree(z=0.0)
    rows = update_rows(agg, dim=6, n=3, seed=7)
    out = release(agg, agg.initial_state(6), rows)
    want = np.sum([r[CLIPPED_DELTA].astype(np.float64) for r in rows], axis=0) / M
    np.testing.assert_allclose(out.delta, want, rtol=1e-6, atol=1e-7)
    assert l2_norm(out.delta.astype(np.float64)) <= 3 * C / M * (1 + 1e-6)


# -- every release releases noise -----------------------------------------------------


def test_a_release_with_no_reports_still_releases_the_trees_noise() -> None:
    agg = tree()
    state = agg.initial_state(BIG)
    first = release(agg, state, [], r=1, seed=3)
    assert first.delta is not None and first.delta.shape == (BIG,)
    assert np.all(np.isfinite(first.delta))
    # One leaf's node: standard deviation z C / m on the mean.
    assert first.delta.astype(np.float64).std() == pytest.approx(Z * C / M, rel=RTOL / 2)
    assert first.state.query_state is not None  # the tree advanced
    second = release(agg, first.state, [], r=2, seed=4)
    assert second.measurements["tree_leaf"] == 2
    assert not np.array_equal(first.delta, second.delta)


# -- reproducibility ----------------------------------------------------------------------


def run(agg, rounds: int, seed: int, dim: int = 5, state=None, start: int = 1):
    """``rounds`` releases of three updates each (round r's generator seeded seed + r)."""
    state = agg.initial_state(dim) if state is None else state
    deltas = []
    for r in range(start, start + rounds):
        out = release(agg, state, update_rows(agg, dim, 3, seed=100 + r), r=r, seed=seed + r)
        state = out.state
        deltas.append(out.delta)
    return deltas, state


def test_the_same_round_generators_give_bit_identical_deltas_and_state() -> None:
    a_deltas, a_state = run(tree(restart_every=3), 4, seed=11)
    # A second aggregator built the same way: nothing is kept in the aggregator.
    b_deltas, b_state = run(DPMean.tree(C, Z, M, restart_every=3), 4, seed=11)
    for x, y in zip(a_deltas, b_deltas):
        assert x.dtype == y.dtype == np.float32
        np.testing.assert_array_equal(x, y)
    assert_same_state(a_state, b_state)


def test_another_round_generator_gives_other_noise() -> None:
    a_deltas, _ = run(tree(), 3, seed=11)
    b_deltas, _ = run(tree(), 3, seed=12)
    # The same updates, so what differs is the noise, at every release.
    for x, y in zip(a_deltas, b_deltas):
        assert np.all(x != y)


def test_the_noise_seed_travels_in_the_state() -> None:
    """After the first release the state alone decides the noise: the later rounds'
    generators do not (a run restored from a checkpoint continues its tree)."""
    agg = tree()
    _, state = run(agg, 2, seed=11)
    a, _ = run(agg, 3, seed=50, state=state, start=3)
    b, _ = run(agg, 3, seed=90, state=state, start=3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_a_pickled_state_is_plain_data_and_continues_identically() -> None:
    agg = tree(restart_every=3)
    _, state = run(agg, 4, seed=11)
    assert all(type(x) is np.ndarray for x in tf.nest.flatten(state.query_state))  # no tensors
    copy = pickle.loads(pickle.dumps(state))
    assert_same_state(copy, state)
    want, want_state = run(agg, 4, seed=0, state=state, start=5)
    # Continued by the same aggregator, and by a new one built the same way.
    for cont in (agg, DPMean.tree(C, Z, M, restart_every=3)):
        got, got_state = run(cont, 4, seed=0, state=pickle.loads(pickle.dumps(state)), start=5)
        for x, y in zip(want, got):
            np.testing.assert_array_equal(x, y)
        assert_same_state(got_state, want_state)


# -- what it refuses and declares ---------------------------------------------------------


def test_a_round_expecting_another_cohort_size_is_refused() -> None:
    agg = DPMean.tree(C, Z, M)
    state = agg.initial_state(3)
    with pytest.raises(ValueError, match=r"expected_count=4.*expects 5"):
        agg.aggregate(state, PlainContributions([]), ctx(1, m=M + 1))


def test_a_summed_delta_of_the_wrong_shape_is_refused() -> None:
    agg = DPMean.tree(C, Z, M)
    rows = update_rows(agg, dim=4, n=2, seed=0)
    with pytest.raises(ValueError, match=r"shape \(4,\), expected \(3,\)"):
        release(agg, agg.initial_state(3), rows)


@pytest.mark.parametrize("kwargs", [
    {"clip_norm": 0.0}, {"clip_norm": -1.0}, {"noise_multiplier": -0.1},
    {"expected_count": 0}, {"restart_every": 0},
])
def test_invalid_parameters_are_refused(kwargs) -> None:
    args = {"clip_norm": C, "noise_multiplier": Z, "expected_count": M, **kwargs}
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        DPMean.tree(**args)


def test_efficient_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="efficient"):
        DPMean.tree(C, Z, M, efficient=1)


@pytest.mark.parametrize("restart_every", [None, 16])
def test_it_declares_a_tree_release_with_its_parameters(restart_every) -> None:
    declared = DPMean.tree(C, Z, M, restart_every=restart_every).private_release()
    assert type(declared) is TreeRelease and isinstance(declared, PrivateRelease)
    assert (declared.noise_multiplier, declared.expected_count, declared.restart_every) == (
        Z, M, restart_every)
    # Central noise: the server adds it, whoever reported.
    assert declared.min_survivors is None and not declared.distributed_noise
