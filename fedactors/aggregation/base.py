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

from fedactors.arrays import stack_rows
from fedactors.errors import stage_label

S = TypeVar("S")

#: What one device sends: named arrays, each of which is summed across devices.
Contribution = Mapping[str, np.ndarray]


class IndividualUpdatesHidden(RuntimeError):
    """Raised when a stage asks for per-device values under secure aggregation.

    ``Contributions.stacked()`` raises it when the server holds only the sum.
    A scenario normally never gets here: a stage that needs individual updates
    must set ``needs_individual_updates = True``, and such a stage is refused
    with secure aggregation when the scenario is built.

    Examples:
        >>> import numpy as np
        >>> from fedactors.aggregation import SummedContributions
        >>> SummedContributions({"delta": np.ones(2)}, count=3).stacked()
        Traceback (most recent call last):
            ...
        fedactors.aggregation.base.IndividualUpdatesHidden: this aggregator needs individual updates, ...
    """


class Contributions(abc.ABC):
    """The cohort's contributions as the server is allowed to see them.

    What ``Aggregator.aggregate`` receives: ``PlainContributions`` without
    secure aggregation (every row readable), ``SummedContributions`` with
    it (only the key-by-key sum and the count). A stage that uses only
    ``count`` and ``sum()`` runs under both; ``stacked()`` raises
    ``IndividualUpdatesHidden`` when the server holds only the sum.

    Examples:
        >>> import numpy as np
        >>> from fedactors.aggregation import Contributions, PlainContributions
        >>> rows = [{"delta": np.array([1.0, 2.0])}, {"delta": np.array([3.0, 4.0])}]
        >>> contributions = PlainContributions(rows)
        >>> isinstance(contributions, Contributions), contributions.count
        (True, 2)
        >>> contributions.sum()
        {'delta': array([4., 6.])}
    """

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
    every run. Float keys are summed in float64.

    Args:
        contributions: One contribution per device: a mapping from key to
            array, as the stage's ``encode`` returned it. Every row has the
            same keys.

    Examples:
        >>> import numpy as np
        >>> from fedactors.aggregation import PlainContributions
        >>> rows = [{"delta": np.array([1.0, 2.0], np.float32)},
        ...         {"delta": np.array([3.0, 6.0], np.float32)}]
        >>> contributions = PlainContributions(rows)
        >>> contributions.stacked()["delta"]  # one row per device
        array([[1., 2.],
               [3., 6.]], dtype=float32)
        >>> contributions.sum()
        {'delta': array([4., 8.])}
    """

    def __init__(self, contributions: Sequence[Contribution]) -> None:
        self._rows = list(contributions)

    @property
    def count(self) -> int:
        return len(self._rows)

    def stacked(self) -> dict[str, np.ndarray]:
        if not self._rows:
            return {}
        return {k: stack_rows([np.asarray(r[k]) for r in self._rows]) for k in self._rows[0]}

    def sum(self) -> dict[str, np.ndarray]:
        # float64 accumulation: a 10,000-device sum in float32 loses digits.
        return {
            k: v.sum(axis=0, dtype=np.float64 if v.dtype.kind == "f" else v.dtype)
            for k, v in self.stacked().items()
        }


class SummedContributions(Contributions):
    """Only the sum, as a server running secure aggregation learns it.

    ``stacked()`` raises ``IndividualUpdatesHidden``.

    Args:
        summed: The key-by-key sum of every contribution (key to array).
        count: How many devices' contributions the sum is over.

    Examples:
        >>> import numpy as np
        >>> from fedactors.aggregation import SummedContributions
        >>> contributions = SummedContributions({"delta": np.array([4.0, 8.0])}, count=2)
        >>> contributions.count, contributions.sum()
        (2, {'delta': array([4., 8.])})
    """

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
    """What the server knows about the round when it aggregates.

    Args:
        round: The number of the round being aggregated, from 1 (under FedBuff,
            the model version the update will produce).
        expected_count: The cohort size the server aims for: ``rounds.cohort_size``
            (FedBuff: ``buffer_size``). DP stages divide by it.
        selected: How many devices were selected for the round (FedBuff: the
            buffer's size).
        rng: The server's noise generator for this round, for central DP
            noise: seed path ``("server", round)``, or the operating system's
            CSPRNG under ``Scenario(randomness="system")``, so draw nothing
            from it that must replay from the seed. Left out of ``repr`` and
            of equality.

    Examples:
        >>> import numpy as np
        >>> from fedactors.aggregation import RoundContext
        >>> RoundContext(round=1, expected_count=10, selected=13, rng=np.random.default_rng(0))
        RoundContext(round=1, expected_count=10, selected=13)
    """

    round: int
    #: The cohort size the server aims for (its target count). DP stages divide
    #: by this, not by how many reported, which would leak dropouts.
    expected_count: int
    selected: int
    #: Server-side randomness for this round (e.g. central DP noise).
    rng: np.random.Generator = field(repr=False, compare=False)


@dataclass(frozen=True)
class Aggregate(Generic[S]):
    """The result of one aggregation step.

    Args:
        delta: The flat float32 update to apply to the global weights (through
            the server optimizer), or ``None`` for "no update this round" (e.g.
            zero total weight); the model is then left as it is.
        state: The stage's state for the next round (what ``aggregate`` gets
            back then).
        measurements: Named numbers about the step, written to
            ``metrics.jsonl`` (e.g. ``total_weight``). Default: none.
        shares: Each contribution's share in ``delta``, in the contributions'
            order, from 0 (left out) to 1 (used in full): what a robust stage
            did with each update (Krum's choice, the coordinates a trimmed
            mean kept). None (default): every contribution counts in full.

    Examples:
        >>> import numpy as np
        >>> from fedactors.aggregation import Aggregate
        >>> result = Aggregate(np.zeros(2, np.float32), state=None,
        ...                    measurements={"total_weight": 3.0})
        >>> result.delta, result.measurements
        (array([0., 0.], dtype=float32), {'total_weight': 3.0})
    """

    delta: Optional[np.ndarray]
    state: S
    measurements: Mapping[str, float] = field(default_factory=dict)
    shares: Optional[tuple[float, ...]] = None


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

    Args:
        noise_multiplier: Effective Gaussian noise multiplier of one release
            (noise standard deviation over the add/remove-one sensitivity).
        expected_count: Cohort size the release divides by and was calibrated
            for; must equal ``rounds.cohort_size`` (FedBuff: ``buffer_size``).
        min_survivors: Distributed noise only: the fewest shares a release may
            sum. ``None`` (default): central noise, added by the server.

    Examples:
        >>> from fedactors.aggregation import PrivateRelease
        >>> release = PrivateRelease(noise_multiplier=1.0, expected_count=50, min_survivors=35)
        >>> release.distributed_noise
        True
        >>> release.noise_multiplier_for(50)  # 50 shares sized for 35: more noise than nominal
        1.195...
        >>> release.noise_multiplier_for(30) is None  # too few shares: no release
        True
    """

    noise_multiplier: float
    expected_count: int
    min_survivors: Optional[int] = None

    @property
    def distributed_noise(self) -> bool:
        """Whether the devices add the noise (``min_survivors`` is set)."""
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


@dataclass(frozen=True)
class TreeRelease(PrivateRelease):
    """A DP-FTRL stage's declaration: tree-aggregated noise, accounted without sampling.

    Each release adds the residual of tree-aggregated Gaussian noise
    (Kairouz et al. 2021): the running sum of the releases is the clipped
    updates' running sum plus the noise of at most ``log2(T) + 1`` tree nodes,
    each of standard deviation ``noise_multiplier * C``. Its privacy depends on
    how often, and how far apart, one device contributed, not on any sampling:
    the budget accounts it from the participation the server records
    (:mod:`fedactors.privacy.tree_budget`).

    Args:
        noise_multiplier: Standard deviation of each tree node's noise over the
            clip norm C (one device's add/remove-one sensitivity).
        expected_count: Cohort size the release divides by.
        min_survivors: Always ``None``: the server adds the tree's noise.
        restart_every: Start a new tree every this many releases (``None``:
            one tree for the whole run).

    Examples:
        >>> from fedactors.aggregation import TreeRelease
        >>> TreeRelease(noise_multiplier=2.0, expected_count=20, restart_every=50).distributed_noise
        False
    """

    restart_every: Optional[int] = None


@dataclass(frozen=True)
class SkellamRelease(PrivateRelease):
    """A ``DPMean.skellam`` stage's declaration: integer Skellam noise added by the devices.

    Each device clips to ``clip_norm``, scales by ``2**scale_bits``, rounds
    to integers (conditionally, ``beta``) and adds ``Sk(v / min_survivors)``;
    the sum over ``m' >= min_survivors`` devices carries ``Sk(v * m' / k)``.
    ``v`` and the sensitivities depend on the model size, so the budget
    (:mod:`fedactors.privacy.skellam_budget`) computes them from these
    fields and the run's dimension; it accounts each release without
    amplification by sampling.

    Args:
        noise_multiplier: Standard deviation of the summed noise (at
            ``min_survivors`` shares) over the L2 sensitivity after rounding.
        expected_count: Cohort size the release divides by.
        min_survivors: The fewest shares a release may sum.
        clip_norm: C, the L2 clip in model units.
        scale_bits: The grid is multiples of ``2 ** -scale_bits``.
        beta: Conditional rounding's parameter in [0, 1) (0: unconditional).

    Examples:
        >>> from fedactors.aggregation import SkellamRelease
        >>> SkellamRelease(3.0, 10, 8, clip_norm=1.0, scale_bits=10, beta=0.0).distributed_noise
        True
    """

    clip_norm: float = 1.0
    scale_bits: int = 0
    beta: float = 0.0


class Aggregator(abc.ABC, Generic[S]):
    """One stage of aggregation. Subclass it in one screen; see docs/aggregation.md.

    A subclass implements ``encode`` (on the device: delta to contribution, a
    mapping of named arrays the server only ever needs summed) and
    ``aggregate`` (on the server: ``Contributions`` to an
    ``Aggregate``). The other methods have defaults: no state
    (``initial_state``), nothing broadcast (``client_params``), not private
    (``private_release``), no bounds (``contribution_bounds``: then secure
    aggregation refuses the stage). Set the class attribute
    ``needs_individual_updates = True`` if ``aggregate`` reads
    ``contributions.stacked()``. ``aggregate`` must not mutate ``self``: state
    goes in and comes out. The constructor takes whatever the stage needs.

    Examples:
        >>> import numpy as np
        >>> from fedactors.aggregation import (Aggregate, Aggregator, PlainContributions,
        ...                                    RoundContext)
        >>> class SignVote(Aggregator[None]):
        ...     def encode(self, params, delta, num_examples, rng):
        ...         return {"votes": np.sign(delta).astype(np.float32)}
        ...     def aggregate(self, state, contributions, ctx):
        ...         votes = contributions.sum()["votes"]
        ...         return Aggregate((0.1 * np.sign(votes)).astype(np.float32), state)
        >>> stage, rng = SignVote(), np.random.default_rng(0)
        >>> rows = [stage.encode({}, np.array(d, np.float32), 10, rng)
        ...         for d in ([1.0, -2.0], [3.0, 1.0], [2.0, -1.0])]
        >>> stage.aggregate(None, PlainContributions(rows), RoundContext(1, 3, 3, rng)).delta
        array([ 0.1, -0.1], dtype=float32)
    """

    #: True for stages (median, Krum, ...) that must see each update, which
    #: rules out secure aggregation.
    needs_individual_updates: bool = False

    def initial_state(self, dim: int) -> S:
        """The state before round 1, for models with ``dim`` parameters."""
        return None  # type: ignore[return-value]

    def private_release(self) -> Optional[PrivateRelease]:
        """The DP declaration of every release this stage makes; ``None``: not private.

        A stage that wraps a private one must forward it (see ``Wrapper``);
        ``check_privacy_forwarded`` refuses a chain that hides it.
        """
        return None

    def client_params(self, state: S) -> Mapping[str, Any]:
        """Small values broadcast to the devices with each request (e.g. a clip norm)."""
        return {}

    def clip_bound(self, params: Mapping[str, Any]) -> Optional[float]:
        """The L2 norm each device's delta is clipped to this round (``params`` are the
        round's :meth:`client_params`), or None for a stage that does not clip.

        The simulator reads it to report, as ground truth the protocol never releases,
        how many deltas were clipped and their median norm (docs/reporting.md).
        """
        return None

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
        ``fedactors.server.screening``). The default encodes a zero delta
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

    By default it forwards state, broadcast parameters, aggregation,
    contribution bounds and the DP declaration to ``inner``; a subclass
    overrides only the transformation it adds (``tff.aggregators``' factories
    that wrap one another). ``encode`` is not forwarded: a subclass must
    implement it (usually transforming the delta, then calling
    ``self.inner.encode``). A wrapper around a DP stage must keep forwarding
    ``private_release()``, or the scenario is refused: the run could not be
    accounted.

    Args:
        inner: The stage wrapped; ``needs_individual_updates`` is copied from it.

    Examples:
        >>> import numpy as np
        >>> from fedactors.aggregation import (PlainContributions, RoundContext, WeightedMean,
        ...                                    Wrapper)
        >>> class Halved(Wrapper):
        ...     def encode(self, params, delta, num_examples, rng):
        ...         return self.inner.encode(params, delta / 2, num_examples, rng)
        >>> stage, rng = Halved(WeightedMean(weighted=False)), np.random.default_rng(0)
        >>> rows = [stage.encode({}, np.array([2.0, 4.0], np.float32), 1, rng)]
        >>> stage.aggregate(None, PlainContributions(rows), RoundContext(1, 1, 1, rng)).delta
        array([1., 2.], dtype=float32)
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

    def clip_bound(self, params: Mapping[str, Any]) -> Optional[float]:
        return self.inner.clip_bound(params)

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
                f"{type(outer).__name__} wraps the differentially private {stage_label(inner)} "
                "but does not "
                "forward its private_release(); the run could not be accounted"
            )
    return aggregator.private_release()
