"""The per-caller request rate, shared by every worker and instance through Redis.

A caller (a gateway's address) may send `limit` requests per second in all. Counting
each request in Redis would add a command to every request; instead each process
counts its own requests in the current one-second window and, every `sync_s`, adds
them to a shared Redis counter for that window (`INCRBY` + `PEXPIRE` in one pipeline
per sync, whatever the request rate) and reads back the total. A request is refused
when the last total read plus what this process counted since is over the limit, so
the limit holds across workers and machines within one sync period; without Redis, or
while Redis does not answer, the process's own count decides (it fails open to that).

Keys: `ussd:{peer:<address>}:rate:<window>`, one slot per caller; they expire after
two windows.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

import structlog
from redis.exceptions import RedisError

SYNC_S = 0.1
"""How often a process adds its counts to the shared ones (the limit's lag)."""
MAX_CALLERS = 10_000
"""Callers counted in one window, at most (memory stays bounded under a flood of
spoofed addresses: past this, the window's counts start again)."""


class PeerRate:
    """Judges each request of a caller; `retry_after_s` says when to come back."""

    def __init__(
        self,
        limit: int,
        redis: Any = None,
        *,
        prefix: str = "ussd",
        window_s: float = 1.0,
        sync_s: float = SYNC_S,
        timeout_s: float = 0.3,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limit = limit
        self._redis = redis
        self._prefix = prefix
        self._window_s = window_s
        self._sync_s = sync_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._window = -1
        self._starts = self._ends = 0.0
        """The current window's bounds, in clock seconds."""
        self._unsent: dict[str, int] = {}
        """Requests counted here and not yet added to Redis, per caller."""
        self._local: dict[str, int] = {}
        """Requests counted here in this window, per caller."""
        self._shared: dict[str, int] = {}
        """The last total read from Redis for this window, per caller."""
        self._task: asyncio.Task[None] | None = None
        self._log = structlog.get_logger("ussd_gateway.peer_rate")

    def _roll(self) -> int:
        now = self._clock()
        if self._starts <= now < self._ends and len(self._local) < MAX_CALLERS:
            return self._window  # the usual case: two comparisons, no division
        window = math.floor(now / self._window_s)
        self._starts, self._ends = window * self._window_s, (window + 1) * self._window_s
        if window != self._window or len(self._local) >= MAX_CALLERS:
            self._window = window
            self._unsent, self._local, self._shared = {}, {}, {}
        return window

    def allow(self, caller: str) -> bool:
        """Count one request of `caller`; False when it is over the limit."""
        if not self.limit:
            return True
        self._roll()
        local = self._local.get(caller, 0) + 1
        self._local[caller] = local
        if self._redis is not None:
            self._unsent[caller] = self._unsent.get(caller, 0) + 1
            self._schedule()
            seen = max(self._shared.get(caller, 0) + self._unsent[caller], local)
        else:
            seen = local
        return seen <= self.limit

    def retry_after_s(self) -> int:
        """Whole seconds until the current window ends (at least 1)."""
        now = self._clock()
        return max(1, math.ceil((math.floor(now / self._window_s) + 1) * self._window_s - now))

    def _schedule(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._sync_later())

    async def _sync_later(self) -> None:
        await asyncio.sleep(self._sync_s)
        await self.sync()

    async def sync(self) -> None:
        """Add this process's counts to the shared ones and read the totals back."""
        window, batch = self._window, self._unsent
        self._unsent = {}
        if not batch or self._redis is None:
            return
        callers = list(batch)
        ttl_ms = int(self._window_s * 2000)
        try:
            async with asyncio.timeout(self._timeout_s):
                pipe = self._redis.pipeline(transaction=False)
                for caller in callers:
                    key = f"{self._prefix}:{{peer:{caller}}}:rate:{window}"
                    pipe.incrby(key, batch[caller])
                    pipe.pexpire(key, ttl_ms)
                totals = (await pipe.execute())[0::2]
        except (RedisError, OSError, TimeoutError) as exc:
            self._log.warning("peer_rate_sync_failed", error=exc.__class__.__name__)
            return  # the local counts keep deciding until Redis answers again
        if window == self._window:
            for caller, total in zip(callers, totals):
                self._shared[caller] = int(total)
