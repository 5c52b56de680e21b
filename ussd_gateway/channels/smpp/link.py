"""`SmppLink`: one configured bind kept up over asyncio, around `EsmeSession`.

The I/O shell around the sans-IO session: each TCP connection (`connection`) feeds
bytes and the clock into its session and hands the session's events here, where they
become futures and tasks. Every protocol rule lives in `protocol`; what lives here is
what needs a clock and a loop: reconnecting with capped, jittered exponential backoff,
waiting for a window slot, slowing down when the SMSC throttles, running `deliver_sm`
handlers concurrently (bounded) so a slow one never blocks the link, and a graceful
stop. Nothing here blocks the loop: smpplib only encodes and decodes PDUs, it never
touches a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from ussd_gateway.channels.smpp.config import BindSettings
from ussd_gateway.channels.smpp.connection import Connection
from ussd_gateway.channels.smpp.events import (
    BindRefused,
    Bound,
    DeliverReceived,
    EnquireLinkFailed,
    Event,
    PeerUnbound,
    SubmitExpired,
    SubmitResponded,
    UnknownPduReceived,
)
from ussd_gateway.channels.smpp.metrics import SmppMetrics
from ussd_gateway.channels.smpp.pdu import ESME_RMSGQFUL, ESME_RSYSERR, ESME_RTHROTTLED, Pdu
from ussd_gateway.channels.smpp.protocol import BindAs, EsmeSession
from ussd_gateway.core.msisdn import mask_msisdn

__all__ = [
    "DeliverHandler",
    "LinkUnavailable",
    "SmppLink",
    "SubmitOutcome",
    "SubmitUnconfirmed",
]

DeliverHandler = Callable[[Pdu], Awaitable[int]]
"""Handles one deliver_sm and returns the command_status for its deliver_sm_resp."""

THROTTLE_MIN_S = 0.1
"""First pause after ESME_RTHROTTLED / ESME_RMSGQFUL; doubles per throttling episode."""
THROTTLE_MAX_S = 2.0
DELIVER_CONCURRENCY = 64
"""deliver_sm handlers running at once per link; past it, reading pauses (backpressure
to the SMSC, whose own window then holds further deliver_sm)."""

_log = structlog.get_logger("smpp.link")
_IN_DELIVER_HANDLER: contextvars.ContextVar[bool] = contextvars.ContextVar("smpp_in_deliver_handler", default=False)
"""Set in each deliver handler's task (and inherited by tasks it spawns): its submits
are the replies of in-flight hops, which `stop()` lets finish before it unbinds."""


class LinkUnavailable(Exception):
    """The submit_sm was NOT sent (the bind is down, the window stayed full, the SMSC
    kept throttling, or the link is stopping) within the caller's timeout. Nothing
    reached the SMSC, so queueing it for later cannot duplicate it."""


class SubmitUnconfirmed(Exception):
    """The submit_sm was sent but no response came (response_timeout_s passed or the
    connection dropped first). The SMSC may have accepted it: resending may duplicate
    the message, so the caller decides (a USSD reply is best dropped; an SMS may be
    resent if duplicates are tolerable)."""


@dataclass(frozen=True, slots=True)
class SubmitOutcome:
    """How the SMSC answered a submit_sm (after any throttling retries)."""

    status: int
    """command_status: ESME_ROK, or the SMSC's final error (never THROTTLED/MSGQFUL:
    those are retried until the timeout, then `LinkUnavailable`)."""
    message_id: str
    """The SMSC's id for the message, for matching delivery receipts ("" on errors)."""

    @property
    def ok(self) -> bool:
        """True when the SMSC accepted the message."""
        return self.status == 0


class SmppLink:
    """One bind (`[[smpp.binds]]`): a transceiver connection, or a transmitter for
    submits plus a receiver for delivers, each kept up until `stop()`.

    Usage: `task = create_task(link.run())`; `await link.submit(fields, timeout=...)`
    from anywhere; every deliver_sm is passed to `on_deliver`, whose returned status
    is sent back in the deliver_sm_resp; finally `await link.stop()`. A stopped link
    stays stopped (make a new one to bind again).
    """

    def __init__(
        self,
        settings: BindSettings,
        on_deliver: DeliverHandler,
        *,
        metrics: SmppMetrics | None = None,
        clock: Callable[[], float] | None = None,
        deliver_concurrency: int = DELIVER_CONCURRENCY,
    ) -> None:
        """Args:
        settings: the bind (address, credentials, mode, window, timers, backoff).
        on_deliver: awaited once per deliver_sm, in its own task; returns the status.
        metrics: where to count; a private registry when None.
        clock: the sessions' time source; the running loop's `time` by default.
        deliver_concurrency: handlers running at once, at most.
        """
        if not settings.password:
            raise ValueError(f"SMPP bind {settings.name!r} has no password: refusing to bind without one")
        self.settings = settings
        self._on_deliver = on_deliver
        self.metrics = metrics or SmppMetrics()
        self._clock = clock
        self._roles: tuple[BindAs, ...] = (
            ("transceiver",) if settings.mode == "transceiver" else ("transmitter", "receiver")
        )
        self._log = _log.bind(bind=settings.name)
        self._conns: dict[BindAs, Connection] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._done = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._stopping = False
        """No new submits (except from deliver handlers), no reconnects."""
        self._unbinding = False
        """No submits at all."""
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._inflight: set[asyncio.Future[tuple[int, str]]] = set()
        self._deliver_tasks: set[asyncio.Task[None]] = set()
        self._deliver_limit = deliver_concurrency
        self._deliver_slots = asyncio.Semaphore(deliver_concurrency)
        self._throttle_until = 0.0
        self._throttle_delay = THROTTLE_MIN_S
        self._up_gauge = self.metrics.bind_up.labels(settings.name)
        self._window_gauge = self.metrics.window_in_use.labels(settings.name)
        self._up_gauge.set(0)
        self._window_gauge.set(0)

    # ---- state ------------------------------------------------------------------------
    @property
    def up(self) -> bool:
        """True while every connection of the bind is bound."""
        return all((conn := self._conns.get(role)) is not None and conn.session.bound for role in self._roles)

    @property
    def window_in_use(self) -> int:
        """submit_sm sent and awaiting a response, over this bind's connections."""
        return sum(conn.session.window_in_use for conn in self._conns.values())

    # ---- running ----------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, bind and keep every connection up until `stop()`."""
        if self._tasks:
            raise RuntimeError(f"SmppLink {self.settings.name!r} is already running")
        self._done.clear()
        self._tasks = [
            asyncio.create_task(self._keep_connected(role), name=f"smpp-{self.settings.name}-{role}")
            for role in self._roles
        ]
        try:
            # Not gather(): stop() may cancel a role task caught mid-connect, which
            # must end run() normally, while a bug in one role must end both.
            done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._done.set()
        for task in done:
            if not task.cancelled() and (exc := task.exception()) is not None:
                raise exc

    async def submit(self, fields: dict[str, Any], *, timeout: float) -> SubmitOutcome:
        """Send one submit_sm (`fields`: smpp.pdu field names) and return the SMSC's
        answer.

        `timeout` bounds the wait for the bind and a window slot, and the retries
        after ESME_RTHROTTLED / ESME_RMSGQFUL (which slow the whole link down, not
        just this message). Once sent, the answer comes within response_timeout_s.

        Raises:
            LinkUnavailable: not sent within `timeout` (safe to retry later).
            SubmitUnconfirmed: sent, but no response (may have been delivered).
            ValueError: a field the codec refuses.
        """
        loop = asyncio.get_running_loop()
        deadline = self._now() + timeout
        while True:
            conn = await self._acquire_slot(deadline, timeout)
            ref = object()
            future: asyncio.Future[tuple[int, str]] = loop.create_future()
            conn.waiters[ref] = future
            self._inflight.add(future)
            try:
                if not conn.submit(fields, ref):
                    continue  # cannot happen right after _acquire_slot; go round again
                status, message_id = await future
            finally:
                self._inflight.discard(future)
                conn.waiters.pop(ref, None)
            if status in (ESME_RTHROTTLED, ESME_RMSGQFUL):
                self._throttled(status)
                continue  # the same message again, after the pause; bounded by deadline
            self._throttle_delay = THROTTLE_MIN_S
            return SubmitOutcome(status, message_id)

    async def stop(self, timeout: float = 5.0) -> None:
        """Shut down cleanly within about `timeout` seconds.

        New submits are refused at once (`LinkUnavailable`), except those made by
        deliver handlers (the replies of in-flight hops). Then, while the bind stays
        up: in-flight submits get their responses and running deliver handlers
        finish. Then each connection unbinds (and waits for unbind_resp), and whatever
        is still open is closed.
        """
        start = self._now()
        unbind_budget = min(self.settings.response_timeout_s, timeout / 4)
        drain_until = start + timeout - unbind_budget
        self._stopping = True
        self._stop_event.set()
        self._wake(len(self._slot_waiters))
        while (left := drain_until - self._now()) > 0:
            pending: set[asyncio.Future[Any]] = {*self._inflight, *self._deliver_tasks}
            if not pending:
                break
            await asyncio.wait(pending, timeout=left)  # and again: a handler may have submitted
        self._unbinding = True
        self._wake(len(self._slot_waiters))
        conns = list(self._conns.values())
        for conn in conns:
            conn.unbind()
        if conns:
            await asyncio.wait([conn.closed for conn in conns], timeout=max(0.0, start + timeout - self._now()))
        for conn in list(self._conns.values()):
            self._log.warning("smpp.unbind_unanswered", role=conn.role)
            conn.abort()
        for task in list(self._deliver_tasks):
            task.cancel()
        if self._deliver_tasks:
            await asyncio.gather(*self._deliver_tasks, return_exceptions=True)
        for task in self._tasks:
            task.cancel()  # wakes a connect or a backoff sleep; bound connections are gone
        if self._tasks:
            await self._done.wait()
        self._log.info("smpp.stopped")

    # ---- internals: connections -------------------------------------------------------
    def _now(self) -> float:
        clock = self._clock
        if clock is None:
            clock = self._clock = asyncio.get_running_loop().time
        return clock()

    async def _keep_connected(self, role: BindAs) -> None:
        """Connect and bind; after a drop, a refusal or a failed connect, wait
        (doubling from reconnect_min_s to reconnect_max_s, jittered so many binds do
        not all hit a restarted SMSC at once) and try again."""
        settings = self.settings
        backoff = settings.reconnect_min_s
        while not self._stopping:
            conn = await self._connect_once(role)
            if self._stopping:
                return
            if conn is not None and conn.was_bound:
                backoff = settings.reconnect_min_s  # it worked for a while: start over
            delay = backoff * random.uniform(0.5, 1.0)
            backoff = min(backoff * 2, settings.reconnect_max_s)
            self._log.info("smpp.reconnect_scheduled", role=role, delay_s=round(delay, 3))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), delay)
            if not self._stopping:
                self.metrics.reconnects.labels(settings.name).inc()

    async def _connect_once(self, role: BindAs) -> Connection | None:
        """One TCP connection's life: returns when it is closed (None: no connection)."""
        settings = self.settings
        session = EsmeSession(
            system_id=settings.system_id,
            password=settings.password,
            system_type=settings.system_type,
            bind_as=role,
            window=settings.window,
            enquire_link_s=settings.enquire_link_s,
            response_timeout_s=settings.response_timeout_s,
            pdu_observer=self._observe_pdu,
        )
        loop = asyncio.get_running_loop()
        try:
            tls = settings.ssl_context()  # a failed TLS handshake is a failed connect
            async with asyncio.timeout(settings.response_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: Connection(self, role, session), settings.host, settings.port,
                    ssl=tls, server_hostname=settings.host if tls is not None else None,
                )
        except (OSError, TimeoutError) as exc:
            self._log.warning(
                "smpp.connect_failed", role=role, host=settings.host, port=settings.port,
                error=str(exc) or type(exc).__name__,
            )
            return None
        try:
            await conn.closed
        except asyncio.CancelledError:
            conn.abort()
            with contextlib.suppress(asyncio.CancelledError):
                await conn.closed  # let connection_lost run: no transport left behind
            raise
        return conn

    def _connection_made(self, conn: Connection) -> None:
        self._conns[conn.role] = conn

    def _connection_lost(self, conn: Connection, exc: Exception | None) -> None:
        if self._conns.get(conn.role) is conn:
            del self._conns[conn.role]
        for future in conn.waiters.values():
            if not future.done():
                future.set_exception(SubmitUnconfirmed("The connection closed before the submit_sm_resp arrived."))
        conn.waiters.clear()
        if conn.reading_paused:
            conn.reading_paused = False
        self._up_gauge.set(1 if self.up else 0)
        self._window_changed()
        log = self._log.warning if conn.was_bound and not self._unbinding else self._log.info
        log("smpp.connection_lost", role=conn.role, error=str(exc) if exc else None)

    def _observe_pdu(self, direction: str, command: str, status: int) -> None:
        self.metrics.count_pdu(self.settings.name, direction, command, status)

    def _window_changed(self) -> None:
        self._window_gauge.set(self.window_in_use)

    def _handle_event(self, conn: Connection, event: Event) -> None:
        """React to one session event (ConnectionShouldClose is the pump's)."""
        if isinstance(event, SubmitResponded):
            future = conn.waiters.pop(event.ref, None)
            if future is not None and not future.done():
                future.set_result((event.status, event.message_id))
            self._wake(1)
        elif isinstance(event, DeliverReceived):
            self._start_deliver(conn, event.pdu)
        elif isinstance(event, SubmitExpired):
            future = conn.waiters.pop(event.ref, None)
            if future is not None and not future.done():
                msg = f"No submit_sm_resp within {self.settings.response_timeout_s}s; the SMSC may have taken it."
                future.set_exception(SubmitUnconfirmed(msg))
            self._wake(1)
        elif isinstance(event, Bound):
            conn.was_bound = True
            self._log.info("smpp.bound", role=conn.role, smsc=event.system_id)
            self._up_gauge.set(1 if self.up else 0)
            self._wake(self.settings.window)
        elif isinstance(event, BindRefused):
            self._log.warning("smpp.bind_refused", role=conn.role, status=f"0x{event.status:02x}")
        elif isinstance(event, UnknownPduReceived):
            self._log.warning("smpp.unknown_pdu_nacked", command_id=f"0x{event.command_id:08x}", sequence=event.sequence)
        elif isinstance(event, EnquireLinkFailed):
            self._log.warning("smpp.enquire_link_failed", role=conn.role)
        elif isinstance(event, PeerUnbound):
            self._log.info("smpp.unbound", role=conn.role)
        # GenericNackReceived: logged by the session and counted as a PDU; a nacked
        # submit also arrives as SubmitResponded.

    # ---- internals: submits -----------------------------------------------------------
    def _submit_connection(self) -> Connection | None:
        return self._conns.get("transmitter" if self.settings.mode == "transmitter_receiver" else "transceiver")

    async def _acquire_slot(self, deadline: float, timeout: float) -> Connection:
        """Wait until a bound connection has a free window slot and the SMSC is not
        being given a throttling pause. Waiters queue FIFO; a woken waiter that lost
        the slot to a newcomer goes back to the front."""
        loop = asyncio.get_running_loop()
        front = False
        while True:
            if self._unbinding or (self._stopping and not _IN_DELIVER_HANDLER.get()):
                raise LinkUnavailable(f"SMPP bind {self.settings.name!r} is stopping.")
            now = self._now()
            conn = self._submit_connection()
            throttled = now < self._throttle_until
            if conn is not None and conn.session.can_submit and not throttled:
                return conn
            left = deadline - now
            if left <= 0:
                if throttled:
                    why = "the SMSC kept throttling"
                elif conn is None or not conn.session.bound:
                    why = "not bound"
                else:
                    why = "window full"
                raise LinkUnavailable(f"SMPP bind {self.settings.name!r}: {why} for {timeout}s; submit_sm not sent.")
            waiter: asyncio.Future[None] = loop.create_future()
            if front:
                self._slot_waiters.appendleft(waiter)
            else:
                self._slot_waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, min(left, self._throttle_until - now) if throttled else left)
            except TimeoutError:
                with contextlib.suppress(ValueError):
                    self._slot_waiters.remove(waiter)
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake(1)  # we were given a slot we will not use: pass it on
                raise
            front = True

    def _wake(self, count: int) -> None:
        """Wake up to `count` slot waiters (they re-check; losers queue again)."""
        waiters = self._slot_waiters
        while count > 0 and waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                count -= 1

    def _throttled(self, status: int) -> None:
        """Pause every submit on this link; doubles only when a new throttling episode
        starts (responses to submits already in flight belong to the same one)."""
        now = self._now()
        self.metrics.throttled.labels(self.settings.name).inc()
        if now >= self._throttle_until:
            self._throttle_until = now + self._throttle_delay
            self._log.info("smpp.throttled", status=f"0x{status:02x}", pause_s=self._throttle_delay)
            self._throttle_delay = min(self._throttle_delay * 2, THROTTLE_MAX_S)

    # ---- internals: delivers ----------------------------------------------------------
    def _start_deliver(self, conn: Connection, pdu: Pdu) -> None:
        task = asyncio.get_running_loop().create_task(self._run_deliver(conn, pdu))
        self._deliver_tasks.add(task)
        task.add_done_callback(self._deliver_done)
        if len(self._deliver_tasks) >= self._deliver_limit:
            conn.pause_reading()

    def _deliver_done(self, task: asyncio.Task[None]) -> None:
        self._deliver_tasks.discard(task)
        if len(self._deliver_tasks) < self._deliver_limit:
            for conn in self._conns.values():
                if conn.reading_paused:
                    conn.resume_reading()

    async def _run_deliver(self, conn: Connection, pdu: Pdu) -> None:
        """Run the handler and answer with its status; a failing handler is a bug to
        log and an ESME_RSYSERR to the SMSC, never the end of the link."""
        _IN_DELIVER_HANDLER.set(True)
        status = ESME_RSYSERR
        try:
            async with self._deliver_slots:
                result = await self._on_deliver(pdu)
            if isinstance(result, int) and not isinstance(result, bool) and 0 <= result <= 0xFFFFFFFF:
                status = result
            else:
                self._log.error("smpp.deliver_handler_bad_status", result=repr(result), sequence=pdu.sequence)
        except Exception:
            self._log.exception(
                "smpp.deliver_handler_failed",
                sequence=pdu.sequence,
                source=mask_msisdn(str(pdu.get("source_addr", ""))),
            )
        conn.respond_deliver(pdu.sequence, status)
