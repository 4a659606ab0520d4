"""DP-FTRL: clipped updates with tree-aggregated Gaussian noise (tensorflow-privacy's tree queries).

Kairouz et al. 2021 ("Practical and Private (Deep) Learning without Sampling
or Shuffling"), as Gboard trains with it (McMahan & Thakurta 2022). Every
device clips its delta to L2 norm C. The server feeds each release's sum into
tensorflow-privacy's ``TreeResidualSumQuery``: conceptually it keeps the
running sum of all releases so far and privatises it with the noise of the
binary-tree nodes covering it (each ``N(0, (z * C)**2)``, at most
``log2(T) + 1`` of them), and it returns the *difference* between this
release's noised running sum and the previous one. Applied with the plain
FedAvg step (server learning rate 1) the global model is the initial model
plus the noised running sum over ``m``: FTRL. With ``restart_every`` the tree
restarts every that many releases (``RestartQuery`` with a
``PeriodicRoundRestartIndicator``): the noise of one tree never grows past
``log2(restart_every) + 1`` nodes.

The privacy does not come from sampling, so it holds whoever is online: it is
accounted from how often and how far apart each device contributed
(:mod:`fedactors.privacy.tree_accounting`, :mod:`fedactors.privacy.tree_budget`).

**Noise and reproducibility.** The tree's nodes are drawn by the query's own
``GaussianNoiseGenerator``, TensorFlow's stateless (counter-based) normal
sampler, from a seed kept in the query's state. That seed is drawn, at the
first release, from the round's server generator ``ctx.rng``: derived from the
run's root seed, so the same scenario and seed give the same noise bit for bit
(and with system randomness, from the OS instead).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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
from fedactors.privacy.dp_queries import (
    PeriodicRoundRestartIndicator,
    RestartQuery,
    TreeResidualSumQuery,
)
from fedactors.privacy.gaussian_mean import CLIPPED_DELTA, FLOAT32_SLACK
from fedactors.validation import non_negative, positive, positive_int

#: Seeds of TensorFlow's stateless sampler are int64; keep the drawn one well inside.
_SEED_BOUND = 2**62


def plain(structure: Any) -> Any:
    """A query state with every leaf a numpy array of its own dtype and shape (plain data)."""
    return tf.nest.map_structure(lambda t: np.asarray(t), structure)


def check_cohort_size(expected_count: int, ctx: RoundContext) -> None:
    """Raise ``ValueError`` for a round that expects another cohort size than ``m``: the
    division by m and the noise were calibrated for it."""
    if ctx.expected_count != expected_count:
        raise ValueError(
            f"DPMean.tree was configured for expected_count={expected_count}, "
            f"but round {ctx.round} expects {ctx.expected_count}"
        )


@dataclass(frozen=True, eq=False)
class TreeMeanState:
    """Explicit state: the model size and the tree query's global state.

    ``query_state`` is ``None`` until the first release (its noise seed is
    drawn then, from the round's generator), then what the query's
    ``get_noised_result`` returned, with numpy leaves: the tree's buffered
    node noise, the noise generator's seeds, the restart counter.

    Args:
        dim: The number of model weights.
        query_state: The tree query's state (``None`` before the first release).

    Examples:
        >>> from fedactors import DPMean
        >>> agg = DPMean.tree(clip_norm=1.0, noise_multiplier=1.0, expected_count=10)
        >>> agg.initial_state(dim=3)
        TreeMeanState(dim=3, query_state=None)
    """

    dim: int
    query_state: Optional[Any] = None


class TreeDPMean(Aggregator[TreeMeanState]):
    """DP-FTRL: clip each delta to C; the server adds tree-aggregated noise to the running sum.

    Build it with ``DPMean.tree``. Declares a :class:`~fedactors.aggregation.TreeRelease`,
    so the run is accounted by participation (docs/privacy.md, "DP-FTRL").

    Args:
        clip_norm: C (> 0), the largest L2 norm of a device's delta.
        noise_multiplier: z (>= 0): each tree node's noise has standard
            deviation ``z * C``.
        expected_count: m (>= 1), the cohort size the sum is divided by:
            ``rounds.cohort_size`` (``buffer_size`` under FedBuff).
        restart_every: Start a new tree every this many releases (>= 1).
            ``None`` (default): one tree for the whole run.
        efficient: Use the efficient tree estimator (Honaker 2015), which has
            less noise on each running sum for the same privacy. Default True.

    Examples:
        >>> import numpy as np
        >>> from fedactors import DPMean
        >>> from fedactors.aggregation import PlainContributions, RoundContext
        >>> agg = DPMean.tree(clip_norm=1.0, noise_multiplier=0.0, expected_count=2)
        >>> agg.private_release()
        TreeRelease(noise_multiplier=0.0, expected_count=2, min_survivors=None, restart_every=None)
        >>> state, rng = agg.initial_state(dim=2), np.random.default_rng(0)
        >>> row = agg.encode(agg.client_params(state), np.array([3.0, 4.0], np.float32), 1, rng)
        >>> result = agg.aggregate(state, PlainContributions([row]), RoundContext(1, 2, 2, rng))
        >>> print(result.delta.round(3))  # [3, 4] clipped to [0.6, 0.8], divided by m = 2
        [0.3 0.4]
    """

    record_keys = (CLIPPED_DELTA,)

    def __init__(self, clip_norm: float, noise_multiplier: float, expected_count: int,
                 restart_every: Optional[int] = None, efficient: bool = True) -> None:
        self.clip_norm = float(np.float32(positive("clip_norm", clip_norm)))
        self.noise_multiplier = non_negative("noise_multiplier", noise_multiplier)
        self.expected_count = positive_int("expected_count", expected_count)
        self.restart_every = (None if restart_every is None
                              else positive_int("restart_every", restart_every))
        if not isinstance(efficient, bool):
            raise TypeError(f"efficient must be True or False, got {efficient!r}")
        self.efficient = efficient
        self._queries: dict[tuple[int, int], Any] = {}

    def __repr__(self) -> str:
        return (f"TreeDPMean(clip_norm={self.clip_norm!r}, "
                f"noise_multiplier={self.noise_multiplier!r}, "
                f"expected_count={self.expected_count!r}, restart_every={self.restart_every!r}, "
                f"efficient={self.efficient!r})")

    def private_release(self) -> TreeRelease:
        return TreeRelease(self.noise_multiplier, self.expected_count,
                           restart_every=self.restart_every)

    def query(self, dim: int, seed: int = 0) -> Any:
        """The tree query for a model of ``dim`` weights whose noise starts from ``seed``.

        The seed only sets the query's *initial* state; afterwards the
        generator's seeds travel in the state, so any of these queries
        continues any state of the same ``dim``.
        """
        key = (dim, seed)
        if key not in self._queries:
            inner = TreeResidualSumQuery.build_l2_gaussian_query(
                self.clip_norm, self.noise_multiplier, tf.TensorSpec([dim], tf.float32),
                noise_seed=seed, use_efficient=self.efficient)
            # Never restarting is a period longer than any run.
            period = self.restart_every if self.restart_every is not None else 2**31 - 1
            self._queries[key] = RestartQuery(inner, PeriodicRoundRestartIndicator(period))
        return self._queries[key]

    # -- the aggregator interface ----------------------------------------------------

    def initial_state(self, dim: int) -> TreeMeanState:
        return TreeMeanState(dim=positive_int("dim", dim))

    def client_params(self, state: TreeMeanState) -> Mapping[str, Any]:
        return {"clip_norm": self.clip_norm}

    def clip_bound(self, params: Mapping[str, Any]) -> Optional[float]:
        return float(params["clip_norm"])

    def encode(self, params: Mapping[str, Any], delta: np.ndarray, num_examples: int,
               rng: np.random.Generator) -> dict[str, np.ndarray]:
        # The tree query's clip is tf.clip_by_global_norm on one tensor: an L2
        # clip, done here exactly in numpy (no TensorFlow call per device).
        d, _ = zero_if_non_finite(np.asarray(delta, np.float32).ravel())
        clipped, _ = clip_l2(d, float(params["clip_norm"]))
        return {CLIPPED_DELTA: np.asarray(clipped, np.float32)}

    def contribution_bounds(self, params: Mapping[str, Any], dim: int) -> dict[str, float]:
        return {CLIPPED_DELTA: float(params["clip_norm"]) * FLOAT32_SLACK}

    def check_round(self, ctx: RoundContext) -> None:
        check_cohort_size(self.expected_count, ctx)

    def aggregate(self, state: TreeMeanState, contributions: Contributions,
                  ctx: RoundContext) -> Aggregate[TreeMeanState]:
        self.check_round(ctx)
        summed = contributions.sum().get(CLIPPED_DELTA) if contributions.count > 0 else None
        total = np.zeros(state.dim) if summed is None else np.asarray(summed, np.float64)
        if total.shape != (state.dim,):
            raise ValueError(f"summed {CLIPPED_DELTA} has shape {total.shape}, "
                             f"expected ({state.dim},)")
        query_state = state.query_state
        if query_state is None:
            seed = int(ctx.rng.integers(_SEED_BOUND))
            query_state = plain(self.query(state.dim, seed).initial_global_state())
        query = self.query(state.dim)
        step = int(np.asarray(query_state.indicator_state))
        noised, new_query_state, _ = query.get_noised_result(
            tf.constant(total, tf.float32), query_state)
        new_state = TreeMeanState(state.dim, plain(new_query_state))
        restarted = (self.restart_every is not None and (step + 1) % self.restart_every == 0)
        return Aggregate(
            (np.asarray(noised, np.float64) / ctx.expected_count).astype(np.float32),
            new_state,
            {
                "clip_norm": self.clip_norm,
                "tree_node_noise_stddev_on_mean": (
                    self.noise_multiplier * self.clip_norm / ctx.expected_count),
                "tree_leaf": (step % self.restart_every if self.restart_every else step) + 1,
                "tree_restarted_after": float(restarted),
            },
        )
