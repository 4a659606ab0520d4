"""The device side of secure aggregation: one protocol run per device per round.

Device actors are virtual (deactivated when their mailbox drains), so a
device's in-flight protocol state lives here, in the simulated world, like
the device's own memory between messages. The cryptography is
:mod:`fedactors.secagg.client`; this module only feeds it messages, sends its
replies through the simulated network, and decides when a device goes silent.

Dropout: a device that finished training can still vanish before each of its
protocol messages, with probability ``SecAggSetup.step_dropout`` per step,
drawn from its own per-round stream ``("device", round, id, "secagg-dropout")``
(one draw per step whatever the probability; with a probability of 0 the
stream, which feeds nothing else, is not made). Its secrets (keys, self-mask seed, Shamir coefficients, AEAD
nonces) come from ``seeds.secret("device", round, id, "secagg")``: that seeded
stream by default, the OS CSPRNG under ``randomness="system"``.

Non-finite updates: the server cannot screen what it cannot see, so a device
whose model delta (before the aggregator's ``encode``, which may silently
zero it) or contribution holds a NaN or an infinity does not take part at
all. It logs ``secagg.nonfinite_update`` and is recorded as dropped, like a
device whose training failed: it is not among the survivors and adds nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from fedactors.secagg import encoding, keys
from fedactors.secagg.envelopes import (
    ADVERTISE,
    MASKED,
    SHARE,
    SIGN,
    UNMASK,
    SecAggSetup,
    ToDevice,
    ToServer,
    protocol_id,
)
from fedactors.secagg.messages import Abort
from fedactors.secagg.pki import Pki
from fedactors.secagg.protocol import Protocol


@dataclass
class _Run:
    round: int
    setup: SecAggSetup = field(repr=False)
    state: Any = field(repr=False)  # the protocol's client state
    x: np.ndarray = field(repr=False)  # the quantized contribution: never leaves unmasked
    secrets: Optional[np.random.Generator] = field(repr=False)  # None in modeled mode
    drops: Optional[np.random.Generator] = field(repr=False)  # None: step_dropout is 0


def _nonfinite(delta: Optional[np.ndarray], contribution: dict[str, np.ndarray]) -> Optional[str]:
    """``"delta"`` or ``"contribution:<key>"`` if that holds a NaN/inf, else None."""
    # isfinite on the arrays as they are: a float32 value is finite iff its float64 is.
    if delta is not None and not np.isfinite(delta).all():
        return "delta"
    for key in sorted(contribution):
        if not np.isfinite(contribution[key]).all():
            return f"contribution:{key}"
    return None


class SecAggParticipants:
    """Every device's protocol state, keyed by device; at most one run per device."""

    def __init__(self, world: Any, pki: Optional[Pki] = None) -> None:
        self.world = world  # fedactors.devices.actor.DeviceWorld
        self._runs: dict[int, _Run] = {}
        #: Malicious-server mode: each device's long-term signing key (shared with the server's
        #: view of the public halves; fedactors.secagg.pki).
        self.pki = pki

    def start(self, device: int, round_: int, setup: SecAggSetup,
              contribution: dict[str, np.ndarray], rng: np.random.Generator,
              delta: Optional[np.ndarray] = None) -> None:
        """After training: quantize the contribution and advertise keys (round 0).

        ``delta`` is the raw model delta the contribution was encoded from; if it or the
        contribution is not finite the device stays out of the protocol (see module doc)."""
        w = self.world
        bad = _nonfinite(delta, contribution)
        if bad is not None:
            self._runs.pop(device, None)  # like a new run, it ends any older one
            w.tally.record_drop(round_, device, asyncio.get_running_loop().time())
            w.tally.record_withheld(round_)
            # Logged even when device events are off: the server cannot see this one.
            w.log.emit(f"device-{device}", "secagg.nonfinite_update", round=round_, where=bad)
            return
        # Stochastic rounding draws from the training stream (after encode's draws when
        # seeded; under system randomness encode drew from the OS): it stays seeded.
        x = encoding.encode(contribution, setup.layout, rng if setup.stochastic_rounding else None)
        protocol = setup.protocol
        secrets = (w.seeds.secret("device", round_, device, "secagg") if protocol.draws_secrets
                   else None)
        # The dropout stream is the device's own and feeds nothing else: with no step
        # dropout its draws could never matter, so it is not even made.
        drops = (w.seeds.generator("device", round_, device, "secagg-dropout")
                 if setup.step_dropout > 0 else None)
        signing_key = self._signing_key(device, protocol) if setup.config.malicious else None
        state, msg = protocol.advertise_keys(setup.config, protocol_id(device), secrets,
                                             signing_key)
        self._runs[device] = _Run(round_, setup, state, x, secrets, drops)
        self._send(device, ADVERTISE, msg, peers=0)

    def handle(self, device: int, message: ToDevice) -> None:
        w, run = self.world, self._runs.get(device)
        if run is None or run.round != message.round:
            # The device abandoned that run (dropped, aborted, or a newer round began).
            w.log.device(device, "secagg.stale", round=message.round, step=message.step)
            return
        p, protocol = message.payload, run.setup.protocol
        if message.step == SHARE and isinstance(p, protocol.key_broadcast):
            run.state, out = protocol.share_keys(run.state, p, run.secrets)
        elif message.step == MASKED and isinstance(p, protocol.share_delivery):
            run.state, out = protocol.masked_input(run.state, p, run.x)
        elif message.step == SIGN and isinstance(p, protocol.view_request):
            run.state, out = protocol.sign_view(run.state, p, self._signing_key(device, protocol))
        elif message.step == UNMASK and isinstance(p, protocol.unmask_request):
            run.state, out = protocol.unmask(run.state, p)
        else:
            out = Abort(f"device {protocol_id(device)}", message.step,
                        f"unexpected {type(p).__name__} for step {message.step!r}")
        if isinstance(out, Abort):
            # Refuse to go on and say nothing: silence reveals no secret.
            del self._runs[device]
            w.log.device(device, "secagg.device_abort", round=run.round, step=out.step,
                         reason=out.reason)
            return
        views = p.view_count if message.step == UNMASK else 0
        self._send(device, message.step, out, peers=p.peers, views=views)
        if message.step == UNMASK and device in self._runs:
            del self._runs[device]

    def _signing_key(self, device: int, protocol: Protocol) -> Optional[keys.SigningKey]:
        if not protocol.draws_secrets:
            return None  # modeled: no signature is made
        if self.pki is None:
            raise RuntimeError("malicious-server secure aggregation needs the PKI")
        return self.pki.signing_key(device)

    def active(self, device: int) -> Optional[int]:
        """The round of the device's protocol run in progress, if any."""
        run = self._runs.get(device)
        return None if run is None else run.round

    def goes_silent(self, device: int, round_: int, step: str) -> bool:
        """Whether the device drops just before sending its ``step`` message."""
        run = self._runs[device]
        return run.drops is not None and bool(run.drops.random() < run.setup.step_dropout)

    def _send(self, device: int, step: str, msg: Any, peers: int, views: int = 0) -> None:
        """Compute ``step`` (simulated seconds from the cost model), then send ``msg``.

        The dropout draw comes first: a device that vanishes before this step's
        message does no more work for it."""
        w, run = self.world, self._runs[device]
        if self.goes_silent(device, run.round, step):
            del self._runs[device]
            w.tally.record_drop(run.round, device, asyncio.get_running_loop().time())
            w.log.device(device, "dropped", round=run.round, secagg_step=step)
            return
        setup = run.setup
        compute = setup.costs.device_seconds(step, peers, setup.config.dim,
                                             float(w.fleet.compute[device]), views,
                                             setup.config.malicious)
        envelope = ToServer(run.round, device, step, msg)
        upload = w.network.to_server(device, envelope, after=compute)
        w.log.device(device, "secagg.sent", round=run.round, step=step, nbytes=envelope.nbytes,
                     compute_s=compute, upload_s=upload)
