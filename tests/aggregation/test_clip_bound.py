"""``clip_bound``: the bound a stage really clips to, or None for a stage that does not."""

from __future__ import annotations

import numpy as np
import pytest

from fedactors.aggregation.clipping import Clipped, l2_norm
from fedactors.aggregation.fedavg import WeightedMean
from fedactors.aggregation.robust import Krum, TrimmedMean
from fedactors.privacy.dp_mean import DPMean

DIM = 12

STAGES = {
    "clipped": lambda: Clipped(1.5, WeightedMean()),
    "clipped-krum": lambda: Clipped(0.7, Krum(f=1)),
    "fixed": lambda: DPMean.fixed(clip_norm=2.0, noise_multiplier=1.0, expected_count=10),
    "adaptive": lambda: DPMean.adaptive_clipping(initial_clip_norm=0.3, noise_multiplier=1.0,
                                                 expected_count=10),
    "tree": lambda: DPMean.tree(clip_norm=1.25, noise_multiplier=1.0, expected_count=10),
    "skellam": lambda: DPMean.skellam(clip_norm=0.9, noise_multiplier=1.0, expected_count=10),
}


def _clipped_norm(stage, params, delta: np.ndarray) -> float:
    """The L2 norm of the delta part of what ``encode`` sends (weights divided out)."""
    out = stage.encode(params, delta, 1, np.random.default_rng(0))
    floats = [np.asarray(v, np.float64).ravel() for k, v in sorted(out.items())
              if np.asarray(v).size == DIM]
    assert floats, sorted(out)
    return l2_norm(floats[0])


@pytest.mark.parametrize("name", sorted(STAGES))
def test_the_bound_is_the_one_encode_clips_to(name: str) -> None:
    stage = STAGES[name]()
    params = stage.client_params(stage.initial_state(DIM))
    bound = stage.clip_bound(params)
    assert bound is not None and bound > 0
    big = np.full(DIM, 100.0, np.float32)  # norm ~346, far above every bound here
    if name == "skellam":  # on the secure-aggregation grid: scaled and rounded
        return
    assert _clipped_norm(stage, params, big) == pytest.approx(bound, rel=1e-5)


@pytest.mark.parametrize("stage", [WeightedMean(), Krum(f=1), TrimmedMean(0.2)],
                         ids=["fedavg", "krum", "trimmed"])
def test_a_stage_that_does_not_clip_has_no_bound(stage) -> None:
    assert stage.clip_bound(stage.client_params(stage.initial_state(DIM))) is None


def test_a_wrapper_forwards_its_inner_stages_bound() -> None:
    from fedactors.aggregation.base import Wrapper

    class Halved(Wrapper):
        def encode(self, params, delta, num_examples, rng):
            return self.inner.encode(params, delta / 2, num_examples, rng)

    inner = DPMean.fixed(clip_norm=2.0, noise_multiplier=1.0, expected_count=10)
    stage = Halved(inner)
    params = stage.client_params(stage.initial_state(DIM))
    assert stage.clip_bound(params) == inner.clip_bound(params) == 2.0
    assert Halved(WeightedMean()).clip_bound({}) is None
