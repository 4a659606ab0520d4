"""The server's collection phase under secure aggregation: SecAgg / SecAgg+ between actors.

The plain server reads each device's ``Update``. With secure aggregation on,
it instead runs the four protocol steps of :mod:`fedactors.secagg.server`
with the cohort, every message relayed through its mailbox and the simulated
network, each step with a deadline in simulated time:

0. advertise keys: a device sends its keys once its training is done; the
   server takes the first ``cohort_size`` (like the plain path's target) or
   whoever is in by the round deadline;
1. share keys, 2. masked input, 3. unmasking: each waits until every device
   still in the protocol answered or ``step_timeout`` seconds passed.

Its output is only the sum of the survivors' quantized contributions,
decoded into :class:`SummedContributions`. An abort (fewer than t survivors
somewhere) yields no contributions: the round is skipped, logged, and the
global model left as it is.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from fedactors.aggregation.base import Aggregator, SummedContributions
from fedactors.errors import ConfigError, stage_label
from fedactors.messages import RoundDeadline
from fedactors.reporting.events import EventLog
from fedactors.runtime.mailbox import Mailbox
from fedactors.secagg import encoding, server
from fedactors.secagg.envelopes import (
    ADVERTISE,
    MASKED,
    SHARE,
    SIGN,
    STEPS,
    UNMASK,
    SecAggSetup,
    StepDeadline,
    ToDevice,
    ToServer,
    device_of,
    protocol_id,
)
from fedactors.secagg.graph import complete_graph, harary_graph
from fedactors.secagg.keys import VERIFICATION_KEY_BYTES
from fedactors.secagg.messages import (
    Abort,
    SecAggConfig,
    SecAggResult,
)
from fedactors.secagg.min_inputs import min_inputs_for
from fedactors.secagg.option import SecureAggregation, check_aggregator
from fedactors.secagg.pki import Pki
from fedactors.secagg.protocol import PROTOCOLS, REAL, Protocol
from fedactors.seeding import SeedTree

ACTOR = "server"

#: What a round nobody took part in sums to (nobody selected, or nobody trained in time):
#: known to be empty, so no protocol ran and none aborted.
_EMPTY_SUM = SummedContributions({}, 0)


@dataclass(frozen=True)
class SecureOutcome:
    """What the collection phase hands back to the server actor."""

    contributions: Optional[SummedContributions]  # None: the protocol aborted
    contributors: tuple[int, ...]  # fleet rows in the sum (U3)
    rejected: dict[str, int]
    closed_by: str  # how the advertise-keys phase ended: target, deadline, nobody-online
    measurements: dict[str, float] = field(default_factory=dict)
    #: Devices a deadline cut (the round's, while keys were taken; a step's, after): for
    #: metrics.jsonl's ``late``. The others given up were not needed (``surplus``).
    late: frozenset[int] = frozenset()


@dataclass
class _Tally:
    """Protocol traffic and server compute for one round."""

    up: int = 0
    down: int = 0
    seconds: float = 0.0
    rejected: dict[str, int] = field(default_factory=dict)

    def timed(self, fn: Callable, *args: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds += time.perf_counter() - t


def unmask_seconds(setup: SecAggSetup, shared: frozenset[int], survivors: frozenset[int]) -> float:
    """The server's simulated compute to unmask the sum of ``survivors`` (U3), given who
    shared keys (U2): the cost model's count."""
    g = setup.config.graph
    thresholds = [g.thresholds[u] for u in sorted(survivors)]
    # Only devices that shared keys (U2) and then dropped were masked against by a
    # survivor: their s^SK is rebuilt. One that never shared its keys left no mask.
    dropped = [(g.thresholds[v], len(g.neighbours[v] & survivors))
               for v in sorted(shared - survivors) if g.neighbours[v] & survivors]
    return setup.costs.unmask_seconds(setup.config.dim, thresholds, dropped)


class SecureCollection:
    def __init__(self, option: SecureAggregation, *, aggregator: Aggregator, seeds: SeedTree,
                 log: EventLog, mailbox: Mailbox, network: Any, cohort_size: int,
                 pki: Optional[Pki] = None) -> None:
        check_aggregator(aggregator)
        self.option = option
        # Malicious-server mode: the devices' verification keys, from the PKI they trust.
        self.pki = pki if pki is not None or not option.malicious else Pki(seeds)
        self.aggregator = aggregator
        self.seeds = seeds
        self.log = log
        self.mailbox = mailbox
        self.network = network
        self.cohort_size = cohort_size
        #: Rounds whose SecAgg+ graph missed the stated targets: round -> (failure, security) log2.
        self._below_target: dict[int, tuple[float, float]] = {}

    # -- before the broadcast ------------------------------------------------------

    def _verification_keys(self, rows: list[int]) -> dict[int, bytes]:
        if not self.option.malicious:
            return {}
        if not PROTOCOLS[self.option.mode].draws_secrets:
            # Modeled mode makes and checks no signature: stand-in keys of the right size.
            return dict.fromkeys((protocol_id(d) for d in rows), bytes(VERIFICATION_KEY_BYTES))
        assert self.pki is not None
        return self.pki.verification_keys(rows)

    def setup(self, r: int, cohort: Iterable[int], params: Any, dim: int,
              admit: Optional[int] = None) -> Optional[SecAggSetup]:
        """This round's public parameters: graph over the selected devices, layout, modulus.

        ``admit``: how many devices' keys the server takes before it stops
        admitting (default ``cohort_size``; a Poisson round admits every
        sampled device), which sizes the modulus so their sum cannot wrap.
        """
        rows = sorted(int(d) for d in cohort)
        if not rows:
            return None
        bounds = self.aggregator.contribution_bounds(params, dim)
        if not bounds:
            raise ConfigError("aggregator", f"{stage_label(self.aggregator)} gave no "
                              "contribution_bounds "
                                            f"for round {r} (params {dict(params)!r})")
        # The contribution's keys and shapes, from encoding a zero delta: the
        # aggregator's public output format, not anybody's data.
        probe = self.aggregator.encode(params, np.zeros(dim, np.float32), 1,
                                       self.seeds.generator("secagg-probe", r))
        shapes = {k: np.shape(v) for k, v in probe.items()}
        admit = self.cohort_size if admit is None else admit
        m_max = min(admit, len(rows))  # at most this many devices are admitted
        layout = encoding.make_layout(shapes, bounds, m_max, self.option.scale_bits)
        ids = [protocol_id(d) for d in rows]
        sparse = self.option.uses_sparse_graph(len(rows))
        plus = (self.option.plus_parameters if sparse
                else self.option.complete_parameters)(len(ids), m_max)
        if not plus.meets_targets:
            self._below_target[r] = (plus.failure_log2, plus.security_log2)
            self.log.emit(ACTOR, "secagg.parameters_below_target", round=r, selected=len(ids),
                          degree=plus.degree, threshold=plus.threshold,
                          failure_log2=plus.failure_log2, security_log2=plus.security_log2)
        graph = (harary_graph(ids, plus.degree, self.seeds.generator("secagg-graph", r),
                              plus.threshold) if sparse else complete_graph(ids, plus.threshold))
        config = SecAggConfig(r, graph, layout.modulus_bits, layout.dim, self.option.malicious,
                              self._verification_keys(rows), min_inputs_for(self.aggregator))
        return SecAggSetup(config, layout, self.option.stochastic_rounding,
                           self.option.step_dropout, PROTOCOLS[self.option.mode],
                           self.option.costs)

    # -- after the broadcast -------------------------------------------------------

    async def collect(self, r: int, setup: Optional[SecAggSetup], cohort: set[int],
                      admit: Optional[int] = None) -> SecureOutcome:
        """Run the protocol with the first ``admit`` (default ``cohort_size``) devices
        whose keys arrive by the round deadline."""
        tally = _Tally()
        below = self._below_target.pop(r, None)
        if setup is None:
            await self._gather(r, ADVERTISE, set(), 1, tally, round_deadline=True)
            return SecureOutcome(_EMPTY_SUM, (), tally.rejected, "nobody-online")
        got, closed_by = await self._gather(r, ADVERTISE, cohort,
                                            self.cohort_size if admit is None else admit, tally,
                                            round_deadline=True, protocol=setup.protocol)
        u1 = len(got)
        # Still training at the round deadline: late. Not admitted once the target was
        # met: surplus (as on the plain path).
        late = set(cohort) - set(got) if closed_by == "deadline" else set()
        if not got:  # nobody finished training: the empty sum, not a protocol abort
            return SecureOutcome(_EMPTY_SUM, (), tally.rejected, closed_by,
                                 late=frozenset(late))
        protocol = setup.protocol
        state = protocol.start(setup.config)
        steps = [(protocol.collect_keys, SHARE), (protocol.collect_shares, MASKED)]
        if setup.config.malicious:  # the consistency check between masked input and unmasking
            steps += [(protocol.collect_masked, SIGN), (protocol.collect_views, UNMASK)]
        else:
            steps += [(protocol.collect_masked, UNMASK)]
        result: Any = None
        compute = 0.0
        for server_step, next_step in steps:
            received = [got[d] for d in sorted(got)]
            state, replies = tally.timed(server_step, state, received)
            if isinstance(replies, Abort):
                result = replies
                break
            if next_step == UNMASK and setup.config.malicious:
                # The server checked every view's signature before forwarding any.
                seconds = len(received) * setup.costs.verify
                compute += seconds
                if seconds > 0:
                    await asyncio.sleep(seconds)
            for pid, msg in replies.items():
                env = ToDevice(r, next_step, msg)
                tally.down += env.nbytes
                self.network.to_device(device_of(pid), env)
            expected = {device_of(pid) for pid in replies}
            timer = self.network.server_timer(self.option.step_timeout, StepDeadline(r, next_step))
            got, how = await self._gather(r, next_step, expected, len(expected), tally,
                                          config=setup.config, protocol=protocol)
            if how == "deadline":  # still computing, or on the wire, when the step closed
                late |= expected - set(got)
            timer.cancel()  # closed early or fired: either way it has nothing more to say
        if result is None:
            state, result = tally.timed(protocol.finish, state, [got[d] for d in sorted(got)])
            if isinstance(result, SecAggResult):
                # Unmasking takes the server simulated time: the sum is ready only then.
                seconds = unmask_seconds(setup, state.u2, state.u3)
                compute += seconds
                if seconds > 0:
                    await asyncio.sleep(seconds)

        measurements = {
            "secagg_bytes_up_per_device": tally.up / u1 if u1 else 0.0,
            "secagg_bytes_down_per_device": tally.down / u1 if u1 else 0.0,
            "secagg_server_seconds": tally.seconds,
            "secagg_server_compute_s": compute,
            "secagg_advertised": u1,
            "secagg_survivors": 0,
            "secagg_aborted": 0,
            "secagg_modulus_bits": setup.config.modulus_bits,
            "secagg_max_degree": setup.config.graph.max_degree(),
            # t (every device's: one threshold per round), so 2t > k + 1 can be checked.
            "secagg_threshold": min(setup.config.graph.thresholds.values()),
            # 1 when this round's SecAgg+ graph missed the stated failure/security targets.
            "secagg_below_target": int(below is not None),
        }
        if below is not None:
            measurements["secagg_failure_log2"], measurements["secagg_security_log2"] = below
        if isinstance(result, Abort):
            measurements["secagg_aborted"] = 1
            self.log.emit(ACTOR, "secagg.aborted", round=r, step=result.step,
                          reason=in_fleet_ids(result.reason),
                          advertised=u1)
            return SecureOutcome(None, (), tally.rejected, closed_by, measurements,
                                 frozenset(late))
        assert isinstance(result, SecAggResult)
        t = time.perf_counter()
        sums = encoding.decode_sum(result.total, setup.layout)
        tally.seconds += time.perf_counter() - t
        measurements["secagg_server_seconds"] = tally.seconds
        contributors = tuple(sorted(device_of(pid) for pid in result.contributors))
        measurements["secagg_survivors"] = len(contributors)
        self.log.emit(ACTOR, "secagg.done", round=r, advertised=u1, survivors=len(contributors))
        return SecureOutcome(SummedContributions(sums, len(contributors)), contributors,
                             tally.rejected, closed_by, measurements, frozenset(late))

    async def _gather(self, r: int, step: str, allowed: set[int], want: int, tally: _Tally,
                      round_deadline: bool = False, config: Optional[SecAggConfig] = None,
                      protocol: Protocol = REAL) -> tuple[dict[int, Any], str]:
        """Payloads of ``step`` from ``allowed`` devices, until ``want`` are in or time is up."""
        got: dict[int, Any] = {}
        if want <= 0:
            return got, "target"
        # Everything queued at this instant is read at once (one wake-up, not one per
        # message); what the step did not get to goes back to the front, in order.
        mail: deque[Any] = deque()
        try:
            return await self._gather_from(mail, r, step, allowed, want, tally, got,
                                           round_deadline, config, protocol)
        finally:
            if mail:
                self.mailbox.put_back(list(mail))

    async def _gather_from(self, mail: deque[Any], r: int, step: str, allowed: set[int],
                           want: int, tally: _Tally, got: dict[int, Any], round_deadline: bool,
                           config: Optional[SecAggConfig], protocol: Protocol,
                           ) -> tuple[dict[int, Any], str]:
        while True:
            if not mail:
                mail.append(await self.mailbox.get())
                mail.extend(self.mailbox.take_all())
            message = mail.popleft()
            if isinstance(message, RoundDeadline):
                if round_deadline and message.round == r:
                    return got, "deadline"
                continue  # the round's deadline after the advertise phase closed early
            if isinstance(message, StepDeadline):
                if not round_deadline and (message.round, message.step) == (r, step):
                    return got, "deadline"
                continue
            reason = self._screen(message, r, step, allowed, got, config, protocol)
            if reason:
                tally.rejected[reason] = tally.rejected.get(reason, 0) + 1
                # ``step``: where the server is; ``update_step``: the message's own step
                # (a late key message is logged as a key message, not as the current step).
                self.log.emit(ACTOR, f"update.{reason}", round=r, step=step,
                              sender=getattr(message, "sender", None),
                              update_round=getattr(message, "round", None),
                              update_step=getattr(message, "step", None))
                continue
            got[message.sender] = message.payload
            tally.up += message.nbytes
            self.log.emit(ACTOR, "secagg.received", round=r, step=step, sender=message.sender)
            if len(got) >= want:
                return got, "target"

    @staticmethod
    def _screen(message: Any, r: int, step: str, allowed: set[int], got: dict,
                config: Optional[SecAggConfig] = None, protocol: Protocol = REAL,
                ) -> Optional[str]:
        """Why a message is not a valid protocol message for ``step`` of round ``r``."""
        if not isinstance(message, ToServer) or message.step not in STEPS:
            return "malformed"  # under secure aggregation a plain Update is refused too
        if message.round < r:
            return "late"
        if message.round > r:
            return "future"
        if STEPS.index(message.step) < STEPS.index(step):
            return "late"  # an earlier step of this round (e.g. keys after the target)
        if message.sender not in allowed:
            return "foreign"
        if message.step != step or not isinstance(message.payload,
                                                  protocol.replies[STEPS.index(step)]):
            return "malformed"
        if getattr(message.payload, "sender", None) != protocol_id(message.sender):
            return "malformed"
        # A masked vector of the wrong dtype, shape or range (the core refuses it too).
        if step == MASKED and config is not None and server.masked_input_problem(
                config, message.payload) is not None:
            return "malformed"
        if message.sender in got:
            return "duplicate"
        return None


def in_fleet_ids(reason: str) -> str:
    """An abort reason with the protocol's participant ids (fleet row + 1, see
    ``secagg.envelopes.device_of``) turned into the fleet's device ids, as every
    other output names devices."""
    return re.sub(r"\bdevice (\d+)\b", lambda m: f"device {device_of(int(m.group(1)))}", reason)
