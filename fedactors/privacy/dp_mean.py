"""DP-FedAvg's aggregator: clipped, noised mean of device deltas (user-level DP).

McMahan et al. 2018 ("Learning differentially private recurrent language
models"): each device clips its delta to L2 norm ``C`` *on the device*; the
server sums the clipped deltas, adds Gaussian noise of standard deviation
``z * C`` to the sum, and divides by the *expected* cohort size ``m``
(``ctx.expected_count``), never by how many reported, because that count is not
protected by the noise. With adaptive clipping (Andrew et al. 2021, "Differentially
private learning with adaptive clipping") ``C`` follows a target quantile of
the update norms, using a noised count of devices whose norm was below ``C``.

Built on tensorflow-privacy, not a re-implementation:

* The aggregator's state wraps the query's own global state
  (``GaussianSumQuery`` for fixed clipping, ``QuantileAdaptiveClipSumQuery``
  for adaptive), converted to numpy scalars so it is plain, comparable data.
* ``encode`` (on the device) computes the query's *record* with
  ``query.preprocess_record``: the clipped delta and, for adaptive clipping,
  the query's "was unclipped" value (+0.5 if the norm was <= C, else -0.5).
  These are the only things sent, and the server only needs their sums, which
  is what makes the stage compatible with secure aggregation
  (:meth:`DPMean.contribution_bounds`).
* ``aggregate`` (on the server) feeds the summed record to
  ``query.get_noised_result`` to obtain the result and the next state (the
  new clip norm comes from the query's quantile update).

**How noise is seeded.** The queries draw noise with unseeded TF random ops,
which cannot be replayed from an explicit seed. So the noise is drawn with
numpy from ``ctx.rng`` (the server's per-round generator, or the device's
``rng`` with ``distributed_noise``), with exactly the standard deviations held
in the query's state, and added to the summed record *before* the query sees
it; the query is then run on a copy of its state whose ``stddev`` fields are
zero (its TF draw is multiplied by 0 and contributes exactly nothing), and the
real ``stddev`` values are put back into the returned state. Draw order per
round: the vector noise (``dim`` normals), then, for adaptive clipping, one
normal for the below-clip count. Same seed, same result, bit for bit.

**Non-finite deltas** are replaced by zeros on the device before clipping (see
:mod:`fedactors.aggregation.clipping`); for adaptive clipping such a device
counts as "below the clip" (its contribution has norm 0).

**Distributed noise** (``distributed_noise=True``, for secure aggregation):
the server adds nothing; each device adds ``N(0, sigma**2 / k)`` to its clipped
delta (and ``N(0, sigma_b**2 / k)`` to its below-clip value), ``k`` being
``min_survivors`` (default: ``m``), so that the sum over any ``m' >= k``
devices carries at least the ``N(0, sigma**2)`` the nominal multiplier
promises: exactly ``sigma * sqrt(m' / k)``, which is what the accountant
charges for that release (:meth:`PrivateRelease.noise_multiplier_for`) and
what ``noise_stddev_on_mean`` reports. A sum of fewer than ``k`` shares
carries too little noise and is not released: the round makes no update and
the clip norm does not move. Each device's draw is truncated at
``_TAIL`` standard deviations so :meth:`contribution_bounds` is a hard bound
for fixed-point secure aggregation; the truncation changes the distribution by
less than 1e-22 in total variation per coordinate.

**Zero reports**: the server still releases the noise divided by ``m``. A DP
mechanism's output must not special-case the number of reports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import dp_accounting
import numpy as np
import tensorflow as tf

from fedactors.aggregation.base import (
    Aggregate,
    Aggregator,
    Contributions,
    PrivateRelease,
    RoundContext,
)
from fedactors.aggregation.clipping import clip_l2, zero_if_non_finite
from fedactors.errors import ConfigError
from fedactors.privacy.accounting import effective_noise_multiplier
from fedactors.privacy.dp_queries import GaussianSumQuery, QuantileAdaptiveClipSumQuery
from fedactors.validation import non_negative, positive, positive_int, probability

CLIPPED_DELTA = "clipped_delta"
#: The query's "was unclipped" record: +0.5 if norm <= C else -0.5 (summed).
BELOW_CLIP = "below_clip"
#: The query's below-clip record is a scalar clipped to this L2 norm.
_BELOW_CLIP_SENSITIVITY = 0.5
#: Distributed-noise draws are truncated at this many standard deviations.
_TAIL = 10.0


@dataclass(frozen=True)
class AdaptiveClipping:
    """Parameters of quantile-tracking clipping (Andrew et al. 2021).

    ``clipped_count_stddev`` defaults to ``expected_count / 20``, the paper's
    suggestion; ``learning_rate`` 0.2 with geometric updates is also theirs.

    Each round every device also reports whether its update's norm was at or
    below the current clip norm C (as +0.5 or -0.5); the server sums these,
    adds Gaussian noise, estimates the fraction ``b`` of unclipped updates
    (clamped to [0, 1]) and moves C toward the ``target_quantile`` of the
    update norms: ``C * exp(-learning_rate * (b - target_quantile))``
    (geometric) or ``C - learning_rate * (b - target_quantile)``. Usually
    built for you by ``DPMean.adaptive_clipping``.

    Args:
        target_quantile: Fraction in [0, 1] of updates that should be
            unclipped, i.e. the quantile of the update norms C tracks.
            Default 0.5 (the median).
        learning_rate: Step (>= 0) of the clip update. Geometric: C changes by
            at most a factor ``exp(learning_rate)`` per round; arithmetic: by at
            most ``learning_rate`` (in the units of the norm). 0 keeps C fixed
            (while still spending the count noise). Default 0.2.
        clipped_count_stddev: Standard deviation of the Gaussian noise on the
            summed below-clip values, in devices (each device moves the sum by
            at most 0.5). It composes with the vector noise into the release's
            effective multiplier ``(z**-2 + (2 * clipped_count_stddev)**-2) ** -0.5``.
            0 makes the count exact and ε infinite. ``None`` (default):
            ``expected_count / 20``.
        geometric: True (default): multiplicative updates, which suit norms that
            may be very large or very small and keep C positive. False:
            additive updates.

    Examples:
        >>> from fedactors.privacy import AdaptiveClipping, DPMean
        >>> cfg = AdaptiveClipping(target_quantile=0.8, learning_rate=0.2)
        >>> agg = DPMean(clip_norm=0.1, noise_multiplier=1.0, expected_count=100, adaptive=cfg)
        >>> agg.clipped_count_stddev  # the default: expected_count / 20
        5.0
        >>> agg.private_release().noise_multiplier  # the count noise composed in
        0.995...
    """

    target_quantile: float = 0.5
    learning_rate: float = 0.2
    clipped_count_stddev: Optional[float] = None
    geometric: bool = True

    def __post_init__(self) -> None:
        probability("target_quantile", self.target_quantile)
        non_negative("learning_rate", self.learning_rate)
        if self.clipped_count_stddev is not None:
            non_negative("clipped_count_stddev", self.clipped_count_stddev)


@dataclass(frozen=True)
class DPMeanState:
    """Explicit state: the model size and the tf-privacy query's global state.

    ``query_state`` is the query's own namedtuple (``GaussianSumQuery`` or
    ``QuantileAdaptiveClipSumQuery`` global state) with every leaf a numpy
    ``float32`` scalar instead of a tensor.
    """

    dim: int
    query_state: Any

    @property
    def sum_state(self) -> Any:
        """The ``GaussianSumQuery`` state (``l2_norm_clip``, ``stddev``)."""
        qs = self.query_state
        return qs.sum_state if hasattr(qs, "sum_state") else qs

    @property
    def clip_norm(self) -> float:
        return float(self.sum_state.l2_norm_clip)

    @property
    def noise_stddev(self) -> float:
        """Standard deviation of the noise on the *sum* of clipped deltas."""
        return float(self.sum_state.stddev)


def _to_numpy(structure: Any) -> Any:
    return tf.nest.map_structure(lambda t: np.float32(np.asarray(t)), structure)


class DPMean(Aggregator[DPMeanState]):
    """Clipped, Gaussian-noised mean of deltas divided by the expected cohort size.

    Use the named constructors ``DPMean.fixed`` and ``DPMean.adaptive_clipping``.

    DP-FedAvg (McMahan et al. 2018): each device clips its delta to L2 norm
    ``C`` (``clip_norm``) on the device; the server sums the clipped deltas,
    adds Gaussian noise of standard deviation ``z * C`` (``z`` the
    ``noise_multiplier``) to the sum and divides by ``m`` (``expected_count``),
    never by the number of reports, which the noise does not protect. The
    result is user-level (ε, δ) differentially private: it bounds what the
    updates reveal about whether any one device, all its data, took part.

    The privacy accountant reads what this stage declares,
    ``private_release`` (its effective noise multiplier, ``m`` and
    ``min_survivors``), together with the fleet size ``N`` and the server's
    sampling (``Rounds.sampling``); ``Privacy`` sets δ and an optional budget.
    The ε reported assumes each cohort is a uniformly random sample of the
    whole fleet (fixed size, or Poisson with rate ``m / N``) drawn
    independently of everything else, that every sampled device's update is
    summed, and that ``z``, ``C`` and ``m`` are fixed in advance. Selecting
    only the devices online, deadline drops and dropouts break that
    assumption (each run's ``summary.json`` says whether it held); under
    ``FedBuff`` each buffer is accounted without amplification by sampling.
    docs/privacy.md has the details, including what the ε does not mean.

    Args:
        clip_norm: C, the largest L2 norm (> 0) of a device's delta, in the
            units of the model's weights; with adaptive clipping its initial
            value. Stored as float32.
        noise_multiplier: z (>= 0): the noise on the sum of clipped deltas has
            standard deviation ``z * C`` (on the mean ``z * C / m``). 0 adds no
            noise (ε is infinite).
        expected_count: m (>= 1), the cohort size the mean divides by and the
            noise is calibrated for. Must equal ``rounds.cohort_size``
            (``buffer_size`` under FedBuff); a scenario that differs is
            refused and ``aggregate`` raises ``ValueError`` for a round whose
            ``expected_count`` differs.
        adaptive: ``AdaptiveClipping`` to let C track a quantile of the update
            norms, or ``None`` (default) for a fixed C.
        distributed_noise: False (default): the server adds all the noise
            (central DP: it sees the un-noised sum). True, for secure
            aggregation: the server adds none and each device adds
            ``N(0, (z * C)**2 / k)`` to its clipped delta (truncated at 10
            standard deviations, so ``contribution_bounds`` is a hard bound),
            with ``k = min_survivors``.
        min_survivors: k, only with ``distributed_noise=True``: the fewest
            shares a release may sum, 1 to ``m``; ``None`` (default) means
            ``m``. A sum over ``m' >= k`` devices carries noise
            ``z * C * sqrt(m' / k)`` and is charged at that multiplier; with
            fewer than k the round makes no update (and is still charged).

    Examples:
        >>> import numpy as np
        >>> from fedactors import DPMean
        >>> from fedactors.aggregation import PlainContributions, RoundContext
        >>> agg = DPMean.fixed(clip_norm=1.0, noise_multiplier=1.0, expected_count=100)
        >>> agg.private_release()
        PrivateRelease(noise_multiplier=1.0, expected_count=100, min_survivors=None)

        The arithmetic without noise: one of the two expected devices reports.

        >>> exact = DPMean.fixed(clip_norm=1.0, noise_multiplier=0.0, expected_count=2)
        >>> state, rng = exact.initial_state(dim=2), np.random.default_rng(0)
        >>> row = exact.encode(exact.client_params(state), np.array([3.0, 4.0], np.float32), 1, rng)
        >>> result = exact.aggregate(state, PlainContributions([row]), RoundContext(1, 2, 2, rng))
        >>> print(result.delta.round(3))  # [3, 4] clipped to [0.6, 0.8], divided by m = 2
        [0.3 0.4]
    """

    def __init__(
        self,
        clip_norm: float,
        noise_multiplier: float,
        expected_count: int,
        adaptive: Optional[AdaptiveClipping] = None,
        distributed_noise: bool = False,
        min_survivors: Optional[int] = None,
    ) -> None:
        self.clip_norm = positive("clip_norm", clip_norm)
        self.noise_multiplier = non_negative("noise_multiplier", noise_multiplier)
        self.expected_count = positive_int("expected_count", expected_count)
        if adaptive is not None and not isinstance(adaptive, AdaptiveClipping):
            raise ConfigError("adaptive", f"must be AdaptiveClipping or None, got {adaptive!r}")
        if not isinstance(distributed_noise, bool):
            raise ConfigError("distributed_noise", f"must be true or false, got {distributed_noise!r}")
        if min_survivors is not None and not distributed_noise:
            raise ConfigError("min_survivors", "only applies with distributed_noise=True")
        self.adaptive = adaptive
        self.distributed_noise = distributed_noise
        #: Distributed noise: how many shares make the nominal noise (see module docstring).
        self.min_survivors = (
            None if not distributed_noise
            else self.expected_count if min_survivors is None
            else positive_int("min_survivors", min_survivors)
        )
        if self.min_survivors is not None and self.min_survivors > self.expected_count:
            # A fixed-size round sums at most expected_count: nothing could ever be released.
            raise ConfigError("min_survivors", f"{min_survivors!r} is more than expected_count "
                                               f"{self.expected_count}: no release could be made")
        self.query: Any
        if adaptive is None:
            self.clipped_count_stddev = 0.0
            self.query = GaussianSumQuery(
                l2_norm_clip=self.clip_norm, stddev=self.noise_multiplier * self.clip_norm
            )
        else:
            self.clipped_count_stddev = (
                self.expected_count / 20.0
                if adaptive.clipped_count_stddev is None
                else float(adaptive.clipped_count_stddev)
            )
            self.query = QuantileAdaptiveClipSumQuery(
                initial_l2_norm_clip=self.clip_norm,
                noise_multiplier=self.noise_multiplier,
                target_unclipped_quantile=adaptive.target_quantile,
                learning_rate=adaptive.learning_rate,
                clipped_count_stddev=self.clipped_count_stddev,
                expected_num_records=self.expected_count,
                geometric_update=adaptive.geometric,
            )
        self._initial_query_state = _to_numpy(self.query.initial_global_state())

    @classmethod
    def fixed(
        cls,
        clip_norm: float,
        noise_multiplier: float,
        expected_count: int,
        distributed_noise: bool = False,
        min_survivors: Optional[int] = None,
    ) -> DPMean:
        """DP-FedAvg with a fixed clip norm ``C`` and noise std ``z * C`` on the sum.

        Args:
            clip_norm: C, the largest L2 norm (> 0) of a device's delta.
            noise_multiplier: z (>= 0); the noise on the sum has standard
                deviation ``z * C``.
            expected_count: m, the cohort size divided by; must equal
                ``rounds.cohort_size`` (FedBuff: ``buffer_size``).
            distributed_noise: True to have each device add its share of the
                noise (for secure aggregation). Default False (central noise).
            min_survivors: With ``distributed_noise``: the fewest shares a
                release may sum; default ``expected_count``.

        Returns:
            The ``DPMean`` stage.

        Examples:
            >>> from fedactors import DPMean
            >>> DPMean.fixed(clip_norm=1.0, noise_multiplier=1.0, expected_count=50,
            ...              distributed_noise=True, min_survivors=35).private_release()
            PrivateRelease(noise_multiplier=1.0, expected_count=50, min_survivors=35)
        """
        return cls(clip_norm, noise_multiplier, expected_count, None, distributed_noise,
                   min_survivors)

    @classmethod
    def adaptive_clipping(
        cls,
        initial_clip_norm: float,
        noise_multiplier: float,
        expected_count: int,
        target_quantile: float = 0.5,
        learning_rate: float = 0.2,
        clipped_count_stddev: Optional[float] = None,
        geometric: bool = True,
        distributed_noise: bool = False,
        min_survivors: Optional[int] = None,
    ) -> DPMean:
        """DP-FedAvg whose clip norm tracks ``target_quantile`` of update norms.

        Andrew et al. 2021; see ``AdaptiveClipping`` for the update rule.

        Args:
            initial_clip_norm: C before round 1 (> 0), in the units of the
                model's weights.
            noise_multiplier: z (>= 0) of the vector noise, relative to the
                current C. The count noise composes with it, so the declared
                effective multiplier is a little lower than z: raise z to keep
                the privacy of fixed clipping.
            expected_count: m, the cohort size divided by; must equal
                ``rounds.cohort_size`` (FedBuff: ``buffer_size``).
            target_quantile: Fraction in [0, 1] of updates to leave unclipped.
                Default 0.5.
            learning_rate: Step of the clip update (>= 0); geometric updates
                change C by at most a factor ``exp(learning_rate)`` per round.
                Default 0.2.
            clipped_count_stddev: Noise standard deviation on the below-clip
                count, in devices; ``None`` (default): ``expected_count / 20``.
            geometric: Multiplicative (True, default) or additive updates of C.
            distributed_noise: True to have each device add its share of both
                noises (for secure aggregation). Default False.
            min_survivors: With ``distributed_noise``: the fewest shares a
                release may sum; default ``expected_count``.

        Returns:
            The ``DPMean`` stage.

        Examples:
            >>> from fedactors import DPMean
            >>> agg = DPMean.adaptive_clipping(initial_clip_norm=0.1, noise_multiplier=1.0,
            ...                                expected_count=100, target_quantile=0.5)
            >>> agg.adaptive
            AdaptiveClipping(target_quantile=0.5, learning_rate=0.2,
                             clipped_count_stddev=None, geometric=True)
        """
        cfg = AdaptiveClipping(target_quantile, learning_rate, clipped_count_stddev, geometric)
        return cls(initial_clip_norm, noise_multiplier, expected_count, cfg, distributed_noise,
                   min_survivors)

    def __repr__(self) -> str:
        return (
            f"DPMean(clip_norm={self.clip_norm!r}, noise_multiplier={self.noise_multiplier!r}, "
            f"expected_count={self.expected_count!r}, adaptive={self.adaptive!r}, "
            f"distributed_noise={self.distributed_noise!r}"
            + (f", min_survivors={self.min_survivors!r})" if self.distributed_noise else ")")
        )

    # -- privacy accounting ---------------------------------------------------

    def dp_event(self) -> dp_accounting.DpEvent:
        """One round's mechanism on the sampled cohort, as the query reports it.

        Noise multipliers are relative to the add/remove-one sensitivity (``C``
        for the sum, 0.5 for the below-clip count); the accountant rescales for
        replace-one where needed. Independent of the (adaptive) clip value.
        """
        sum_event = dp_accounting.GaussianDpEvent(self.noise_multiplier)
        if self.adaptive is None:
            return sum_event
        count_event = dp_accounting.GaussianDpEvent(
            self.clipped_count_stddev / _BELOW_CLIP_SENSITIVITY
        )
        return dp_accounting.ComposedDpEvent([sum_event, count_event])

    def private_release(self) -> PrivateRelease:
        return PrivateRelease(
            effective_noise_multiplier(self.dp_event()), self.expected_count, self.min_survivors
        )

    # -- aggregator interface ---------------------------------------------------

    def initial_state(self, dim: int) -> DPMeanState:
        return DPMeanState(dim=positive_int("dim", dim), query_state=self._initial_query_state)

    def client_params(self, state: DPMeanState) -> Mapping[str, Any]:
        return {"clip_norm": state.clip_norm}

    def _device_sample_params(self, clip_norm: float) -> Any:
        # The device only gets the broadcast clip norm; rebuild the query's
        # sample params from a state that differs from the initial one only there.
        qs = self._initial_query_state
        c = np.float32(clip_norm)
        if self.adaptive is None:
            qs = qs._replace(l2_norm_clip=c)
        else:
            qs = qs._replace(
                sum_state=qs.sum_state._replace(l2_norm_clip=c),
                quantile_estimator_state=qs.quantile_estimator_state._replace(current_estimate=c),
            )
        return self.query.derive_sample_params(qs)

    def _local_noise(self, rng: np.random.Generator, stddev_on_sum: float, size: int) -> np.ndarray:
        # The device's share: variance sigma^2/k, so any k shares sum to sigma^2.
        assert self.min_survivors is not None
        std = stddev_on_sum / math.sqrt(self.min_survivors)
        return np.clip(rng.standard_normal(size), -_TAIL, _TAIL) * std

    def encode(
        self,
        params: Mapping[str, Any],
        delta: np.ndarray,
        num_examples: int,
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray]:
        clip = float(params["clip_norm"])
        d, _ = zero_if_non_finite(np.asarray(delta).ravel())
        record = self.query.preprocess_record(self._device_sample_params(clip), tf.constant(d))
        if self.adaptive is None:
            clipped_t, below_t = record, None
        else:
            clipped_t, below_t = record.sum_state, record.quantile_estimator_state
        # TF clips in float32 and may land an ulp outside C; the exact numpy
        # clip is a no-op otherwise and makes "norm <= C" a hard guarantee.
        clipped, _ = clip_l2(clipped_t.numpy(), clip)
        out: dict[str, np.ndarray] = {}
        if self.distributed_noise:
            noise = self._local_noise(rng, self.noise_multiplier * clip, d.size)
            out[CLIPPED_DELTA] = (clipped.astype(np.float64) + noise).astype(np.float32)
        else:
            out[CLIPPED_DELTA] = clipped
        if below_t is not None:
            below = float(below_t.numpy())
            if self.distributed_noise:
                below += float(self._local_noise(rng, self.clipped_count_stddev, 1)[0])
            out[BELOW_CLIP] = np.array([below], np.float32)
        return out

    def contribution_bounds(self, params: Mapping[str, Any], dim: int) -> dict[str, float]:
        clip = float(params["clip_norm"])
        tail = _TAIL / math.sqrt(self.min_survivors) if self.min_survivors is not None else 0.0
        # float32 rounding of (clipped + noise) can add an ulp; 1e-6 relative covers it.
        bounds = {CLIPPED_DELTA: (clip + tail * self.noise_multiplier * clip) * (1 + 1e-6)}
        if self.adaptive is not None:
            bounds[BELOW_CLIP] = (_BELOW_CLIP_SENSITIVITY + tail * self.clipped_count_stddev) * (
                1 + 1e-6
            )
        return bounds

    def _noise_free(self, qs: Any) -> Any:
        """``qs`` with every noise stddev set to zero (noise is added by us, from numpy)."""
        zero = np.float32(0.0)
        if self.adaptive is None:
            return qs._replace(stddev=zero)
        qe = qs.quantile_estimator_state
        be = qe.below_estimate_state
        return qs._replace(
            sum_state=qs.sum_state._replace(stddev=zero),
            quantile_estimator_state=qe._replace(
                below_estimate_state=be._replace(
                    numerator_state=be.numerator_state._replace(stddev=zero)
                )
            ),
        )

    def aggregate(
        self, state: DPMeanState, contributions: Contributions, ctx: RoundContext
    ) -> Aggregate[DPMeanState]:
        if ctx.expected_count != self.expected_count:
            # The noise share, the count normalization and the accountant all
            # assume the configured cohort size; a silent mismatch would
            # miscalibrate privacy.
            raise ValueError(
                f"DPMean was configured for expected_count={self.expected_count}, "
                f"but round {ctx.round} expects {ctx.expected_count}"
            )
        qs = state.query_state
        # How much of the nominal noise this sum carries (1 for central noise).
        release = self.private_release()
        actual = release.noise_multiplier_for(contributions.count)
        if actual is None:
            # Too few distributed-noise shares: releasing would under-noise the sum.
            return Aggregate(None, state, {"clip_norm": state.clip_norm,
                                           "noise_shares_below_minimum": 1.0})
        noise_scale = actual / release.noise_multiplier if release.noise_multiplier else 1.0
        summed = contributions.sum() if contributions.count > 0 else {}
        vec = np.asarray(summed.get(CLIPPED_DELTA, np.zeros(state.dim)), np.float64)
        if vec.shape != (state.dim,):
            raise ValueError(f"summed {CLIPPED_DELTA} has shape {vec.shape}, expected ({state.dim},)")
        if not self.distributed_noise:
            vec = vec + ctx.rng.normal(0.0, state.noise_stddev, state.dim)
        if self.adaptive is None:
            sample_state: Any = tf.constant(vec)
        else:
            below = float(np.asarray(summed.get(BELOW_CLIP, [0.0]))[0])
            if not self.distributed_noise:
                stddev = float(qs.quantile_estimator_state.below_estimate_state.numerator_state.stddev)
                below += ctx.rng.normal(0.0, stddev)
            sample_state = self.query.initial_sample_state(tf.zeros(state.dim, tf.float64))._replace(
                sum_state=tf.constant(vec), quantile_estimator_state=tf.constant(below, tf.float32)
            )
        result, new_qs, _ = self.query.get_noised_result(sample_state, self._noise_free(qs))
        new_qs = _to_numpy(new_qs)
        if self.adaptive is not None:
            # Put the real count-noise state back (the query passed our zeroed copy through).
            qe = new_qs.quantile_estimator_state
            new_qs = new_qs._replace(
                quantile_estimator_state=qe._replace(
                    below_estimate_state=qs.quantile_estimator_state.below_estimate_state
                )
            )
        else:
            new_qs = qs  # a fixed Gaussian sum query's state never changes
        total = np.asarray(result.numpy(), np.float64)
        mean = (total / ctx.expected_count).astype(np.float32)
        new_state = DPMeanState(dim=state.dim, query_state=new_qs)
        measurements = {
            "clip_norm": state.clip_norm,
            "noise_stddev_on_mean": state.noise_stddev * noise_scale / ctx.expected_count,
            "next_clip_norm": new_state.clip_norm,
        }
        return Aggregate(mean, new_state, measurements)
