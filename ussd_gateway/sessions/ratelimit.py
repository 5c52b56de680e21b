"""Per-subscriber rate limits: hops, new dialogues and MO SMS per MSISDN per minute.

In Redis (so they hold across workers and machines) when the sessions are, else in
this process's memory. One subscriber's counters are hash-tagged like the rest of
their keys (`ussd:{84901234567}:rate:hop`), so the script touches one Cluster slot.

Cost on the hop path: one `EVALSHA` (INCR + PEXPIRE of one or two counters), queued
on the session store's auto-pipeline in the same loop turn as the hop's own BEGIN
script, so both travel in one write and come back in one read: no extra round trip.
`check_hop` returns a future at once (the command is already queued) for the caller
to await after its lock; a limiter error never refuses a hop (it fails open: the
store's own script reports Redis being down).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import NoScriptError

from ussd_gateway.core.windows import WindowCounter

WINDOW_S = 60
# KEYS: one or two counters. ARGV: window ms. Returns the counts after this hit.
_COUNT = """
local counts = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('PEXPIRE', key, ARGV[1]) end
  counts[i] = n
end
return counts
"""
_COUNT_SHA = hashlib.sha1(_COUNT.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Limits:
    """Per MSISDN per minute; 0 turns a limit off."""

    hops_per_minute: int = 300
    sessions_per_minute: int = 60
    sms_per_minute: int = 30

    @property
    def active(self) -> bool:
        return bool(self.hops_per_minute or self.sessions_per_minute or self.sms_per_minute)


class Submitter(Protocol):
    """The Redis store's auto-pipeline entry (`RedisStore.submit`)."""

    def submit(self, *command: Any) -> asyncio.Future[Any]: ...


class SubscriberLimiter:
    """Counts and judges; `None` means allowed, else the name of the limit exceeded
    (`hop`, `session`, `sms`: also the label of `ussd_limited_total`)."""

    def __init__(self, limits: Limits, redis: Submitter | None = None, *, prefix: str = "ussd") -> None:
        self.limits = limits
        self._redis = redis
        self._prefix = prefix
        self._local = {name: WindowCounter(WINDOW_S) for name in ("hop", "session", "sms")}

    def check_hop(self, msisdn: str, new_session: bool) -> asyncio.Future[str | None]:
        """Count a hop (and a new dialogue); the verdict, with the command already sent."""
        names = ["hop"] + (["session"] if new_session else [])
        return self._check(msisdn, names)

    async def check_sms(self, msisdn: str) -> str | None:
        """Count an MO SMS; its verdict."""
        return await self._check(msisdn, ["sms"])

    def _ceiling(self, name: str) -> int:
        return {"hop": self.limits.hops_per_minute, "session": self.limits.sessions_per_minute, "sms": self.limits.sms_per_minute}[name]

    def _judge(self, names: list[str], counts: list[int]) -> str | None:
        for name, count in zip(names, counts):
            ceiling = self._ceiling(name)
            if ceiling and count > ceiling:
                return name
        return None

    def _check(self, msisdn: str, names: list[str]) -> asyncio.Future[str | None]:
        loop = asyncio.get_running_loop()
        verdict: asyncio.Future[str | None] = loop.create_future()
        names = [name for name in names if self._ceiling(name)]
        if not names:
            verdict.set_result(None)
            return verdict
        if self._redis is None:
            verdict.set_result(self._judge(names, [self._local[name].hit(msisdn) for name in names]))
            return verdict
        keys = [f"{self._prefix}:{{{msisdn}}}:rate:{name}" for name in names]
        window_ms = str(WINDOW_S * 1000)

        def done(future: asyncio.Future[Any], *, retried: bool = False) -> None:
            if verdict.done():
                return
            if future.cancelled():
                verdict.set_result(None)
                return
            error = future.exception()
            if isinstance(error, NoScriptError) and not retried:  # Redis lost its scripts: once with the source
                again = self._redis.submit("EVAL", _COUNT, len(keys), *keys, window_ms)  # type: ignore[union-attr]
                again.add_done_callback(lambda f: done(f, retried=True))
                return
            if error is not None:
                verdict.set_result(None)  # fail open: the store's own script reports an outage
                return
            verdict.set_result(self._judge(names, [int(c) for c in future.result()]))

        self._redis.submit("EVALSHA", _COUNT_SHA, len(keys), *keys, window_ms).add_done_callback(done)
        return verdict
