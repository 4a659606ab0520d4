"""One server release: the step the synchronous and the FedBuff drivers share.

A *release* is the server turning what it collected into a new global model:

1. **budget check** (before anything is released): with a privacy target,
   refuse the release if charging it would take ε above the target;
2. **aggregate** the collected contributions with the scenario's stage chain
   (skipped, model unchanged, when fewer than ``min_reports`` contributed or
   the secure protocol aborted; a DP release whose accounting does not cover
   the number of reports is never skipped for it: DP-FTRL, and DP-FedAvg with
   central noise on Poisson rounds, release their noise even over no report,
   see :attr:`ReleaseStep.releases_every_step`);
3. **server optimizer** (FedAvg step, FedAdam, FedYogi) on the aggregate;
4. **non-finite guard**: a candidate model with a NaN/inf is never adopted;
5. **privacy charge**: every release attempt of a DP run is charged at the
   noise it actually carried (a skipped one at the nominal noise, which only
   over-states ε);
6. **evaluation**, every ``eval_every`` releases.

It holds no event loop and no mailbox: the drivers (:mod:`fedactors.server.actor`
for rounds, :mod:`fedactors.server.fedbuff` for buffers) decide *what* is
collected and *when*; this module decides what a release does with it, so
both modes give the same guarantees and a new mode only writes a driver.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from fedactors.aggregation.base import (
    Aggregator,
    Contributions,
    IndividualUpdatesHidden,
    RoundContext,
)
from fedactors.errors import ConfigError
from fedactors.privacy.participation import Participation
from fedactors.reporting.events import EventLog
from fedactors.seeding import SeedTree
from fedactors.server.optimizers import ServerOptimizer

if TYPE_CHECKING:  # the budgets pull in dp-accounting; only DP runs need them
    from fedactors.privacy.budget import PrivacyBudget
    from fedactors.privacy.skellam_budget import SkellamBudget
    from fedactors.privacy.tree_budget import TreeBudget

ACTOR = "server"


@dataclass(frozen=True)
class ServerState:
    """Everything the server carries from one release to the next."""

    round: int  # releases so far (the model version)
    weights: np.ndarray = field(repr=False)
    optimizer_state: Any = field(repr=False)
    aggregator_state: Any = field(repr=False)
    #: ``PrivacyState`` (ledger + sampling audit) of a DP run, else None.
    privacy: Any = None


@dataclass(frozen=True)
class Released:
    """What one release did: the new state and what to report about it."""

    state: ServerState
    applied: bool
    measurements: dict[str, Any]
    metrics: dict[str, float]
    #: Each contribution's share in the release (``Aggregate.shares``), or None.
    shares: Optional[tuple[float, ...]] = None


@dataclass(frozen=True)
class ReleaseStep:
    """The pure release step, configured once per run."""

    aggregator: Aggregator
    optimizer: ServerOptimizer
    evaluate: Callable[[np.ndarray], dict[str, float]]
    seeds: SeedTree
    log: EventLog
    min_reports: int = 1
    eval_every: int = 1
    #: The run's accountant, whichever mechanism: each says whether it releases whatever
    #: the count (``releases_whatever_the_count``) and its ``min_separation`` (0: none).
    privacy: Optional[PrivacyBudget | TreeBudget | SkellamBudget] = None

    def initial_state(self, weights: np.ndarray) -> ServerState:
        return ServerState(
            0, weights, self.optimizer.init(weights), self.aggregator.initial_state(weights.shape[0]),
            self.privacy.initial_state() if self.privacy is not None else None,
        )

    @property
    def releases_every_step(self) -> bool:
        """Whether every release is made whatever the number of reports (``min_reports``
        does not apply; a release over no report is the noise alone).

        Skipping a release because too few reported would reveal that number, and
        where one device's presence can change it the noise does not cover it:

        * DP-FTRL: the tree's noise is accounted from who contributed, not from
          how many;
        * DP-FedAvg with central noise on Poisson rounds: the subsampled Gaussian
          the accountant charges is "sum what was sampled, add N(0, (zC)^2),
          divide by m" for every sample, the empty one included (add-or-remove-one:
          one device's presence changes the count). Distributed noise on Poisson
          rounds is refused at load (an empty sum has no noise to release).
        """
        return self.privacy is not None and self.privacy.releases_whatever_the_count

    def eligible(self, state: ServerState, devices: np.ndarray) -> np.ndarray:
        """The ``devices`` the privacy rules let take part in the next release (all of
        them unless DP-FTRL's separation rule keeps some out)."""
        if self.privacy is None or not self.privacy.min_separation:
            return devices
        nxt = state.round + 1
        keep = [self.privacy.eligible(state.privacy, int(d), nxt) for d in devices]
        return np.asarray(devices)[np.asarray(keep, bool)]

    def start(self, state: ServerState) -> None:
        """Log, once per run, the assumption the reported ε rests on."""
        if self.privacy is not None and state.round == 0:
            self.log.emit(ACTOR, "privacy.assumption", assumption=self.privacy.assumption(),
                          delta=self.privacy.delta, target_epsilon=self.privacy.target_epsilon)

    def budget_stop(self, state: ServerState) -> Optional[str]:
        """``"privacy-budget"`` if one more release would take ε above the target, else None."""
        if self.privacy is None or not self.privacy.would_exceed(state.privacy):
            return None
        from fedactors.privacy.budget import STOPPED_BY_BUDGET

        self.log.emit(ACTOR, "privacy.budget_exhausted", round=state.round + 1,
                      epsilon=self.privacy.epsilon(state.privacy),
                      next_epsilon=self.privacy.next_epsilon(state.privacy),
                      target_epsilon=self.privacy.target_epsilon)
        return STOPPED_BY_BUDGET

    def release(self, state: ServerState, contributions: Optional[Contributions], *,
                expected_count: int, selected: int,
                participation: Participation) -> Released:
        """Release version ``state.round + 1`` from ``contributions`` (None: the secure
        protocol aborted). ``participation`` feeds the privacy audit of a DP run."""
        version = state.round + 1
        count = 0 if contributions is None else contributions.count
        applied, measurements, shares = False, {}, None
        skipped = contributions is None or (count < self.min_reports
                                            and not self.releases_every_step)
        if skipped:
            self.log.emit(ACTOR, "round.skipped", round=version, reported=count,
                          min_reports=self.min_reports)
            if contributions is not None:  # (an aborted protocol is said as such)
                measurements = {"below_min_reports": 1}
            state = replace(state, round=version)
        else:
            state, applied, measurements, shares = self._apply(
                state, version, contributions, expected_count, selected)
        if self.privacy is not None:
            privacy = self.privacy.charge(state.privacy, participation, count,
                                          aggregated=not skipped)
            state = replace(state, privacy=privacy)
            measurements["epsilon"] = self.privacy.round_epsilon(privacy)
            measurements["noise_multiplier"] = self.privacy.multiplier_charged(count)
        metrics = self.evaluate(state.weights) if version % self.eval_every == 0 else {}
        return Released(state, applied, measurements, metrics, shares)

    def _apply(self, state: ServerState, version: int, contributions: Contributions,
               expected_count: int, selected: int,
               ) -> tuple[ServerState, bool, dict, Optional[tuple[float, ...]]]:
        ctx = RoundContext(version, expected_count, selected, self.seeds.secret("server", version))
        try:
            result = self.aggregator.aggregate(state.aggregator_state, contributions, ctx)
        except IndividualUpdatesHidden:
            # A stage that reads every update but did not say so (needs_individual_updates),
            # so secure aggregation was not refused at load: the server held only the sum.
            raise ConfigError("aggregator", f"{type(self.aggregator).__name__} read individual "
                              "updates, but under secure aggregation the server holds only "
                              "their sum; a stage that reads them must set "
                              "needs_individual_updates = True (it is then refused with "
                              "secure aggregation when the scenario loads)") from None
        weights, opt_state, applied = state.weights, state.optimizer_state, False
        if result.delta is not None:
            candidate, candidate_state = self.optimizer.apply(
                state.optimizer_state, state.weights, result.delta
            )
            if np.all(np.isfinite(candidate)):
                weights, opt_state, applied = candidate, candidate_state, True
            else:
                # Never let one bad release make the global model non-finite.
                self.log.emit(ACTOR, "aggregate.nonfinite", round=version)
        state = replace(state, round=version, weights=weights, optimizer_state=opt_state,
                        aggregator_state=result.state)
        return state, applied, dict(result.measurements), result.shares
