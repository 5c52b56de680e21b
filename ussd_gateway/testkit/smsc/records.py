"""What the SMSC simulator records and hands to testers, and how those records stay bounded.

The error it raises, the PDU log entry, the bind, USSD screen and MT SMS records are
shared by the wire side (`server`), the tester API (`simulator`), the console printer and
the control API, so they live apart from all of them. Beside them: the rules every record
list follows (bounded, oldest half dropped) and the one key per subscriber the simulator
matches numbers by, however a gateway writes them.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from ussd_gateway.core.errors import BadRequest
from ussd_gateway.core.msisdn import normalise_msisdn

from ussd_gateway.channels.smpp.pdu import Pdu

T = TypeVar("T")

BindMode = Literal["transceiver", "transmitter", "receiver"]


class SmscError(RuntimeError):
    """The simulator cannot do what the tester asked (no bind to send on, dialogue over...)."""


@dataclass(frozen=True, slots=True)
class LoggedPdu:
    """One PDU as it crossed the wire, either way; `fields` as the codec decoded them."""

    at: float
    """Wall-clock time (`time.time()`)."""
    direction: Literal["in", "out"]
    """`in`: from the ESME (the gateway); `out`: from the simulator."""
    bind_id: int
    command: str
    """The command name (`submit_sm`), or `invalid` for bytes that were not a PDU."""
    sequence: int
    status: int
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class BindInfo:
    """A bound connection."""

    bind_id: int
    system_id: str
    mode: BindMode
    peer: str


@dataclass(frozen=True, slots=True)
class UssdScreen:
    """A screen the gateway sent to the handset (one USSD `submit_sm`)."""

    text: str
    end: bool
    """True on the last screen: `ussd_service_op` is the dialect's end value or the
    `its_session_info` end bit is set."""
    pdu: Pdu


@dataclass(frozen=True, slots=True)
class MtSms:
    """An MT SMS the gateway sent, its concatenated parts reassembled."""

    to: str
    sender: str
    text: str
    parts: int
    pdus: tuple[Pdu, ...]


def append_bounded(items: list[T], item: T, limit: int) -> None:
    """Append, dropping the oldest half past `limit`: a simulator left running (or a
    benchmark nobody drains) must not grow without end."""
    items.append(item)
    if len(items) > limit:
        del items[: len(items) - limit // 2]


def trim_mapping(items: dict[Any, Any], limit: int) -> None:
    """Drop the oldest half of `items` once it holds more than `limit` entries."""
    if len(items) > limit:
        for key in list(itertools.islice(items, len(items) - limit // 2)):
            del items[key]


def subscriber(msisdn: str) -> str:
    """One key per subscriber, whichever way the number is written (a gateway may
    answer `+84...` to `84...`)."""
    try:
        return normalise_msisdn(msisdn)
    except BadRequest:
        return msisdn


def same_number(a: str, b: str) -> bool:
    """Whether two addresses name the same subscriber."""
    return a == b or subscriber(a) == subscriber(b)
