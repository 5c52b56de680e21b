"""MO SMS before the keyword router: concatenated parts put back together, and what
makes two messages one (a resend) or two (the subscriber texting the same again).

Parts arrive as separate `deliver_sm` with a concatenation reference (UDH, 8- or 16-bit,
or the `sar_*` TLVs). `Reassembler` holds them until the last arrives, or until
`mo_concat_timeout_s` passes, when the parts received are handled as they are. Memory
is bounded: at most `mo_concat_max` messages in progress per bind; past that the oldest
is dropped and counted. Parts live in the process that received them.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["DUPLICATE_PART", "MoMessage", "Reassembler"]


@dataclass(slots=True)
class MoMessage:
    """One MO SMS, whole or as much of it as arrived."""

    msisdn: str
    short_code: str
    text: str
    content: bytes
    """The octets as received (all parts, in order): what a resend repeats."""
    data_coding: int
    reference: str | None
    """What the SMSC or handset names the message by (`user_message_reference`, the
    concatenation reference): None when nothing does."""
    parts: dict[int, tuple[str, bytes]] = field(default_factory=dict)
    total: int = 1
    key: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return len(self.parts) >= self.total if self.parts else True


DUPLICATE_PART = object()
"""`Reassembler.add`'s answer for a part of a message already handled (a resend)."""


class Reassembler:
    """Concatenated MO SMS of one bind being put back together."""

    def __init__(
        self,
        timeout_s: float,
        cap: int,
        on_timeout: Callable[[MoMessage], Awaitable[object]],
        on_dropped: Callable[[MoMessage], None],
        *,
        recent_s: float = 120.0,
    ) -> None:
        self.timeout_s = timeout_s
        self.cap = max(1, cap)
        self._on_timeout = on_timeout
        self._on_dropped = on_dropped
        self._recent_s = recent_s
        self._partial: OrderedDict[tuple[str, ...], MoMessage] = OrderedDict()
        self._timers: dict[tuple[str, ...], asyncio.TimerHandle] = {}
        self._done: OrderedDict[tuple[str, ...], float] = OrderedDict()
        self._tasks: set[asyncio.Task[object]] = set()

    def __len__(self) -> int:
        return len(self._partial)

    def add(self, part: MoMessage, key: tuple[str, ...], total: int, sequence: int) -> MoMessage | object | None:
        """Keep one part (`part.text`, `part.content`: this part's). Returns the whole
        message when this completes it, DUPLICATE_PART for a part of a message already
        handled, else None (waiting for the rest)."""
        now = time.monotonic()
        while self._done and next(iter(self._done.values())) <= now:
            self._done.popitem(last=False)
        if key in self._done:
            return DUPLICATE_PART
        message = self._partial.get(key)
        if message is None:
            while len(self._partial) >= self.cap:
                _old_key, old = self._partial.popitem(last=False)
                self._cancel(old.key)
                self._on_dropped(old)
            message = MoMessage(part.msisdn, part.short_code, "", b"", part.data_coding, part.reference, {}, total, key)
            self._partial[key] = message
            self._timers[key] = asyncio.get_running_loop().call_later(self.timeout_s, self._expire, key)
        message.parts[sequence] = (part.text, part.content)
        if len(message.parts) < total:
            return None
        return self._finish(key)

    def put_back(self, message: MoMessage) -> None:
        """A completed message could not be handled (the store was down): keep its parts,
        so the SMSC's resend of a part completes it again (or the timeout handles it)."""
        self._done.pop(message.key, None)
        if message.key not in self._partial:
            self._partial[message.key] = message
            self._timers[message.key] = asyncio.get_running_loop().call_later(self.timeout_s, self._expire, message.key)

    def close(self) -> None:
        for key in list(self._timers):
            self._cancel(key)
        self._partial.clear()
        for task in self._tasks:
            task.cancel()

    def _finish(self, key: tuple[str, ...]) -> MoMessage:
        message = self._partial.pop(key)
        self._cancel(key)
        self._done[key] = time.monotonic() + self._recent_s
        while len(self._done) > 4 * self.cap:
            self._done.popitem(last=False)
        ordered = [message.parts[n] for n in sorted(message.parts)]
        message.text = "".join(text for text, _ in ordered)
        message.content = b"".join(content for _, content in ordered)
        return message

    def _cancel(self, key: tuple[str, ...]) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, key: tuple[str, ...]) -> None:
        self._timers.pop(key, None)
        if key not in self._partial:
            return
        message = self._finish(key)
        task = asyncio.get_running_loop().create_task(self._on_timeout(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
