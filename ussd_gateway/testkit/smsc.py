"""An SMSC simulator: the operator's side of SMPP 3.4, for development and the tests.

The gateway is an ESME; to prove it end to end over real TCP it needs a peer that binds
it, hands it USSD dialogues and MO SMS the way an operator's SMSC / USSD gateway does,
records every PDU both ways, and misbehaves on demand (drops, throttling, withheld or
late responses, resent `deliver_sm`) so tests can show nothing is lost or duplicated.

The invariant the fault tools keep: a `submit_sm` counts as delivered (seen by
`next_mt` / `next_screen`, listed in `accepted_submits`) exactly when the simulator
answers it `ESME_ROK` - or when a withheld response was explicitly marked delivered.

Testers drive it in-process (`start_ussd`, `send_mo`, `next_mt`, ...) or, from another
process, through a small HTTP control API (`control_port`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, TypeVar

from aiohttp import web

from ussd_gateway.core.errors import BadRequest
from ussd_gateway.core.msisdn import normalise_msisdn

from ussd_gateway.channels.smpp.config import UssdDialect
from ussd_gateway.channels.smpp.encoding import Concat, decode_sms, decode_text, encode_text, parse_udh
from ussd_gateway.channels.smpp.pdu import (
    ESME_RALYBND,
    ESME_RINVBNDSTS,
    ESME_RINVCMDID,
    ESME_RINVCMDLEN,
    ESME_RINVPASWD,
    ESME_RINVSYSID,
    ESME_ROK,
    ESME_RTHROTTLED,
    HEADER_BYTES,
    MAX_PDU_BYTES,
    Pdu,
    PduError,
    decode,
    encode,
    frame_length,
)

__all__ = [
    "BindInfo",
    "LoggedPdu",
    "MtSms",
    "SmscError",
    "SmscSimulator",
    "UssdDialogue",
    "UssdScreen",
    "format_pdu",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

BindMode = Literal["transceiver", "transmitter", "receiver"]
_BIND_COMMANDS: dict[str, BindMode] = {
    "bind_transceiver": "transceiver",
    "bind_transmitter": "transmitter",
    "bind_receiver": "receiver",
}
_UDHI = 0x40
_ESM_RECEIPT = 0x04
_MESSAGE_STATES = {
    "ENROUTE": 1, "DELIVRD": 2, "EXPIRED": 3, "DELETED": 4,
    "UNDELIV": 5, "ACCEPTD": 6, "UNKNOWN": 7, "REJECTD": 8,
}  # fmt: skip


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


@dataclass
class _SubmitFaults:
    """Pending faults for the next `submit_sm`s, applied in the order they arrive."""

    throttle: int = 0
    throttle_status: int = ESME_RTHROTTLED
    withhold: int = 0
    withhold_deliver: bool = False
    delay_s: float = 0.0
    delay_count: int | None = None
    """How many more submits to delay; None: until changed."""


class _Link:
    """One TCP connection from an ESME and its bind state."""

    def __init__(self, bind_id: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.bind_id = bind_id
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.system_id = ""
        self.mode: BindMode | None = None
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def can_receive(self) -> bool:
        return self.mode in ("transceiver", "receiver")

    @property
    def can_transmit(self) -> bool:
        return self.mode in ("transceiver", "transmitter")

    def info(self) -> BindInfo:
        assert self.mode is not None
        return BindInfo(self.bind_id, self.system_id, self.mode, self.peer)

    def spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class SmscSimulator:
    """An SMPP 3.4 server (SMSC side) on asyncio streams.

    Args:
        host, port: where to listen; port 0 picks a free one (see `port`).
        accounts: system_id -> password accepted on bind.
        dialect: how USSD travels (ops, `its_session_info` end bit, service_type).
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
    ) -> None:
        self.host = host
        self._port = port
        self.accounts: dict[str, str] = dict(accounts if accounts is not None else {"ussdgw": "secret"})
        self.dialect = dialect
        self._control_port = control_port
        self.enquire_link_s = enquire_link_s
        self.gsm7_packed = gsm7_packed
        self.on_pdu = on_pdu
        self.pdu_log_limit = pdu_log_limit
        self.system_id = system_id

        self.pdus: list[LoggedPdu] = []
        """Every PDU both ways, oldest first (`pdu_log_base` entries were dropped)."""
        self.pdu_log_base = 0
        self.accepted_submits: list[Pdu] = []
        """Every `submit_sm` counted as delivered, in order (duplicates show here)."""
        self.dialogues: dict[int, UssdDialogue] = {}
        self.orphan_screens: list[UssdScreen] = []
        """USSD `submit_sm`s that matched no dialogue of ours."""

        self._server: asyncio.Server | None = None
        self._runner: web.AppRunner | None = None
        self._links: dict[int, _Link] = {}
        self._bind_ids = itertools.count(1)
        self._sequences = itertools.count(1)
        self._message_ids = itertools.count(1)
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
        self._round_robin = itertools.count()
        self._faults = _SubmitFaults()
        self._resend_next = 0
        self._mts: list[tuple[int, MtSms]] = []
        self._mt_serial = 0
        self._parts: dict[tuple[str, str, int, int], dict[int, tuple[bytes, Pdu]]] = {}
        self._deliver_resps: dict[int, int] = {}
        self._waiters: dict[Hashable, list[asyncio.Future[None]]] = {}
        """Who waits for what: "binds", "mt", ("dialogue", id), ("resp", sequence). Keyed so
        a screen wakes only its dialogue's reader, not every waiter (benchmarks run
        hundreds of dialogues at once)."""
        self._closing = False

    # ---- lifecycle -----------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The bound SMPP port (after `start`)."""
        return self._port

    @property
    def control_port(self) -> int | None:
        """The bound control HTTP port, or None when the control API is off."""
        return self._control_port

    async def start(self) -> None:
        """Listen for binds (and serve the control API when configured)."""
        self._closing = False
        self._server = await asyncio.start_server(self._serve_link, self.host, self._port, limit=MAX_PDU_BYTES)
        self._port = self._server.sockets[0].getsockname()[1]
        if self._control_port is not None:
            self._runner = web.AppRunner(_control_app(self), access_log=None)
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

    @property
    def binds(self) -> list[BindInfo]:
        """The bound connections, in bind order."""
        return [link.info() for link in self._links.values() if link.mode is not None and not link.closed]

    async def wait_bound(self, timeout: float = 5.0, *, count: int = 1, receiver: bool = False) -> list[BindInfo]:
        """Wait until at least `count` connections are bound (with `receiver`: at least
        one of them can receive `deliver_sm`); returns the binds."""

        def ready() -> list[BindInfo] | None:
            binds = self.binds
            if len(binds) < count or (receiver and not any(b.mode != "transmitter" for b in binds)):
                return None
            return binds

        return await self._wait_for("binds", ready, timeout)

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
        _trim_mapping(self.dialogues, self.pdu_log_limit)
        subscriber = _subscriber(msisdn)
        self._open[(subscriber, number)] = self._open[(subscriber, None)] = dialogue
        await self._send_ussd(dialogue, self.dialect.op_begin[0], code)
        return dialogue

    async def _send_ussd(self, dialogue: UssdDialogue, op: int, text: str, *, end: bool = False) -> int:
        data_coding, payload = encode_text(text, packed=self.gsm7_packed)
        fields: dict[str, Any] = {
            "service_type": self.dialect.service_type,
            "source_addr_ton": 1,
            "source_addr_npi": 1,
            "source_addr": dialogue.msisdn,
            "dest_addr_ton": 0,
            "dest_addr_npi": 1,
            "destination_addr": dialogue.destination,
            "esm_class": 0,
            "data_coding": data_coding,
            "short_message": payload,
            "ussd_service_op": op,
            "user_message_reference": next(self._umr) % 0x10000,
        }
        session = dialogue.session_info | (self.dialect.end_bit if end else 0)
        if self.dialect.session_id_from == "its_session_info":
            fields["its_session_info"] = session
        elif self.dialect.session_id_from == "receipted_message_id":
            fields["receipted_message_id"] = str(dialogue.number)
        return await self._send_deliver(fields)

    # ---- tester API: SMS -----------------------------------------------------------------
    async def send_mo(self, msisdn: str, short_code: str, text: str, *, data_coding: int | None = None) -> int:
        """An MO SMS from `msisdn` to `short_code`: GSM-7 when it fits, else UCS-2, or the
        forced `data_coding` (0, 1 IA5, 3 Latin-1, 8 UCS-2). Returns the sequence."""
        coding, payload = _encode_mo(text, data_coding, packed=self.gsm7_packed)
        fields: dict[str, Any] = {
            "source_addr_ton": 1,
            "source_addr_npi": 1,
            "source_addr": msisdn,
            "dest_addr_ton": 0,
            "dest_addr_npi": 1,
            "destination_addr": short_code,
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
                "source_addr_ton": 1,
                "source_addr_npi": 1,
                "source_addr": msisdn,
                "dest_addr_ton": 0,
                "dest_addr_npi": 1,
                "destination_addr": short_code,
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
                if serial > after and (msisdn is None or _same_number(sms.to, msisdn)) and (sender is None or sms.sender == sender):
                    del self._mts[index]
                    return sms
            return None

        return await self._wait_for("mt", take, timeout)

    def _next_mt_now(self, msisdn: str) -> MtSms | None:
        """Take the oldest queued MT to `msisdn` without waiting; None when there is none."""
        for index, (_serial, sms) in enumerate(self._mts):
            if _same_number(sms.to, msisdn):
                del self._mts[index]
                return sms
        return None

    async def wait_deliver_resp(self, sequence: int, timeout: float = 5.0) -> int:
        """Wait for the ESME's `deliver_sm_resp` to our `deliver_sm` `sequence`; its status."""
        return await self._wait_for(("resp", sequence), lambda: self._deliver_resps.get(sequence), timeout)

    # ---- faults --------------------------------------------------------------------------
    async def drop_links(self) -> None:
        """Close every connection abruptly (no unbind), as a network failure does."""
        links = list(self._links.values())
        for link in links:
            link.closed = True
            link.writer.transport.abort()
        await self._close_links(links)

    def delay_submit_resp(self, seconds: float, count: int | None = None) -> None:
        """Answer `submit_sm` only after `seconds` (the next `count` of them, or all until
        set back to 0). A delayed submit is delivered when its response goes out."""
        if seconds < 0:
            raise ValueError(f"delay {seconds!r} must not be negative")
        self._faults.delay_s = seconds
        self._faults.delay_count = count

    def withhold_submit_resp(self, count: int, *, deliver: bool = False) -> None:
        """Never answer the next `count` `submit_sm`. By default they are not delivered
        either (the request was lost); `deliver=True` models a lost response instead."""
        self._faults.withhold = count
        self._faults.withhold_deliver = deliver

    def throttle_next(self, count: int, status: int = ESME_RTHROTTLED) -> None:
        """Answer the next `count` `submit_sm` with error `status`, not delivering them."""
        self._faults.throttle = count
        self._faults.throttle_status = status

    def resend_next_deliver(self, count: int = 1) -> None:
        """Send the next `count` `deliver_sm` twice (the second with a new sequence), as an
        SMSC does when it believes the `deliver_sm_resp` was lost."""
        self._resend_next = count

    # ---- internals: waiting --------------------------------------------------------------
    def _wake(self, *keys: Hashable) -> None:
        for key in keys:
            for waiter in self._waiters.pop(key, ()):
                if not waiter.done():
                    waiter.set_result(None)

    async def _wait_for(self, key: Hashable, ready: Callable[[], T | None], timeout: float) -> T:
        """Re-check `ready` whenever `key` changes until it returns something.

        Raises:
            TimeoutError: after `timeout` seconds.
        """
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while True:
                result = ready()
                if result is not None:
                    return result
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters.setdefault(key, []).append(waiter)
                try:
                    await waiter
                finally:
                    waiters = self._waiters.get(key)
                    if waiters and waiter in waiters:
                        waiters.remove(waiter)

    # ---- internals: the wire -------------------------------------------------------------
    def _log(self, direction: Literal["in", "out"], link: _Link, command: str, sequence: int, status: int,
             fields: Mapping[str, Any]) -> None:  # fmt: skip
        entry = LoggedPdu(time.time(), direction, link.bind_id, command, sequence, status, fields)
        self.pdus.append(entry)
        if len(self.pdus) > self.pdu_log_limit:
            dropped = len(self.pdus) - self.pdu_log_limit // 2
            del self.pdus[:dropped]
            self.pdu_log_base += dropped
        if self.on_pdu is not None:
            try:
                self.on_pdu(entry)
            except Exception:  # a printing problem must not take the link down
                logger.exception("on_pdu callback failed")

    def _send(self, link: _Link, command: str, *, sequence: int, status: int = ESME_ROK, **fields: Any) -> bool:
        """Write one PDU; False when the link is already gone (the PDU is then not sent)."""
        if link.closed or link.writer.is_closing():
            return False
        link.writer.write(encode(command, sequence=sequence, status=status, **fields))
        self._log("out", link, command, sequence, status, fields)
        return True

    def _receivers(self) -> list[_Link]:
        return [link for link in self._links.values() if link.can_receive and not link.closed]

    async def _send_deliver(self, fields: dict[str, Any]) -> int:
        receivers = self._receivers()
        if not receivers:
            raise SmscError("no receiver-capable bind to send deliver_sm on (is the gateway bound?)")
        link = receivers[next(self._round_robin) % len(receivers)]
        sequence = next(self._sequences)
        self._send(link, "deliver_sm", sequence=sequence, **fields)
        if self._resend_next > 0:
            self._resend_next -= 1
            self._send(link, "deliver_sm", sequence=next(self._sequences), **fields)
        try:
            await link.writer.drain()
        except ConnectionError as error:
            raise SmscError(f"bind {link.bind_id} went down while sending deliver_sm: {error}") from error
        return sequence

    async def _close_links(self, links: Iterable[_Link]) -> None:
        current = asyncio.current_task()
        tasks = [link.task for link in links if link.task is not None and link.task is not current]
        for link in links:
            if not link.closed:
                link.closed = True
                link.writer.close()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)

    async def _serve_link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(next(self._bind_ids), reader, writer)
        link.task = asyncio.current_task()  # type: ignore[assignment]
        if self._closing:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return
        self._links[link.bind_id] = link
        try:
            while await self._read_one(link):
                pass
        except asyncio.CancelledError:
            pass
        except Exception:  # never let one ESME's bytes take the simulator down
            logger.exception("bind %d failed; closing it", link.bind_id)
        finally:
            await self._finish_link(link)

    async def _finish_link(self, link: _Link) -> None:
        link.closed = True
        self._links.pop(link.bind_id, None)
        for task in list(link.tasks):
            task.cancel()
        if link.tasks:
            await asyncio.gather(*link.tasks, return_exceptions=True)
        link.writer.close()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(link.writer.wait_closed(), 1.0)
        self._wake("binds")

    async def _read_one(self, link: _Link) -> bool:
        """Read and handle one PDU; False when the connection is over."""
        try:
            header = await link.reader.readexactly(4)
        except (asyncio.IncompleteReadError, ConnectionError):
            return False
        length = frame_length(header)
        if not HEADER_BYTES <= length <= MAX_PDU_BYTES:
            # The framing is lost: nothing after this can be trusted, so nack and hang up.
            error = f"command_length {length} is out of range"
            self._log("in", link, "invalid", 0, ESME_RINVCMDLEN, {"error": error, "data": header})
            self._send(link, "generic_nack", sequence=0, status=ESME_RINVCMDLEN)
            return False
        try:
            body = await link.reader.readexactly(length - 4)
        except (asyncio.IncompleteReadError, ConnectionError):
            return False
        try:
            pdu = decode(header + body)
        except PduError as error:
            # The frame was whole, so the stream is still in step: nack this one, go on.
            sequence = error.sequence or 0
            self._log("in", link, "invalid", sequence, error.status, {"error": error.message, "data": header + body})
            self._send(link, "generic_nack", sequence=sequence, status=error.status)
            return True
        self._log("in", link, pdu.command, pdu.sequence, pdu.status, pdu.fields)
        going_on = self._handle(link, pdu)
        try:
            await link.writer.drain()  # an ESME that never reads must not grow our buffer
        except ConnectionError:
            return False
        return going_on

    def _handle(self, link: _Link, pdu: Pdu) -> bool:
        command = pdu.command
        if command.endswith("_resp") or command == "generic_nack":
            if command == "deliver_sm_resp":
                self._deliver_resps[pdu.sequence] = pdu.status
                _trim_mapping(self._deliver_resps, self.pdu_log_limit)
                self._wake(("resp", pdu.sequence))
            elif command == "unbind_resp":
                return False
            return True
        if command in _BIND_COMMANDS:
            self._bind(link, pdu, _BIND_COMMANDS[command])
        elif command == "enquire_link":
            self._send(link, "enquire_link_resp", sequence=pdu.sequence)
        elif command == "unbind":
            self._send(link, "unbind_resp", sequence=pdu.sequence)
            return False
        elif command == "submit_sm":
            if not link.can_transmit:
                self._send(link, "submit_sm_resp", sequence=pdu.sequence, status=ESME_RINVBNDSTS)
            else:
                self._submit(link, pdu)
        else:
            self._send(link, "generic_nack", sequence=pdu.sequence, status=ESME_RINVCMDID)
        return True

    def _bind(self, link: _Link, pdu: Pdu, mode: BindMode) -> None:
        response = f"bind_{mode}_resp"
        system_id = str(pdu.fields.get("system_id", ""))
        if link.mode is not None:
            status = ESME_RALYBND
        elif system_id not in self.accounts:
            status = ESME_RINVSYSID
        elif self.accounts[system_id] != pdu.fields.get("password", ""):
            status = ESME_RINVPASWD
        else:
            status = ESME_ROK
        if status != ESME_ROK:
            self._send(link, response, sequence=pdu.sequence, status=status)
            return
        self._send(link, response, sequence=pdu.sequence, system_id=self.system_id)
        link.system_id, link.mode = system_id, mode
        if self.enquire_link_s:
            link.spawn(self._enquire_loop(link, self.enquire_link_s))
        self._wake("binds")

    async def _enquire_loop(self, link: _Link, every: float) -> None:
        while not link.closed:
            await asyncio.sleep(every)
            self._send(link, "enquire_link", sequence=next(self._sequences))

    def _submit(self, link: _Link, pdu: Pdu) -> None:
        faults = self._faults
        if faults.throttle > 0:
            faults.throttle -= 1
            self._send(link, "submit_sm_resp", sequence=pdu.sequence, status=faults.throttle_status)
            return
        if faults.withhold > 0:
            faults.withhold -= 1
            if faults.withhold_deliver:
                self._accept(pdu)
            return
        message_id = f"{next(self._message_ids):08X}"
        if faults.delay_s > 0 and (faults.delay_count is None or faults.delay_count > 0):
            if faults.delay_count is not None:
                faults.delay_count -= 1
            link.spawn(self._respond_later(link, pdu, message_id, faults.delay_s))
            return
        if self._send(link, "submit_sm_resp", sequence=pdu.sequence, message_id=message_id):
            self._accept(pdu)

    async def _respond_later(self, link: _Link, pdu: Pdu, message_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._send(link, "submit_sm_resp", sequence=pdu.sequence, message_id=message_id):
            self._accept(pdu)

    # ---- internals: what the gateway sent ------------------------------------------------
    def _accept(self, pdu: Pdu) -> None:
        """Count an accepted `submit_sm`: a USSD screen or (a part of) an MT SMS."""
        _append_bounded(self.accepted_submits, pdu, self.pdu_log_limit)
        if "ussd_service_op" in pdu.fields:
            self._accept_screen(pdu)
        else:
            self._accept_mt(pdu)

    def _text(self, data_coding: int, payload: bytes) -> str:
        return decode_text(data_coding, payload, packed=self.gsm7_packed)

    def _accept_screen(self, pdu: Pdu) -> None:
        fields = pdu.fields
        payload = fields.get("message_payload") or fields.get("short_message", b"")
        session = fields.get("its_session_info")
        end_bit = self.dialect.end_bit
        end = fields.get("ussd_service_op") == self.dialect.op_reply_end or bool(
            session is not None and int(session) & end_bit
        )
        screen = UssdScreen(self._text(int(fields.get("data_coding", 0)), payload), end, pdu)
        dialogue = self._find_dialogue(str(fields.get("destination_addr", "")), fields)
        if dialogue is None:
            _append_bounded(self.orphan_screens, screen, self.pdu_log_limit)
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
        elif source == "receipted_message_id" and fields.get("receipted_message_id"):
            try:
                number = int(fields["receipted_message_id"])
            except ValueError:
                return None
        return self._open.get((_subscriber(destination), number))

    def _end_dialogue(self, dialogue: UssdDialogue) -> None:
        """No more screens are expected: later ones for its session are orphans."""
        dialogue.ended = True
        subscriber = _subscriber(dialogue.msisdn)
        for key in ((subscriber, dialogue.number), (subscriber, None)):
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
        _append_bounded(self._mts, (self._mt_serial, sms), self.pdu_log_limit)
        self._wake("mt")


# ---- helpers ------------------------------------------------------------------------------
def _append_bounded(items: list[T], item: T, limit: int) -> None:
    """Append, dropping the oldest half past `limit`: a simulator left running (or a
    benchmark nobody drains) must not grow without end."""
    items.append(item)
    if len(items) > limit:
        del items[: len(items) - limit // 2]


def _trim_mapping(items: dict[Any, Any], limit: int) -> None:
    if len(items) > limit:
        for key in list(itertools.islice(items, len(items) - limit // 2)):
            del items[key]


def _subscriber(msisdn: str) -> str:
    """One key per subscriber, whichever way the number is written (a gateway may
    answer `+84...` to `84...`)."""
    try:
        return normalise_msisdn(msisdn)
    except BadRequest:
        return msisdn


def _same_number(a: str, b: str) -> bool:
    return a == b or _subscriber(a) == _subscriber(b)


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


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return value.hex()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _pdu_text(fields: Mapping[str, Any], packed: bool) -> str | None:
    """The text a PDU carries, for the log (None when it carries none)."""
    data_coding = int(fields.get("data_coding", 0) or 0)
    payload = fields.get("message_payload")
    if isinstance(payload, bytes) and payload:
        return decode_text(data_coding, payload, packed=packed)
    short_message = fields.get("short_message")
    if not isinstance(short_message, bytes) or not short_message:
        return None
    return decode_sms(data_coding, int(fields.get("esm_class", 0) or 0), short_message, packed=packed)[1]


def format_pdu(entry: LoggedPdu, *, mask: Callable[[str], str] = lambda number: number, packed: bool = False) -> str:
    """One line for a PDU: time, direction, bind, command, sequence, status, key fields.

    Addresses of 8 characters or more are passed through `mask` (phone numbers are
    personal data); shorter ones are short or service codes and shown as they are.
    """
    clock = time.strftime("%H:%M:%S", time.localtime(entry.at)) + f".{int(entry.at * 1000) % 1000:03d}"
    parts = [clock, f"{entry.direction:<3}", f"#{entry.bind_id}", entry.command, f"seq={entry.sequence}"]
    if entry.status or entry.command.endswith("_resp") or entry.command == "generic_nack":
        parts.append(f"status=0x{entry.status:08X}")
    fields = entry.fields
    for name, label in (("source_addr", "from"), ("destination_addr", "to")):
        if fields.get(name):
            address = str(fields[name])
            parts.append(f"{label}={mask(address) if len(address) >= 8 else address}")
    for name, label in (
        ("system_id", "system_id"), ("message_id", "message_id"), ("service_type", "service_type"),
        ("esm_class", "esm"), ("data_coding", "dc"), ("ussd_service_op", "op"),
        ("receipted_message_id", "receipt"), ("message_state", "state"), ("error", "error"),
    ):  # fmt: skip
        value = fields.get(name)
        if value not in (None, "", 0) or (name == "ussd_service_op" and value is not None):
            parts.append(f"{label}={value}")
    if fields.get("its_session_info") is not None:
        parts.append(f"session=0x{int(fields['its_session_info']):04X}")
    text = _pdu_text(fields, packed)
    if text is not None:
        parts.append(f"text={text[:60] + ('…' if len(text) > 60 else '')!r}")
    return " ".join(parts)


# ---- the control HTTP API ----------------------------------------------------------------
def _bad(reason: str, status: int = 400) -> web.Response:
    return web.json_response({"error": reason}, status=status)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"the body is not JSON: {error}"}), content_type="application/json"
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=json.dumps({"error": "the body must be a JSON object"}), content_type="application/json")
    return body


def _field(body: Mapping[str, Any], name: str, kind: type, default: Any = ...) -> Any:
    value = body.get(name, default)
    if value is ...:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"{name!r} is required"}), content_type="application/json")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool) and kind is not bool):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"{name!r} must be {kind.__name__}, not {value!r}"}), content_type="application/json"
        )
    return value


def _timeout(body: Mapping[str, Any], default: float) -> float:
    timeout = _field(body, "timeout", float, default)
    if not 0 < timeout <= 60:
        raise web.HTTPBadRequest(text=json.dumps({"error": "'timeout' must be in (0, 60] seconds"}), content_type="application/json")
    return float(timeout)


def _screen_json(screen: UssdScreen) -> dict[str, Any]:
    return {"text": screen.text, "end": screen.end}


def _control_app(sim: SmscSimulator) -> web.Application:
    """Routes for driving a running simulator from another process (all JSON)."""

    def dialogue_of(request: web.Request) -> UssdDialogue:
        try:
            number = int(request.match_info["id"])
        except ValueError:
            raise web.HTTPBadRequest(text=json.dumps({"error": "dialogue id must be an integer"}), content_type="application/json") from None
        dialogue = sim.dialogues.get(number)
        if dialogue is None:
            raise web.HTTPNotFound(text=json.dumps({"error": f"no dialogue {number}"}), content_type="application/json")
        return dialogue

    async def screen_response(dialogue: UssdDialogue, timeout: float) -> web.Response:
        """The gateway's next screen for `dialogue`, or 504 when none comes in time."""
        try:
            screen = await dialogue.next_screen(timeout)
        except TimeoutError:
            return web.json_response({"error": "no screen from the gateway in time", "dialogue_id": dialogue.id}, status=504)
        return web.json_response({"dialogue_id": dialogue.id, "screen": _screen_json(screen)})

    async def ussd_start(request: web.Request) -> web.Response:
        body = await _json_body(request)
        msisdn = _field(body, "msisdn", str)
        code = _field(body, "code", str, "*090#")
        timeout = _timeout(body, 5.0)
        try:
            dialogue = await sim.start_ussd(msisdn, code)
        except SmscError as error:
            return _bad(str(error), 409)
        return await screen_response(dialogue, timeout)

    async def ussd_answer(request: web.Request) -> web.Response:
        dialogue = dialogue_of(request)
        body = await _json_body(request)
        text = _field(body, "text", str)
        timeout = _timeout(body, 5.0)
        try:
            await dialogue.answer(text)
        except SmscError as error:
            return _bad(str(error), 409)
        return await screen_response(dialogue, timeout)

    async def ussd_abort(request: web.Request) -> web.Response:
        dialogue = dialogue_of(request)
        try:
            await dialogue.abort()
        except SmscError as error:
            return _bad(str(error), 409)
        return web.json_response({"dialogue_id": dialogue.id, "aborted": True})

    async def mo(request: web.Request) -> web.Response:
        body = await _json_body(request)
        msisdn, short_code, text = _field(body, "msisdn", str), _field(body, "short_code", str), _field(body, "text", str)
        data_coding = _field(body, "data_coding", int, None)
        timeout = _timeout(body, 3.0)
        # `reply_from`: only an MT from this sender is the reply (a purchase confirmation
        # drained at the same moment is left queued for GET /mt).
        reply_from = _field(body, "reply_from", str, None)
        mark = sim._mt_serial  # MTs accepted before the MO are not its reply
        try:
            await sim.send_mo(msisdn, short_code, text, data_coding=data_coding)
        except ValueError as error:
            return _bad(str(error))
        except SmscError as error:
            return _bad(str(error), 409)
        try:
            reply = await sim._next_mt(msisdn, timeout, after=mark, sender=reply_from)
        except TimeoutError:
            return web.json_response({"reply": None})
        return web.json_response({"reply": reply.text, "parts": reply.parts})

    async def mt(request: web.Request) -> web.Response:
        """Take every MT SMS queued for `msisdn` (waiting up to `timeout` seconds for
        the first one; 0: do not wait): what a handset received. Replays use it for
        "expect an SMS" (a purchase confirmation drained through the bind)."""
        msisdn = request.query.get("msisdn", "")
        if not msisdn:
            return _bad("'msisdn' is required")
        try:
            timeout = float(request.query.get("timeout", "0"))
        except ValueError:
            return _bad("'timeout' must be a number of seconds")
        if not 0 <= timeout <= 60:
            return _bad("'timeout' must be in [0, 60] seconds")
        taken: list[MtSms] = []
        try:
            taken.append(await sim._next_mt(msisdn, timeout, after=0) if timeout else sim._next_mt_now(msisdn))
        except TimeoutError:
            pass
        while (more := sim._next_mt_now(msisdn)) is not None:
            taken.append(more)
        return web.json_response({"sms": [{"to": s.to, "from": s.sender, "text": s.text, "parts": s.parts} for s in taken if s is not None]})

    async def receipt(request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            sequence = await sim.send_receipt(
                _field(body, "msisdn", str), _field(body, "short_code", str),
                _field(body, "message_id", str), _field(body, "state", str, "DELIVRD"),
            )  # fmt: skip
        except ValueError as error:
            return _bad(str(error))
        except SmscError as error:
            return _bad(str(error), 409)
        return web.json_response({"sequence": sequence})

    async def pdus(request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            return _bad("'since' must be an integer")
        if since < 0:
            return _bad("'since' must not be negative")
        start = max(since - sim.pdu_log_base, 0)
        entries = [
            {
                "index": sim.pdu_log_base + start + n,
                "at": entry.at,
                "direction": entry.direction,
                "bind_id": entry.bind_id,
                "command": entry.command,
                "sequence": entry.sequence,
                "status": entry.status,
                "fields": _jsonable(entry.fields),
                "text": _pdu_text(entry.fields, sim.gsm7_packed),
            }
            for n, entry in enumerate(sim.pdus[start:])
        ]
        return web.json_response({"pdus": entries, "next": sim.pdu_log_base + len(sim.pdus)})

    async def binds(request: web.Request) -> web.Response:
        return web.json_response(
            {"binds": [{"bind_id": b.bind_id, "system_id": b.system_id, "mode": b.mode, "peer": b.peer} for b in sim.binds]}
        )

    async def faults(request: web.Request) -> web.Response:
        body = await _json_body(request)
        known = {"drop_links", "throttle", "withhold", "delay", "resend_next_deliver"}
        unknown = sorted(set(body) - known)
        if unknown or not body:
            return _bad(f"unknown fault(s) {', '.join(unknown)}; use {', '.join(sorted(known))}" if unknown else "no fault given")
        actions: list[Callable[[], Any]] = []
        try:
            for name, value in body.items():
                actions.append(_fault_action(sim, name, value))
        except ValueError as error:
            return _bad(str(error))
        for action in actions:
            result = action()
            if asyncio.iscoroutine(result):
                await result
        return web.json_response({"applied": list(body)})

    app = web.Application()
    app.router.add_post("/ussd/start", ussd_start)
    app.router.add_post("/ussd/{id}/answer", ussd_answer)
    app.router.add_post("/ussd/{id}/abort", ussd_abort)
    app.router.add_post("/mo", mo)
    app.router.add_post("/receipt", receipt)
    app.router.add_get("/mt", mt)
    app.router.add_get("/pdus", pdus)
    app.router.add_get("/binds", binds)
    app.router.add_post("/faults", faults)
    return app


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name!r} count must be a non-negative integer, not {value!r}")
    return value


def _fault_action(sim: SmscSimulator, name: str, value: Any) -> Callable[[], Any]:
    """Validate one `/faults` entry and return what applies it (nothing applies until all
    entries are valid)."""
    if name == "drop_links":
        if value is not True:
            raise ValueError("'drop_links' must be true")
        return sim.drop_links
    if name == "resend_next_deliver":
        count = 1 if value is True else _count(name, value)
        return lambda: sim.resend_next_deliver(count)
    if name == "delay":
        spec = value if isinstance(value, dict) else {"seconds": value}
        seconds, count = spec.get("seconds"), spec.get("count")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds <= 600:
            raise ValueError(f"'delay' seconds must be a number in [0, 600], not {seconds!r}")
        count = None if count is None else _count(name, count)
        return lambda: sim.delay_submit_resp(float(seconds), count)
    if name == "throttle":
        spec = value if isinstance(value, dict) else {"count": value}
        count = _count(name, spec.get("count"))
        status = spec.get("status", ESME_RTHROTTLED)
        if isinstance(status, bool) or not isinstance(status, int) or not 0 < status <= 0xFFFFFFFF:
            raise ValueError(f"'throttle' status must be a non-zero SMPP status, not {status!r}")
        return lambda: sim.throttle_next(count, status)
    if name == "withhold":
        spec = value if isinstance(value, dict) else {"count": value}
        count = _count(name, spec.get("count"))
        deliver = spec.get("deliver", False)
        if not isinstance(deliver, bool):
            raise ValueError(f"'withhold' deliver must be true or false, not {deliver!r}")
        return lambda: sim.withhold_submit_resp(count, deliver=deliver)
    raise ValueError(f"unknown fault {name!r}")
