"""The run-time privacy budget: the accountant a run keeps, and what ε it claims.

:class:`PrivacyBudget` is fixed for a run and built from the scenario (see
:meth:`PrivacyBudget.for_scenario`): the aggregator's declared
:class:`~fedactors.aggregation.base.PrivateRelease`, the fleet size ``N``, the
server's sampling and the scenario's :class:`~fedactors.privacy.spec.Privacy`
options. :class:`PrivacyState` is what changes: the immutable
:class:`~fedactors.privacy.accounting.PrivacyLedger` plus an audit of how far
the simulated participation departed from what the ε assumes. The server's
release step (:mod:`fedactors.server.release`) replaces it at every release,
so it is checkpointed as plain data.

**What is charged.** Every release the server attempts is charged once,
including ones that end up skipped, at the noise multiplier the release
actually carried (:meth:`PrivateRelease.noise_multiplier_for`: larger than
nominal when more distributed-noise shares were summed than the minimum; a
skipped release at the nominal one, which only over-states ε).

**Synchronous rounds.** The accountant's sample is the number of devices the
server *selects*, ``ceil(cohort_size * over_selection)``: fixed-size rounds
are a uniform sample of that size (replace-one neighbours), Poisson rounds
include each device with ``q = selected / N`` (add/remove-one) and sum every
sampled report that arrives by the deadline, never cutting at a target. Where
the run departs from that (availability, dropouts, a target that cuts the
slowest of an over-selected cohort) the audit says so in ``violations``.

**Poisson rounds release whatever the count.** Under add-or-remove-one one
device's presence changes how many were sampled, and the subsampled Gaussian
the accountant charges releases the noised sum for *every* sample, the empty
one included. So with central noise the server never skips a Poisson round
for too few reports (:attr:`PrivacyBudget.releases_whatever_the_count`; a
``rounds.min_reports`` above 1 is refused at load, and so is distributed
noise, whose empty sum has no noise to release). A Poisson round that still
released nothing (a secure round that aborted) is not that mechanism: the
audit counts it (``rounds_not_released``) and ``violations`` says so.

**FedBuff buffers.** Buffer membership is whoever finished training first
among the devices online: not a sample of any kind. The *guarantee* is
therefore the no-amplification bound: each buffer a Gaussian mechanism on
the device's clipped (and staleness-discounted, so still <= C) update,
composed over every release a device could have joined. The figure a
uniform sample of ``buffer_size`` devices would give is reported beside it
as ``epsilon_if_uniform_sample``, indicative only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

from fedactors.aggregation.base import (
    PrivateRelease,
    SkellamRelease,
    TreeRelease,
    check_privacy_forwarded,
)
from fedactors.errors import ConfigError
from fedactors.privacy.accounting import PrivacyLedger
from fedactors.privacy.claims import BUFFERS, ROUNDS, STOPPED_BY_BUDGET, json_epsilon
from fedactors.privacy.participation import Participation
from fedactors.privacy.spec import Privacy


@dataclass(frozen=True)
class PrivacyState:
    """The ledgers so far and an audit of the participation the ε assumes."""

    ledger: PrivacyLedger
    #: FedBuff: the as-if-uniform-sample ledger (indicative only), else None.
    indicative: Optional[PrivacyLedger] = None
    #: Rounds whose candidates (devices online at round start) were not the whole fleet.
    rounds_partial_fleet: int = 0
    #: Fewest devices online at the start of any round (``None`` before round 1).
    min_online: Optional[int] = None
    #: Rounds in which fewer updates were summed than the round waited for: every
    #: selected device (deadline cut-offs, dropouts), or, closed at its target, that
    #: many (a device it closed on dropped out mid-protocol under secure aggregation).
    rounds_missing_reports: int = 0
    #: Rounds closed at the target while selected devices were still working.
    rounds_cut_at_target: int = 0
    #: Rounds charged but not released (skipped by the server, an aborted secure
    #: round, too few distributed-noise shares): under Poisson sampling a violation.
    rounds_not_released: int = 0


@dataclass(frozen=True)
class PrivacyBudget:
    """What a run accounts, at which δ, against which target."""

    initial_ledger: PrivacyLedger
    delta: float
    target_epsilon: Optional[float]
    declared: PrivateRelease
    releases: str = ROUNDS
    #: FedBuff: the ledger a uniform sample of ``buffer_size`` devices would have.
    indicative_ledger: Optional[PrivacyLedger] = None

    @classmethod
    def for_scenario(cls, scenario: Any, population: int,
                     dim: Optional[int] = None) -> Optional[Any]:
        """The scenario's budget, or ``None`` if its aggregator declares no DP release.

        The budget's type follows the declaration: a ``PrivacyBudget`` for
        DP-FedAvg's ``PrivateRelease``, a ``TreeBudget`` for DP-FTRL's
        ``TreeRelease``, a ``SkellamBudget`` for a ``SkellamRelease``; all three
        answer the release step the same way (charge, epsilon, would_exceed,
        summary).

        A DP aggregator without a ``privacy`` option gets ``Privacy()``: ε is
        always reported for DP runs. A target below what a single release
        already costs is refused here: no release could ever be made.
        """
        try:
            declared = check_privacy_forwarded(scenario.aggregator)
        except ValueError as exc:
            raise ConfigError("aggregator", str(exc)) from None
        if declared is None:
            return None
        options: Privacy = scenario.privacy or Privacy()
        if isinstance(declared, TreeRelease):
            from fedactors.privacy.tree_budget import tree_budget

            return tree_budget(declared, options, population, scenario.mode is not None,
                               options.delta_for(population)).checked()
        if isinstance(declared, SkellamRelease):  # needs dim: its sensitivity depends on it
            from fedactors.privacy.skellam_budget import skellam_budget

            return skellam_budget(declared, options, population, scenario.mode is not None,
                                  options.delta_for(population), dim)
        if options.min_separation:
            # Keeping devices out by their history makes selection non-uniform:
            # exactly the assumption DP-FedAvg's amplification rests on.
            raise ConfigError(
                "privacy.min_separation",
                "only applies to DP-FTRL (DPMean.tree): with DP-FedAvg it would make the "
                "cohorts a non-uniform sample, which its ε assumes they are")
        rounds = scenario.rounds
        try:
            if scenario.mode is None:
                releases, indicative = ROUNDS, None
                ledger = PrivacyLedger(
                    population=population,
                    cohort_size=min(rounds.selected_size, population),
                    noise_multiplier=declared.noise_multiplier,
                    sampling=rounds.sampling,
                    method=options.method,
                )
            else:
                releases = BUFFERS
                k = min(scenario.mode.buffer_size, population)
                ledger = PrivacyLedger(population=population, cohort_size=k,
                                       noise_multiplier=declared.noise_multiplier,
                                       sampling="none", method=options.method)
                # Poisson at rate K/N: the same add/remove-one relation as the
                # guarantee, so the two figures can be compared.
                indicative = PrivacyLedger(population=population, cohort_size=k,
                                           noise_multiplier=declared.noise_multiplier,
                                           sampling="poisson", method="rdp")
        except ConfigError as exc:
            raise exc.within("privacy") from None
        budget = cls(ledger, options.delta_for(population), options.target_epsilon, declared,
                     releases, indicative)
        first = budget.next_epsilon(budget.initial_state())
        if budget.target_epsilon is not None and first > budget.target_epsilon:
            raise ConfigError(
                "privacy.target_epsilon",
                f"{budget.target_epsilon:g} is below the ε of a single release ({first:.4g} at "
                f"δ={budget.delta:g}{' without amplification' if releases == BUFFERS else ''}): "
                "no round could run; raise the target or the noise",
            )
        return budget

    @property
    def min_separation(self) -> int:
        """No separation rule: that is DP-FTRL's (``TreeBudget``)."""
        return 0

    def initial_state(self) -> PrivacyState:
        return PrivacyState(self.initial_ledger, self.indicative_ledger)

    @property
    def poisson(self) -> bool:
        """Synchronous rounds with Poisson sampling (add-or-remove-one neighbours)."""
        return self.releases == ROUNDS and self.initial_ledger.sampling == "poisson"

    @property
    def releases_whatever_the_count(self) -> bool:
        """Whether the server must release every round, over no report too (the noise
        alone): Poisson rounds with central noise. The accounted mechanism releases the
        noised sum of whatever was sampled, so skipping by the count would be another
        mechanism, one that reveals the count, which one device's presence changes."""
        return self.poisson and not self.declared.distributed_noise

    # -- charging -------------------------------------------------------------

    def multiplier_charged(self, summed: int) -> float:
        """The noise multiplier a release over ``summed`` contributions is charged at."""
        actual = self.declared.noise_multiplier_for(summed)
        return self.declared.noise_multiplier if actual is None else actual

    def charge(self, state: PrivacyState, participation: Participation, summed: int,
               aggregated: bool = True) -> PrivacyState:
        """The state after one more release, and what it did to the assumptions.

        A release the server skipped (``aggregated`` False) is charged too, at
        the nominal noise: over-stating ε rather than leaving it out; so is one
        the stage made no update for (fewer distributed-noise shares than its
        minimum). Both are counted in ``rounds_not_released``."""
        z = self.multiplier_charged(summed)
        released = aggregated and self.declared.noise_multiplier_for(summed) is not None
        new = replace(
            state,
            ledger=state.ledger.compose(1, noise_multiplier=z),
            indicative=None if state.indicative is None
            else state.indicative.compose(1, noise_multiplier=z),
        )
        if self.releases == BUFFERS:
            return new
        online, selected = participation.online, participation.selected
        assert online is not None and selected is not None
        population = self.initial_ledger.population
        # Fewer summed than the round waited for: every selected device, or, closed at its
        # target, that many (a device it closed on dropped out before its update was summed).
        waited_for = (participation.target if participation.cut_at_target else selected)
        missing = waited_for is not None and summed < waited_for
        return replace(
            new,
            rounds_partial_fleet=state.rounds_partial_fleet + (online < population),
            min_online=online if state.min_online is None else min(state.min_online, online),
            rounds_missing_reports=state.rounds_missing_reports + missing,
            rounds_cut_at_target=state.rounds_cut_at_target + participation.cut_at_target,
            rounds_not_released=state.rounds_not_released + (not released),
        )

    # -- what ε is ------------------------------------------------------------

    def epsilon(self, state: PrivacyState) -> float:
        """The tightest bound the accountant has (PLD where it applies): for reports."""
        return state.ledger.epsilon(self.delta)

    def round_epsilon(self, state: PrivacyState) -> Optional[float]:
        """The per-release figure for metrics.jsonl: the cheap RDP bound (never below
        :meth:`epsilon`; equal to it for fixed-size rounds, which only RDP covers).

        Where that bound is above the target, the tighter one the budget check
        enforced is computed instead, so no row shows more than the target the
        run kept (this happens only in the last releases before the stop).
        """
        eps = state.ledger.epsilon_rdp(self.delta)
        if self.target_epsilon is not None and eps > self.target_epsilon:
            eps = state.ledger.epsilon(self.delta)
        return json_epsilon(eps)

    def epsilon_without_sampling(self, state: PrivacyState) -> float:
        """ε of the releases so far with no sampling assumed, under the ledger's own
        neighbouring relation: what holds when the cohorts were not the sample the
        ledger assumes. Replace-one (fixed-size rounds) moves the sum by up to 2C,
        so its multipliers are halved, as ``sampled_round_event`` does. (It can come out
        below the sampled figure: fixed-size rounds have only RDP, this an exact
        Gaussian's PLD; each is a valid bound.)"""
        led = state.ledger
        halve = 2.0 if led.sampling == "fixed_size" else 1.0
        return replace(led, sampling="none", noise_multiplier=led.noise_multiplier / halve,
                       releases=tuple((z / halve, n) for z, n in led.releases)
                       ).epsilon(self.delta)

    def next_epsilon(self, state: PrivacyState) -> float:
        """ε if one more release were made at the nominal (lowest possible) noise."""
        return state.ledger.compose(1).epsilon(self.delta)

    def would_exceed(self, state: PrivacyState) -> bool:
        """True if one more release would take ε above the target."""
        return self.target_epsilon is not None and state.ledger.would_exceed(
            self.target_epsilon, self.delta)

    # -- what the run claims --------------------------------------------------

    @property
    def neighboring(self) -> str:
        fixed = self.initial_ledger.sampling == "fixed_size"
        return "replace-one" if fixed else "add-or-remove-one"

    def assumption(self) -> str:
        """What the reported ε relies on, in one sentence."""
        led = self.initial_ledger
        if self.releases == BUFFERS:
            return (
                f"user-level ε at δ={self.delta:g} composes one Gaussian mechanism per buffer "
                f"over every buffer a device could join, with no amplification by sampling "
                f"(buffer membership is whoever finished first, not a sample; "
                f"{self.neighboring} neighbours); it assumes each device contributes at most "
                "one clipped update per buffer, which the server enforces"
            )
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
                f"missing reports: in {state.rounds_missing_reports} of {rounds} rounds fewer "
                "updates were summed than the round waited for (every selected device, or as "
                "many as its target): cut by the deadline, dropped out (also after a secure "
                "round reached its target), or a secure round that aborted; ε holds only if "
                "who drops does not depend on the data"
            )
        if state.rounds_cut_at_target:
            out.append(
                f"arrival order: in {state.rounds_cut_at_target} of {rounds} rounds the server "
                "summed the first reports to reach its target and did not wait for the other "
                "selected devices (still training, or dropped out); which devices are slowest "
                "depends on how much data they hold, so ε holds only if it does not"
            )
        if state.rounds_not_released and self.poisson:
            out.append(
                f"skipped releases: in {state.rounds_not_released} of {rounds} Poisson rounds "
                "nothing was released (a secure round that aborted, too few noise shares or "
                "too few reports); whether a round is released then depends on how many devices took "
                "part, which one device's presence changes and the noise does not cover, so "
                "the ε of Poisson sampling does not hold"
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
            "releases": self.releases,
            "releases_skipped": state.rounds_not_released,
            "accounting": {
                "population": led.population,
                "sample_size": led.cohort_size,
                "expected_count": self.declared.expected_count,
                "sampling": led.sampling,
                "neighboring": self.neighboring,
                "noise_multiplier": led.noise_multiplier,
                "noise_multipliers_charged": [[z, n] for z, n in state.ledger.releases],
                "distributed_noise_min_survivors": self.declared.min_survivors,
                "method": led.method,
            },
            "assumption": self.assumption(),
            "assumption_held": not violations,
            "violations": violations,
        }
        if violations and self.releases == ROUNDS and led.sampling != "none":
            # Found from outside: a diurnal fleet's run stated only the ε its broken sampling
            # assumption gives (1.17), not the bound that holds (13.8). FedBuff's ``epsilon``
            # is that bound already; here it is stated beside the sampled figure.
            kept = (", and the target ε was kept on it" if self.target_epsilon is not None
                    else "")
            if self.poisson and state.rounds_not_released:
                # Found by an audit: a Poisson round that released nothing (a secure round
                # that aborted) did so because of how many took part, which one device's
                # presence decides, so that round's output tells the neighbours apart with
                # certainty; no bound holds, with or without amplification.
                block["epsilon_guaranteed"] = None  # JSON null: ε = ∞
                block["epsilon_guaranteed_note"] = (
                    f"no finite ε holds: in {state.rounds_not_released} Poisson rounds nothing "
                    "was released, and whether a round releases depended on how many devices "
                    "took part, which one device's presence changes (add-or-remove-one); "
                    "`epsilon` assumes every round released" + kept)
            else:
                block["epsilon_guaranteed"] = json_epsilon(self.epsilon_without_sampling(state))
                block["epsilon_guaranteed_note"] = (
                    "holds whoever was selected: every release a Gaussian mechanism on one "
                    f"device's clipped update ({self.neighboring} neighbours, as `epsilon`), "
                    "composed with no amplification by sampling; `epsilon` assumes the sampling "
                    "the violations above broke" + kept)
        if state.indicative is not None:
            block["epsilon_if_uniform_sample"] = json_epsilon(state.indicative.epsilon(self.delta))
            block["epsilon_if_uniform_sample_note"] = (
                "indicative only: what buffers Poisson-sampled at rate "
                f"{led.cohort_size}/{led.population} would give (add-or-remove-one, as the "
                "guarantee); FedBuff does not sample buffers, so this is not a guarantee"
            )
        if stopped == STOPPED_BY_BUDGET:
            block["next_round_epsilon"] = json_epsilon(self.next_epsilon(state))
        return block
