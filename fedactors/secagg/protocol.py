"""The two implementations of the protocol's steps: real cryptography, or modeled.

Both sides of the runtime (``devices/secagg_participant.py`` and
``server/secure_collection.py``) call the steps through a ``Protocol``, so
which one runs is decided once, by ``SecureAggregation.mode``, and travels
with the round's ``SecAggSetup``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from fedactors.secagg import client, modeled, server
from fedactors.secagg.messages import (
    AdvertiseKeys,
    ConsistencyRequest,
    KeyBroadcast,
    MaskedInput,
    ShareDelivery,
    ShareKeys,
    SignedView,
    UnmaskRequest,
    UnmaskResponse,
)

Step = Callable[..., tuple[Any, Any]]


@dataclass(frozen=True)
class Protocol:
    """Device steps ``(state, message) -> (state, reply | Abort)`` and the server's."""

    name: str
    advertise_keys: Step
    share_keys: Step
    masked_input: Step
    sign_view: Step  # malicious-server mode only, as is collect_views
    unmask: Step
    start: Callable[[Any], Any]
    collect_keys: Step
    collect_shares: Step
    collect_masked: Step
    collect_views: Step
    finish: Step
    #: Whether the steps use the device's secret randomness (keys, shares, nonces).
    draws_secrets: bool
    #: What the server sends for share_keys, masked_input, sign_view and unmask (a device
    #: checks it).
    key_broadcast: type
    share_delivery: type
    view_request: type
    unmask_request: type
    #: What a device sends at each step, in envelopes.STEPS order (the server checks it).
    replies: tuple[type, ...]


REAL = Protocol("real", client.advertise_keys, client.share_keys, client.masked_input,
                client.sign_view, client.unmask, server.start, server.collect_keys,
                server.collect_shares, server.collect_masked, server.collect_views, server.finish,
                draws_secrets=True, key_broadcast=KeyBroadcast, share_delivery=ShareDelivery,
                view_request=ConsistencyRequest, unmask_request=UnmaskRequest,
                replies=(AdvertiseKeys, ShareKeys, MaskedInput, SignedView, UnmaskResponse))

MODELED = Protocol("modeled", modeled.advertise_keys, modeled.share_keys, modeled.masked_input,
                   modeled.sign_view, modeled.unmask, modeled.start, modeled.collect_keys,
                   modeled.collect_shares, modeled.collect_masked, modeled.collect_views,
                   modeled.finish, draws_secrets=False, key_broadcast=modeled.KeysOf,
                   share_delivery=modeled.Delivered, view_request=modeled.ViewCounts,
                   unmask_request=modeled.UnmaskCounts,
                   replies=(modeled.Advertised, modeled.Shared, MaskedInput, modeled.Signed,
                            modeled.Unmasked))

PROTOCOLS = {p.name: p for p in (REAL, MODELED)}
