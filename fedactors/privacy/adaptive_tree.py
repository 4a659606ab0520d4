"""DP-FTRL with adaptive clipping: tensorflow-privacy's ``QAdaClipTreeResSumQuery``.

Kairouz et al. 2021 (tree-aggregated noise, :mod:`fedactors.privacy.tree_mean`)
with the clip norm tracking a quantile of the update norms (Andrew et al.
2021, :mod:`fedactors.privacy.adaptive_clip`), as tensorflow-privacy's
``QAdaClipTreeResSumQuery`` (and TFF's ``DifferentiallyPrivateFactory.tree_adaptive``)
runs them:

* each device clips its delta to the current tree's C and also reports
  whether its norm was at or below the current quantile *estimate* (+0.5 or
  -0.5);
* the server feeds the clipped sum into the sum tree (nodes ``N(0, (z*C)**2)``)
  and the below-estimate sum into a second tree of the same shape (nodes
  ``N(0, clipped_count_stddev**2)``); the estimate moves every release with
  the noised count, ``C * exp(-learning_rate * (b - target_quantile))``
  (geometric) or ``C - learning_rate * (b - target_quantile)``;
* the clip **only changes at a restart**: the trees restart every
  ``restart_every`` releases (``RestartQuery``) and the new sum tree takes
  the estimate as its C and ``z * C`` as its node noise. Inside one tree C is
  fixed, which is what the tree's noise needs. So adaptive clipping needs
  ``restart_every``.

**Privacy.** A device reaches the same leaves of both trees, and both trees
have the same structure and restarts: for every participation pattern the
RDP of the pair is ``alpha * S / 2 * (z**-2 + (2 * sigma_b)**-2)``, ``S`` the
pattern's sum of squared node counts (sensitivity C against noise z*C on the
sum tree; 0.5 against ``sigma_b`` on the count tree). That is one tree of
multiplier ``z_eff = (z**-2 + (2 * sigma_b)**-2) ** -0.5``, exactly, so the
declared :class:`~fedactors.aggregation.TreeRelease` carries ``z_eff`` and the
DP-FTRL accountant needs nothing else. (TFF's ``tree_adaptive`` composes the
same way, backwards: it takes ``z_eff`` and raises the vector's multiplier.)
The clip chosen at a restart is computed from released outputs only.

**Noise and reproducibility.** Both trees draw their nodes with the query's
own ``GaussianNoiseGenerator`` (TensorFlow's stateless sampler) from seeds kept
in the query's state. tensorflow-privacy seeds the count tree from the clock
(``TreeQuantileEstimatorQuery._construct_below_estimate_query`` passes no
seed), so :class:`SeededTreeQuantileEstimatorQuery` overrides that documented
hook to pass one, and :class:`SeededQAdaClipTreeResSumQuery` is their composite
with that one part swapped. Both seeds are drawn at the first release from the
round's server generator ``ctx.rng``, as ``TreeDPMean`` draws its one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from fedactors.aggregation.base import (
    Aggregate,
    Aggregator,
    Contributions,
    RoundContext,
    TreeRelease,
)
from fedactors.aggregation.clipping import clip_l2, zero_if_non_finite
from fedactors.errors import ConfigError
from fedactors.privacy.adaptive_clip import BELOW_CLIP, BELOW_CLIP_SENSITIVITY, AdaptiveClipping
from fedactors.privacy.dp_queries import (
    NormalizedQuery,
    PeriodicRoundRestartIndicator,
    QAdaClipTreeResSumQuery,
    RestartQuery,
    TreeQuantileEstimatorQuery,
    TreeResidualSumQuery,
)
from fedactors.privacy.gaussian_mean import CLIPPED_DELTA, FLOAT32_SLACK
from fedactors.privacy.tree_mean import _SEED_BOUND, TreeMeanState, check_cohort_size, plain
from fedactors.validation import non_negative, positive, positive_int


def composed_noise_multiplier(noise_multiplier: float, clipped_count_stddev: float) -> float:
    """``z_eff``: the one tree multiplier equivalent to the sum tree (z) and the count tree.

    The count tree's records have sensitivity 0.5 and its nodes noise
    ``clipped_count_stddev``, so its multiplier is ``2 * clipped_count_stddev``;
    the trees' RDPs add, ``z_eff**-2 = z**-2 + (2 * clipped_count_stddev)**-2``.
    Either noise zero: 0 (no privacy).

    Examples:
        >>> from fedactors.privacy.adaptive_tree import composed_noise_multiplier
        >>> round(composed_noise_multiplier(3.0, 2.5), 4)  # m = 50: sigma_b = m / 20
        2.5725
    """
    count_multiplier = clipped_count_stddev / BELOW_CLIP_SENSITIVITY
    if noise_multiplier == 0.0 or count_multiplier == 0.0:
        return 0.0
    return float((noise_multiplier**-2 + count_multiplier**-2) ** -0.5)


class SeededTreeQuantileEstimatorQuery(TreeQuantileEstimatorQuery):
    """tensorflow-privacy's ``TreeQuantileEstimatorQuery`` with its count tree seeded.

    The base class builds its below-estimate tree in the hook
    ``_construct_below_estimate_query`` without a seed, so its noise generator
    seeds itself from the clock at ``initial_global_state``. This override
    builds the same query (their body, line for line) with ``noise_seed``.

    Args:
        initial_estimate: The quantile estimate before the first release.
        target_quantile: The quantile of the records to track, in [0, 1].
        learning_rate: The estimate's step (>= 0).
        below_estimate_stddev: The count tree's node noise, on the sum of +-0.5.
        expected_num_records: The count's denominator (m).
        geometric_update: Multiplicative (True) or additive updates.
        noise_seed: The count tree's noise seed (its initial state only: the
            generator's seeds then travel in the query's state).
    """

    def __init__(self, initial_estimate: float, target_quantile: float, learning_rate: float,
                 below_estimate_stddev: float, expected_num_records: float,
                 geometric_update: bool, noise_seed: int) -> None:
        # Set before the base __init__, which calls the hook below.
        self._noise_seed = noise_seed
        super().__init__(initial_estimate, target_quantile, learning_rate,
                         below_estimate_stddev, expected_num_records, geometric_update)

    def _construct_below_estimate_query(self, below_estimate_stddev: float,
                                        expected_num_records: float) -> Any:
        # As the base class: records are +-0.5, so clip 0.5 and multiplier
        # 2 * stddev give node noise of standard deviation below_estimate_stddev.
        sum_query = TreeResidualSumQuery.build_l2_gaussian_query(
            clip_norm=0.5, noise_multiplier=2 * below_estimate_stddev,
            record_specs=tf.TensorSpec([]), noise_seed=self._noise_seed)
        return NormalizedQuery(sum_query, denominator=expected_num_records)


class SeededQAdaClipTreeResSumQuery(QAdaClipTreeResSumQuery):
    """tensorflow-privacy's ``QAdaClipTreeResSumQuery`` with both trees seeded.

    Their constructor seeds the sum tree (``noise_seed``) but builds its
    quantile estimator with the clock-seeded count tree; nothing is drawn
    until ``initial_global_state``, so after it this replaces that one part
    with :class:`SeededTreeQuantileEstimatorQuery`, built from the same
    arguments. Every method (preprocessing, release, restart, metrics) and both
    trees stay theirs.
    """

    def __init__(self, initial_l2_norm_clip: float, noise_multiplier: float,
                 record_specs: Any, target_unclipped_quantile: float, learning_rate: float,
                 clipped_count_stddev: float, expected_num_records: float,
                 geometric_update: bool, noise_seed: int, count_noise_seed: int) -> None:
        super().__init__(initial_l2_norm_clip, noise_multiplier, record_specs,
                         target_unclipped_quantile, learning_rate, clipped_count_stddev,
                         expected_num_records, geometric_update, noise_seed=noise_seed)
        self._quantile_estimator_query = SeededTreeQuantileEstimatorQuery(
            initial_l2_norm_clip, target_unclipped_quantile, learning_rate,
            clipped_count_stddev, expected_num_records, geometric_update,
            noise_seed=count_noise_seed)


class AdaptiveTreeDPMean(Aggregator[TreeMeanState]):
    """DP-FTRL whose clip norm tracks a quantile of the update norms, changed at each restart.

    Build it with ``DPMean.tree(..., restart_every=R, adaptive=AdaptiveClipping(...))``.
    Declares a :class:`~fedactors.aggregation.TreeRelease` of the composed
    multiplier (module docstring), accounted by participation like ``DPMean.tree``.

    Args:
        initial_clip_norm: C of the first tree (> 0).
        noise_multiplier: z (>= 0) of the sum tree: its nodes have standard
            deviation ``z * C``, C the current tree's clip.
        expected_count: m (>= 1), the cohort size the sum, and the below-estimate
            count, are divided by.
        restart_every: Releases per tree (>= 1): the clip changes only at a restart.
        adaptive: The quantile, learning rate, count noise and update rule;
            ``clipped_count_stddev=None`` is ``expected_count / 20``.

    Examples:
        >>> from fedactors import DPMean
        >>> from fedactors.privacy import AdaptiveClipping
        >>> agg = DPMean.tree(0.1, noise_multiplier=3.0, expected_count=50, restart_every=8,
        ...                   adaptive=AdaptiveClipping(target_quantile=0.5))
        >>> agg.clipped_count_stddev, round(agg.private_release().noise_multiplier, 4)
        (2.5, 2.5725)
    """

    record_keys = (CLIPPED_DELTA, BELOW_CLIP)

    def __init__(self, initial_clip_norm: float, noise_multiplier: float, expected_count: int,
                 restart_every: Optional[int], adaptive: AdaptiveClipping) -> None:
        self.clip_norm = float(np.float32(positive("clip_norm", initial_clip_norm)))
        self.noise_multiplier = non_negative("noise_multiplier", noise_multiplier)
        self.expected_count = positive_int("expected_count", expected_count)
        if restart_every is None:
            # The clip may only change where a tree restarts; without restarts it never would.
            raise ConfigError("restart_every", "adaptive clipping needs restart_every: the clip "
                              "only changes when the tree restarts, got None")
        self.restart_every = positive_int("restart_every", restart_every)
        if not isinstance(adaptive, AdaptiveClipping):
            raise ConfigError("adaptive", f"must be AdaptiveClipping or None, got {adaptive!r}")
        self.adaptive = adaptive
        self.clipped_count_stddev = (
            self.expected_count / 20.0 if adaptive.clipped_count_stddev is None
            else float(adaptive.clipped_count_stddev))
        self._queries: dict[tuple[int, int, int], Any] = {}
        #: dim -> the initial state of the seed-(0, 0) query: parameters only, never noise.
        self._unseeded_states: dict[int, Any] = {}

    def __repr__(self) -> str:
        return (f"AdaptiveTreeDPMean(initial_clip_norm={self.clip_norm!r}, "
                f"noise_multiplier={self.noise_multiplier!r}, "
                f"expected_count={self.expected_count!r}, restart_every={self.restart_every!r}, "
                f"adaptive={self.adaptive!r})")

    def private_release(self) -> TreeRelease:
        return TreeRelease(composed_noise_multiplier(self.noise_multiplier,
                                                     self.clipped_count_stddev),
                           self.expected_count, restart_every=self.restart_every)

    def query(self, dim: int, seeds: tuple[int, int] = (0, 0)) -> Any:
        """The restarting query for ``dim`` weights whose trees start from ``seeds`` (sum, count).

        The seeds only set the query's *initial* state; afterwards both
        generators' seeds travel in the state, so any of these queries
        continues any state of the same ``dim``.
        """
        key = (dim, *seeds)
        if key not in self._queries:
            inner = SeededQAdaClipTreeResSumQuery(
                self.clip_norm, self.noise_multiplier, tf.TensorSpec([dim], tf.float32),
                self.adaptive.target_quantile, self.adaptive.learning_rate,
                self.clipped_count_stddev, self.expected_count, self.adaptive.geometric,
                noise_seed=seeds[0], count_noise_seed=seeds[1])
            self._queries[key] = RestartQuery(inner, PeriodicRoundRestartIndicator(self.restart_every))
        return self._queries[key]

    def clips(self, dim: int, query_state: Any) -> tuple[float, float]:
        """(C of the current tree, the quantile estimate) in ``query_state``, asked of the query."""
        metrics = self.query(dim).derive_metrics(query_state)
        return float(metrics["current_clip"]), float(metrics["estimate_clip"])

    # -- the aggregator interface ----------------------------------------------------

    def initial_state(self, dim: int) -> TreeMeanState:
        return TreeMeanState(dim=positive_int("dim", dim))

    def client_params(self, state: TreeMeanState) -> Mapping[str, Any]:
        query = self.query(state.dim)
        query_state = state.query_state
        if query_state is None:
            # Before the first release the seeds are not drawn yet; what the devices
            # are sent (C, the estimate) does not depend on them.
            if state.dim not in self._unseeded_states:
                self._unseeded_states[state.dim] = plain(query.initial_global_state())
            query_state = self._unseeded_states[state.dim]
        return {"clip_norm": self.clips(state.dim, query_state)[0],
                "sample_params": plain(query.derive_sample_params(query_state))}

    def clip_bound(self, params: Mapping[str, Any]) -> Optional[float]:
        return float(params["clip_norm"])

    def encode(self, params: Mapping[str, Any], delta: np.ndarray, num_examples: int,
               rng: np.random.Generator) -> dict[str, np.ndarray]:
        d, _ = zero_if_non_finite(np.asarray(delta, np.float32).ravel())
        # The query's own preprocessing: clip to C, and +-0.5 for norm <= the estimate.
        record = self.query(d.size).preprocess_record(params["sample_params"], tf.constant(d))
        out = {key: np.asarray(leaf, np.float32).reshape(-1)
               for key, leaf in zip(self.record_keys, tf.nest.flatten(record), strict=True)}
        # TF clips in float32 and may land an ulp outside C; the exact numpy clip
        # is a no-op otherwise and makes "norm <= C" a hard guarantee.
        out[CLIPPED_DELTA], _ = clip_l2(out[CLIPPED_DELTA], float(params["clip_norm"]))
        return out

    def contribution_bounds(self, params: Mapping[str, Any], dim: int) -> dict[str, float]:
        return {CLIPPED_DELTA: float(params["clip_norm"]) * FLOAT32_SLACK,
                BELOW_CLIP: BELOW_CLIP_SENSITIVITY * FLOAT32_SLACK}

    def check_round(self, ctx: RoundContext) -> None:
        check_cohort_size(self.expected_count, ctx)

    def aggregate(self, state: TreeMeanState, contributions: Contributions,
                  ctx: RoundContext) -> Aggregate[TreeMeanState]:
        self.check_round(ctx)
        summed = contributions.sum() if contributions.count > 0 else {}
        total = np.asarray(summed.get(CLIPPED_DELTA, np.zeros(state.dim)), np.float64)
        below = np.asarray(summed.get(BELOW_CLIP, np.zeros(1)), np.float64)
        for key, value, size in ((CLIPPED_DELTA, total, state.dim), (BELOW_CLIP, below, 1)):
            if value.shape != (size,):
                raise ValueError(f"summed {key} has shape {value.shape}, expected ({size},)")
        query_state = state.query_state
        if query_state is None:
            # Two independent draws: the sum and count trees' streams (seed + k,
            # k = nodes drawn) overlap only if the draws are within the run's
            # node count of each other, a chance of about nodes / 2**61.
            seeds = tuple(int(s) for s in ctx.rng.integers(_SEED_BOUND, size=2))
            query_state = plain(self.query(state.dim, seeds).initial_global_state())
        query = self.query(state.dim)
        clip, _ = self.clips(state.dim, query_state)
        step = int(np.asarray(query_state.indicator_state))
        # The query's own sample-state structure, filled with the two sums.
        template = query.initial_sample_state(tf.zeros(state.dim, tf.float32))
        sample_state = tf.nest.pack_sequence_as(template, [
            tf.constant(total, tf.float32), tf.constant(below[0], tf.float32)])
        noised, new_query_state, _ = query.get_noised_result(sample_state, query_state)
        new_state = TreeMeanState(state.dim, plain(new_query_state))
        next_clip, estimate = self.clips(state.dim, new_state.query_state)
        return Aggregate(
            (np.asarray(noised, np.float64) / ctx.expected_count).astype(np.float32),
            new_state,
            {
                "clip_norm": clip,
                "next_clip_norm": next_clip,
                "clip_estimate": estimate,
                "tree_node_noise_stddev_on_mean": (
                    self.noise_multiplier * clip / ctx.expected_count),
                "tree_leaf": step % self.restart_every + 1,
                "tree_restarted_after": float((step + 1) % self.restart_every == 0),
            },
        )

