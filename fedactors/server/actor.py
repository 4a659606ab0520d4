"""The synchronous server driver: select, broadcast, collect until target or deadline.

Each round the server selects a cohort among the devices online, sends it the
global model, collects contributions (plainly, or through the secure
aggregation protocol, :mod:`fedactors.server.secure_collection`) until its
target or the round's deadline, and hands them to the shared release step
(:mod:`fedactors.server.release`), which aggregates, applies, charges privacy
and evaluates. The asynchronous driver (:mod:`fedactors.server.fedbuff`)
composes the same step; neither inherits from the other.

**When a round closes.** Fixed-size rounds close at ``cohort_size`` reports
(``closed_by: "target"``) or the deadline. Poisson rounds have no target:
every sampled device's report that arrives by the deadline is summed (the
round closes early only once every sampled device has reported,
``closed_by: "all-reported"``), so the sample the accountant assumes is
exactly the sample summed, and a sampled device is never cut for being slow.

The server holds the global model, the aggregator's state and its own
held-out evaluation data. It never holds any device's data: it only learns
what devices send it, and only as the aggregator's encoding lets it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Optional

import numpy as np

from fedactors.aggregation.base import Contributions, PlainContributions
from fedactors.devices.fleet import Fleet
from fedactors.messages import RoundDeadline, TrainRequest, Update
from fedactors.privacy.participation import Participation
from fedactors.reporting.closed_by import ALL_REPORTED
from fedactors.reporting.events import EventLog
from fedactors.runtime.mailbox import Mailbox
from fedactors.secagg.option import SecureAggregation
from fedactors.secagg.pki import Pki
from fedactors.seeding import SeedTree
from fedactors.server.outcome import ReleaseOutcome
from fedactors.server.release import ACTOR, ReleaseStep, ServerState
from fedactors.server.rounds import Rounds
from fedactors.server.screening import (
    OUTLIER,
    Expectation,
    norm_outliers,
    screen_contributions,
)
from fedactors.server.secure_collection import SecureCollection

__all__ = ["ACTOR", "ServerActor", "ServerState"]


class ServerActor:
    """The server in synchronous-rounds mode."""

    #: Why the run stalled, in words, if it did (FedBuff: no update for ``max_idle``
    #: while devices trained); the run states it as a warning. Rounds always end.
    stall: Optional[str] = None

    def __init__(
        self,
        *,
        rounds: Rounds,
        fleet: Fleet,
        step: ReleaseStep,
        seeds: SeedTree,
        log: EventLog,
        mailbox: Mailbox,
        network: Any,
        initial_weights: np.ndarray,
        stop_devices: Callable[[int], None] = lambda r: None,
        secure_aggregation: Optional[SecureAggregation] = None,
        pki: Optional[Pki] = None,
    ) -> None:
        self.rounds = rounds
        self.fleet = fleet
        self.step = step
        self.aggregator = step.aggregator
        self.seeds = seeds
        self.log = log
        self.mailbox = mailbox
        self.network = network
        self.stop_devices = stop_devices
        # Secure aggregation replaces only the collection phase (secure_collection.py).
        self.secure = None if secure_aggregation is None else SecureCollection(
            secure_aggregation, aggregator=step.aggregator, seeds=seeds, log=log, mailbox=mailbox,
            network=network, cohort_size=rounds.cohort_size, pki=pki)
        self.state: ServerState = step.initial_state(initial_weights)

    async def run(self, count: int, on_round: Callable[[ReleaseOutcome], Optional[str]],
                  interrupt: Callable[[], Optional[str]] = lambda: None) -> str:
        """Run ``count`` rounds; ``on_round`` may return a reason to stop early.

        ``interrupt`` (a stop asked between releases, e.g. Ctrl-C) is polled at each
        round's end, after ``on_round``: a round always ends (its deadline), and its
        boundary is the clean cut a checkpoint needs.

        With a privacy target, a round is only started if releasing it keeps ε
        within the target: the run stops *before* the budget is exceeded.
        """
        self.step.start(self.state)
        for _ in range(count):
            stop = self.step.budget_stop(self.state)
            if stop:
                self.log.emit(ACTOR, "run.stopped", round=self.state.round, reason=stop)
                return stop
            outcome = await self.run_round(self.state.round + 1)
            stop = on_round(outcome) or interrupt()
            if stop:
                self.log.emit(ACTOR, "run.stopped", round=outcome.round, reason=stop)
                return stop
        return "completed"

    def target(self, selected: int) -> int:
        """Reports that close a round before its deadline: ``cohort_size`` for
        fixed-size rounds; Poisson rounds have no target, they wait for every
        sampled device (``selected``: no cut by arrival order) and then close as
        ``"all-reported"``, not ``"target"``."""
        return selected if self.rounds.sampling == "poisson" else self.rounds.cohort_size

    async def run_round(self, r: int) -> ReleaseOutcome:
        loop = asyncio.get_running_loop()
        start = loop.time()
        online = self.fleet.online(start, self.seeds.generator("availability", r))
        cohort_rng = self.seeds.generator("cohort", r)
        # DP-FTRL's separation rule keeps recent contributors out (else: all online).
        candidates = self.step.eligible(self.state, online)
        if self.rounds.sampling == "poisson":
            # One uniform draw per candidate, in id order: independent inclusion.
            keep = cohort_rng.random(len(candidates)) < self.rounds.poisson_rate(self.fleet.size)
            cohort = candidates[keep]
        else:
            n_select = min(self.rounds.selected_size, len(candidates))
            cohort = np.sort(cohort_rng.choice(candidates, n_select, replace=False))
        n_select = len(cohort)
        target = self.target(n_select)
        cohort_set = set(int(d) for d in cohort)
        deadline = start + self.rounds.deadline
        self.log.emit(ACTOR, "round.start", round=r, online=len(online), selected=n_select,
                      deadline=deadline, cohort=cohort)

        params = self.aggregator.client_params(self.state.aggregator_state)
        setup = None if self.secure is None else self.secure.setup(
            r, cohort, params, self.state.weights.shape[0], admit=target)
        request = TrainRequest(r, self.state.weights, deadline, params, setup)
        for d in cohort:
            self.network.to_device(int(d), request)
        self.network.server_timer(self.rounds.deadline, RoundDeadline(r))
        contributions: Optional[Contributions]
        late: Optional[frozenset[int]] = None
        if self.secure is not None:
            secure = await self.secure.collect(r, setup, cohort_set, admit=target)
            self.stop_devices(r)
            contributions, reported = secure.contributions, secure.contributors
            closed_by, rejected, measurements = secure.closed_by, secure.rejected, secure.measurements
            late = secure.late
            refused: frozenset[int] = frozenset()  # its screening is the protocol's
        else:
            accepted, rejected, closed_by, refused = await self._collect_plain(
                r, cohort_set, params, target)
            reported = tuple(sorted(accepted))
            contributions = PlainContributions([accepted[d].contribution for d in reported])
            measurements = {}
        if closed_by == "target" and self.rounds.sampling == "poisson":
            # No target was reached: every sampled device reported (under secure
            # aggregation: advertised its keys), which is what ended the wait.
            closed_by = ALL_REPORTED
        if closed_by == "nobody-online" and len(online):
            # Devices were online, but none was selected: a Poisson draw of nobody, or
            # DP-FTRL's separation rule keeping every one of them out.
            closed_by = "nobody-selected"
        released = self.step.release(
            self.state, contributions, expected_count=self.rounds.cohort_size, selected=n_select,
            participation=Participation(
                online=len(online), selected=n_select,
                # Closed at a target below the selection: the slowest were cut.
                cut_at_target=closed_by == "target" and target < n_select, target=target,
                contributors=tuple(int(d) for d in reported)),
        )
        self.state = released.state
        outcome = ReleaseOutcome(
            round=r, start=start, end=loop.time(), selected=tuple(int(d) for d in cohort),
            reported=reported, closed_by=closed_by, applied=released.applied, rejected=rejected,
            measurements={**measurements, **released.measurements}, metrics=released.metrics,
            given_up=tuple((r, d) for d in sorted(cohort_set - set(reported) - refused)),
            refused=tuple(sorted(refused)),
            shares=released.shares or (), late_devices=late,
        )
        self.log.emit(ACTOR, "round.end", round=r, reported=len(reported), closed_by=closed_by,
                      applied=released.applied, **released.metrics)
        return outcome

    async def _collect_plain(self, r: int, cohort: set[int], params: Any, target: int,
                             ) -> tuple[dict[int, Update], dict[str, int], str, frozenset[int]]:
        """Read updates until ``target`` are in or the deadline; screen them. Also returns
        the cohort's devices whose update for ``r`` came and was refused for its contents."""
        expect = Expectation.for_round(self.aggregator, params, int(self.state.weights.shape[0]))
        accepted: dict[int, Update] = {}
        rejected: dict[str, int] = {}
        refused: set[int] = set()
        closed_by = "deadline" if cohort else "nobody-online"
        reading = True
        while reading:
            # Everything queued now (a whole instant's mail), its contents checked together.
            mail = [await self.mailbox.get(), *self.mailbox.take_all()]
            contents = self._screen_contents(mail, r, cohort, expect)
            for i, message in enumerate(mail):
                if isinstance(message, RoundDeadline):
                    if message.round == r:
                        reading = False
                    else:
                        continue  # a deadline of a round that closed early
                else:
                    reason = self._screen(message, r, cohort, accepted)
                    if reason is None and i in contents:
                        reason = contents[i]
                        refused.add(message.sender)
                    if reason:
                        rejected[reason] = rejected.get(reason, 0) + 1
                        self.log.emit(ACTOR, f"update.{reason}", round=r,
                                      sender=getattr(message, "sender", None),
                                      update_round=getattr(message, "round", None))
                        continue
                    accepted[message.sender] = message
                    self.log.emit(ACTOR, "update.received", round=r, sender=message.sender)
                    if len(accepted) >= target:
                        closed_by, reading = "target", False
                if not reading:
                    # What the closed round did not get to is the next reader's, as it was.
                    self.mailbox.put_back(mail[i + 1 :])
                    break

        # Production servers tell devices still working that the round is over;
        # here that message is free and instant: their work stops now.
        self.stop_devices(r)
        # The norm screen needs the whole cohort, so it runs once the round is closed.
        outliers = norm_outliers({s: u.contribution for s, u in accepted.items()},
                                 expect.unbounded_keys, self.rounds.outlier_factor)
        for sender, (key, ratio) in sorted(outliers.items()):
            del accepted[sender]
            refused.add(sender)
            rejected[OUTLIER] = rejected.get(OUTLIER, 0) + 1
            self.log.emit(ACTOR, f"update.{OUTLIER}", round=r, sender=sender, update_round=r,
                          key=key, norm_over_median=ratio)
        # (A device refused once whose next update was accepted reported.)
        return accepted, rejected, closed_by, frozenset(refused - accepted.keys())

    def _screen(self, message: Any, r: int, cohort: set[int], accepted: dict) -> Optional[str]:
        """Why a message is not an update for round ``r`` by who sent it and when
        (None if it may be; its contents are checked by :meth:`_screen_contents`)."""
        if not _is_update(message):
            return "malformed"
        if message.round < r:
            return "late"
        if message.round > r:
            return "future"
        if message.sender not in cohort:
            return "foreign"
        if message.sender in accepted:
            return "duplicate"
        return None

    @staticmethod
    def _screen_contents(mail: list[Any], r: int, cohort: set[int],
                         expect: Expectation) -> dict[int, str]:
        """Why the contents of round ``r``'s updates from the cohort in ``mail`` are
        unacceptable, by position in ``mail`` (absent: acceptable)."""
        at = [i for i, m in enumerate(mail)
              if _is_update(m) and m.round == r and m.sender in cohort]
        verdicts = screen_contributions([mail[i].contribution for i in at], expect)
        return {i: verdict for i, verdict in zip(at, verdicts) if verdict}


def _is_update(message: Any) -> bool:
    """An ``Update`` whose round and sender are integers (a bool is not one)."""
    if type(message) is Update and type(message.round) is int and type(message.sender) is int:
        return True  # every honest update: checked twice per update per round, so first
    return isinstance(message, Update) and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool)
        for v in (message.round, message.sender))
