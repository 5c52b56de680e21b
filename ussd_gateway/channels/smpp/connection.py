"""One SMPP TCP connection: an `asyncio.Protocol` that drives a sans-IO `EsmeSession`.

It feeds the bytes and the link's clock into the session, writes what the session
returns (batched to one write per event-loop turn), re-arms the session's one timer,
and hands the session's events to its `SmppLink`. Every protocol rule lives in
`protocol`; what to do with the events (submits, delivers, reconnects) lives in
`link`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ussd_gateway.channels.smpp.events import ConnectionShouldClose
from ussd_gateway.channels.smpp.protocol import BindAs, EsmeSession

if TYPE_CHECKING:
    from ussd_gateway.channels.smpp.link import SmppLink


class Connection(asyncio.Protocol):
    """One TCP connection: moves bytes and time between the socket and its session,
    and hands the session's events to the link."""

    def __init__(self, link: SmppLink, role: BindAs, session: EsmeSession) -> None:
        self._link = link
        self.role: BindAs = role
        self.session = session
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = self._loop.create_future()
        """Resolved when the transport is gone (connection_lost)."""
        self.waiters: dict[object, asyncio.Future[tuple[int, str]]] = {}
        """Submit ref -> the future its `SmppLink.submit` awaits."""
        self.was_bound = False
        self.reading_paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flush_scheduled = False

    # -- asyncio.Protocol ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # No isinstance check: uvloop's TCP transport (what `serve` runs on) has the
        # asyncio.Transport interface without subclassing it.
        self.transport = transport  # type: ignore[assignment]
        self._link._connection_made(self)
        self.session.connect(self._link._now())
        self.pump()

    def data_received(self, data: bytes) -> None:
        self.session.receive_data(data, self._link._now())
        self.pump()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._link._connection_lost(self, exc)
        if not self.closed.done():
            self.closed.set_result(None)

    # -- driving the session --------------------------------------------------------
    def pump(self) -> None:
        """Handle the session's events, write its bytes, re-arm its timer.

        The bytes go out at the end of this turn of the event loop, not at once: the
        PDUs that the turn's callbacks and tasks produce (deliver_sm_resps, screens'
        submit_sms, ...) then leave in one write, one syscall and one loopback or
        network segment instead of one each. The session keeps them in order."""
        close_reason: str | None = None
        while (event := self.session.next_event()) is not None:
            if isinstance(event, ConnectionShouldClose):
                close_reason = event.reason
            else:
                self._link._handle_event(self, event)
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._link._window_changed()
        if close_reason is not None:
            self._flush()
            self._link._log.info("smpp.connection_closing", role=self.role, reason=close_reason)
            transport.close()  # flushes what was just written (an unbind_resp, say)
            return
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        self._arm_timer()

    def _flush(self) -> None:
        """Write what the session has to send (see `pump`)."""
        self._flush_scheduled = False
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        data = self.session.data_to_send()
        if data:
            transport.write(data)

    def _arm_timer(self) -> None:
        when = self.session.get_timer()
        if when == self._timer_at and (when is None or self._timer is not None):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            # A delay, not loop.call_at: the session's clock is the link's (injectable).
            self._timer = self._loop.call_later(max(0.0, when - self._link._now()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.session.handle_timer(self._link._now())
        self.pump()

    # -- API for the link -------------------------------------------------------------
    def submit(self, fields: dict[str, Any], ref: object) -> bool:
        sent = self.session.submit(fields, ref=ref, now=self._link._now())
        if sent:
            self.pump()
        return sent

    def respond_deliver(self, sequence: int, status: int) -> None:
        self.session.respond_deliver(sequence, status)
        self.pump()

    def unbind(self) -> None:
        self.session.unbind(self._link._now())
        self.pump()

    def abort(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.reading_paused and not self.transport.is_closing():
            self.transport.pause_reading()
            self.reading_paused = True

    def resume_reading(self) -> None:
        if self.transport is not None and self.reading_paused and not self.transport.is_closing():
            self.transport.resume_reading()
        self.reading_paused = False
