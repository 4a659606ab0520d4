"""How protocol messages travel between actors: round-tagged envelopes and the setup.

The pure core's messages carry no round number (the round is in the key
derivation); the runtime wraps them so stale or foreign traffic can be
screened, and so the simulated network can charge their ``nbytes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedactors.secagg.costs import CryptoCosts
from fedactors.secagg.encoding import Layout
from fedactors.secagg.messages import ID_BYTES, SecAggConfig
from fedactors.secagg.protocol import REAL, Protocol

#: Round number, step tag and sender id in front of every protocol message.
ENVELOPE_BYTES = 12

ADVERTISE, SHARE, MASKED, UNMASK = "advertise_keys", "share_keys", "masked_input", "unmask"
#: Malicious-server mode only: the consistency check, between masked input and unmasking.
SIGN = "sign_view"
STEPS = (ADVERTISE, SHARE, MASKED, SIGN, UNMASK)


def protocol_id(device: int) -> int:
    """Shamir x-coordinates must be >= 1, so fleet row d is protocol id d + 1."""
    return int(device) + 1


def device_of(pid: int) -> int:
    return int(pid) - 1


@dataclass(frozen=True)
class SecAggSetup:
    """Sent with the TrainRequest: the public parameters of this round's protocol."""

    config: SecAggConfig = field(repr=False)
    layout: Layout = field(repr=False)
    stochastic_rounding: bool
    step_dropout: float
    #: The steps' implementation (``SecureAggregation.mode``) and their compute prices.
    protocol: Protocol = field(default=REAL, repr=False)
    costs: CryptoCosts = field(default_factory=CryptoCosts.free, repr=False)

    @property
    def nbytes(self) -> int:
        # The graph travels as the ring order (SecAgg+) or the id list
        # (SecAgg): one id per device; plus k, f, dim and a bound per key.
        return (ID_BYTES * len(self.config.graph.ids) + 16
                + 12 * len(self.layout.fields))


@dataclass(frozen=True)
class ToServer:
    round: int
    sender: int  # fleet row, as for Update
    step: str
    payload: Any = field(repr=False)

    @property
    def nbytes(self) -> int:
        return ENVELOPE_BYTES + self.payload.nbytes


@dataclass(frozen=True)
class ToDevice:
    round: int
    step: str
    payload: Any = field(repr=False)

    @property
    def nbytes(self) -> int:
        return ENVELOPE_BYTES + self.payload.nbytes


@dataclass(frozen=True)
class StepDeadline:
    """The server's own timer: step ``step`` of round ``round`` stops listening now."""

    round: int
    step: str
    nbytes: int = 0
