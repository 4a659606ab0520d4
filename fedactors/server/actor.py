"""The server actor: select, broadcast, collect until target or deadline, aggregate.

The server holds the global model, the aggregator's state and its own
held-out evaluation data. It never holds any device's data: it only learns
what devices send it, and only as the aggregator's encoding lets it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from fedactors.aggregation.base import (
    Aggregator,
    Contributions,
    PlainContributions,
    RoundContext,
)
from fedactors.devices.fleet import Fleet
from fedactors.messages import RoundDeadline, TrainRequest, Update
from fedactors.reporting.events import EventLog
from fedactors.secagg.option import SecureAggregation
from fedactors.seeding import SeedTree
from fedactors.server.optimizers import ServerOptimizer
from fedactors.server.rounds import Rounds
from fedactors.server.screening import OUTLIER, Expectation, norm_outliers, screen_contribution
from fedactors.server.secure_collection import SecureCollection

if TYPE_CHECKING:  # the budget pulls in dp-accounting; only DP runs need it
    from fedactors.privacy.budget import PrivacyBudget

ACTOR = "server"


@dataclass(frozen=True)
class ServerState:
    """Everything the server carries from one round to the next."""

    round: int
    weights: np.ndarray = field(repr=False)
    optimizer_state: Any = field(repr=False)
    aggregator_state: Any = field(repr=False)
    #: ``PrivacyState`` (ledger + sampling audit) of a DP run, else None.
    privacy: Any = None


@dataclass(frozen=True)
class RoundOutcome:
    """What happened in one round, as the server saw it."""

    round: int
    start: float
    end: float
    selected: tuple[int, ...]
    reported: tuple[int, ...]
    closed_by: str  # "target", "deadline" or "nobody-online"
    applied: bool
    rejected: dict[str, int]
    measurements: dict[str, float]
    metrics: dict[str, float]


class ServerActor:
    def __init__(
        self,
        *,
        rounds: Rounds,
        fleet: Fleet,
        aggregator: Aggregator,
        optimizer: ServerOptimizer,
        evaluate: Callable[[np.ndarray], dict[str, float]],
        seeds: SeedTree,
        log: EventLog,
        mailbox: asyncio.Queue,
        network: Any,
        initial_weights: np.ndarray,
        stop_devices: Callable[[int], None] = lambda r: None,
        privacy: Optional[PrivacyBudget] = None,
        secure_aggregation: Optional[SecureAggregation] = None,
    ) -> None:
        self.rounds = rounds
        self.fleet = fleet
        self.aggregator = aggregator
        self.optimizer = optimizer
        self.evaluate = evaluate
        self.seeds = seeds
        self.log = log
        self.mailbox = mailbox
        self.network = network
        self.stop_devices = stop_devices
        self.privacy = privacy
        dim = initial_weights.shape[0]
        # Secure aggregation replaces only the collection phase (secure_collection.py).
        self.secure = None if secure_aggregation is None else SecureCollection(
            secure_aggregation, aggregator=aggregator, seeds=seeds, log=log, mailbox=mailbox,
            network=network, cohort_size=rounds.cohort_size)
        self.state = ServerState(
            0, initial_weights, optimizer.init(initial_weights), aggregator.initial_state(dim),
            privacy.initial_state() if privacy is not None else None,
        )

    async def run(self, count: int, on_round: Callable[[RoundOutcome], Optional[str]]) -> str:
        """Run ``count`` rounds; ``on_round`` may return a reason to stop early.

        With a privacy target, a round is only started if composing it keeps
        ε within the target: the run stops *before* the budget is exceeded.
        """
        if self.privacy is not None and self.state.round == 0:
            self.log.emit(ACTOR, "privacy.assumption", assumption=self.privacy.assumption(),
                          delta=self.privacy.delta, target_epsilon=self.privacy.target_epsilon)
        for r in range(self.state.round + 1, self.state.round + count + 1):
            if self.privacy is not None and self.privacy.would_exceed(self.state.privacy):
                from fedactors.privacy.budget import STOPPED_BY_BUDGET

                self.log.emit(ACTOR, "privacy.budget_exhausted", round=r,
                              epsilon=self.privacy.epsilon(self.state.privacy),
                              next_epsilon=self.privacy.next_epsilon(self.state.privacy),
                              target_epsilon=self.privacy.target_epsilon)
                self.log.emit(ACTOR, "run.stopped", round=r - 1, reason=STOPPED_BY_BUDGET)
                return STOPPED_BY_BUDGET
            outcome = await self.run_round(r)
            stop = on_round(outcome)
            if stop:
                self.log.emit(ACTOR, "run.stopped", round=r, reason=stop)
                return stop
        return "completed"

    async def run_round(self, r: int) -> RoundOutcome:
        loop = asyncio.get_running_loop()
        start = loop.time()
        online = self.fleet.online(start, self.seeds.generator("availability", r))
        cohort_rng = self.seeds.generator("cohort", r)
        if self.rounds.sampling == "poisson":
            # One uniform draw per online device, in id order: independent inclusion.
            keep = cohort_rng.random(len(online)) < self.rounds.poisson_rate(self.fleet.size)
            cohort = online[keep]
        else:
            n_select = min(self.rounds.selected_size, len(online))
            cohort = np.sort(cohort_rng.choice(online, n_select, replace=False))
        n_select = len(cohort)
        cohort_set = set(int(d) for d in cohort)
        deadline = start + self.rounds.deadline
        self.log.emit(ACTOR, "round.start", round=r, online=len(online), selected=n_select,
                      deadline=deadline, cohort=cohort)

        params = self.aggregator.client_params(self.state.aggregator_state)
        setup = None if self.secure is None else self.secure.setup(
            r, cohort, params, self.state.weights.shape[0])
        request = TrainRequest(r, self.state.weights, deadline, params, setup)
        for d in cohort:
            self.network.to_device(int(d), request)
        self.network.server_timer(self.rounds.deadline, RoundDeadline(r))
        if self.secure is not None:
            secure = await self.secure.collect(r, setup, cohort_set)
            self.stop_devices(r)
            applied, measurements = self._aggregate_sum(r, secure.contributions, n_select)
            return self._close_round(r, start, len(online), cohort, secure.contributors,
                                     secure.closed_by, applied, secure.rejected,
                                     {**secure.measurements, **measurements})

        expect = Expectation.for_round(self.aggregator, params, int(self.state.weights.shape[0]))

        accepted: dict[int, Update] = {}
        rejected: dict[str, int] = {}
        closed_by = "deadline"
        if not cohort_set:
            closed_by = "nobody-online"
        while True:
            message = await self.mailbox.get()
            if isinstance(message, RoundDeadline):
                if message.round == r:
                    break
                continue  # a deadline of a round that closed early
            reason = self._screen(message, r, cohort_set, accepted, expect)
            if reason:
                rejected[reason] = rejected.get(reason, 0) + 1
                self.log.emit(ACTOR, f"update.{reason}", round=r,
                              sender=getattr(message, "sender", None),
                              update_round=getattr(message, "round", None))
                continue
            accepted[message.sender] = message
            self.log.emit(ACTOR, "update.received", round=r, sender=message.sender)
            if len(accepted) >= self.rounds.cohort_size:
                closed_by = "target"
                break

        # Production servers tell devices still working that the round is over;
        # here that message is free and instant: their work stops now.
        self.stop_devices(r)
        # The norm screen needs the whole cohort, so it runs once the round is closed.
        outliers = norm_outliers({s: u.contribution for s, u in accepted.items()},
                                 expect.unbounded_keys, self.rounds.outlier_factor)
        for sender, (key, ratio) in sorted(outliers.items()):
            del accepted[sender]
            rejected[OUTLIER] = rejected.get(OUTLIER, 0) + 1
            self.log.emit(ACTOR, f"update.{OUTLIER}", round=r, sender=sender, update_round=r,
                          key=key, norm_over_median=ratio)
        reported = tuple(sorted(accepted))
        applied, measurements = self._aggregate(r, accepted, n_select)
        return self._close_round(r, start, len(online), cohort, reported, closed_by, applied,
                                 rejected, measurements)

    def _close_round(self, r: int, start: float, online: int, cohort: np.ndarray,
                     reported: tuple[int, ...], closed_by: str, applied: bool,
                     rejected: dict[str, int], measurements: dict) -> RoundOutcome:
        loop = asyncio.get_running_loop()
        if self.privacy is not None:
            self.state = replace(self.state, privacy=self.state.privacy.after_round(
                online=online, population=self.fleet.size, selected=len(cohort),
                summed=len(reported), expected=self.rounds.cohort_size))
            eps = self.privacy.epsilon(self.state.privacy)
            measurements["epsilon"] = eps if np.isfinite(eps) else None  # no noise: JSON null
        metrics = self.evaluate(self.state.weights) if r % self.rounds.eval_every == 0 else {}
        outcome = RoundOutcome(
            round=r, start=start, end=loop.time(), selected=tuple(int(d) for d in cohort),
            reported=reported, closed_by=closed_by, applied=applied, rejected=rejected,
            measurements=measurements, metrics=metrics,
        )
        self.log.emit(ACTOR, "round.end", round=r, reported=len(reported), closed_by=closed_by,
                      applied=applied, **metrics)
        return outcome

    def _screen(self, message: Any, r: int, cohort: set[int], accepted: dict,
                expect: Expectation) -> Optional[str]:
        """Why an incoming message is not a valid update for round ``r`` (None if it is)."""
        if not isinstance(message, Update) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool)
            for v in (message.round, message.sender)
        ):
            return "malformed"
        if message.round < r:
            return "late"
        if message.round > r:
            return "future"
        if message.sender not in cohort:
            return "foreign"
        if message.sender in accepted:
            return "duplicate"
        return screen_contribution(message.contribution, expect)

    def _aggregate(self, r: int, accepted: dict[int, Update], n_select: int) -> tuple[bool, dict]:
        contributions = PlainContributions([accepted[d].contribution for d in sorted(accepted)])
        return self._aggregate_sum(r, contributions, n_select)

    def _aggregate_sum(self, r: int, contributions: Optional[Contributions],
                       n_select: int) -> tuple[bool, dict]:
        """Aggregate and apply, or skip the round if too few contributed (None: the secure
        protocol aborted)."""
        count = 0 if contributions is None else contributions.count
        if contributions is None or count < self.rounds.min_reports:
            self.log.emit(ACTOR, "round.skipped", round=r, reported=count,
                          min_reports=self.rounds.min_reports)
            self.state = replace(self.state, round=r)
            return False, {}
        return self._apply(r, contributions, n_select)

    def _apply(self, r: int, contributions: Contributions, n_select: int) -> tuple[bool, dict]:
        state = self.state
        ctx = RoundContext(r, self.rounds.cohort_size, n_select, self.seeds.generator("server", r))
        result = self.aggregator.aggregate(state.aggregator_state, contributions, ctx)
        weights, opt_state, applied = state.weights, state.optimizer_state, False
        if result.delta is not None:
            candidate, candidate_state = self.optimizer.apply(
                state.optimizer_state, state.weights, result.delta
            )
            if np.all(np.isfinite(candidate)):
                weights, opt_state, applied = candidate, candidate_state, True
            else:
                # Never let one bad round make the global model non-finite.
                self.log.emit(ACTOR, "aggregate.nonfinite", round=r)
        self.state = replace(state, round=r, weights=weights, optimizer_state=opt_state,
                             aggregator_state=result.state)
        return applied, dict(result.measurements)
