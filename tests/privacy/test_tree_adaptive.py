"""DP-FTRL with adaptive clipping (``DPMean.tree(..., adaptive=AdaptiveClipping(...))``):
the declared multiplier and the run's ε, reproducibility of both trees' noise, the count
tree's noise, the clip moving toward the target quantile at restarts, pickling, refusals.

The count-noise test reads the noised count back from the quantile estimate: with
arithmetic updates at learning rate 1 and target 0.5, a release with nobody reporting
moves the estimate by exactly -noise / m. With a restart after every release each
count is one fresh tree node, so NOISE_RELEASES samples of N(0, sigma_b**2): the sample
variance has a relative standard error of sqrt(2 / NOISE_RELEASES) and the tolerance is
six of them. The seeds are fixed, so every test is deterministic; tolerances say how
far from the truth a correct implementation could land.
"""

from __future__ import annotations

import functools
import math
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import dp_accounting
import numpy as np
import pytest
import tensorflow as tf
from dp_accounting import rdp

from fedactors import DeviceClass, LocalTraining, Privacy, Rounds, Scenario
from fedactors.aggregation.base import PlainContributions, RoundContext, TreeRelease
from fedactors.aggregation.clipping import l2_norm
from fedactors.errors import ConfigError
from fedactors.privacy.adaptive_clip import BELOW_CLIP, AdaptiveClipping
from fedactors.privacy.adaptive_tree import (
    AdaptiveTreeDPMean,
    SeededQAdaClipTreeResSumQuery,
    SeededTreeQuantileEstimatorQuery,
    composed_noise_multiplier,
)
from fedactors.privacy.budget import PrivacyBudget
from fedactors.privacy.dp_mean import DPMean
from fedactors.privacy.dp_queries import QuantileEstimatorQuery, TreeResidualSumQuery
from fedactors.privacy.gaussian_mean import CLIPPED_DELTA
from fedactors.privacy.participation import Participation
from fedactors.privacy.tree_accounting import tree_rdp
from fedactors.privacy.tree_budget import TreeBudget
from fedactors.privacy.tree_mean import TreeDPMean
from tests.privacy.test_tree_accounting import brute_sensitivity_sq

ROOT = Path(__file__).resolve().parents[2]

Z, C0, M, R = 1.5, 0.1, 4, 3
DELTA = 1e-5
NOISE_RELEASES = 2000
#: Six relative standard errors of a variance estimated from NOISE_RELEASES samples.
RTOL = 6 * math.sqrt(2 / NOISE_RELEASES)


@functools.cache
def adaptive_tree(restart_every: int = R, m: int = M, z: float = Z, clip: float = C0,
                  target: float = 0.5, lr: float = 0.2, count_stddev=None,
                  geometric: bool = True) -> AdaptiveTreeDPMean:
    """One aggregator per configuration, shared: its TensorFlow functions trace once."""
    return DPMean.tree(clip, z, m, restart_every=restart_every,
                       adaptive=AdaptiveClipping(target, lr, count_stddev, geometric))


def ctx(r: int, seed: int, m: int) -> RoundContext:
    return RoundContext(round=r, expected_count=m, selected=m, rng=np.random.default_rng(seed))


def rows_for(agg, state, norms: np.ndarray, dim: int, rng: np.random.Generator):
    """Devices with deltas of the given L2 norms (random directions), encoded."""
    params = agg.client_params(state)
    out = []
    for n in norms:
        d = rng.normal(size=dim)
        out.append(agg.encode(params, (d * (n / np.linalg.norm(d))).astype(np.float32), 1, rng))
    return out


def run(agg, releases: int, seed: int, dim: int = 5, state=None, start: int = 1):
    """``releases`` releases of M devices with norms uniform on [0.05, 0.25] (the
    devices' data fixed by the release number; round r's server generator seed + r).
    Returns the deltas, the measurements and the final state."""
    state = agg.initial_state(dim) if state is None else state
    deltas, measured = [], []
    for r in range(start, start + releases):
        data = np.random.default_rng(1000 + r)
        rows = rows_for(agg, state, data.uniform(0.05, 0.25, agg.expected_count), dim, data)
        out = agg.aggregate(state, PlainContributions(rows), ctx(r, seed + r, agg.expected_count))
        state = out.state
        deltas.append(out.delta)
        measured.append(out.measurements)
    return deltas, measured, state


def leaves(state) -> list[np.ndarray]:
    return [np.asarray(x) for x in tf.nest.flatten(state.query_state)]


def assert_same_state(a, b) -> None:
    assert a.dim == b.dim
    la, lb = leaves(a), leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def count_seeds(state) -> np.ndarray:
    """The count tree's generator seeds (read here only to check what seeded them)."""
    qs = state.query_state.inner_query_state.quantile_estimator_state
    return np.asarray(qs.below_estimate_state.numerator_state.tree_state.value_generator_state.seeds)


def sum_seeds(state) -> np.ndarray:
    ss = state.query_state.inner_query_state.sum_state
    return np.asarray(ss.tree_state.value_generator_state.seeds)


# -- the declaration and the accounting ------------------------------------------------


@pytest.mark.parametrize(("z", "m", "count_stddev"), [
    (1.5, 4, None), (3.0, 50, None), (0.7, 10, 2.0), (2.0, 100, 0.25)])
def test_the_declared_multiplier_is_the_two_trees_composed(z, m, count_stddev) -> None:
    agg = DPMean.tree(0.5, z, m, restart_every=8, adaptive=AdaptiveClipping(
        clipped_count_stddev=count_stddev))
    sigma_b = m / 20 if count_stddev is None else count_stddev
    assert agg.clipped_count_stddev == sigma_b
    declared = agg.private_release()
    assert type(declared) is TreeRelease
    assert declared.noise_multiplier == pytest.approx((z**-2 + (2 * sigma_b) ** -2) ** -0.5,
                                                      rel=1e-12)
    assert declared.noise_multiplier < min(z, 2 * sigma_b)
    assert (declared.expected_count, declared.restart_every, declared.min_survivors) == (
        m, 8, None)
    # Why one multiplier is exact: for every participation pattern the two trees' RDP
    # (tensorflow-privacy's accountant, each at its own multiplier) adds up to one tree's.
    for steps, k, gap in [(8, 1, 0), (8, 8, 0), (8, 3, 2), (5, 2, 1)]:
        both = (np.asarray(tree_rdp(z, steps, k, gap))
                + np.asarray(tree_rdp(2 * sigma_b, steps, k, gap)))
        np.testing.assert_allclose(tree_rdp(declared.noise_multiplier, steps, k, gap), both,
                                   rtol=1e-9)


def test_either_noise_zero_declares_no_privacy() -> None:
    assert composed_noise_multiplier(0.0, 2.0) == 0.0
    assert composed_noise_multiplier(2.0, 0.0) == 0.0
    agg = DPMean.tree(0.5, 2.0, 10, restart_every=4,
                      adaptive=AdaptiveClipping(clipped_count_stddev=0.0))
    assert agg.private_release().noise_multiplier == 0.0


def scenario(aggregator, **privacy) -> Scenario:
    return Scenario(name="adaptive_tree", model=lambda: None, loss="mse", data=lambda f, r: None,
                    fleet=[DeviceClass("d", count=20)], rounds=Rounds(cohort_size=M),
                    aggregator=aggregator, privacy=Privacy(**privacy))


def independent_epsilon(z: float, sigma_b: float, trees: list[tuple[int, int, int]]) -> float:
    """ε of the sum and count trees as separate Gaussian mechanisms: per tree, noise z
    over sensitivity C sqrt(S) and sigma_b over 0.5 sqrt(S), S the brute-force worst
    sum of squared node counts, composed by dp-accounting's RDP accountant."""
    acc = rdp.RdpAccountant()
    for leaves_, k, gap in trees:
        s = brute_sensitivity_sq(leaves_, k, gap)
        acc.compose(dp_accounting.GaussianDpEvent(z / math.sqrt(s)))
        acc.compose(dp_accounting.GaussianDpEvent(sigma_b / (0.5 * math.sqrt(s))))
    return acc.get_epsilon(DELTA)


def test_the_runs_epsilon_is_both_trees_composed() -> None:
    agg = DPMean.tree(0.5, 2.0, M, restart_every=4, adaptive=AdaptiveClipping(
        clipped_count_stddev=1.5))
    b = PrivacyBudget.for_scenario(scenario(agg, delta=DELTA, min_separation=1), 20)
    assert isinstance(b, TreeBudget)
    state = b.initial_state()
    for contributors in [(0, 1), (2, 3), (0, 4), (5,), (1, 2), (6,)]:
        state = b.charge(state, Participation(contributors=contributors), len(contributors))
    block = b.summary(state, "completed")
    # Trees of 4 and 2 releases; with separation 1 at most 2 and 1 contributions.
    assert block["epsilon"] == pytest.approx(
        independent_epsilon(2.0, 1.5, [(4, 2, 1), (2, 1, 1)]), rel=1e-9)
    # What happened: device 0 at releases 1 and 3 (gap 1), once in the second tree.
    assert block["epsilon_observed_participation"] == pytest.approx(
        independent_epsilon(2.0, 1.5, [(4, 2, 1), (2, 1, 0)]), rel=1e-9)


@pytest.mark.slow
def test_a_run_reports_the_composed_epsilon_and_moves_the_clip_at_restarts() -> None:
    import keras

    from fedactors.data.federated import FederatedData
    from fedactors.simulation import RunOptions, run_scenario

    def data(fleet, rng):
        w = np.array([1.0, -2.0, 0.5], np.float32)
        clients = []
        for _ in range(fleet.size):
            x = rng.normal(size=(10, 3)).astype(np.float32)
            clients.append((x, (x @ w > 0).astype(np.int32)))
        xt = rng.normal(size=(50, 3)).astype(np.float32)
        return FederatedData.from_arrays(clients, (xt, (xt @ w > 0).astype(np.int32)))

    b, m, rounds, z = 2, 3, 8, 1.0
    sc = Scenario(
        name="tiny_adaptive_ftrl",
        model=lambda: keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), data=data,
        fleet=[DeviceClass("d", count=10)], rounds=Rounds(count=rounds, cohort_size=m),
        training=LocalTraining(batch_size=10, optimizer=lambda: keras.optimizers.SGD(0.1)),
        aggregator=DPMean.tree(0.01, z, m, restart_every=4,
                               adaptive=AdaptiveClipping(clipped_count_stddev=1.0)),
        privacy=Privacy(min_separation=b, delta=DELTA))
    result = run_scenario(sc, RunOptions(keep_events=True))
    p = result.summary["privacy"]
    assert p["accounting"]["mechanism"] == "dp-ftrl-tree-aggregation"
    assert p["epsilon"] == pytest.approx(independent_epsilon(z, 1.0, [(4, 2, 2), (4, 2, 2)]),
                                         rel=1e-9)
    # Updates far above C = 0.01: the clip grows, and only where a tree restarts.
    clips = [row["clip_norm"] for row in result.records if "clip_norm" in row]
    assert len(clips) == rounds
    assert clips[0:4] == [pytest.approx(0.01)] * 4 and len(set(clips[4:8])) == 1
    assert clips[4] > clips[0]


# -- reproducibility ----------------------------------------------------------------------


def test_the_same_round_generators_give_bit_identical_deltas_state_and_clips() -> None:
    a_deltas, a_measured, a_state = run(adaptive_tree(), 7, seed=11)
    # A second aggregator built the same way: nothing is kept in the aggregator.
    b_deltas, b_measured, b_state = run(
        DPMean.tree(C0, Z, M, restart_every=R, adaptive=AdaptiveClipping()), 7, seed=11)
    for x, y in zip(a_deltas, b_deltas):
        assert x.dtype == y.dtype == np.float32
        np.testing.assert_array_equal(x, y)
    assert a_measured == b_measured  # the clip and estimate trajectories, exactly
    assert_same_state(a_state, b_state)


def test_both_trees_are_seeded_from_the_round_generator_not_the_clock() -> None:
    agg = adaptive_tree()
    first = agg.aggregate(agg.initial_state(5), PlainContributions([]), ctx(1, 11, M)).state
    want = np.random.default_rng(11).integers(2**62, size=2)
    # Each generator's seeds start at its drawn seed ([s, s]) and advance by one per node
    # drawn (a few for the first leaf); a clock seed would be [microseconds, nanoseconds].
    for seeds, drawn in ((sum_seeds(first), want[0]), (count_seeds(first), want[1])):
        assert seeds[0] == seeds[1] and 0 < seeds[0] - drawn < 8, (seeds, drawn)


def flat(structure) -> list[np.ndarray]:
    return [np.asarray(x) for x in tf.nest.flatten(structure)]


def seeded_count_tree(stddev: float, seed: int):
    """tensorflow-privacy's own builder of the count tree, given the seed."""
    return TreeResidualSumQuery.build_l2_gaussian_query(
        0.5, 2 * stddev, tf.TensorSpec([]), noise_seed=seed).initial_global_state()


def assert_all_equal(a, b) -> None:
    la, lb = flat(a), flat(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(x, y)


def test_the_seeded_estimator_is_tensorflow_privacys_but_for_the_seed() -> None:
    args = (0.3, 0.7, 0.2, 2.5, 50.0, True)
    ours = SeededTreeQuantileEstimatorQuery(*args, noise_seed=42).initial_global_state()
    # The count tree is exactly what their builder makes with the seed (node noise
    # sigma_b = 2.5 on records clipped to 0.5, the first node already drawn) ...
    assert_all_equal(ours.below_estimate_state.numerator_state, seeded_count_tree(2.5, 42))
    assert float(ours.below_estimate_state.denominator) == 50.0
    # ... and the estimator around it is theirs. (Their clock-seeded tree itself cannot
    # even be built once a run has enabled TensorFlow's op determinism: tf.timestamp
    # refuses to run. Their base class, with a Gaussian count, reads no clock.)
    theirs = QuantileEstimatorQuery(*args).initial_global_state()
    assert_all_equal(ours._replace(below_estimate_state=()),
                     theirs._replace(below_estimate_state=()))


def test_the_composite_builds_both_trees_from_their_seeds() -> None:
    def build():
        return SeededQAdaClipTreeResSumQuery(
            0.3, 1.0, tf.TensorSpec([3]), 0.5, 0.2, 2.5, 50.0, True,
            noise_seed=5, count_noise_seed=9).initial_global_state()
    a = build()
    assert_all_equal(a, build())  # nothing from the clock
    assert_all_equal(a.quantile_estimator_state.below_estimate_state.numerator_state,
                     seeded_count_tree(2.5, 9))
    sum_tree = TreeResidualSumQuery.build_l2_gaussian_query(
        0.3, 1.0, tf.TensorSpec([3]), noise_seed=5).initial_global_state()
    assert_all_equal(a.sum_state, sum_tree)


def test_another_round_generator_gives_other_noise_in_both_trees() -> None:
    a_deltas, a_measured, _ = run(adaptive_tree(), 4, seed=11)
    b_deltas, b_measured, _ = run(adaptive_tree(), 4, seed=12)
    # The same updates, so what differs is the noise: the sum tree's at every release ...
    for x, y in zip(a_deltas, b_deltas):
        assert np.all(x != y)
    # ... and the count tree's, which moves the estimate every release.
    for x, y in zip(a_measured, b_measured):
        assert x["clip_estimate"] != y["clip_estimate"]


def test_the_noise_seeds_travel_in_the_state() -> None:
    agg = adaptive_tree()
    _, _, state = run(agg, 2, seed=11)
    a, am, _ = run(agg, 4, seed=50, state=state, start=3)
    b, bm, _ = run(agg, 4, seed=90, state=state, start=3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert am == bm


def test_a_pickled_state_is_plain_data_and_continues_identically() -> None:
    agg = adaptive_tree()
    _, _, state = run(agg, 4, seed=11)
    assert all(type(x) is np.ndarray for x in tf.nest.flatten(state.query_state))
    copy = pickle.loads(pickle.dumps(state))
    assert_same_state(copy, state)
    want, want_m, want_state = run(agg, 3, seed=0, state=state, start=5)
    fresh = DPMean.tree(C0, Z, M, restart_every=R, adaptive=AdaptiveClipping())
    for cont in (agg, fresh):
        got, got_m, got_state = run(cont, 3, seed=0, state=pickle.loads(pickle.dumps(state)),
                                    start=5)
        for x, y in zip(want, got):
            np.testing.assert_array_equal(x, y)
        assert got_m == want_m
        assert_same_state(got_state, want_state)


@pytest.mark.slow
def test_a_pickled_state_continues_identically_in_a_fresh_process(tmp_path: Path) -> None:
    agg = adaptive_tree()
    _, _, state = run(agg, 4, seed=11)
    want, _, _ = run(agg, 3, seed=0, state=state, start=5)
    (tmp_path / "state.pkl").write_bytes(pickle.dumps(state))
    # Unpickled first, before anything imports fedactors: the pickle names what it needs.
    script = textwrap.dedent(f"""
        import pickle, sys
        sys.path.insert(0, {str(ROOT)!r})
        state = pickle.loads(open(sys.argv[1] + "/state.pkl", "rb").read())
        import numpy as np
        from tests.privacy.test_tree_adaptive import C0, M, R, Z, run
        from fedactors.privacy.adaptive_clip import AdaptiveClipping
        from fedactors.privacy.dp_mean import DPMean
        agg = DPMean.tree(C0, Z, M, restart_every=R, adaptive=AdaptiveClipping())
        got, _, _ = run(agg, 3, seed=0, state=state, start=5)
        np.save(sys.argv[1] + "/got.npy", np.array(got))
    """)
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "got.npy"), np.array(want))


# -- the count tree's noise ------------------------------------------------------------------


@pytest.mark.slow  # ~20 s: 2,000 releases with a restart each
def test_the_count_tree_adds_nodes_of_standard_deviation_clipped_count_stddev() -> None:
    m, sigma_b = 1000, 10.0
    # Arithmetic updates, rate 1, target 0.5: estimate_t = estimate_{t-1} - noise_t / m
    # for an empty release (the unclipped fraction is 0.5 + noise / m, never clamped at
    # noise / m ~ 0.01). A restart after every release: each noise is one fresh node.
    agg = DPMean.tree(1.0, 0.0, m, restart_every=1, adaptive=AdaptiveClipping(
        target_quantile=0.5, learning_rate=1.0, clipped_count_stddev=sigma_b, geometric=False))
    state = agg.initial_state(1)
    estimates = [1.0]  # the initial estimate: the initial clip
    for t in range(1, NOISE_RELEASES + 1):
        out = agg.aggregate(state, PlainContributions([]), ctx(t, t, m))
        state = out.state
        estimates.append(np.float64(np.float32(out.measurements["clip_estimate"])))
    noise = -m * np.diff(np.asarray(estimates, np.float64))
    assert noise.var() == pytest.approx(sigma_b**2, rel=RTOL)
    assert abs(noise.mean()) < 6 * sigma_b / math.sqrt(NOISE_RELEASES)
    # Independent nodes: consecutive draws uncorrelated.
    assert abs(np.corrcoef(noise[:-1], noise[1:])[0, 1]) < 6 / math.sqrt(NOISE_RELEASES)


# -- the clip -----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [0.2, 0.8])
def test_the_clip_moves_to_the_target_quantile_and_only_at_restarts(target: float) -> None:
    """Norms uniform on [0.5, 1.5], so the target quantile is 0.5 + target; C starts at 0.3."""
    m, restart_every, releases, dim = 20, 4, 48, 4
    agg = adaptive_tree(restart_every=restart_every, m=m, clip=0.3, target=target)
    state, measured = agg.initial_state(dim), []
    for r in range(1, releases + 1):
        data = np.random.default_rng(r)
        rows = rows_for(agg, state, data.uniform(0.5, 1.5, m), dim, data)
        params = agg.client_params(state)
        # Every device's delta is clipped to the tree's C and says whether it was below
        # the estimate.
        assert all(l2_norm(row[CLIPPED_DELTA]) <= params["clip_norm"] * (1 + 1e-6)
                   for row in rows)
        assert {float(row[BELOW_CLIP][0]) for row in rows} <= {0.5, -0.5}
        out = agg.aggregate(state, PlainContributions(rows), ctx(r, 7 + r, m))
        state = out.state
        measured.append(out.measurements)
    clips = np.array([x["clip_norm"] for x in measured])
    for k in range(releases // restart_every):
        tree_clips = clips[k * restart_every:(k + 1) * restart_every]
        assert np.all(tree_clips == tree_clips[0]), k  # fixed inside a tree
        if k:  # a restart adopts the estimate after the last release of the tree before
            assert tree_clips[0] == measured[k * restart_every - 1]["clip_estimate"]
    assert clips[0] == pytest.approx(0.3)
    want = 0.5 + target
    final = measured[-1]["next_clip_norm"]
    assert final == pytest.approx(want, rel=0.15)
    # Moving toward it: each tree's clip closer than the first's.
    assert abs(clips[-1] - want) < abs(clips[0] - want) / 4


# -- what it refuses ------------------------------------------------------------------------


def test_adaptive_clipping_without_restarts_is_refused_naming_restart_every() -> None:
    with pytest.raises(ConfigError) as info:
        DPMean.tree(0.5, 1.0, 10, adaptive=AdaptiveClipping())
    assert info.value.field == "restart_every"
    assert "only changes when the tree restarts" in info.value.message


def test_adaptive_clipping_with_the_plain_tree_is_refused_naming_efficient() -> None:
    with pytest.raises(ConfigError) as info:
        DPMean.tree(0.5, 1.0, 10, restart_every=4, efficient=False, adaptive=AdaptiveClipping())
    assert info.value.field == "efficient" and "False" in info.value.message


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"adaptive": "median"}, "adaptive"), ({"restart_every": 0}, "restart_every"),
    ({"clip_norm": 0.0}, "clip_norm"), ({"noise_multiplier": -1.0}, "noise_multiplier"),
    ({"expected_count": 0}, "expected_count")])
def test_invalid_parameters_are_refused_naming_the_field(kwargs, field) -> None:
    args = {"clip_norm": 0.5, "noise_multiplier": 1.0, "expected_count": 10,
            "restart_every": 4, "adaptive": AdaptiveClipping(), **kwargs}
    with pytest.raises(ConfigError) as info:
        DPMean.tree(**args)
    assert info.value.field == field


def test_without_adaptive_dp_ftrl_is_the_fixed_clip_tree() -> None:
    agg = DPMean.tree(0.5, 1.0, 10, restart_every=4)
    assert type(agg) is TreeDPMean
    assert agg.private_release().noise_multiplier == 1.0
