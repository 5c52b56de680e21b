"""Events an `EsmeSession` reports to its owner, the link that drives it.

The session never calls back into its owner: it queues these and the owner pulls them
with `next_event()`, so the order of effects is explicit and tests can assert on it
without any I/O. Every event is a frozen dataclass; `ConnectionShouldClose` is the
one signal to drop the transport (it follows `BindRefused`, `EnquireLinkFailed` and
`PeerUnbound`, which say why).
"""

from __future__ import annotations

from dataclasses import dataclass

from ussd_gateway.channels.smpp.pdu import Pdu

__all__ = [
    "BindRefused",
    "Bound",
    "ConnectionShouldClose",
    "DeliverReceived",
    "EnquireLinkFailed",
    "Event",
    "GenericNackReceived",
    "PeerUnbound",
    "SubmitExpired",
    "SubmitResponded",
    "UnknownPduReceived",
]


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of every session event."""


@dataclass(frozen=True, slots=True)
class Bound(Event):
    """The SMSC accepted our bind: requests may flow."""

    system_id: str
    """The SMSC's own system_id, from the bind response (for logs)."""


@dataclass(frozen=True, slots=True)
class BindRefused(Event):
    """The SMSC answered our bind with an error (or a generic_nack); a
    `ConnectionShouldClose` follows and the owner reconnects after a backoff."""

    status: int
    """The command_status of the refusal (ESME_RBINDFAIL, ESME_RINVPASWD, ...)."""


@dataclass(frozen=True, slots=True)
class DeliverReceived(Event):
    """A `deliver_sm` arrived on a bind allowed to receive it.

    The session has NOT answered it: the owner must call `respond_deliver(sequence,
    status)` once its handler has decided: a deliver_sm is never acknowledged silently."""

    pdu: Pdu
    """The decoded `deliver_sm`; `pdu.sequence` is what `respond_deliver` takes."""


@dataclass(frozen=True, slots=True)
class SubmitResponded(Event):
    """Our `submit_sm` was answered, by a `submit_sm_resp` or a `generic_nack`."""

    ref: object
    """The `ref` given to `submit()`, so the owner finds its waiter without knowing
    sequence numbers."""
    status: int
    """command_status: ESME_ROK, or the SMSC's error (ESME_RTHROTTLED, ...)."""
    message_id: str
    """The SMSC's id for the message ("" on errors and on a generic_nack)."""


@dataclass(frozen=True, slots=True)
class SubmitExpired(Event):
    """Our `submit_sm` got no response within `response_timeout_s`.

    Its window slot is freed. The SMSC may or may not have taken the message, so the
    owner must not blindly resend it (that could duplicate an SMS)."""

    ref: object
    """The `ref` given to `submit()`."""


@dataclass(frozen=True, slots=True)
class GenericNackReceived(Event):
    """The SMSC sent a `generic_nack` (it could not parse or did not support one of
    our PDUs). Reported for logs and metrics even when it also answers a submit (then
    a `SubmitResponded` follows)."""

    sequence: int
    """The sequence number it carries (0 when the SMSC could not read ours)."""
    status: int
    """Its command_status, i.e. why."""


@dataclass(frozen=True, slots=True)
class UnknownPduReceived(Event):
    """The SMSC sent a request this ESME does not handle (an unknown command_id, or a
    known one an ESME never serves, such as `submit_sm`). The session has already
    answered it with `generic_nack` ESME_RINVCMDID; this is for logs."""

    command_id: int
    """The command_id as received."""
    sequence: int
    """Its sequence number (the generic_nack carries it)."""
    pdu: Pdu | None = None
    """The decoded PDU when the codec knows the command, else None."""


@dataclass(frozen=True, slots=True)
class EnquireLinkFailed(Event):
    """Our `enquire_link` got no response within `response_timeout_s`: the link is
    dead or the SMSC is stuck. A `ConnectionShouldClose` follows."""


@dataclass(frozen=True, slots=True)
class PeerUnbound(Event):
    """The bind is over: the SMSC sent `unbind` (we answered `unbind_resp`), or it
    answered our own `unbind`. A `ConnectionShouldClose` follows."""


@dataclass(frozen=True, slots=True)
class ConnectionShouldClose(Event):
    """The owner must send what `data_to_send()` still holds, then close the
    transport. The session is closed from now on and ignores further input."""

    reason: str
    """Why, in a few words, for logs ("bind refused", "enquire_link unanswered",
    "frame length 3 out of range", ...)."""
