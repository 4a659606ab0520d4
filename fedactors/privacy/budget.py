"""The run-time privacy budget: the accountant a run keeps, and what ε it claims.

:class:`PrivacyBudget` is fixed for a run and built from the scenario (see
:meth:`PrivacyBudget.for_scenario`): the DP aggregator's noise, the fleet size
``N``, the server's sampling and the scenario's :class:`~fedactors.privacy.spec.Privacy`
options. :class:`PrivacyState` is what changes: the immutable
:class:`~fedactors.privacy.accounting.PrivacyLedger` plus an audit of how far
the simulated selection departed from the sampling the ε assumes. The server
keeps the state in its ``ServerState`` and replaces it every round, so it can
be checkpointed as plain data.

**What is charged.** Every round the server starts is charged one sampled
Gaussian, including rounds that end up skipped: the charge does not depend on
how many devices reported, so the ε after round ``r`` is a function of ``r``
alone (and charging a round that released nothing only over-states ε).

**Sample size.** The accountant's sample is the number of devices the server
*selects*, ``ceil(cohort_size * over_selection)``, not ``cohort_size``: with
over-selection, the updates summed are a subset of a uniform sample of that
size, chosen by speed, and the subsampled-Gaussian bound for the larger
sample covers any data-independent choice of subset. Without over-selection
the two are equal.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Any, Optional

from fedactors.errors import ConfigError
from fedactors.privacy.accounting import PrivacyLedger, effective_noise_multiplier
from fedactors.privacy.spec import Privacy

#: ``summary.json`` ``stopped`` value when the budget ended the run.
STOPPED_BY_BUDGET = "privacy-budget"


@functools.lru_cache(maxsize=4096)
def _epsilon(ledger: PrivacyLedger, delta: float) -> float:
    # Ledgers are frozen and hashable: the stop check for round r+1 and the
    # report after round r+1 compute the same value once.
    return ledger.epsilon(delta)


def json_epsilon(value: float) -> Optional[float]:
    """``inf`` (no noise) as JSON ``null``: strict JSON has no infinity."""
    return None if math.isinf(value) else value


@dataclass(frozen=True)
class PrivacyState:
    """The ledger so far and an audit of the sampling the ε assumes."""

    ledger: PrivacyLedger
    #: Rounds whose candidates (devices online at round start) were not the whole fleet.
    rounds_partial_fleet: int = 0
    #: Fewest devices online at the start of any round (``None`` before round 1).
    min_online: Optional[int] = None
    #: Rounds in which fewer updates were summed than selected devices up to the
    #: target (deadline cut-offs, dropouts); surplus over the target is not counted.
    rounds_missing_reports: int = 0
    #: Rounds whose sum held fewer than ``expected_count`` updates.
    rounds_below_expected: int = 0

    def after_round(
        self, *, online: int, population: int, selected: int, summed: int, expected: int
    ) -> PrivacyState:
        """The state after one more (charged) round."""
        return replace(
            self,
            ledger=self.ledger.compose(1),
            rounds_partial_fleet=self.rounds_partial_fleet + (online < population),
            min_online=online if self.min_online is None else min(self.min_online, online),
            rounds_missing_reports=self.rounds_missing_reports + (summed < min(selected, expected)),
            rounds_below_expected=self.rounds_below_expected + (summed < expected),
        )


@dataclass(frozen=True)
class PrivacyBudget:
    """What a run accounts, at which δ, against which target."""

    initial_ledger: PrivacyLedger
    delta: float
    target_epsilon: Optional[float]
    expected_count: int
    distributed_noise: bool = False

    @classmethod
    def for_scenario(cls, scenario: Any, population: int) -> Optional[PrivacyBudget]:
        """The scenario's budget, or ``None`` if its aggregator is not differentially private.

        A DP aggregator (one with ``dp_event()``, i.e. ``DPMean``) without a
        ``privacy`` option gets ``Privacy()``: ε is always reported for DP runs.
        """
        aggregator = scenario.aggregator
        if not hasattr(aggregator, "dp_event"):
            return None
        options: Privacy = scenario.privacy or Privacy()
        rounds = scenario.rounds
        try:
            ledger = PrivacyLedger(
                population=population,
                cohort_size=min(rounds.selected_size, population),
                noise_multiplier=effective_noise_multiplier(aggregator.dp_event()),
                sampling=rounds.sampling,
                method=options.method,
            )
        except ConfigError as exc:
            raise exc.within("privacy") from None
        return cls(
            ledger,
            options.delta_for(population),
            options.target_epsilon,
            int(aggregator.expected_count),
            bool(getattr(aggregator, "distributed_noise", False)),
        )

    def initial_state(self) -> PrivacyState:
        return PrivacyState(self.initial_ledger)

    def epsilon(self, state: PrivacyState) -> float:
        return _epsilon(state.ledger, self.delta)

    def next_epsilon(self, state: PrivacyState) -> float:
        """ε if one more round were run."""
        return _epsilon(state.ledger.compose(1), self.delta)

    def would_exceed(self, state: PrivacyState) -> bool:
        """True if running one more round would take ε above the target."""
        return self.target_epsilon is not None and self.next_epsilon(state) > self.target_epsilon

    # -- what the run claims --------------------------------------------------

    @property
    def neighboring(self) -> str:
        fixed = self.initial_ledger.sampling == "fixed_size"
        return "replace-one" if fixed else "add-or-remove-one"

    def assumption(self) -> str:
        """The sampling assumption the reported ε relies on, in one sentence."""
        led = self.initial_ledger
        if led.sampling == "fixed_size":
            sample = (
                f"a uniformly random set of exactly {led.cohort_size} of all {led.population} "
                f"devices (sampling without replacement, {self.neighboring} neighbours)"
            )
        else:
            sample = (
                f"a Poisson sample: each of all {led.population} devices independently with "
                f"probability {led.sampling_probability:.4g} ({self.neighboring} neighbours)"
            )
        return (
            f"user-level ε at δ={self.delta:g} assumes each round's cohort is {sample}, drawn "
            "independently of the data and of other rounds, and that which selected devices' "
            "updates are summed does not depend on their data"
        )

    def violations(self, state: PrivacyState, rounds: int) -> list[str]:
        """Where this run broke :meth:`assumption`, in plain words (empty if it held)."""
        led = self.initial_ledger
        out = []
        if state.rounds_partial_fleet:
            out.append(
                f"availability: in {state.rounds_partial_fleet} of {rounds} rounds the server "
                f"could only select among online devices (as few as {state.min_online} of "
                f"{led.population}); that is not a uniform sample of the fleet, so the "
                "amplification by sampling in ε is not guaranteed"
            )
        if state.rounds_missing_reports:
            out.append(
                f"missing reports: in {state.rounds_missing_reports} of {rounds} rounds selected "
                "devices were cut by the deadline or dropped out; ε holds only if who drops "
                "does not depend on the data"
            )
        if self.distributed_noise and state.rounds_below_expected:
            out.append(
                f"distributed noise: in {state.rounds_below_expected} of {rounds} rounds fewer "
                f"than {self.expected_count} devices' noise shares were summed, so those rounds "
                "carried less noise than accounted and the reported ε is too small"
            )
        return out

    def summary(self, state: PrivacyState, stopped: str) -> dict[str, Any]:
        """The ``privacy`` block of summary.json."""
        led = self.initial_ledger
        rounds = state.ledger.rounds
        violations = self.violations(state, rounds)
        block: dict[str, Any] = {
            "epsilon": json_epsilon(self.epsilon(state)),
            "delta": self.delta,
            "target_epsilon": self.target_epsilon,
            "rounds_accounted": rounds,
            "accounting": {
                "population": led.population,
                "sample_size": led.cohort_size,
                "expected_count": self.expected_count,
                "sampling": led.sampling,
                "neighboring": self.neighboring,
                "noise_multiplier": led.noise_multiplier,
                "method": led.method,
            },
            "assumption": self.assumption(),
            "assumption_held": not violations,
            "violations": violations,
        }
        if stopped == STOPPED_BY_BUDGET:
            block["next_round_epsilon"] = json_epsilon(self.next_epsilon(state))
        return block
