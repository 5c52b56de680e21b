"""The scratch-card guard: after `topup_max_failures` wrong PINs within
`topup_failure_window_s`, a subscriber's top-up is locked for `topup_lock_s`.

The gateway keeps this count itself, whatever the backend, so no billing system sees a
guessing run. It lives where the dialogues live: with the Redis session store, in Redis
(`ussd:{msisdn}:pinfail`, a sorted set of failure times, and `ussd:{msisdn}:pinlock`,
under the subscriber's hash tag), so every worker and machine agrees; with the memory
store, in this process. Hops of one subscriber are serialised by the dispatcher's
lock, so the count cannot be raced past the limit by parallel dialogues.

Only counts and times are kept: never a PIN.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from redis.exceptions import RedisError

from ussd_gateway.core.errors import DependencyDown

from ussd_gateway.services.settings import ServiceSettings


class PinGuard(Protocol):
    async def locked_for(self, msisdn: str) -> int:
        """Seconds the subscriber's top-up stays locked (0: not locked)."""

    async def failed(self, msisdn: str) -> tuple[int, int]:
        """Count a wrong PIN: (wrong PINs in the window, seconds locked now or 0)."""


class MemoryPinGuard:
    """This process only (the memory session store)."""

    def __init__(self, settings: ServiceSettings, clock: Any = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self._failures: dict[str, list[float]] = {}
        self._locked_until: dict[str, float] = {}

    async def locked_for(self, msisdn: str) -> int:
        until = self._locked_until.get(msisdn, 0.0)
        left = until - self.clock()
        if left <= 0:
            self._locked_until.pop(msisdn, None)
            return 0
        return max(1, int(left))

    async def failed(self, msisdn: str) -> tuple[int, int]:
        now = self.clock()
        recent = [t for t in self._failures.get(msisdn, []) if t > now - self.settings.topup_failure_window_s]
        recent.append(now)
        if len(recent) >= self.settings.topup_max_failures:
            self._failures.pop(msisdn, None)
            self._locked_until[msisdn] = now + self.settings.topup_lock_s
            return len(recent), self.settings.topup_lock_s
        self._failures[msisdn] = recent
        return len(recent), 0


class RedisPinGuard:
    """Shared by every worker (the Redis session store)."""

    def __init__(self, client: Any, settings: ServiceSettings, prefix: str = "ussd") -> None:
        self.client = client
        self.settings = settings
        self.prefix = prefix
        self._ids = itertools.count()
        self._tag = os.urandom(4).hex()

    def _keys(self, msisdn: str) -> tuple[str, str]:
        return f"{self.prefix}:{{{msisdn}}}:pinfail", f"{self.prefix}:{{{msisdn}}}:pinlock"

    async def locked_for(self, msisdn: str) -> int:
        with _redis_errors():
            ttl = await self.client.ttl(self._keys(msisdn)[1])
        return max(0, int(ttl))

    async def failed(self, msisdn: str) -> tuple[int, int]:
        fails, lock = self._keys(msisdn)
        now = time.time()
        window = self.settings.topup_failure_window_s
        member = f"{now:.6f}:{self._tag}:{next(self._ids)}"
        with _redis_errors():
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.zadd(fails, {member: now})
                pipe.zremrangebyscore(fails, "-inf", now - window)
                pipe.zcard(fails)
                pipe.expire(fails, window)
                count = (await pipe.execute())[2]
            if count >= self.settings.topup_max_failures:
                async with self.client.pipeline(transaction=True) as pipe:
                    pipe.set(lock, "1", ex=self.settings.topup_lock_s)
                    pipe.delete(fails)
                    await pipe.execute()
                return int(count), self.settings.topup_lock_s
        return int(count), 0


@contextmanager
def _redis_errors() -> Iterator[None]:
    try:
        yield
    except RedisError as exc:
        raise DependencyDown(f"top-up guard (Redis) cannot answer ({exc.__class__.__name__}); check that Redis is up") from exc


_GUARDS: dict[int, tuple[object, PinGuard]] = {}


def guard_for(store: object, settings: ServiceSettings) -> PinGuard:
    """The guard that goes with a session store: in its Redis when it has one (the
    `RedisStore`'s `client`), else in memory. One per store."""
    found = _GUARDS.get(id(store))
    if found is not None and found[0] is store:
        return found[1]
    client = getattr(store, "client", None)
    prefix = str(getattr(store, "_prefix", "ussd"))  # the session store's key prefix, if it has one
    guard: PinGuard = RedisPinGuard(client, settings, prefix) if client is not None else MemoryPinGuard(settings)
    _GUARDS[id(store)] = (store, guard)
    return guard
