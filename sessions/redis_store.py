"""The Redis store: dialogues shared by every gateway process, two round trips a hop.

Keys are hash-tagged by subscriber (`ussd:{84901234567}:sess`) so one subscriber's keys
share a Redis Cluster slot and each Lua script touches one slot. Each hop runs
`BEGIN` (replay check, lock, load) and `COMMIT` (save, expire, unlock) as server-side
scripts registered once (EVALSHA), so a hop costs exactly two round trips.
"""

from __future__ import annotations

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ussd_gateway.errors import DependencyDown

from .store import Loaded, LoadStatus, OutboundSms

# KEYS: session hash, lock, language. ARGV: session id, hop key, token, lock ms, want lang.
_BEGIN = """
local h = redis.call('HMGET', KEYS[1], 'sid', 'key', 'reply', 'rec')
if ARGV[2] ~= '' and h[1] == ARGV[1] and h[2] == ARGV[2] then
  return {'replay', h[3]}
end
if not redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4]) then
  return {'locked'}
end
local lang = false
if ARGV[5] == '1' then lang = redis.call('GET', KEYS[3]) end
return {'ok', h[4], lang}
"""

# KEYS: session hash, lock, language. ARGV: token, session id, hop key, reply, record, ttl s, lang.
_COMMIT = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'sid', ARGV[2], 'key', ARGV[3], 'reply', ARGV[4], 'rec', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('DEL', KEYS[2])
if ARGV[7] ~= '' then redis.call('SET', KEYS[3], ARGV[7], 'EX', 31536000) end
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_TAKE_PENDING = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: dedupe key, queue. ARGV: payload, dedupe ttl s.
_ENQUEUE = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
"""

SMS_QUEUE_KEY = "ussd:{sms}:out"


class RedisStore:
    """Sessions, locks, pending confirmations and the outbound SMS queue in Redis."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "ussd", lock_ttl_ms: int = 5000) -> None:
        self._client = client
        self._prefix = prefix
        self._lock_ttl_ms = str(lock_ttl_ms)
        self._begin = client.register_script(_BEGIN)
        self._commit = client.register_script(_COMMIT)
        self._release = client.register_script(_RELEASE)
        self._take_pending = client.register_script(_TAKE_PENDING)
        self._enqueue = client.register_script(_ENQUEUE)

    @classmethod
    def from_url(cls, url: str, *, socket_timeout_s: float = 0.3, **kwargs) -> "RedisStore":
        """A store on its own connection pool; short timeouts so a dead Redis is noticed
        within a hop's deadline, and redis-py reconnects by itself when it returns."""
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            health_check_interval=0,
            max_connections=256,
        )
        return cls(client, **kwargs)

    @property
    def client(self) -> aioredis.Redis:
        return self._client

    def _keys(self, msisdn: str) -> list[str]:
        base = f"{self._prefix}:{{{msisdn}}}"
        return [base + ":sess", base + ":lock", base + ":lang"]

    async def begin_hop(self, msisdn: str, session_id: str, hop_key: str, token: str, *, want_lang: bool) -> Loaded:
        try:
            result = await self._begin(
                keys=self._keys(msisdn), args=[session_id, hop_key, token, self._lock_ttl_ms, "1" if want_lang else "0"]
            )
        except RedisError as exc:
            raise DependencyDown(f"session store: {exc.__class__.__name__}: {exc}") from exc
        status = result[0]
        if status == b"replay":
            return Loaded(LoadStatus.REPLAY, reply=result[1])
        if status == b"locked":
            return Loaded(LoadStatus.LOCKED)
        record = result[1] if len(result) > 1 else None
        lang = result[2].decode() if len(result) > 2 and result[2] else None
        return Loaded(LoadStatus.OK, record=record or None, lang=lang)

    async def commit_hop(
        self, msisdn: str, token: str, *, session_id: str, hop_key: str, reply: bytes, record: bytes, ttl_s: int, lang: str | None
    ) -> bool:
        try:
            saved = await self._commit(
                keys=self._keys(msisdn), args=[token, session_id, hop_key, reply, record, str(ttl_s), lang or ""]
            )
        except RedisError as exc:
            raise DependencyDown(f"session store: {exc.__class__.__name__}: {exc}") from exc
        return bool(saved)

    async def release(self, msisdn: str, token: str) -> None:
        try:
            await self._release(keys=[self._keys(msisdn)[1]], args=[token])
        except RedisError:
            pass  # the lock expires by itself after lock_ttl_ms

    def _pending_key(self, msisdn: str) -> str:
        return f"{self._prefix}:{{{msisdn}}}:pending"

    async def set_pending(self, msisdn: str, kind: str, ttl_s: int) -> None:
        try:
            await self._client.set(self._pending_key(msisdn), kind, ex=ttl_s)
        except RedisError as exc:
            raise DependencyDown(f"session store: {exc}") from exc

    async def get_pending(self, msisdn: str) -> str | None:
        try:
            value = await self._client.get(self._pending_key(msisdn))
        except RedisError as exc:
            raise DependencyDown(f"session store: {exc}") from exc
        return value.decode() if value else None

    async def take_pending(self, msisdn: str, kind: str) -> bool:
        try:
            return bool(await self._take_pending(keys=[self._pending_key(msisdn)], args=[kind]))
        except RedisError as exc:
            raise DependencyDown(f"session store: {exc}") from exc

    async def enqueue_sms(self, sms: OutboundSms) -> bool:
        payload = orjson.dumps({"to": sms.to, "from": sms.sender, "text": sms.text, "key": sms.dedupe_key})
        try:
            return bool(
                await self._enqueue(keys=[f"ussd:{{sms}}:dedupe:{sms.dedupe_key}", SMS_QUEUE_KEY], args=[payload, "86400"])
            )
        except RedisError as exc:
            raise DependencyDown(f"session store: {exc}") from exc

    async def outbound_sms(self, limit: int = 100) -> list[OutboundSms]:
        try:
            raw = await self._client.lrange(SMS_QUEUE_KEY, 0, limit - 1)
        except RedisError as exc:
            raise DependencyDown(f"session store: {exc}") from exc
        items = [orjson.loads(item) for item in raw]
        return [OutboundSms(to=i["to"], sender=i["from"], text=i["text"], dedupe_key=i["key"]) for i in items]

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except RedisError:
            return False

    async def close(self) -> None:
        await self._client.aclose()
