"""The SMSC simulator's wire side: an SMPP 3.4 server that binds ESMEs and answers their PDUs.

`SmppServer` owns the TCP connections and everything that happens on them: binds and
their accounts, `enquire_link`, `unbind`, the PDU log, `deliver_sm` sent round robin over
the receiver-capable binds, and `submit_sm` answered with the pending faults applied. What
an accepted `submit_sm` means (a USSD screen, a part of an MT SMS) is the subclass's
business (`SmscSimulator._accept`), as is the tester API built on top; keeping the wire
here keeps each of the two under one concept.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, Literal, TypeVar

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
from ussd_gateway.testkit.smsc.faults import Delay, SubmitFaults, Throttle, Withhold
from ussd_gateway.testkit.smsc.records import BindInfo, BindMode, LoggedPdu, SmscError, trim_mapping

logger = logging.getLogger(__name__)
T = TypeVar("T")

_BIND_COMMANDS: dict[str, BindMode] = {
    "bind_transceiver": "transceiver",
    "bind_transmitter": "transmitter",
    "bind_receiver": "receiver",
}


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


class SmppServer:
    """The SMSC side of SMPP 3.4 on asyncio streams: binds, PDUs both ways, faults.

    Args:
        host, port: where to listen; port 0 picks a free one (see `port`).
        accounts: system_id -> password accepted on bind.
        enquire_link_s: send our own `enquire_link` this often on each bind; None: never.
        on_pdu: called with every logged PDU.
        pdu_log_limit: keep at most this many entries in `pdus` (the oldest half is
            dropped past it).
        system_id: the `system_id` our bind responses carry.
    """

    def __init__(
        self,
        host: str,
        port: int,
        accounts: Mapping[str, str] | None,
        *,
        enquire_link_s: float | None,
        on_pdu: Callable[[LoggedPdu], None] | None,
        pdu_log_limit: int,
        system_id: str,
    ) -> None:
        self.host = host
        self._port = port
        self.accounts: dict[str, str] = dict(accounts if accounts is not None else {"ussdgw": "secret"})
        self.enquire_link_s = enquire_link_s
        self.on_pdu = on_pdu
        self.pdu_log_limit = pdu_log_limit
        self.system_id = system_id

        self.pdus: list[LoggedPdu] = []
        """Every PDU both ways, oldest first (`pdu_log_base` entries were dropped)."""
        self.pdu_log_base = 0

        self._server: asyncio.Server | None = None
        self._links: dict[int, _Link] = {}
        self._bind_ids = itertools.count(1)
        self._sequences = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._round_robin = itertools.count()
        self._faults = SubmitFaults()
        self._resend_next = 0
        self._deliver_resps: dict[int, int] = {}
        self._waiters: dict[Hashable, list[asyncio.Future[None]]] = {}
        """Who waits for what: "binds", "mt", ("dialogue", id), ("resp", sequence). Keyed so
        a screen wakes only its dialogue's reader, not every waiter (benchmarks run
        hundreds of dialogues at once)."""
        self._closing = False

    @property
    def port(self) -> int:
        """The bound SMPP port (after `start`)."""
        return self._port

    async def _listen(self) -> None:
        """Accept connections on `host`:`port` (learning the port when it was 0)."""
        self._closing = False
        self._server = await asyncio.start_server(self._serve_link, self.host, self._port, limit=MAX_PDU_BYTES)
        self._port = self._server.sockets[0].getsockname()[1]

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
                trim_mapping(self._deliver_resps, self.pdu_log_limit)
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
        fault = self._faults.take()
        if isinstance(fault, Throttle):
            self._send(link, "submit_sm_resp", sequence=pdu.sequence, status=fault.status)
            return
        if isinstance(fault, Withhold):
            if fault.deliver:
                self._accept(pdu)
            return
        message_id = f"{next(self._message_ids):08X}"
        if isinstance(fault, Delay):
            link.spawn(self._respond_later(link, pdu, message_id, fault.seconds))
            return
        if self._send(link, "submit_sm_resp", sequence=pdu.sequence, message_id=message_id):
            self._accept(pdu, message_id)

    async def _respond_later(self, link: _Link, pdu: Pdu, message_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._send(link, "submit_sm_resp", sequence=pdu.sequence, message_id=message_id):
            self._accept(pdu, message_id)

    def _accept(self, pdu: Pdu, message_id: str = "") -> None:
        """Count a `submit_sm` as delivered (answered `ESME_ROK`, or withheld and marked
        delivered); what it means is the subclass's business."""
        raise NotImplementedError
