"""The ESME side of one SMPP 3.4 connection, as a sans-IO state machine.

No sockets, no asyncio, no clock. The session is driven by three kinds of input, API
calls (`connect`, `submit`, `respond_deliver`, `unbind`), bytes (`receive_data(data,
now)`) and time (`handle_timer(now)`), and its output is pulled: `data_to_send()`,
`next_event()`, `get_timer()`. So every protocol rule (bind, sequence correlation,
window, enquire_link, unbind, malformed input) is unit-tested by moving bytes between
two objects in memory with an explicit `now`, and `link` and `connection` only move
bytes and arm one timer.

What smpplib's client gets wrong and this does not: responses are
correlated by sequence number, never assumed to be "the next PDU"; `deliver_sm` is
never auto-acknowledged (the owner answers with `respond_deliver`); enquire_link is
sent on a schedule, not on a socket timeout, and its absence of answer kills the
link; sequence numbers come from this session alone and wrap within 1..0x7FFFFFFF.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from ussd_gateway.channels.smpp.events import (
    BindRefused,
    Bound,
    ConnectionShouldClose,
    DeliverReceived,
    EnquireLinkFailed,
    Event,
    GenericNackReceived,
    PeerUnbound,
    SubmitExpired,
    SubmitResponded,
    UnknownPduReceived,
)
from ussd_gateway.channels.smpp.pdu import (
    ESME_RINVBNDSTS,
    ESME_RINVCMDID,
    ESME_ROK,
    HEADER_BYTES,
    MAX_PDU_BYTES,
    Pdu,
    PduError,
    command_name,
    decode,
    encode,
    frame_length,
    response_name,
)

__all__ = ["MAX_SEQUENCE", "BindAs", "EsmeSession", "PduObserver"]

BindAs = Literal["transceiver", "transmitter", "receiver"]
PduObserver = Callable[[str, str, int], None]
"""Called as `observer(direction, command, status)` for every PDU in ("in") or out
("out"); how the link counts PDUs for Prometheus without the session knowing about
metrics."""

MAX_SEQUENCE = 0x7FFFFFFF
"""SMPP 3.4 §5.1.4: sequence numbers run 0x00000001..0x7FFFFFFF, then wrap."""

_RESPONSE_BIT = 0x80000000
_log = structlog.get_logger("smpp.protocol")


class _State(enum.Enum):
    IDLE = "idle"
    BINDING = "binding"
    BOUND = "bound"
    UNBINDING = "unbinding"
    CLOSED = "closed"


@dataclass(slots=True)
class _Pending:
    """A request of ours awaiting its response."""

    command: str
    deadline: float
    ref: object = None


class EsmeSession:
    """One ESME connection's protocol state: bind, window, correlation, keep-alive.

    The owner calls `connect(now)` once the transport is up, then after every input
    (`receive_data`, `handle_timer`, an API call) sends `data_to_send()`, handles every
    `next_event()` and re-arms its single timer at `get_timer()`. On
    `ConnectionShouldClose` it flushes and closes the transport; a new connection
    gets a new session (nothing here survives a reconnect, on purpose: sequence
    numbers and outstanding requests belong to one TCP connection).
    """

    def __init__(
        self,
        *,
        system_id: str,
        password: str,
        system_type: str = "",
        bind_as: BindAs = "transceiver",
        window: int = 10,
        enquire_link_s: float = 30.0,
        response_timeout_s: float = 10.0,
        first_sequence: int = 1,
        pdu_observer: PduObserver | None = None,
    ) -> None:
        """Args:
        system_id, password, system_type: the bind credentials.
        bind_as: which bind PDU to send; a transmitter refuses deliver_sm, a receiver
            cannot submit.
        window: outstanding submit_sm without a response, at most.
        enquire_link_s: send enquire_link after this long without receiving anything.
        response_timeout_s: a request of ours unanswered this long is lost.
        first_sequence: the first sequence number used (tests start near the wrap).
        pdu_observer: told about every PDU in and out (for metrics).
        """
        if bind_as not in ("transceiver", "transmitter", "receiver"):
            raise ValueError(f"bind_as must be transceiver, transmitter or receiver, got {bind_as!r}")
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window!r}")
        if not 1 <= first_sequence <= MAX_SEQUENCE:
            raise ValueError(f"first_sequence must be in 1..0x7FFFFFFF, got {first_sequence!r}")
        self._credentials = {"system_id": system_id, "password": password, "system_type": system_type}
        self._bind_as: BindAs = bind_as
        self._window = window
        self._enquire_link_s = enquire_link_s
        self._response_timeout_s = response_timeout_s
        self._observer = pdu_observer
        self._log = _log.bind(system_id=system_id, bind_as=bind_as)

        self._state = _State.IDLE
        self._sequence = first_sequence
        self._rx = bytearray()
        self._tx = bytearray()
        self._events: deque[Event] = deque()
        self._pending: dict[int, _Pending] = {}
        """Our requests by sequence number, in the order sent (dict order)."""
        self._submits_outstanding = 0
        self._enquire_sequence: int | None = None
        self._unanswered_delivers: set[int] = set()
        self._last_rx = 0.0

    # ---- state ------------------------------------------------------------------
    @property
    def bound(self) -> bool:
        """True between a successful bind response and unbind/close."""
        return self._state is _State.BOUND

    @property
    def closed(self) -> bool:
        """True once `ConnectionShouldClose` has been queued; input is then ignored."""
        return self._state is _State.CLOSED

    @property
    def window_in_use(self) -> int:
        """Our submit_sm sent and not yet answered (nor expired)."""
        return self._submits_outstanding

    @property
    def can_submit(self) -> bool:
        """Whether `submit()` would send now: bound, allowed to transmit, window free."""
        return (
            self._state is _State.BOUND
            and self._bind_as != "receiver"
            and self._submits_outstanding < self._window
        )

    # ---- API calls ----------------------------------------------------------------
    def connect(self, now: float) -> None:
        """Queue the bind request; call once, when the transport is connected."""
        if self._state is not _State.IDLE:
            raise RuntimeError(f"connect() on a session that is {self._state.value}")
        self._state = _State.BINDING
        self._last_rx = now
        self._request(f"bind_{self._bind_as}", now, **self._credentials)

    def submit(self, fields: dict[str, Any], *, ref: object, now: float) -> bool:
        """Queue one submit_sm with `fields` (smpp.pdu field names).

        Returns False, sending nothing, when not bound, bound as a receiver, or the
        window is full; the owner waits for a `SubmitResponded`/`SubmitExpired` (or a
        new bind) and tries again. `ref` comes back in that event.

        Raises:
            ValueError: a field the codec refuses (unknown name, value too long, ...).
        """
        if not self.can_submit:
            return False
        self._request("submit_sm", now, ref=ref, **fields)
        self._submits_outstanding += 1
        return True

    def respond_deliver(self, sequence: int, status: int = ESME_ROK) -> None:
        """Answer the deliver_sm with this sequence number (from `DeliverReceived`).

        A no-op once the session is closed: that connection is gone and the SMSC will
        redeliver (a deliver_sm_resp cannot travel on another connection).

        Raises:
            ValueError: no deliver_sm with that sequence is awaiting an answer
                (answered twice, or never received).
        """
        if self._state is _State.CLOSED:
            return
        try:
            self._unanswered_delivers.remove(sequence)
        except KeyError:
            msg = f"deliver_sm {sequence} is not awaiting a response (answered already, or never received)."
            raise ValueError(msg) from None
        self._send("deliver_sm_resp", sequence, status)

    def unbind(self, now: float) -> None:
        """Start a clean unbind: `PeerUnbound` then `ConnectionShouldClose` follow
        when the SMSC answers (or `ConnectionShouldClose` alone if it does not within
        `response_timeout_s`). Before the bind completed there is nothing to unbind,
        so the session just closes."""
        if self._state is _State.BOUND:
            self._state = _State.UNBINDING
            self._request("unbind", now)
        elif self._state in (_State.IDLE, _State.BINDING):
            self._close("unbind requested before the bind completed")

    # ---- input ----------------------------------------------------------------------
    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes read from the transport; partial PDUs wait for the rest."""
        if self._state is _State.CLOSED or not data:
            return
        self._last_rx = now
        rx = self._rx
        rx += data
        while len(rx) >= 4:
            length = frame_length(rx)
            if not HEADER_BYTES <= length <= MAX_PDU_BYTES:
                # The stream cannot be resynchronised after a bad length prefix.
                self._close(f"frame length {length} out of range {HEADER_BYTES}..{MAX_PDU_BYTES}")
                return
            if len(rx) < length:
                return
            frame = bytes(rx[:length])
            del rx[:length]
            self._handle_frame(frame, now)
            if self._state is _State.CLOSED:
                return

    def handle_timer(self, now: float) -> None:
        """Expire unanswered requests and send enquire_link when the link is idle;
        call at (or after) `get_timer()`."""
        if self._state in (_State.IDLE, _State.CLOSED):
            return
        expired = [seq for seq, pending in self._pending.items() if pending.deadline <= now]
        for seq in expired:
            pending = self._pending.pop(seq)
            if pending.command == "submit_sm":
                self._submits_outstanding -= 1
                self._log.warning("smpp.submit_expired", sequence=seq, timeout_s=self._response_timeout_s)
                self._events.append(SubmitExpired(pending.ref))
            elif pending.command == "enquire_link":
                self._enquire_sequence = None
                self._events.append(EnquireLinkFailed())
                self._close("enquire_link unanswered")
                return
            else:  # bind or unbind: nothing to wait for any more
                self._close(f"{pending.command} unanswered")
                return
        if (
            self._state is _State.BOUND
            and self._enquire_sequence is None
            and now >= self._last_rx + self._enquire_link_s
        ):
            self._enquire_sequence = self._request("enquire_link", now)

    # ---- output ---------------------------------------------------------------------
    def data_to_send(self) -> bytes:
        """Bytes to write to the transport now (and forget)."""
        data = bytes(self._tx)
        self._tx.clear()
        return data

    def next_event(self) -> Event | None:
        """The next event for the owner, or None."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When `handle_timer` must next be called (the earliest response deadline or
        the next enquire_link), or None when nothing is scheduled."""
        if self._state in (_State.IDLE, _State.CLOSED):
            return None
        timer: float | None = None
        for pending in self._pending.values():
            if timer is None or pending.deadline < timer:
                timer = pending.deadline
        if self._state is _State.BOUND and self._enquire_sequence is None:
            idle = self._last_rx + self._enquire_link_s
            if timer is None or idle < timer:
                timer = idle
        return timer

    # ---- internals --------------------------------------------------------------------
    def _next_sequence(self) -> int:
        """1..0x7FFFFFFF, wrapping, skipping any still awaiting a response."""
        while True:
            sequence = self._sequence
            self._sequence = 1 if sequence >= MAX_SEQUENCE else sequence + 1
            if sequence not in self._pending:
                return sequence

    def _send(self, command: str, sequence: int, status: int = ESME_ROK, **fields: Any) -> None:
        self._tx += encode(command, sequence=sequence, status=status, **fields)
        if self._observer is not None:
            self._observer("out", command, status)

    def _request(self, command: str, now: float, *, ref: object = None, **fields: Any) -> int:
        """Send a request and remember it until its response or its deadline."""
        sequence = self._next_sequence()
        self._send(command, sequence, **fields)
        self._pending[sequence] = _Pending(command, now + self._response_timeout_s, ref)
        return sequence

    def _close(self, reason: str) -> None:
        self._state = _State.CLOSED
        self._rx.clear()
        self._events.append(ConnectionShouldClose(reason))

    def _handle_frame(self, frame: bytes, now: float) -> None:
        try:
            pdu = decode(frame)
        except PduError as exc:
            self._handle_undecodable(frame, exc, now)
            return
        if self._observer is not None:
            self._observer("in", pdu.command, pdu.status)
        if pdu.is_response:
            self._handle_response(pdu, now)
        else:
            self._handle_request(pdu)

    def _handle_undecodable(self, frame: bytes, exc: PduError, now: float) -> None:
        """A whole frame we cannot decode. The header is intact (the length was fine),
        so a request gets a generic_nack with its sequence and the codec's status, and
        the session goes on. A response is never nacked (nothing answers a response;
        it would invite nack ping-pong): its header status still settles our request."""
        command_id, status, sequence = struct.unpack_from(">LLL", frame, 4)
        if self._observer is not None:
            self._observer("in", command_name(command_id) or "unknown", status)
        self._log.warning(
            "smpp.undecodable_pdu", error=exc.message, command_id=f"0x{command_id:08x}", sequence=sequence
        )
        if command_id & _RESPONSE_BIT:
            pending = self._pending.pop(sequence, None)
            if pending is not None:
                self._settle(sequence, pending, status, "", now)
            return
        self._send("generic_nack", sequence, exc.status)
        if exc.status == ESME_RINVCMDID:
            self._events.append(UnknownPduReceived(command_id, sequence))

    def _handle_request(self, pdu: Pdu) -> None:
        command = pdu.command
        if command == "enquire_link":
            self._send("enquire_link_resp", pdu.sequence)
        elif command == "deliver_sm":
            if self._state is not _State.BOUND or self._bind_as == "transmitter":
                # Not ours to take: refusing makes the SMSC deliver it elsewhere or later.
                self._send("deliver_sm_resp", pdu.sequence, ESME_RINVBNDSTS)
            else:
                self._unanswered_delivers.add(pdu.sequence)
                self._events.append(DeliverReceived(pdu))
        elif command == "unbind":
            self._send("unbind_resp", pdu.sequence)
            self._events.append(PeerUnbound())
            self._close("peer unbound")
        elif command == "alert_notification":
            self._log.info("smpp.alert_notification_ignored", sequence=pdu.sequence)  # it has no response
        else:
            self._log.warning("smpp.unsupported_request", command=command, sequence=pdu.sequence)
            self._send("generic_nack", pdu.sequence, ESME_RINVCMDID)
            self._events.append(UnknownPduReceived(pdu.command_id, pdu.sequence, pdu))

    def _handle_response(self, pdu: Pdu, now: float) -> None:
        if pdu.command == "generic_nack":
            self._log.warning("smpp.generic_nack", sequence=pdu.sequence, status=f"0x{pdu.status:08x}")
            self._events.append(GenericNackReceived(pdu.sequence, pdu.status))
        pending = self._pending.get(pdu.sequence)
        if pending is None:
            self._log.warning("smpp.unexpected_response", command=pdu.command, sequence=pdu.sequence)
            return
        if pdu.command != "generic_nack" and pdu.command != response_name(pending.command):
            self._log.warning(
                "smpp.mismatched_response", command=pdu.command, expected=response_name(pending.command),
                sequence=pdu.sequence,
            )
            return
        del self._pending[pdu.sequence]
        self._settle(pdu.sequence, pending, pdu.status, str(pdu.get("message_id", "")), now, pdu.get("system_id", ""))

    def _settle(
        self, sequence: int, pending: _Pending, status: int, message_id: str, now: float, system_id: str = ""
    ) -> None:
        """Apply the answer (status) to one of our requests."""
        command = pending.command
        if command == "submit_sm":
            self._submits_outstanding -= 1
            self._events.append(SubmitResponded(pending.ref, status, message_id))
        elif command == "enquire_link":
            if self._enquire_sequence == sequence:
                self._enquire_sequence = None  # any answer, even an error, proves the peer alive
        elif command == "unbind":
            self._events.append(PeerUnbound())
            self._close("unbound")
        elif command.startswith("bind_"):
            if status == ESME_ROK and self._state is _State.BINDING:
                self._state = _State.BOUND
                self._last_rx = now
                self._events.append(Bound(str(system_id)))
            else:
                self._log.warning("smpp.bind_refused", status=f"0x{status:08x}")
                self._events.append(BindRefused(status))
                self._close(f"bind refused (status 0x{status:08x})")
