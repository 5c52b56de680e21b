"""The in-memory store: the embedded default for one process.

It keeps the same guarantees as the Redis store inside one process (a lock per
subscriber, replay of answered hops, TTLs). It cannot be shared, so `serve --workers N`
with N > 1 refuses it.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from ussd_gateway.sessions.store import ClaimedSms, Loaded, LoadStatus, OutboundSms


@dataclass(slots=True)
class _Saved:
    session_id: str
    hop_key: str
    reply: bytes
    record: bytes
    expires: float
    at: float
    """When it was saved (for the begin replay window)."""


def _exact(raw: bytes) -> bytes:
    """A copy of exactly `len(raw)` bytes. orjson's output keeps the capacity of its
    write buffer (a 69-byte reply held 4 KB); `bytes(raw)` returns the same object, so
    kept as it is every dialogue costs kilobytes it does not use."""
    return memoryview(raw).tobytes()


SMS_QUEUE_MAX = 50_000
"""Outbound SMS kept at most (as the Redis store's `SMS_QUEUE_MAX`)."""
SMS_DEDUPE_TTL_S = 86_400
"""As the Redis store's: the idempotency records' lifetime, see there."""


SWEEP_EVERY = 4096
"""Commits between two sweeps of expired dialogues (amortised O(1) per hop)."""


class MemoryStore:
    """Dialogues in a dict, expired lazily on read and swept every `SWEEP_EVERY`
    commits, so a long load run with many subscribers does not grow without bound."""

    def __init__(
        self,
        *,
        lock_ttl_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sms_queue_max: int = SMS_QUEUE_MAX,
        on_sms_dropped: Callable[[int], None] | None = None,
    ) -> None:
        self._clock = clock
        self._sms_queue_max = sms_queue_max
        self._on_sms_dropped = on_sms_dropped
        self._lock_ttl_s = lock_ttl_s
        self._sessions: dict[str, _Saved] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        self._langs: dict[str, str] = {}
        self._pending: dict[str, tuple[str, float]] = {}
        self._sms: deque[OutboundSms] = deque()
        self._sms_keys: dict[tuple[str, str], float] = {}
        self._commits = 0
        self._inflight: dict[int, OutboundSms] = {}
        self._claim_ids = itertools.count()
        self._claims: dict[str, float] = {}
        self._swaps: dict[str, tuple[str, float]] = {}

    def _live(self, msisdn: str) -> _Saved | None:
        saved = self._sessions.get(msisdn)
        if saved is not None and saved.expires <= self._clock():
            del self._sessions[msisdn]
            return None
        return saved

    async def begin_hop(
        self, msisdn: str, session_id: str, hop_key: str, token: str, *, want_lang: bool, replay_within_ms: int | None = None
    ) -> Loaded:
        saved = self._live(msisdn)
        now = self._clock()
        if hop_key and saved is not None and saved.session_id == session_id and saved.hop_key == hop_key:
            if replay_within_ms is None or (now - saved.at) * 1000 <= replay_within_ms:
                return Loaded(LoadStatus.REPLAY, reply=saved.reply)
        held = self._locks.get(msisdn)
        if held is not None and held[1] > now:
            return Loaded(LoadStatus.LOCKED)
        self._locks[msisdn] = (token, now + self._lock_ttl_s)
        return Loaded(
            LoadStatus.OK,
            record=saved.record if saved else None,
            lang=self._langs.get(msisdn) if want_lang else None,
        )

    async def commit_hop(
        self, msisdn: str, token: str, *, session_id: str, hop_key: str, reply: bytes, record: bytes, ttl_s: int, lang: str | None
    ) -> bool:
        held = self._locks.get(msisdn)
        if held is None or held[0] != token:
            return False
        del self._locks[msisdn]
        now = self._clock()
        self._sessions[msisdn] = _Saved(session_id, hop_key, _exact(reply), _exact(record), now + ttl_s, now)
        if lang:
            self._langs[msisdn] = lang
        self._commits += 1
        if self._commits % SWEEP_EVERY == 0:
            self._sweep()
        return True

    def _sweep(self) -> None:
        now = self._clock()
        for key in [k for k, saved in self._sessions.items() if saved.expires <= now]:
            del self._sessions[key]
        for key in [k for k, (_token, until) in self._locks.items() if until <= now]:
            del self._locks[key]
        for key in [k for k, (_kind, until) in self._pending.items() if until <= now]:
            del self._pending[key]
        for key in [k for k, until in self._sms_keys.items() if until <= now]:
            del self._sms_keys[key]
        for key in [k for k, until in self._claims.items() if until <= now]:
            del self._claims[key]

    def __len__(self) -> int:
        """Dialogues held (expired ones included until swept)."""
        return len(self._sessions)

    async def release(self, msisdn: str, token: str) -> None:
        held = self._locks.get(msisdn)
        if held is not None and held[0] == token:
            del self._locks[msisdn]

    async def set_pending(self, msisdn: str, kind: str, ttl_s: int) -> None:
        self._pending[msisdn] = (kind, self._clock() + ttl_s)

    async def get_pending(self, msisdn: str) -> str | None:
        pending = self._pending.get(msisdn)
        if pending is None:
            return None
        if pending[1] <= self._clock():
            del self._pending[msisdn]
            return None
        return pending[0]

    async def take_pending(self, msisdn: str, kind: str) -> bool:
        if await self.get_pending(msisdn) == kind:
            del self._pending[msisdn]
            return True
        return False

    async def enqueue_sms(self, sms: OutboundSms) -> bool:
        now = self._clock()
        key = (sms.to, sms.dedupe_key)  # per subscriber: two numbers may share a session id
        if self._sms_keys.get(key, 0.0) > now:
            return False
        self._sms_keys[key] = now + SMS_DEDUPE_TTL_S
        self._sms.append(sms)
        if len(self._sms) > self._sms_queue_max:
            self._sms.popleft()
            structlog.get_logger("ussd_gateway.sms").warning("sms_queue_full", dropped=1, cap=self._sms_queue_max)
            if self._on_sms_dropped is not None:
                self._on_sms_dropped(1)
        return True

    async def outbound_sms(self, limit: int = 100) -> list[OutboundSms]:
        return list(itertools.islice(self._sms, limit))

    async def recent_sms(self, msisdn: str, limit: int = 1000) -> list[OutboundSms]:
        newest = list(itertools.islice(reversed(self._sms), limit))
        return [sms for sms in reversed(newest) if sms.to == msisdn]

    async def claim_sms(self, limit: int) -> list[ClaimedSms]:
        claimed = []
        while self._sms and len(claimed) < limit:
            token = next(self._claim_ids)
            self._inflight[token] = sms = self._sms.popleft()
            claimed.append(ClaimedSms(token, sms))
        return claimed

    async def ack_sms(self, item: ClaimedSms) -> None:
        self._inflight.pop(item.token, None)  # type: ignore[call-overload]

    async def requeue_sms(self, item: ClaimedSms) -> None:
        if self._inflight.pop(item.token, None) is not None:  # type: ignore[call-overload]
            self._sms.appendleft(item.sms)

    async def restore_inflight_sms(self) -> int:
        restored = list(self._inflight.values())
        self._inflight.clear()
        self._sms.extendleft(reversed(restored))
        return len(restored)

    async def get_language(self, msisdn: str) -> str | None:
        return self._langs.get(msisdn)

    async def claim_once(self, key: str, ttl_s: int) -> bool:
        now = self._clock()
        if self._claims.get(key, 0.0) > now:
            return False
        self._claims[key] = now + ttl_s
        return True

    async def swap(self, key: str, value: str, ttl_s: float) -> str | None:
        now = self._clock()
        held = self._swaps.get(key)
        self._swaps[key] = (value, now + ttl_s)
        if len(self._swaps) > 100_000:  # bounded: drop what has expired
            self._swaps = {k: v for k, v in self._swaps.items() if v[1] > now}
        return held[0] if held is not None and held[1] > now else None

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None
