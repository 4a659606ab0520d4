"""What every DP-FedAvg mechanism shares: its type, its declaration and its state.

A DP mechanism is an aggregation stage whose every result is a differentially
private release. The accountant and the load-time checks know it only through
``private_release()`` (``fedactors.aggregation.PrivateRelease``); this base
class derives that from the mechanism's own ``dp_event()``, so the two cannot
disagree. The mechanisms, one per module:
:mod:`~fedactors.privacy.fixed_clip`, :mod:`~fedactors.privacy.adaptive_clip`
(both :mod:`~fedactors.privacy.gaussian_mean`) and
:mod:`~fedactors.privacy.distributed_noise`. Build them with
:class:`fedactors.privacy.dp_mean.DPMean`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Optional

import dp_accounting

from fedactors.aggregation.base import Aggregator, PrivateRelease, RoundContext
from fedactors.privacy.accounting import effective_noise_multiplier


@dataclass(frozen=True)
class DPMeanState:
    """Explicit state: the model size and the tensorflow-privacy query's global state.

    ``query_state`` is what the mechanism's query returned from
    ``initial_global_state`` or ``get_noised_result``, with every leaf a numpy
    ``float32`` scalar instead of a tensor, so it is plain, comparable,
    picklable data. It is only ever read or made by the query's own methods.

    Args:
        dim: The number of model weights.
        query_state: The query's global state (numpy leaves).

    Examples:
        >>> import pickle
        >>> from fedactors import DPMean
        >>> agg = DPMean.adaptive_clipping(0.5, noise_multiplier=1.0, expected_count=10)
        >>> state = agg.initial_state(dim=3)
        >>> state.dim, agg.client_params(state)["clip_norm"]
        (3, 0.5)
        >>> pickle.loads(pickle.dumps(state)) == state  # what a checkpoint relies on
        True
    """

    dim: int
    query_state: Any


class DPMechanism(Aggregator[DPMeanState]):
    """A DP-FedAvg stage: clipped, Gaussian-noised mean divided by the expected cohort size.

    Every mechanism has ``clip_norm`` (C, or its initial value),
    ``noise_multiplier`` (z), ``expected_count`` (m) and ``dp_event()``, one
    release's mechanism as a dp-accounting event, from which
    ``private_release()`` is derived.

    The ε reported for a run assumes each cohort is a uniformly random sample
    of the whole fleet (fixed size, or Poisson with rate ``m / N``) drawn
    independently of everything else, that every sampled device's update is
    summed, and that ``z``, ``C`` and ``m`` are fixed in advance. Selecting
    only the devices online, deadline drops and dropouts break that assumption
    (each run's ``summary.json`` says whether it held); under ``FedBuff`` each
    buffer is accounted without amplification by sampling. docs/privacy.md has
    the details, including what the ε does not mean.

    Examples:
        >>> from fedactors import DPMean
        >>> from fedactors.privacy import DPMechanism
        >>> agg = DPMean.fixed(clip_norm=1.0, noise_multiplier=1.0, expected_count=100)
        >>> isinstance(agg, DPMechanism), type(agg).__name__
        (True, 'FixedClipDPMean')
        >>> agg.private_release()
        PrivateRelease(noise_multiplier=1.0, expected_count=100, min_survivors=None)
    """

    clip_norm: float
    noise_multiplier: float
    expected_count: int

    @abc.abstractmethod
    def dp_event(self) -> dp_accounting.DpEvent:
        """One release's mechanism on the cohort that took part, as a dp-accounting event.

        Noise multipliers are relative to the add/remove-one sensitivity of a
        device's record; the accountant rescales for replace-one where needed.
        """

    def private_release(self) -> Optional[PrivateRelease]:
        return PrivateRelease(effective_noise_multiplier(self.dp_event()), self.expected_count)

    def check_round(self, ctx: RoundContext) -> None:
        """Raise ``ValueError`` for a round that expects another cohort size than ``m``."""
        if ctx.expected_count != self.expected_count:
            # The noise, the division by m and the accountant all assume the
            # configured cohort size; a silent mismatch would miscalibrate privacy.
            raise ValueError(
                f"DPMean was configured for expected_count={self.expected_count}, "
                f"but round {ctx.round} expects {ctx.expected_count}"
            )
