"""The aggregation interface: how the cohort's model deltas become one update.

An :class:`Aggregator` is split the way a real deployment is split:

* ``encode`` runs **on the device**. It turns the device's model delta into a
  *contribution*: a mapping of named arrays every one of which the server only
  ever needs *summed* (a weighted delta and its weight, a clipped delta, a
  clipping indicator bit, ...). Doing the per-device work here is what lets the
  sum be taken by secure aggregation without the server seeing any one device.
* ``aggregate`` runs **on the server**. It receives the cohort's
  :class:`Contributions` and returns an :class:`Aggregate`: the update to apply
  (or ``None`` for "no update"), the stage's next state and measurements.

State is explicit, immutable and passed in and returned, as in
tensorflow-privacy's ``DPQuery``: ``aggregate`` never mutates ``self``, so a
step can be tested alone and checkpointed as plain data. Stages wrap one
another, as in ``tff.aggregators`` (see :mod:`fedactors.aggregation.clipping`).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Optional, TypeVar

import numpy as np

S = TypeVar("S")

#: What one device sends: named arrays, each of which is summed across devices.
Contribution = Mapping[str, np.ndarray]


class IndividualUpdatesHidden(RuntimeError):
    """Raised when a stage asks for per-device values under secure aggregation."""


class Contributions(abc.ABC):
    """The cohort's contributions as the server is allowed to see them."""

    @property
    @abc.abstractmethod
    def count(self) -> int:
        """How many devices' contributions are in here."""

    @abc.abstractmethod
    def sum(self) -> dict[str, np.ndarray]:
        """The element-wise sum of every contribution, key by key."""

    def stacked(self) -> dict[str, np.ndarray]:
        """Each key's values stacked along a new first axis, one row a device."""
        raise IndividualUpdatesHidden(
            "this aggregator needs individual updates, but the server only holds "
            "their sum (secure aggregation is on)"
        )


class PlainContributions(Contributions):
    """Individual contributions, as a server without secure aggregation sees them.

    Rows are kept in the order given (the server passes them sorted by device
    id) so sums are taken in the same order, and so bit for bit the same, on
    every run.
    """

    def __init__(self, contributions: Sequence[Contribution]) -> None:
        self._rows = list(contributions)

    @property
    def count(self) -> int:
        return len(self._rows)

    def stacked(self) -> dict[str, np.ndarray]:
        if not self._rows:
            return {}
        return {k: np.stack([np.asarray(r[k]) for r in self._rows]) for k in self._rows[0]}

    def sum(self) -> dict[str, np.ndarray]:
        # float64 accumulation: a 10,000-device sum in float32 loses digits.
        return {
            k: v.sum(axis=0, dtype=np.float64 if v.dtype.kind == "f" else v.dtype)
            for k, v in self.stacked().items()
        }


class SummedContributions(Contributions):
    """Only the sum, as a server running secure aggregation learns it."""

    def __init__(self, summed: Mapping[str, np.ndarray], count: int) -> None:
        self._sum = {k: np.asarray(v) for k, v in summed.items()}
        self._count = int(count)

    @property
    def count(self) -> int:
        return self._count

    def sum(self) -> dict[str, np.ndarray]:
        return dict(self._sum)


@dataclass(frozen=True)
class RoundContext:
    """What the server knows about the round when it aggregates."""

    round: int
    #: The cohort size the server aims for (its target count). DP stages divide
    #: by this, not by how many reported, which would leak dropouts.
    expected_count: int
    selected: int
    #: Server-side randomness for this round (e.g. central DP noise).
    rng: np.random.Generator = field(repr=False, compare=False)


@dataclass(frozen=True)
class Aggregate(Generic[S]):
    """The result of one aggregation step."""

    delta: Optional[np.ndarray]
    state: S
    measurements: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PrivateRelease:
    """What a differentially private stage declares about every result it releases.

    The accountant, the budget check and the load-time checks read privacy
    from this declaration only: a stage is private because it says so, never
    because it happens to have some attribute. Noise multipliers are relative
    to the add/remove-one sensitivity of one device's contribution.

    * ``noise_multiplier``: the effective Gaussian multiplier of one release,
      at its nominal noise (several Gaussians on the same cohort, such as
      adaptive clipping's sum and count, already composed into one).
    * ``expected_count``: the cohort size the stage divides by and was
      calibrated for (a synchronous round's ``cohort_size``, a FedBuff buffer).
    * ``min_survivors``: with distributed noise, each device adds a share
      sized so that this many shares sum to the nominal noise; a release over
      fewer contributions is not made. ``None``: the server adds all the noise.
    """

    noise_multiplier: float
    expected_count: int
    min_survivors: Optional[int] = None

    @property
    def distributed_noise(self) -> bool:
        return self.min_survivors is not None

    def noise_multiplier_for(self, summed: int) -> Optional[float]:
        """The multiplier a release over ``summed`` contributions actually had.

        Central noise does not depend on who reported. Distributed noise is the
        sum of ``summed`` shares of variance ``1 / min_survivors`` each, so the
        multiplier grows as ``sqrt(summed / min_survivors)``; ``None`` when
        ``summed`` is below ``min_survivors`` (too little noise: no release).
        """
        if self.min_survivors is None:
            return self.noise_multiplier
        if summed < self.min_survivors:
            return None
        return self.noise_multiplier * math.sqrt(summed / self.min_survivors)


class Aggregator(abc.ABC, Generic[S]):
    """One stage of aggregation. Subclass it in one screen; see docs/aggregation.md."""

    #: True for stages (median, Krum, ...) that must see each update, which
    #: rules out secure aggregation.
    needs_individual_updates: bool = False

    def initial_state(self, dim: int) -> S:
        """The state before round 1, for models with ``dim`` parameters."""
        return None  # type: ignore[return-value]

    def private_release(self) -> Optional[PrivateRelease]:
        """The DP declaration of every release this stage makes; ``None``: not private.

        A stage that wraps a private one must forward it (see :class:`Wrapper`);
        :func:`check_privacy_forwarded` refuses a chain that hides it.
        """
        return None

    def client_params(self, state: S) -> Mapping[str, Any]:
        """Small values broadcast to the devices with each request (e.g. a clip norm)."""
        return {}

    @abc.abstractmethod
    def encode(
        self,
        params: Mapping[str, Any],
        delta: np.ndarray,
        num_examples: int,
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray]:
        """On the device: turn a flat float32 model delta into a contribution."""

    @abc.abstractmethod
    def aggregate(
        self, state: S, contributions: Contributions, ctx: RoundContext
    ) -> Aggregate[S]:
        """On the server: combine the cohort's contributions into one update."""

    def contribution_spec(
        self, params: Mapping[str, Any], dim: int
    ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """The ``(shape, dtype)`` of each key a well-formed contribution carries.

        The server rejects any update that does not match (see
        :mod:`fedactors.server.screening`). The default encodes a zero delta
        with a throwaway generator, so it is right for any stage whose output
        shapes do not depend on the values; override it if ``encode`` is costly
        or its shapes vary.
        """
        sample = self.encode(params, np.zeros(dim, np.float32), 1, np.random.default_rng(0))
        return {k: (np.shape(v), np.asarray(v).dtype) for k, v in sample.items()}

    def contribution_bounds(self, params: Mapping[str, Any], dim: int) -> dict[str, float]:
        """Largest absolute value any coordinate of each contribution key can take.

        Secure aggregation quantizes to fixed point and needs these to pick a
        range that cannot wrap. Stages that cannot bound their output (plain
        FedAvg of an unclipped delta) return an empty mapping.
        """
        return {}


class Wrapper(Aggregator[S]):
    """A stage that transforms what ``inner`` sees and otherwise is ``inner``.

    By default it forwards state, broadcast parameters, aggregation and the DP
    declaration to ``inner``; a subclass overrides only the transformation it
    adds (``tff.aggregators``' factories that wrap one another).
    """

    def __init__(self, inner: Aggregator[S]) -> None:
        self.inner = inner
        self.needs_individual_updates = inner.needs_individual_updates

    def initial_state(self, dim: int) -> S:
        return self.inner.initial_state(dim)

    def client_params(self, state: S) -> Mapping[str, Any]:
        return self.inner.client_params(state)

    def aggregate(self, state: S, contributions: Contributions, ctx: RoundContext) -> Aggregate[S]:
        return self.inner.aggregate(state, contributions, ctx)

    def contribution_bounds(self, params: Mapping[str, Any], dim: int) -> dict[str, float]:
        return self.inner.contribution_bounds(params, dim)

    def private_release(self) -> Optional[PrivateRelease]:
        return self.inner.private_release()


def stage_chain(aggregator: Aggregator) -> list[Aggregator]:
    """``aggregator`` and every stage it wraps, outermost first."""
    chain = [aggregator]
    while isinstance(chain[-1], Wrapper):
        chain.append(chain[-1].inner)
    return chain


def check_privacy_forwarded(aggregator: Aggregator) -> Optional[PrivateRelease]:
    """The chain's DP declaration; a ``ValueError`` if a wrapper hides its inner one.

    A wrapper that answers ``None`` (or something else) while the stage inside
    it releases a DP result would make the run silently unaccounted.
    """
    chain = stage_chain(aggregator)
    for outer, inner in zip(chain, chain[1:]):
        declared = inner.private_release()
        if declared is not None and outer.private_release() != declared:
            raise ValueError(
                f"{type(outer).__name__} wraps the differentially private {inner!r} but does not "
                "forward its private_release(); the run could not be accounted"
            )
    return aggregator.private_release()
