"""Clip on the device, add Gaussian noise to the sum, divide by m: a tf-privacy query on numpy records.

What a fixed- and an adaptive-clipping DP-FedAvg have in common. Each is a
tensorflow-privacy sum query (``GaussianSumQuery``,
``QuantileAdaptiveClipSumQuery``) that does the clipping and, for adaptive
clipping, the clip update. The query's state is only ever made and read by the
query's own methods:

* the server broadcasts ``query.derive_sample_params(state)``;
* the device runs ``query.preprocess_record(params, delta)`` and sends the
  record's flattened leaves as named arrays (``record_keys``, in ``tf.nest``'s
  order): the clipped delta and, for adaptive clipping, the query's "was
  unclipped" value (+0.5 if the norm was <= C, else -0.5). The server only
  needs their sums, which is what lets secure aggregation take them;
* the server packs the noised sums into the query's own sample-state
  structure (``query.initial_sample_state``) and calls
  ``query.get_noised_result``, which returns the summed vector and the next
  state (the adaptive query's quantile update moves C there).

**Noise.** The queries draw noise with unseeded TensorFlow ops, which cannot
be replayed from the run's seed. So each mechanism builds its query without
noise (a zero noise multiplier and zero count noise, through the query's
constructor) and the noise it declares (``noise_stddevs``: ``z * C`` on the
vector, ``clipped_count_stddev`` on the count) is drawn with numpy
(:mod:`fedactors.privacy.noise`) from the round's server generator
``ctx.rng``, the vector first, then the count, and added to the sums before the
query sees them. Same seed, same update and state, bit for bit. The privacy
declared (``dp_event``) is the mechanism's, with that noise.

**Non-finite deltas** are replaced by zeros on the device before clipping (see
:mod:`fedactors.aggregation.clipping`); for adaptive clipping such a device
counts as "below the clip" (its record has norm 0).

**Zero reports**: ``aggregate`` still releases the noise divided by ``m``; the
mechanism's output does not special-case the number of reports. The server's
release step relies on that: on Poisson rounds (add-or-remove-one, where one
device's presence changes the count) it never skips a release for too few
reports, since that decision would depend on the count, which this noise does
not cover; ``rounds.min_reports`` above 1 is refused there at load
(:attr:`fedactors.server.release.ReleaseStep.releases_every_step`). On
fixed-size rounds (replace-one: the count is the same for both neighbours) a
round with fewer than ``rounds.min_reports`` is still skipped before any
aggregator runs.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from fedactors.aggregation.base import Aggregate, Contributions, RoundContext
from fedactors.aggregation.clipping import clip_l2, zero_if_non_finite
from fedactors.privacy import noise
from fedactors.privacy.mechanism import DPMeanState, DPMechanism
from fedactors.validation import non_negative, positive, positive_int

#: The record of the clipped delta (summed across devices).
CLIPPED_DELTA = "clipped_delta"
#: float32 rounding of a record (or of a record plus a noise share) can land an
#: ulp outside its bound; declaring bounds 1e-6 wider covers it.
FLOAT32_SLACK = 1 + 1e-6


def to_numpy(structure: Any) -> Any:
    """A query's state or parameters with every leaf a numpy float32 scalar (plain data)."""
    return tf.nest.map_structure(lambda t: np.float32(np.asarray(t)), structure)


class GaussianDPMean(DPMechanism):
    """Base of the DP means that run one tensorflow-privacy sum query (see the module docstring).

    A subclass builds its noise-free ``query`` and names its record's leaves
    (``record_keys``), and says what the current clip is, what noise each
    summed record needs and what bounds a record: everything else (encode,
    central noise, release) is here. Not built directly: use ``DPMean.fixed``
    or ``DPMean.adaptive_clipping``.

    Args:
        clip_norm: C (> 0), or its initial value.
        noise_multiplier: z (>= 0).
        expected_count: m (>= 1).
        query: The tensorflow-privacy sum query, built without noise.
    """

    #: The names the query's flattened record is sent under, in ``tf.nest`` order.
    record_keys: tuple[str, ...]

    def __init__(
        self, clip_norm: float, noise_multiplier: float, expected_count: int, query: Any
    ) -> None:
        self.clip_norm = positive("clip_norm", clip_norm)
        self.noise_multiplier = non_negative("noise_multiplier", noise_multiplier)
        self.expected_count = positive_int("expected_count", expected_count)
        self.query = query
        self._initial_query_state = to_numpy(query.initial_global_state())

    # -- what each mechanism defines ---------------------------------------------

    @abc.abstractmethod
    def current_clip(self, query_state: Any) -> float:
        """The clip norm C in force in ``query_state`` (asked of the query)."""

    @abc.abstractmethod
    def noise_stddevs(self, clip_norm: float) -> dict[str, float]:
        """The standard deviation of the Gaussian noise each summed record needs, at clip C."""

    @abc.abstractmethod
    def record_bounds(self, clip_norm: float) -> dict[str, float]:
        """The largest L2 norm of each record one device sends, at clip C (its sensitivity)."""

    # -- the aggregator interface ----------------------------------------------------

    def initial_state(self, dim: int) -> DPMeanState:
        return DPMeanState(dim=positive_int("dim", dim), query_state=self._initial_query_state)

    def client_params(self, state: DPMeanState) -> Mapping[str, Any]:
        return {
            "clip_norm": self.current_clip(state.query_state),
            "sample_params": to_numpy(self.query.derive_sample_params(state.query_state)),
        }

    def clip_bound(self, params: Mapping[str, Any]) -> Optional[float]:
        return float(params["clip_norm"])

    def encode(
        self,
        params: Mapping[str, Any],
        delta: np.ndarray,
        num_examples: int,
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray]:
        d, _ = zero_if_non_finite(np.asarray(delta).ravel())
        record = self.query.preprocess_record(params["sample_params"], tf.constant(d))
        leaves = tf.nest.flatten(record)
        out = {key: np.asarray(leaf.numpy(), np.float32).reshape(-1)
               for key, leaf in zip(self.record_keys, leaves, strict=True)}
        # TF clips in float32 and may land an ulp outside C; the exact numpy
        # clip is a no-op otherwise and makes "norm <= C" a hard guarantee.
        out[CLIPPED_DELTA], _ = clip_l2(out[CLIPPED_DELTA], float(params["clip_norm"]))
        return out

    def contribution_bounds(self, params: Mapping[str, Any], dim: int) -> dict[str, float]:
        bounds = self.record_bounds(float(params["clip_norm"]))
        return {key: bound * FLOAT32_SLACK for key, bound in bounds.items()}

    def aggregate(
        self, state: DPMeanState, contributions: Contributions, ctx: RoundContext
    ) -> Aggregate[DPMeanState]:
        self.check_round(ctx)
        summed = self.summed_records(state, contributions)
        stddevs = self.noise_stddevs(self.current_clip(state.query_state))
        # Central noise: drawn by the server, record by record in record_keys order.
        noised = {key: value + noise.central(ctx.rng, stddevs[key], value.size)
                  for key, value in summed.items()}
        return self.release(state, noised, ctx, noise_scale=1.0)

    # -- the steps, for the mechanisms that place the noise elsewhere ---------------

    def summed_records(
        self, state: DPMeanState, contributions: Contributions
    ) -> dict[str, np.ndarray]:
        """The cohort's records summed, in float64, zeros if nobody reported; shapes checked."""
        summed = contributions.sum() if contributions.count > 0 else {}
        out = {}
        for key, size in zip(self.record_keys, self._record_sizes(state.dim), strict=True):
            value = np.asarray(summed.get(key, np.zeros(size)), np.float64)
            if value.shape != (size,):
                raise ValueError(f"summed {key} has shape {value.shape}, expected ({size},)")
            out[key] = value
        return out

    def release(
        self,
        state: DPMeanState,
        noised: Mapping[str, np.ndarray],
        ctx: RoundContext,
        noise_scale: float,
    ) -> Aggregate[DPMeanState]:
        """Run the query on the noised sums: the mean, the next state and the measurements.

        ``noise_scale`` is how much of the nominal noise the sums carry (1 for
        central noise; ``sqrt(m' / k)`` for ``m'`` distributed shares sized for ``k``).
        """
        template = self.query.initial_sample_state(tf.zeros(state.dim, tf.float64))
        leaves = tf.nest.flatten(template)
        sample_state = tf.nest.pack_sequence_as(template, [
            tf.constant(np.asarray(noised[key], leaf.dtype.as_numpy_dtype).reshape(leaf.shape.as_list()))
            for key, leaf in zip(self.record_keys, leaves, strict=True)
        ])
        # The event the noise-free query returns is not the release's: dp_event() is.
        result, new_query_state, _ = self.query.get_noised_result(sample_state, state.query_state)
        new_state = DPMeanState(dim=state.dim, query_state=to_numpy(new_query_state))
        total = np.asarray(result.numpy(), np.float64)
        clip = self.current_clip(state.query_state)
        return Aggregate(
            (total / ctx.expected_count).astype(np.float32),
            new_state,
            {
                "clip_norm": clip,
                "noise_stddev_on_mean": (
                    self.noise_stddevs(clip)[CLIPPED_DELTA] * noise_scale / ctx.expected_count
                ),
                "next_clip_norm": self.current_clip(new_state.query_state),
            },
        )

    def _record_sizes(self, dim: int) -> list[int]:
        # A record's leaves are the delta (dim values) and scalars (sent as one value).
        template = self.query.initial_sample_state(tf.zeros(dim, tf.float64))
        return [max(1, leaf.shape.num_elements()) for leaf in tf.nest.flatten(template)]
