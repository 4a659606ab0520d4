"""fedactors.privacy.gaussian_mean: a tensorflow-privacy query run on numpy records.

What the fixed- and adaptive-clipping mechanisms share: the noise follows the clip of the
round, the clip update is the paper's, and the state is the query's own.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from scipy import stats

from fedactors.aggregation.base import RoundContext, SummedContributions
from fedactors.privacy.adaptive_clip import BELOW_CLIP, AdaptiveClipDPMean
from fedactors.privacy.dp_mean import DPMean
from fedactors.privacy.fixed_clip import FixedClipDPMean
from fedactors.privacy.gaussian_mean import CLIPPED_DELTA
from fedactors.privacy.mechanism import DPMechanism


def ctx(m: int, seed: int) -> RoundContext:
    return RoundContext(round=1, expected_count=m, selected=m, rng=np.random.default_rng(seed))


def test_the_constructors_build_one_class_per_mechanism() -> None:
    assert type(DPMean.fixed(1.0, 1.0, 5)) is FixedClipDPMean
    assert type(DPMean.adaptive_clipping(1.0, 1.0, 5)) is AdaptiveClipDPMean
    distributed = DPMean.adaptive_clipping(1.0, 1.0, 5, distributed_noise=True)
    assert type(distributed.mechanism) is AdaptiveClipDPMean  # type: ignore[attr-defined]
    assert all(isinstance(a, DPMechanism) for a in (distributed, distributed.mechanism))  # type: ignore


@pytest.mark.parametrize("below_sum, geometric", [(-5.0, True), (-2.0, True), (0.0, True),
                                                  (3.0, True), (5.0, True), (-1.0, False),
                                                  (4.0, False), (9.0, True)])
def test_the_clip_moves_by_andrew_et_al_s_rule(below_sum: float, geometric: bool) -> None:
    # b = clamp(sum / m + 0.5, 0, 1); C' = C exp(-lr (b - q)) or C - lr (b - q). No count
    # noise, so the rule is exact (up to float32, which the query computes in).
    m, c, lr, q = 10, 0.8, 0.3, 0.6
    dp = DPMean.adaptive_clipping(c, 0.0, m, target_quantile=q, learning_rate=lr,
                                  clipped_count_stddev=0.0, geometric=geometric)
    state = dp.initial_state(2)
    summed = SummedContributions({CLIPPED_DELTA: np.zeros(2), BELOW_CLIP: np.array([below_sum])}, m)
    out = dp.aggregate(state, summed, ctx(m, 0))
    b = min(1.0, max(0.0, below_sum / m + 0.5))
    expected = c * np.exp(-lr * (b - q)) if geometric else c - lr * (b - q)
    assert out.measurements["next_clip_norm"] == pytest.approx(expected, rel=1e-6)
    assert dp.client_params(out.state)["clip_norm"] == pytest.approx(expected, rel=1e-6)


def test_the_vector_noise_follows_the_clip_of_the_round_not_the_initial_one() -> None:
    # Grow C from 1 to 4 in one noise-free round, then release zero sums: the noise on the
    # mean must have std z * 4 / m (with the initial C it would be a quarter of that).
    m, z, n = 10, 1.5, 200
    grow = DPMean.adaptive_clipping(1.0, z, m, learning_rate=2 * np.log(4.0),
                                    clipped_count_stddev=0.0)
    all_above = SummedContributions({CLIPPED_DELTA: np.zeros(8), BELOW_CLIP: np.array([-m / 2])}, m)
    # Round 1's vector noise does not matter; its count has none, so C' = 4 exactly.
    grown = grow.aggregate(grow.initial_state(8), all_above, ctx(m, 0)).state
    assert grow.client_params(grown)["clip_norm"] == pytest.approx(4.0, rel=1e-6)
    zero = SummedContributions({CLIPPED_DELTA: np.zeros(8), BELOW_CLIP: np.zeros(1)}, m)
    outs = [grow.aggregate(grown, zero, ctx(m, seed)) for seed in range(1, n + 1)]
    draws = np.concatenate([o.delta for o in outs]).astype(np.float64)
    expected = z * 4.0 / m
    assert all(o.measurements["noise_stddev_on_mean"] == pytest.approx(expected) for o in outs)
    lo, hi = stats.chi2.ppf([0.0005, 0.9995], draws.size - 1) / (draws.size - 1)
    assert lo < np.var(draws, ddof=1) / expected**2 < hi


@pytest.mark.parametrize("make", [lambda: DPMean.fixed(0.7, 1.0, 4),
                                  lambda: DPMean.adaptive_clipping(0.7, 1.0, 4)])
def test_the_state_is_plain_picklable_data_and_equal_states_give_equal_rounds(make) -> None:
    # A checkpoint stores the state by pickling it; a restored state must give the same round.
    dp = make()
    state = dp.initial_state(3)
    rows = SummedContributions({k: np.full(v.size, 0.25) for k, v in
                                dp.encode(dp.client_params(state), np.ones(3, np.float32), 1,
                                          np.random.default_rng(0)).items()}, 4)
    after = dp.aggregate(state, rows, ctx(4, 7)).state
    restored = pickle.loads(pickle.dumps(after))
    assert restored == after
    a = dp.aggregate(after, rows, ctx(4, 8))
    b = dp.aggregate(restored, rows, ctx(4, 8))
    assert a.delta.tobytes() == b.delta.tobytes() and a.state == b.state
