"""The SMSC simulator's tester API: subscribers who dial USSD and send SMS, and what the gateway sent them.

`SmscSimulator` adds to the wire side (`SmppServer`: binds, PDUs, faults) what testers
drive in-process (`start_ussd`, `send_mo`, `send_receipt`, `next_mt`, ...) or from
another process through the control API (`control_port`), and what each accepted
`submit_sm` means: a screen for one of its USSD dialogues or a part of an MT SMS. The
invariant the fault tools keep: a `submit_sm` counts as delivered (seen by `next_mt` /
`next_screen`, listed in `accepted_submits`) exactly when the simulator answers it
`ESME_ROK` - or when a withheld response was explicitly marked delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

from ussd_gateway.channels.smpp.config import UssdDialect
from ussd_gateway.channels.smpp.dcs import decode_ussd
from ussd_gateway.channels.smpp.encoding import Concat, decode_sms, decode_text, encode_text, parse_udh
from ussd_gateway.channels.smpp.pdu import Pdu
from ussd_gateway.testkit.smsc import push
from ussd_gateway.testkit.smsc.control import control_app
from ussd_gateway.testkit.smsc.records import (
    LoggedPdu,
    MtSms,
    SmscError,
    UssdScreen,
    append_bounded,
    same_number,
    subscriber,
    trim_mapping,
)
from ussd_gateway.testkit.smsc.server import SmppServer

logger = logging.getLogger(__name__)

_UDHI = 0x40
_ESM_RECEIPT = 0x04
_MESSAGE_STATES = {
    "ENROUTE": 1, "DELIVRD": 2, "EXPIRED": 3, "DELETED": 4,
    "UNDELIV": 5, "ACCEPTD": 6, "UNKNOWN": 7, "REJECTD": 8,
}  # fmt: skip


@dataclass(eq=False)
class UssdDialogue:
    """A USSD dialogue the simulator opened on behalf of a subscriber.

    Screens the gateway sends for it queue up here; `next_screen` takes them in order.
    """

    sim: SmscSimulator
    id: int
    """The simulator's handle for the dialogue (unique; the control API's `dialogue_id`)."""
    number: int
    """The session number on the wire, in the bits of the dialect's `session_mask`."""
    session_info: int
    """`its_session_info` of our `deliver_sm`s: `number` in the `session_mask` bits, end
    bit clear (with the default mask 0xFF00, SMPP 3.4's first octet: `number << 8`)."""
    msisdn: str
    code: str
    destination: str
    ended: bool = False
    screens: list[UssdScreen] = field(default_factory=list)
    """Received screens not yet taken by `next_screen`."""

    async def next_screen(self, timeout: float = 5.0) -> UssdScreen:
        """Wait for the gateway's next screen for this dialogue.

        Raises:
            TimeoutError: when none arrives within `timeout` seconds.
        """
        return await self.sim._wait_for(("dialogue", self.id), lambda: self.screens.pop(0) if self.screens else None, timeout)

    async def answer(self, text: str) -> int:
        """Send the subscriber's answer (`ussd_service_op` continue); returns its sequence."""
        if self.ended:
            raise SmscError(f"dialogue {self.id} has ended; start a new one to answer")
        return await self.sim._send_ussd(self, self.sim.dialect.op_continue[0], text)

    async def abort(self) -> int:
        """The subscriber (or network) releases the dialogue: the dialect's abort op,
        end bit set. Returns the sequence of the `deliver_sm`."""
        if self.ended:
            raise SmscError(f"dialogue {self.id} has already ended")
        self.sim._end_dialogue(self)
        return await self.sim._send_ussd(self, self.sim.dialect.op_abort[0], "", end=True)


class SmscSimulator(SmppServer):
    """An SMPP 3.4 server (SMSC side) on asyncio streams.

    Args:
        host, port: where to listen; port 0 picks a free one (see `port`).
        accounts: system_id -> password accepted on bind.
        dialect: how USSD travels (ops, `its_session_info` end bit, service_type).
        preset: emulate a gateway of `smpp/presets/` (the dialect is the preset's); the
            presets other than 3gpp also leave the code out of every continuation.
        control_port: serve the HTTP control API on 127.0.0.1 at this port (0: any free).
        enquire_link_s: send our own `enquire_link` this often on each bind; None: never.
        gsm7_packed: GSM-7 we send and decode is packed (8 septets in 7 octets).
        on_pdu: called with every logged PDU (the CLI prints them).
        pdu_log_limit: keep at most this many entries in `pdus`, `accepted_submits`
            and the unread MT queue (the oldest half is dropped past it).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        accounts: Mapping[str, str] | None = None,
        *,
        dialect: UssdDialect = UssdDialect(),
        control_port: int | None = None,
        enquire_link_s: float | None = 30.0,
        gsm7_packed: bool = False,
        on_pdu: Callable[[LoggedPdu], None] | None = None,
        pdu_log_limit: int = 200_000,
        system_id: str = "SMSCSIM",
        preset: str | None = None,
    ) -> None:
        if preset is not None:
            from ussd_gateway.channels.smpp.presets import dialect as preset_dialect

            dialect = preset_dialect({"preset": preset}, "SmscSimulator")
        super().__init__(
            host, port, accounts, enquire_link_s=enquire_link_s, on_pdu=on_pdu, pdu_log_limit=pdu_log_limit, system_id=system_id
        )
        self.dialect = dialect
        self._control_port = control_port
        self.gsm7_packed = gsm7_packed

        self.accepted_submits: list[Pdu] = []
        """Every `submit_sm` counted as delivered, in order (duplicates show here)."""
        self.dialogues: dict[int, UssdDialogue] = {}
        self.orphan_screens: list[UssdScreen] = []
        """USSD `submit_sm`s that matched no dialogue of ours."""
        self.pushes: list[UssdDialogue] = []
        """Dialogues the gateway began (USSD push, `testkit.smsc.push`), not yet taken."""
        self._dialled: dict[tuple[str, int], None] = {}

        self._runner: web.AppRunner | None = None
        self._dialogue_ids = itertools.count(1)
        self._session_numbers = itertools.count()
        mask = dialect.session_mask & 0xFFFF
        if not mask or mask & dialect.end_bit:
            raise ValueError(f"session_mask 0x{dialect.session_mask:04X} must name bits of its_session_info other than the end bit")
        self._session_shift = (mask & -mask).bit_length() - 1
        self._session_numbers_max = mask >> self._session_shift
        """Session numbers run 1..this (255 with the default mask) and then wrap."""
        self._open: dict[tuple[str, int | None], UssdDialogue] = {}
        """Open dialogues by (subscriber, session number), and the subscriber's latest by
        (subscriber, None) for dialects that carry no session id."""
        self._umr = itertools.count(1)
        self._mts: list[tuple[int, MtSms]] = []
        self._mt_serial = 0
        self._parts: dict[tuple[str, str, int, int], dict[int, tuple[bytes, Pdu]]] = {}
        self.auto_receipts: Callable[[str], str | None] | None = None
        """Set to send delivery receipts by themselves: called with the MSISDN of each
        accepted `submit_sm` that asks for one (`registered_delivery`), it names the
        receipt's state (`DELIVRD`, `UNDELIV`, `EXPIRED`, ...) or None for no receipt."""
        self._receipt_tasks: set[asyncio.Task[int]] = set()

    # ---- lifecycle -----------------------------------------------------------------------
    @property
    def control_port(self) -> int | None:
        """The bound control HTTP port, or None when the control API is off."""
        return self._control_port

    async def start(self) -> None:
        """Listen for binds (and serve the control API when configured)."""
        await self._listen()
        if self._control_port is not None:
            self._runner = web.AppRunner(control_app(self), access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", self._control_port)
            await site.start()
            self._control_port = self._runner.addresses[0][1]

    async def stop(self, *, unbind: bool = True, timeout: float = 1.0) -> None:
        """Stop listening and close every bind; with `unbind`, send `unbind` first and
        give the ESMEs `timeout` seconds to answer, as an SMSC going down for maintenance."""
        self._closing = True
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._server is not None:
            self._server.close()
        if unbind:
            bound = [link for link in self._links.values() if link.mode is not None and not link.closed]
            for link in bound:
                self._send(link, "unbind", sequence=next(self._sequences))
            if bound:
                with contextlib.suppress(TimeoutError):
                    await self._wait_for("binds", lambda: True if all(link.closed for link in bound) else None, timeout)
        await self._close_links(list(self._links.values()))
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        self._wake(*self._waiters)

    async def __aenter__(self) -> SmscSimulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ---- tester API: USSD ----------------------------------------------------------------
    async def start_ussd(self, msisdn: str, code: str = "*090#", *, destination: str | None = None) -> UssdDialogue:
        """The subscriber dials `code`: send the begin `deliver_sm` and return the dialogue.

        `destination` is the `destination_addr` (default: the code without its trailing `#`).
        """
        number = next(self._session_numbers) % self._session_numbers_max + 1
        dialogue = UssdDialogue(
            sim=self,
            id=next(self._dialogue_ids),
            number=number,
            session_info=number << self._session_shift,
            msisdn=msisdn,
            code=code,
            destination=destination if destination is not None else code.rstrip("#"),
        )
        self.dialogues[dialogue.id] = dialogue
        trim_mapping(self.dialogues, self.pdu_log_limit)
        key = subscriber(msisdn)
        self._open[(key, number)] = self._open[(key, None)] = dialogue
        await self._send_ussd(dialogue, self.dialect.op_begin[0], code)
        return dialogue

    async def next_push(self, msisdn: str | None = None, timeout: float = 5.0) -> UssdDialogue:
        """The next dialogue the gateway began on a phone (`testkit.smsc.push`)."""
        return await push.next_push(self, msisdn, timeout)

    async def _send_ussd(self, dialogue: UssdDialogue, op: int, text: str, *, end: bool = False) -> int:
        dialect = self.dialect
        begin = op in dialect.op_begin
        destination = dialogue.destination
        if begin and dialect.code_from == "destination_addr":
            text, destination = "", dialogue.code
        elif not begin and dialect.preset != "3gpp":
            destination = ""  # these gateways name the code on the begin only
        data_coding, payload = encode_text(text, packed=self.gsm7_packed)
        if dialect.dcs == "ussd":
            data_coding = 0x0F if data_coding == 0 else 0x48  # USSD DCS: GSM 7-bit / UCS2
        umr = dialogue.number if dialect.session_id_from == "user_message_reference" else next(self._umr) % 0x10000
        fields: dict[str, Any] = {
            "service_type": dialect.service_type,
            **_addresses(dialogue.msisdn, destination),
            "esm_class": 0,
            "data_coding": data_coding,
            "short_message": payload,
            "ussd_service_op": op,
            "user_message_reference": umr,
        }
        session = dialogue.session_info | (self.dialect.end_bit if end else 0)
        if self.dialect.session_id_from == "its_session_info":
            fields["its_session_info"] = session
        elif self.dialect.session_id_from == "receipted_message_id":
            fields["receipted_message_id"] = str(dialogue.number)
        return await self._send_deliver(fields)

    async def _send_deliver(self, fields: dict[str, Any]) -> int:
        push.note_deliver(self, fields)
        return await super()._send_deliver(fields)

    async def send_deliver(self, fields: dict[str, Any]) -> int:
        """Send a `deliver_sm` with exactly these fields (any TLV the codec knows), as a
        gateway with other conventions would; returns its sequence."""
        return await self._send_deliver(dict(fields))

    # ---- tester API: SMS -----------------------------------------------------------------
    async def send_mo(self, msisdn: str, short_code: str, text: str, *, data_coding: int | None = None) -> int:
        """An MO SMS from `msisdn` to `short_code`: GSM-7 when it fits, else UCS-2, or the
        forced `data_coding` (0, 1 IA5, 3 Latin-1, 8 UCS-2). Returns the sequence."""
        coding, payload = _encode_mo(text, data_coding, packed=self.gsm7_packed)
        fields: dict[str, Any] = {
            **_addresses(msisdn, short_code),
            "esm_class": 0,
            "data_coding": coding,
            # The handset's message reference (TP-MR): two MOs with the same text are two
            # messages (the gateway dedupes resends by it), as "XN" sent twice must be.
            "user_message_reference": next(self._umr) % 0x10000,
        }
        if len(payload) > 254:
            fields["message_payload"] = payload
        else:
            fields["short_message"] = payload
        return await self._send_deliver(fields)

    async def send_receipt(self, msisdn: str, short_code: str, message_id: str, state: str = "DELIVRD") -> int:
        """A delivery receipt for an MT sent to `msisdn` (esm_class 0x04, the standard
        `id:... stat:...` text plus the receipt TLVs). Returns the sequence."""
        if state not in _MESSAGE_STATES:
            raise ValueError(f"receipt state {state!r} is not one of {', '.join(_MESSAGE_STATES)}")
        stamp = time.strftime("%y%m%d%H%M")
        delivered = "001" if state == "DELIVRD" else "000"
        err = "000" if state in ("DELIVRD", "ENROUTE", "ACCEPTD") else "001"
        text = f"id:{message_id} sub:001 dlvrd:{delivered} submit date:{stamp} done date:{stamp} stat:{state} err:{err} text:"
        return await self._send_deliver(
            {
                **_addresses(msisdn, short_code),
                "esm_class": _ESM_RECEIPT,
                "data_coding": 0,
                "short_message": text.encode("ascii"),
                "receipted_message_id": message_id,
                "message_state": _MESSAGE_STATES[state],
            }
        )

    async def next_mt(self, msisdn: str | None = None, timeout: float = 5.0) -> MtSms:
        """Take the next MT SMS (to `msisdn`, when given) the gateway got accepted.

        Raises:
            TimeoutError: when none arrives within `timeout` seconds.
        """
        return await self._next_mt(msisdn, timeout, after=0)

    async def _next_mt(self, msisdn: str | None, timeout: float, *, after: int, sender: str | None = None) -> MtSms:
        def take() -> MtSms | None:
            for index, (serial, sms) in enumerate(self._mts):
                if serial > after and (msisdn is None or same_number(sms.to, msisdn)) and (sender is None or sms.sender == sender):
                    del self._mts[index]
                    return sms
            return None

        return await self._wait_for("mt", take, timeout)

    def _next_mt_now(self, msisdn: str) -> MtSms | None:
        """Take the oldest queued MT to `msisdn` without waiting; None when there is none."""
        for index, (_serial, sms) in enumerate(self._mts):
            if same_number(sms.to, msisdn):
                del self._mts[index]
                return sms
        return None

    # ---- internals: what the gateway sent ------------------------------------------------
    def _accept(self, pdu: Pdu, message_id: str = "") -> None:
        """Count an accepted `submit_sm`: a USSD screen or (a part of) an MT SMS."""
        append_bounded(self.accepted_submits, pdu, self.pdu_log_limit)
        fields = pdu.fields
        if self.auto_receipts is not None and message_id and int(fields.get("registered_delivery", 0)) & 0x03:
            to = str(fields.get("destination_addr", ""))
            state = self.auto_receipts(to)
            if state is not None:
                task = asyncio.get_running_loop().create_task(
                    self.send_receipt(to, str(fields.get("source_addr", "")), message_id, state)
                )
                self._receipt_tasks.add(task)
                task.add_done_callback(self._receipt_sent)
        if "ussd_service_op" in pdu.fields:
            self._accept_screen(pdu)
        else:
            self._accept_mt(pdu)

    def _receipt_sent(self, task: asyncio.Task[int]) -> None:
        self._receipt_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("automatic delivery receipt not sent: %s", task.exception())

    def _text(self, data_coding: int, payload: bytes) -> str:
        return decode_text(data_coding, payload, packed=self.gsm7_packed)

    def _screen_text(self, data_coding: int, payload: bytes) -> str:
        """A screen's text, read as a gateway configured like the bind would: the
        dialect's screen codings, else the USSD DCS (or SMPP's table)."""
        screen = self.dialect.screen_data_coding
        if data_coding == screen.get("ucs2"):
            return self._text(8, payload)
        if data_coding == screen.get("gsm7"):
            return self._text(0, payload)
        return decode_ussd(data_coding, payload, packed=self.gsm7_packed, scheme=self.dialect.dcs)

    def _accept_screen(self, pdu: Pdu) -> None:
        fields = pdu.fields
        payload = fields.get("message_payload") or fields.get("short_message", b"")
        session = fields.get("its_session_info")
        end_bit = self.dialect.end_bit
        end = fields.get("ussd_service_op") in (self.dialect.op_reply_end, self.dialect.op_push_notify) or bool(
            session is not None and int(session) & end_bit
        )
        screen = UssdScreen(self._screen_text(int(fields.get("data_coding", 0)), payload), end, pdu)
        dialogue = push.on_screen(self, UssdDialogue, self._find_dialogue(str(fields.get("destination_addr", "")), fields), fields, end)
        if dialogue is None:
            append_bounded(self.orphan_screens, screen, self.pdu_log_limit)
            logger.warning("USSD submit_sm seq %d matches no open dialogue", pdu.sequence)
            return
        dialogue.screens.append(screen)
        if end:
            self._end_dialogue(dialogue)
        self._wake(("dialogue", dialogue.id))

    def _find_dialogue(self, destination: str, fields: Mapping[str, Any]) -> UssdDialogue | None:
        """The open dialogue a USSD `submit_sm` answers: by subscriber and session number,
        or the subscriber's latest when the dialect carries no session id."""
        source = self.dialect.session_id_from
        number: int | None = None
        if source == "its_session_info" and fields.get("its_session_info") is not None:
            number = (int(fields["its_session_info"]) & self.dialect.session_mask) >> self._session_shift
        elif source == "user_message_reference" and fields.get("user_message_reference") is not None:
            number = int(fields["user_message_reference"])
        elif source == "receipted_message_id" and fields.get("receipted_message_id"):
            try:
                number = int(fields["receipted_message_id"])
            except ValueError:
                return None
        return self._open.get((subscriber(destination), number))

    def _end_dialogue(self, dialogue: UssdDialogue) -> None:
        """No more screens are expected: later ones for its session are orphans."""
        dialogue.ended = True
        who = subscriber(dialogue.msisdn)
        for key in ((who, dialogue.number), (who, None)):
            if self._open.get(key) is dialogue:
                del self._open[key]

    def _accept_mt(self, pdu: Pdu) -> None:
        fields = pdu.fields
        to, sender = str(fields.get("destination_addr", "")), str(fields.get("source_addr", ""))
        short_message: bytes = fields.get("short_message", b"")
        concat: Concat | None = None
        if fields.get("message_payload"):
            body = fields["message_payload"]
        elif int(fields.get("esm_class", 0)) & _UDHI:
            concat, body = parse_udh(short_message)
        else:
            body = short_message
        if concat is None or concat.total <= 1:
            self._complete_mt(to, sender, [(body, pdu)])
            return
        key = (to, sender, concat.reference, concat.total)
        parts = self._parts.setdefault(key, {})
        parts[concat.sequence] = (body, pdu)
        if len(parts) == concat.total:
            del self._parts[key]
            self._complete_mt(to, sender, [parts[n] for n in sorted(parts)])

    def _complete_mt(self, to: str, sender: str, parts: list[tuple[bytes, Pdu]]) -> None:
        data_coding = int(parts[0][1].fields.get("data_coding", 0))
        if data_coding == 0 and self.gsm7_packed:
            # Each packed part starts on a septet boundary after its UDH: decode apiece.
            text = "".join(_packed_part_text(pdu, body) for body, pdu in parts)
        else:
            text = self._text(data_coding, b"".join(body for body, _ in parts))
        sms = MtSms(to, sender, text, len(parts), tuple(pdu for _, pdu in parts))
        self._mt_serial += 1
        append_bounded(self._mts, (self._mt_serial, sms), self.pdu_log_limit)
        self._wake("mt")


def _addresses(subscriber_number: str, destination: str) -> dict[str, Any]:
    """The address fields of a `deliver_sm` from a subscriber (international, E.164) to
    a short or service code (unknown type, E.164 plan)."""
    return {
        "source_addr_ton": 1,
        "source_addr_npi": 1,
        "source_addr": subscriber_number,
        "dest_addr_ton": 0,
        "dest_addr_npi": 1,
        "destination_addr": destination,
    }


def _encode_mo(text: str, data_coding: int | None, *, packed: bool) -> tuple[int, bytes]:
    if data_coding is None:
        return encode_text(text, packed=packed)
    if data_coding == 0:
        coding, payload = encode_text(text, packed=packed)
        if coding != 0:
            raise ValueError(f"text {text[:20]!r} does not fit the GSM-7 alphabet (data_coding 0)")
        return 0, payload
    if data_coding == 8:
        return 8, text.encode("utf-16-be")
    if data_coding == 1:
        return 1, text.encode("ascii")
    if data_coding == 3:
        return 3, text.encode("latin-1")
    raise ValueError(f"data_coding {data_coding!r} is not one the simulator sends (0, 1, 3 or 8)")


def _packed_part_text(pdu: Pdu, body: bytes) -> str:
    """Decode one packed GSM-7 part: its septets start after the UDH's fill bits."""
    fields = pdu.fields
    if fields.get("message_payload"):
        return decode_text(0, body, packed=True)
    return decode_sms(0, int(fields.get("esm_class", 0)), fields.get("short_message", b""), packed=True)[1]
