"""DP-FTRL's run-time budget: ε from recorded participation, and the separation rule.

The counterpart of :class:`fedactors.privacy.budget.PrivacyBudget` for a
stage that declares a :class:`~fedactors.aggregation.TreeRelease`
(``DPMean.tree``), with the same interface towards the server's release step.
What it claims, and why no sampling assumption is needed, is in
:mod:`fedactors.privacy.tree_accounting`:

* ``epsilon`` (the guarantee) is the **planned** bound: for every way a
  device could have taken part under the rules the server enforces (one
  contribution per release, ``min_separation`` releases between two). It
  holds whoever was online, however slow, and whatever the data;
* ``epsilon_observed_participation`` is the bound for the participation that
  actually happened (each tree's largest count and smallest gap), tighter,
  and valid if when devices took part did not depend on their data.

The server consults :meth:`TreeBudget.eligible` before it selects a device
(rounds) or gives it work (FedBuff), which is what enforces the separation.
A release the server skipped (too few reports, an aborted secure round) ran
no tree step and released nothing, so it is not charged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

from fedactors.aggregation.base import TreeRelease
from fedactors.errors import ConfigError
from fedactors.privacy.claims import BUFFERS, ROUNDS, STOPPED_BY_BUDGET, json_epsilon
from fedactors.privacy.participation import Participation
from fedactors.privacy.tree_accounting import TreeLedger, most_participations


@dataclass(frozen=True)
class TreePrivacyState:
    """The tree ledger so far and the releases the server skipped (not charged)."""

    ledger: TreeLedger
    releases_skipped: int = 0


@dataclass(frozen=True)
class TreeBudget:
    """What a DP-FTRL run accounts, at which δ, against which target.

    Built for a scenario whose aggregator is ``DPMean.tree`` by
    ``PrivacyBudget.for_scenario``; the server's release step charges it and
    asks it which devices may take part.

    Args:
        initial_ledger: The empty :class:`~fedactors.privacy.tree_accounting.TreeLedger`
            (noise multiplier, restarts, the enforced ``min_separation``).
        delta: The δ ε is reported at.
        target_epsilon: Stop before a release would take ε above it (``None``: no budget).
        declared: The stage's :class:`~fedactors.aggregation.TreeRelease`.
        population: The fleet size (reported only: nothing is sampled).
        releases: ``"rounds"`` or ``"buffers"`` (FedBuff).

    Examples:
        >>> from fedactors.aggregation import TreeRelease
        >>> from fedactors.privacy.participation import Participation
        >>> from fedactors.privacy.tree_accounting import TreeLedger
        >>> from fedactors.privacy.tree_budget import TreeBudget
        >>> budget = TreeBudget(TreeLedger(4.0, None, min_separation=1), 1e-5, None,
        ...                     TreeRelease(4.0, expected_count=2), population=10)
        >>> state = budget.charge(budget.initial_state(), Participation(contributors=(3, 4)), 2)
        >>> budget.eligible(state, 3, next_release=2), budget.eligible(state, 5, next_release=2)
        (False, True)
        >>> budget.summary(state, "completed")["assumption_held"]
        True
    """

    initial_ledger: TreeLedger
    delta: float
    target_epsilon: Optional[float]
    declared: TreeRelease
    population: int
    releases: str = ROUNDS

    def initial_state(self) -> TreePrivacyState:
        return TreePrivacyState(self.initial_ledger)

    @property
    def min_separation(self) -> int:
        return self.initial_ledger.min_separation

    @property
    def releases_whatever_the_count(self) -> bool:
        """Always: the tree's noise is accounted from who contributed, not how many, so
        skipping a release by the count of reports would reveal it."""
        return True

    def checked(self) -> TreeBudget:
        """This budget, or a ``ConfigError`` if its target is below what one release costs."""
        first = self.next_epsilon(self.initial_state())
        if self.target_epsilon is not None and first > self.target_epsilon:
            raise ConfigError(
                "privacy.target_epsilon",
                f"{self.target_epsilon:g} is below the ε of a single DP-FTRL release "
                f"({first:.4g} at δ={self.delta:g}): no release could run; raise the target or "
                "the noise")
        return self

    # -- the separation rule ----------------------------------------------------

    def eligible(self, state: TreePrivacyState, device: int, next_release: int) -> bool:
        """Whether ``device`` may take part in release ``next_release`` (1-based, the
        server's count, which includes the releases it skipped)."""
        # A skipped release is no tree leaf: the separation is counted in the ledger's
        # releases, which leave the skipped ones out.
        return state.ledger.eligible(device, next_release - state.releases_skipped)

    # -- charging -------------------------------------------------------------

    def multiplier_charged(self, summed: int) -> float:
        """Each tree node's noise multiplier (central noise: who reported does not change it)."""
        return self.declared.noise_multiplier

    def charge(self, state: TreePrivacyState, participation: Participation, summed: int,
               aggregated: bool = True) -> TreePrivacyState:
        """The state after one release: a tree leaf summing ``participation.contributors``."""
        if not aggregated:
            return replace(state, releases_skipped=state.releases_skipped + 1)
        return replace(state, ledger=state.ledger.record(participation.contributors))

    # -- what ε is ------------------------------------------------------------

    def epsilon(self, state: TreePrivacyState) -> float:
        """The guarantee: the planned bound (see the module docstring)."""
        return state.ledger.epsilon_planned(self.delta)

    def round_epsilon(self, state: TreePrivacyState) -> Optional[float]:
        """A bound on the guarantee after this release, for metrics.jsonl: the closed-form
        one (never below :meth:`epsilon`, cheap at every release)."""
        return json_epsilon(state.ledger.epsilon_planned_bound(self.delta))

    def next_epsilon(self, state: TreePrivacyState) -> float:
        """ε if one more release were made (the plan does not depend on who takes part),
        by the closed-form bound: the budget stops no later than the exact ε would."""
        return state.ledger.with_one_more().epsilon_planned_bound(self.delta)

    def would_exceed(self, state: TreePrivacyState) -> bool:
        return self.target_epsilon is not None and self.next_epsilon(state) > self.target_epsilon

    # -- what the run claims --------------------------------------------------

    def assumption(self) -> str:
        led = self.initial_ledger
        trees = (f"a new tree every {led.restart_every} releases" if led.restart_every
                 else "one tree for the whole run")
        rule = (f"the server keeps each device out of the {led.min_separation} releases after each "
                "of its contributions" if led.min_separation
                else "no separation rule (a device may contribute to consecutive releases)")
        return (
            f"user-level ε at δ={self.delta:g} for DP-FTRL (tree-aggregated Gaussian noise, "
            f"{trees}; add-or-remove-one neighbours): no sampling is assumed; it bounds every "
            f"participation the server's rules allow: at most one clipped update per device per "
            f"release, and {rule}"
        )

    def violations(self, state: TreePrivacyState) -> list[str]:
        """Where the run broke :meth:`assumption` (empty if it held).

        The server releases the tree's noise even when too few reported, so
        only a release with nothing to sum is skipped: a secure round that
        aborted (fewer survivors than its threshold) or had nobody online.
        """
        if not state.releases_skipped:
            return []
        return [
            f"skipped releases: {state.releases_skipped} releases were not made (secure "
            "aggregation aborted, or nobody was online); whether a release is made depends on "
            "how many devices took part, which the noise does not cover, so ε holds only if "
            "that does not depend on any one device"
        ]

    def summary(self, state: TreePrivacyState, stopped: str) -> dict[str, Any]:
        """The ``privacy`` block of summary.json."""
        led = state.ledger
        block: dict[str, Any] = {
            "epsilon": json_epsilon(self.epsilon(state)),
            "delta": self.delta,
            "target_epsilon": self.target_epsilon,
            "rounds_accounted": led.releases,
            "releases": self.releases,
            "accounting": {
                "mechanism": "dp-ftrl-tree-aggregation",
                "population": self.population,
                "expected_count": self.declared.expected_count,
                "sampling": "none",
                "neighboring": "add-or-remove-one",
                "noise_multiplier": self.declared.noise_multiplier,
                "restart_every": led.restart_every,
                "min_separation_enforced": led.min_separation,
                "trees": [
                    {"releases": t.steps,
                     "most_participations_allowed": most_participations(t.steps, led.min_separation)}
                    for t in led.trees if t.steps
                ],
                "method": "rdp",
            },
            "epsilon_observed_participation": json_epsilon(led.epsilon_observed(self.delta)),
            "observed_participation": {
                "devices_contributed": len(led.last),
                "trees": [
                    {"releases": t.steps, "most_participations": t.max_participations,
                     "fewest_releases_between": t.min_separation}
                    for t in led.trees if t.steps
                ],
                "note": (
                    "epsilon_observed_participation bounds the participation that happened; it "
                    "holds if when devices took part (online, charging, fast enough) did not "
                    "depend on their data. epsilon bounds any participation the rules allow"
                ),
            },
            "releases_skipped": state.releases_skipped,
            "assumption": self.assumption(),
            "assumption_held": not self.violations(state),
            "violations": self.violations(state),
        }
        if stopped == STOPPED_BY_BUDGET:
            block["next_round_epsilon"] = json_epsilon(self.next_epsilon(state))
        return block


def tree_budget(declared: TreeRelease, options: Any, population: int, fedbuff: bool,
                delta: float) -> TreeBudget:
    """The budget of a DP-FTRL scenario (called by ``PrivacyBudget.for_scenario``)."""
    ledger = TreeLedger(declared.noise_multiplier, declared.restart_every, options.min_separation)
    return TreeBudget(ledger, delta, options.target_epsilon, declared, population,
                      BUFFERS if fedbuff else ROUNDS)


__all__ = ["TreeBudget", "TreePrivacyState", "tree_budget"]
