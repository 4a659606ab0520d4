"""DP-FedAvg's aggregators, built by name: ``DPMean.fixed`` and ``DPMean.adaptive_clipping``.

McMahan et al. 2018 ("Learning differentially private recurrent language
models"): each device clips its delta to L2 norm ``C`` *on the device*; the sum
of the clipped deltas gets Gaussian noise of standard deviation ``z * C`` and is
divided by the *expected* cohort size ``m``, never by how many reported,
because that count is not protected by the noise. The result is user-level
(ε, δ) differentially private.

One mechanism per class, each in its own module, each a
:class:`~fedactors.privacy.mechanism.DPMechanism`:

* :class:`~fedactors.privacy.fixed_clip.FixedClipDPMean`: a fixed ``C``, the
  server adds the noise;
* :class:`~fedactors.privacy.adaptive_clip.AdaptiveClipDPMean`: ``C`` tracks a
  quantile of the update norms (Andrew et al. 2021), from a noised count of the
  devices whose norm was below it;
* :class:`~fedactors.privacy.distributed_noise.DistributedDPMean`: either of
  them with the noise added by the devices, in shares, for secure aggregation;
* :class:`~fedactors.privacy.tree_mean.TreeDPMean` (``DPMean.tree``): DP-FTRL,
  fixed clipping with tree-aggregated noise, private without any sampling;
* :class:`~fedactors.privacy.adaptive_tree.AdaptiveTreeDPMean`
  (``DPMean.tree(..., adaptive=...)``): DP-FTRL whose clip tracks a quantile of
  the update norms, changed at each tree restart.

``DPMean`` is where a scenario builds them, so that the choice reads as a
sentence (``DPMean.fixed(clip_norm=1.0, noise_multiplier=1.0, expected_count=20)``).
"""

from __future__ import annotations

import math
from typing import Optional, Union

from fedactors.errors import ConfigError
from fedactors.privacy.adaptive_clip import AdaptiveClipDPMean, AdaptiveClipping
from fedactors.privacy.adaptive_tree import AdaptiveTreeDPMean
from fedactors.privacy.distributed_noise import DistributedDPMean
from fedactors.privacy.fixed_clip import FixedClipDPMean
from fedactors.privacy.gaussian_mean import GaussianDPMean
from fedactors.privacy.mechanism import DPMechanism
from fedactors.privacy.skellam_mean import SkellamDPMean
from fedactors.privacy.tree_mean import TreeDPMean


class DPMean:
    """Builds a DP-FedAvg stage: clipped, Gaussian-noised mean divided by the expected cohort size.

    Not instantiated: ``DPMean.fixed`` and ``DPMean.adaptive_clipping`` return
    the mechanism's class (``FixedClipDPMean``, ``AdaptiveClipDPMean``, or a
    ``DistributedDPMean`` around either), every one a ``DPMechanism``.

    The privacy accountant reads what the stage declares,
    ``private_release()`` (its effective noise multiplier, ``m`` and, with
    distributed noise, ``min_survivors``), together with the fleet size ``N``
    and the server's sampling (``Rounds.sampling``); ``Privacy`` sets δ and an
    optional budget. See ``DPMechanism`` for what the ε assumes.

    Examples:
        >>> from fedactors import DPMean
        >>> agg = DPMean.fixed(clip_norm=1.0, noise_multiplier=1.0, expected_count=100)
        >>> agg
        FixedClipDPMean(clip_norm=1.0, noise_multiplier=1.0, expected_count=100)
        >>> agg.private_release()
        PrivateRelease(noise_multiplier=1.0, expected_count=100, min_survivors=None)
    """

    def __init__(self) -> None:
        raise TypeError("build a DP mean with DPMean.fixed(...), DPMean.adaptive_clipping(...), "
                        "DPMean.tree(...) or DPMean.skellam(...)")

    @classmethod
    def fixed(
        cls,
        clip_norm: float,
        noise_multiplier: float,
        expected_count: int,
        distributed_noise: bool = False,
        min_survivors: Optional[int] = None,
    ) -> DPMechanism:
        """DP-FedAvg with a fixed clip norm ``C`` and noise std ``z * C`` on the sum.

        Args:
            clip_norm: C, the largest L2 norm (> 0) of a device's delta, in the
                units of the model's weights. Stored as float32.
            noise_multiplier: z (>= 0); the noise on the sum has standard
                deviation ``z * C`` (on the mean ``z * C / m``). 0 adds no noise
                (ε is infinite).
            expected_count: m (>= 1), the cohort size divided by and calibrated
                for; must equal ``rounds.cohort_size`` (FedBuff:
                ``buffer_size``).
            distributed_noise: True to have each device add its share of the
                noise (for secure aggregation), see ``DistributedDPMean``.
                Default False: the server adds it.
            min_survivors: With ``distributed_noise``: the fewest shares a
                release may sum, 1 to m; default m.

        Returns:
            A ``FixedClipDPMean``, or a ``DistributedDPMean`` around one.

        Examples:
            >>> from fedactors import DPMean
            >>> DPMean.fixed(clip_norm=1.0, noise_multiplier=1.0, expected_count=50,
            ...              distributed_noise=True, min_survivors=35).private_release()
            PrivateRelease(noise_multiplier=1.0, expected_count=50, min_survivors=35)
        """
        return _placed(FixedClipDPMean(clip_norm, noise_multiplier, expected_count),
                       distributed_noise, min_survivors)

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
    ) -> DPMechanism:
        """DP-FedAvg whose clip norm tracks ``target_quantile`` of the update norms.

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
            An ``AdaptiveClipDPMean``, or a ``DistributedDPMean`` around one.

        Examples:
            >>> from fedactors import DPMean
            >>> agg = DPMean.adaptive_clipping(initial_clip_norm=0.1, noise_multiplier=1.0,
            ...                                expected_count=100, target_quantile=0.5)
            >>> agg.adaptive
            AdaptiveClipping(target_quantile=0.5, learning_rate=0.2,
                             clipped_count_stddev=None, geometric=True)
        """
        adaptive = AdaptiveClipping(target_quantile, learning_rate, clipped_count_stddev,
                                    geometric)
        return _placed(
            AdaptiveClipDPMean(initial_clip_norm, noise_multiplier, expected_count, adaptive),
            distributed_noise, min_survivors,
        )

    @classmethod
    def tree(
        cls,
        clip_norm: float,
        noise_multiplier: float,
        expected_count: int,
        restart_every: Optional[int] = None,
        efficient: bool = True,
        adaptive: Optional[AdaptiveClipping] = None,
    ) -> Union[TreeDPMean, AdaptiveTreeDPMean]:
        """DP-FTRL: clipping and tree-aggregated noise, private without sampling.

        Kairouz et al. 2021. Its ε is accounted from how often and how far
        apart each device contributed, not from a sampling assumption, so it
        holds with availability-driven selection and under FedBuff; set
        ``Privacy(min_separation=b)`` to have the server keep a device out of
        the ``b`` releases after each of its contributions, which is what makes
        the guarantee small (docs/privacy.md, "DP-FTRL").

        Args:
            clip_norm: C (> 0), the largest L2 norm of a device's delta (with
                ``adaptive``: C of the first tree).
            noise_multiplier: z (>= 0), each tree node's noise standard
                deviation over C.
            expected_count: m, the cohort size divided by; must equal
                ``rounds.cohort_size`` (FedBuff: ``buffer_size``).
            restart_every: Start a new tree every this many releases; ``None``
                (default): one tree. Required with ``adaptive``.
            efficient: The efficient tree estimator (less noise on each running
                sum, the same privacy). Default True; with ``adaptive`` it must
                be True (tensorflow-privacy's adaptive tree query has only it).
            adaptive: ``AdaptiveClipping(...)`` to have C track a quantile of
                the update norms (Andrew et al. 2021): each device also reports
                whether its norm was below the current estimate, that count is
                tree-aggregated too (noise ``clipped_count_stddev``, default
                ``m / 20``), and the estimate becomes C at each restart. The
                declared multiplier composes both trees,
                ``(z**-2 + (2 * clipped_count_stddev)**-2) ** -0.5``. ``None``
                (default): C fixed.

        Returns:
            A ``TreeDPMean``, or with ``adaptive`` an ``AdaptiveTreeDPMean``.

        Examples:
            >>> from fedactors import DPMean
            >>> agg = DPMean.tree(clip_norm=0.5, noise_multiplier=3.0, expected_count=20,
            ...                   restart_every=64)
            >>> agg.private_release()
            TreeRelease(noise_multiplier=3.0, expected_count=20, min_survivors=None, restart_every=64)
            >>> from fedactors.privacy import AdaptiveClipping
            >>> agg = DPMean.tree(0.5, 3.0, 20, restart_every=64,
            ...                   adaptive=AdaptiveClipping(target_quantile=0.5))
            >>> type(agg).__name__, round(agg.private_release().noise_multiplier, 3)
            ('AdaptiveTreeDPMean', 1.664)
        """
        if adaptive is None:
            return TreeDPMean(clip_norm, noise_multiplier, expected_count, restart_every,
                              efficient)
        if efficient is not True:
            raise ConfigError("efficient", "adaptive clipping runs tensorflow-privacy's "
                              "QAdaClipTreeResSumQuery, whose trees are the efficient estimator; "
                              f"got {efficient!r}")
        return AdaptiveTreeDPMean(clip_norm, noise_multiplier, expected_count, restart_every,
                                  adaptive)

    @classmethod
    def skellam(
        cls,
        clip_norm: float,
        noise_multiplier: float,
        expected_count: int,
        min_survivors: Optional[int] = None,
        scale_bits: int = 16,
        beta: float = math.exp(-0.5),
    ) -> SkellamDPMean:
        """Distributed discrete noise: devices add Skellam noise on secure aggregation's grid.

        Agarwal, Kairouz & Liu 2021. Needs ``SecureAggregation`` with the same
        ``scale_bits``; each release is accounted without amplification by
        sampling (docs/privacy.md, "Discrete distributed noise (Skellam)").

        Args:
            clip_norm: C (> 0), the largest L2 norm of a device's delta.
            noise_multiplier: z (>= 0), the summed noise's standard deviation
                over the L2 sensitivity after rounding.
            expected_count: m, the cohort size divided by; must equal
                ``rounds.cohort_size``.
            min_survivors: k, the fewest shares a release may sum; default m.
            scale_bits: The grid is multiples of ``2 ** -scale_bits``. Default 16.
            beta: Conditional rounding's parameter in [0, 1). Default ``exp(-0.5)``.

        Returns:
            A ``SkellamDPMean``.

        Examples:
            >>> from fedactors import DPMean
            >>> DPMean.skellam(1.0, 3.0, expected_count=10, min_survivors=8,
            ...                scale_bits=12).private_release().min_survivors
            8
        """
        return SkellamDPMean(clip_norm, noise_multiplier, expected_count, min_survivors,
                             scale_bits, beta)


def _placed(
    mechanism: GaussianDPMean, distributed_noise: bool, min_survivors: Optional[int]
) -> DPMechanism:
    """``mechanism`` as it is (central noise) or with its noise moved to the devices."""
    if not isinstance(distributed_noise, bool):
        raise ConfigError("distributed_noise", f"must be true or false, got {distributed_noise!r}")
    if not distributed_noise:
        if min_survivors is not None:
            raise ConfigError("min_survivors", "only applies with distributed_noise=True")
        return mechanism
    return DistributedDPMean(mechanism, min_survivors)
