"""Configuration of SMPP binds (`[[smpp.binds]]` in config.toml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

BindMode = Literal["transceiver", "transmitter_receiver"]


@dataclass(frozen=True, slots=True)
class UssdDialect:
    """How one operator's USSD gateway speaks USSD over SMPP (they differ in details).

    Defaults follow SMPP 3.4 with the common conventions: `ussd_service_op` 1 starts
    a dialogue (PSSR indication, the short message is the dialled code), 18 carries the
    subscriber's answer (USSR confirm); we answer 2 (USSR request) to wait for input
    and 17 (PSSR response) for the last screen; `its_session_info` identifies the
    dialogue and its lowest bit set marks the end of the session.
    """

    service_type: str = "USSD"
    """`service_type` on our `submit_sm` (and expected on USSD `deliver_sm`, if set)."""
    op_begin: tuple[int, ...] = (1,)
    op_continue: tuple[int, ...] = (18,)
    op_abort: tuple[int, ...] = (32, 33)
    """Values some gateways use for a release/abort by the network or the subscriber."""
    op_reply_continue: int = 2
    op_reply_end: int = 17
    session_id_from: Literal["its_session_info", "receipted_message_id", "msisdn"] = "its_session_info"
    """Where the dialogue id comes from; `msisdn` for gateways that send none (one
    dialogue per subscriber at a time)."""
    end_bit: int = 0x01
    """The bit of `its_session_info` that marks the end of the dialogue."""
    session_mask: int = 0xFF00
    """The bits of `its_session_info` that name the dialogue: SMPP 3.4 puts the session
    number in the first octet and a per-message sequence number plus the end bit in
    the second, so by default only the first octet identifies the dialogue."""
    reply_deadline_s: float = 5.0
    """A reply not handed to the link within this is dropped (and counted): the
    subscriber's screen has timed out by then, so queueing it would only confuse."""


@dataclass(frozen=True, slots=True)
class BindSettings:
    """One bind to an operator's SMSC or USSD gateway."""

    name: str
    host: str = "127.0.0.1"
    port: int = 2775
    system_id: str = "ussdgw"
    password: str = "secret"
    system_type: str = ""
    mode: BindMode = "transceiver"
    short_codes: tuple[str, ...] = ()
    """Short codes whose MO SMS arrive on this bind, and that MT SMS are sent from."""
    service_codes: tuple[str, ...] = ()
    """USSD codes carried on this bind (`*090#`); empty: every code the menus serve."""
    window: int = 10
    """Outstanding `submit_sm` without a response, at most."""
    enquire_link_s: float = 30.0
    response_timeout_s: float = 10.0
    """A request unanswered this long counts as lost (the link is then reset)."""
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    gsm7_packed: bool = False
    """Send GSM-7 packed (8 chars in 7 octets) rather than one septet per octet."""
    long_sms: Literal["udh", "payload"] = "udh"
    """Long SMS as concatenated parts with a UDH, or whole in `message_payload`."""
    ussd: UssdDialect = field(default_factory=UssdDialect)
