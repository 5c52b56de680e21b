"""Configuration of SMPP binds (`[[smpp.binds]]` in config.toml).

`BindSettings` is one bind; `UssdDialect` is how its USSD gateway speaks USSD over
SMPP. Operators rarely write a dialect by hand: `[smpp.binds.ussd] preset = "..."`
starts from one of the files in `smpp/presets/` and the keys written beside it
override the preset's (`presets.bind_settings` does the merging and checking).
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
from dataclasses import dataclass, field
from typing import Literal

BindMode = Literal["transceiver", "transmitter_receiver"]
SessionIdFrom = Literal["its_session_info", "user_message_reference", "receipted_message_id", "msisdn"]
Alphabet = Literal["gsm7", "ucs2", "latin1", "ia5", "binary", "utf8"]
ALPHABETS: tuple[str, ...] = ("gsm7", "ucs2", "latin1", "ia5", "binary", "utf8")
"""What an SMSC may mean by a data_coding value (`mo_data_coding_map`)."""


@dataclass(frozen=True, slots=True)
class UssdDialect:
    """How one operator's USSD gateway speaks USSD over SMPP (they differ in details).

    Defaults (the `3gpp` preset) follow SMPP 3.4 with the common conventions:
    `ussd_service_op` 1 starts a dialogue (PSSR indication, the short message is the
    dialled code), 18 carries the subscriber's answer (USSR confirm); we answer 2
    (USSR request) to wait for input and 17 (PSSR response) for the last screen;
    `its_session_info` identifies the dialogue and its lowest bit set marks the end
    of the session.
    """

    preset: str = "3gpp"
    """The file of `smpp/presets/` these values started from (for logs and docs)."""
    service_type: str = "USSD"
    """`service_type` on our `submit_sm` (and expected on USSD `deliver_sm`, if set)."""
    op_begin: tuple[int, ...] = (1,)
    op_continue: tuple[int, ...] = (18,)
    op_abort: tuple[int, ...] = (32, 33)
    """Values some gateways use for a release/abort by the network or the subscriber."""
    op_other: Literal["refuse", "continue"] = "refuse"
    """An op in none of the lists: refused (ESME_RINVOPTPARAMVAL), or taken as the
    subscriber's answer (gateways that only name begin and end)."""
    end_bit_aborts: bool = False
    """A `deliver_sm` whose `its_session_info` has the end bit set releases the
    dialogue, whatever its op."""
    op_reply_continue: int = 2
    op_reply_end: int = 17
    op_push_request: int = 2
    """Our `submit_sm` of a USSD push that waits for the subscriber's answer (USSR)."""
    op_push_notify: int = 3
    """Our `submit_sm` of a notify-only push (USSN): the dialogue ends with it."""
    op_push_confirm: tuple[int, ...] = (19,)
    """A handset's acknowledgement of a notify-only push (USSN confirm): it releases
    the dialogue, no screen follows."""
    session_id_from: SessionIdFrom = "its_session_info"
    """Where the dialogue id comes from; `msisdn` for gateways that send none (one
    dialogue per subscriber at a time)."""
    code_from: Literal["short_message", "destination_addr"] = "short_message"
    """Where a begin carries the dialled code (the other field is the fallback when
    this one is empty). Continuations never need it: a dialogue keeps its code."""
    end_bit: int = 0x01
    """The bit of `its_session_info` that marks the end of the dialogue."""
    session_mask: int = 0xFF00
    """The bits of `its_session_info` that name the dialogue: SMPP 3.4 puts the session
    number in the first octet and a per-message sequence number plus the end bit in
    the second, so by default only the first octet identifies the dialogue."""
    dcs: Literal["ussd", "smpp"] = "ussd"
    """How `data_coding` of a USSD `deliver_sm` is read: as the USSD data coding
    scheme (3GPP TS 23.038 §5, what gateways copy from the network: 0x0F is GSM 7-bit)
    or with SMPP 3.4's meaning (8 is UCS-2). `mo_data_coding_map` of the bind wins."""
    screen_data_coding: dict[str, int] = field(default_factory=lambda: {"gsm7": 0x00, "ucs2": 0x08})
    """The `data_coding` of our screens, per alphabet (e.g. {gsm7 = 15, ucs2 = 72})."""
    resend_window_s: float = 5.0
    """Gateways that give a hop no id of its own (no per-message bits in
    `its_session_info`, no `user_message_reference` apart from the session's): a
    `deliver_sm` identical to the dialogue's previous one within this is a resend."""
    reply_deadline_s: float = 5.0
    """A reply not handed to the link within this is dropped (and counted): the
    subscriber's screen has timed out by then, so queueing it would only confuse."""

    @property
    def per_message_bits(self) -> int:
        """Bits of `its_session_info` that change from message to message (3GPP: the
        second octet's sequence number); 0 when it only names the dialogue."""
        return 0xFFFF & ~self.session_mask & ~self.end_bit


@dataclass(frozen=True, slots=True)
class BindSettings:
    """One bind to an operator's SMSC or USSD gateway."""

    name: str
    host: str = "127.0.0.1"
    port: int = 2775
    system_id: str = "ussdgw"
    password: str = ""
    """Required: a bind without one is refused at start-up (`presets.bind_settings`)."""
    system_type: str = ""
    mode: BindMode = "transceiver"
    tls: bool = False
    """Connect over TLS (SMSCs that offer SMPP over TLS, often on port 3550)."""
    tls_ca_file: str = ""
    """CA bundle (PEM) to verify the SMSC's certificate; empty: the system's."""
    tls_verify: bool = True
    """Verify the SMSC's certificate and host name (off only for a lab SMSC)."""
    short_codes: tuple[str, ...] = ()
    """Short codes whose MO SMS arrive on this bind, and that MT SMS are sent from."""
    service_codes: tuple[str, ...] = ()
    """USSD codes carried on this bind (`*090#`); empty: every code the menus serve."""
    window: int = 10
    """Outstanding `submit_sm` without a response, at most."""
    max_tps: float = 0.0
    """Outbound SMS parts per second this bind may submit (the SMSC's contracted
    throughput); the queue's drain waits before each submit to keep to it. 0: no cap
    (USSD screens are never held back by it)."""
    enquire_link_s: float = 30.0
    response_timeout_s: float = 10.0
    """A request unanswered this long counts as lost (the link is then reset)."""
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    gsm7_packed: bool = False
    """Send GSM-7 packed (8 chars in 7 octets) rather than one septet per octet."""
    long_sms: Literal["udh", "payload"] = "udh"
    """Long SMS as concatenated parts with a UDH, or whole in `message_payload`."""
    mo_data_coding_map: dict[int, str] = field(default_factory=dict)
    """data_coding value -> what this SMSC really sends with it (gsm7, ucs2, latin1,
    ia5, binary, utf8), for SMSCs that break the spec; wins over every other reading."""
    mt_data_coding_map: dict[str, int] = field(default_factory=dict)
    """alphabet (gsm7, ucs2) -> the data_coding our SMS carry (default 0 and 8)."""
    mo_resend_window_s: float = 5.0
    """An MO SMS with no message reference (no `user_message_reference`, `sar_*` or
    UDH reference) is a resend only when it repeats the subscriber's previous MO
    exactly, with nothing else from them in between, within this (about the SMSC's
    resend timer)."""
    mo_concat_timeout_s: float = 30.0
    """Parts of a concatenated MO SMS wait this long for the rest; then the parts
    received are handled as they are."""
    mo_concat_max: int = 1000
    """Concatenated MO SMS being reassembled at once, at most (the oldest is dropped,
    and counted, past it)."""
    session_id_secret: str = ""
    """Key of the hash that stands for the MSISDN in session ids (the same on every
    gateway process of the bind); empty: derived from the bind's password."""
    ussd: UssdDialect = field(default_factory=UssdDialect)

    def msisdn_tag(self, msisdn: str) -> str:
        """A keyed hash of `msisdn` for identifiers and logs: stable across processes,
        not reversible without the bind's secret."""
        secret = (self.session_id_secret or "smpp-session:" + self.system_id + ":" + self.password).encode()
        key = hashlib.sha256(secret).digest()
        return hmac.new(key, msisdn.encode(), hashlib.sha256).hexdigest()[:16]

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of the bind, or None without `tls`.

        Raises:
            OSError: `tls_ca_file` cannot be read.
            ssl.SSLError: it holds no usable certificate.
        """
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.tls_ca_file or None)
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context
