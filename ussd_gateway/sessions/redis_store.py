"""The Redis store: dialogues shared by every gateway process, two round trips a hop.

Keys are hash-tagged by subscriber (`ussd:{84901234567}:sess`) so one subscriber's keys
share a Redis Cluster slot and each Lua script touches one slot. Each hop runs
`BEGIN` (replay check, lock, load) and `COMMIT` (save, expire, unlock) as server-side
scripts registered once (EVALSHA), so a hop costs exactly two round trips.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
import structlog
from redis.exceptions import NoScriptError, RedisError

from ussd_gateway.core.errors import DependencyDown
from ussd_gateway.sessions.redis_clients import NodeClients, is_cluster, make_client

from ussd_gateway.sessions.hop_scripts import BEGIN as _BEGIN, COMMIT as _COMMIT, RATE_WINDOW_MS, RELEASE as _RELEASE, SESSION_KEY
from ussd_gateway.sessions.resp import lean_pipeline
from ussd_gateway.sessions.redis_pipeline import AutoPipeline, use_hiredis_packing
from ussd_gateway.sessions.store import ClaimedSms, Loaded, LoadStatus, OutboundSms

_TAKE_PENDING = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: the queue, then one dedupe key per SMS (all in the `{sms}` slot). ARGV: queue
# cap, dedupe ttl s, then one payload per SMS. Each SMS whose dedupe key is new is
# queued. Returns {queued, dropped by the cap}.
_ENQUEUE = """
local queued = 0
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[2]) then
    redis.call('RPUSH', KEYS[1], ARGV[i + 1])
    queued = queued + 1
  end
end
local over = redis.call('LLEN', KEYS[1]) - tonumber(ARGV[1])
if over > 0 then redis.call('LTRIM', KEYS[1], over, -1) else over = 0 end
return {queued, over}
"""

_TAKE_OUT = """  -- KEYS: an outbox. ARGV: the payloads now queued: each taken out once.
local n = 0
for i = 1, #ARGV do n = n + redis.call('LREM', KEYS[1], 1, ARGV[i]) end
return n
"""

_now = time.time

SMS_QUEUE_KEY = "ussd:{sms}:out"
SMS_INFLIGHT_KEY = "ussd:{sms}:inflight"
SMS_DEDUPE_PREFIX = "ussd:{sms}:dedupe:"
"""`ussd:{sms}:dedupe:<to>:<key>`: in the queue's slot (queueing is one script on one
slot); the number keeps two subscribers' keys apart (they may share a session id)."""
SMS_QUEUE_MAX = 50_000
"""Outbound SMS kept at most. With no sender draining the queue (SMPP off) it would
grow for ever (about 60 entries a second under load); past the cap the oldest are
dropped, counted (`ussd_sms_dropped_total`) and logged."""
SMS_DEDUPE_TTL_S = 86_400
"""How long an SMS dedupe key is remembered: longer than any retry of the hop or MO
SMS that queued it (seconds to minutes), and as long as the idempotency records of
the purchases whose confirmations it guards (24 h), so a replayed purchase can never
queue its SMS twice."""


def subscriber_key(prefix: str, msisdn: str, name: str) -> str:
    """`ussd:{84901234567}:name`: the hash tag puts every key of one subscriber in one
    Redis Cluster slot, so each script touches one slot."""
    return f"{prefix}:{{{msisdn}}}:{name}"


def sms_payload(sms: OutboundSms) -> bytes:
    """An outbound SMS as the queue holds it (also written by the demo backend's money
    scripts into a subscriber's outbox)."""
    return orjson.dumps({"to": sms.to, "from": sms.sender, "text": sms.text, "key": sms.dedupe_key, **sms.extras()})


# KEYS: in-flight list, queue. ARGV: payload. Back to the head of the queue.
_REQUEUE = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then redis.call('LPUSH', KEYS[2], ARGV[1]) end
return 1
"""

# KEYS: in-flight list, queue. Everything in flight back to the head, oldest first.
_RESTORE = """
local n = 0
while redis.call('RPOPLPUSH', KEYS[1], KEYS[2]) do n = n + 1 end
return n
"""

class _Script:
    """A Lua script called by its SHA1 (EVALSHA), sent whole only if Redis lost it."""

    __slots__ = ("source", "sha")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class RedisStore:
    """Sessions, locks, pending confirmations and the outbound SMS queue in Redis.

    Speed (measured with benchmarks/hops.py; the two hop scripts run on every hop):
    - scripts are called by SHA through an auto-pipeline (`AutoPipeline`): the hops
      that reach the store in one loop turn share one write and one read;
    - straight `EVALSHA` commands, not redis-py's `AsyncScript`, whose per-call
      `isinstance(client, Pipeline)` check against a typing Protocol costs ~8 µs;
    - deadlines are `asyncio.timeout`s here, not the client's `socket_timeout`, with
      which redis-py wraps every send in `asyncio.wait_for` (a new Task per command on
      Python 3.11, ~8 µs). A cancelled read makes redis-py drop that connection, as a
      socket timeout did, so a late reply is never read as the next command's;
    - commands are packed by hiredis (`_HiredisPacking`).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "ussd",
        lock_ttl_ms: int = 1000,
        timeout_s: float | None = 0.3,
        sms_queue_max: int = SMS_QUEUE_MAX,
        on_sms_dropped: Callable[[int], None] | None = None,
        pipeline: Any = None,
    ) -> None:
        """`pipeline`: what carries the hop scripts (`submit(*command) -> Future`,
        `drain`, `close`); redis-py's `AutoPipeline` on `client` by default."""
        self._client = client
        self._prefix = prefix
        self._lock_ttl_ms = str(lock_ttl_ms)
        self._timeout_s = timeout_s
        self._sms_queue_max = str(sms_queue_max)
        self._on_sms_dropped = on_sms_dropped
        self._log = structlog.get_logger("ussd_gateway.sms")
        self._take_out = _Script(_TAKE_OUT)
        self._begin = _Script(_BEGIN)
        self._commit = _Script(_COMMIT)
        self._release = _Script(_RELEASE)
        self._take_pending = _Script(_TAKE_PENDING)
        self._enqueue = _Script(_ENQUEUE)
        self._requeue = _Script(_REQUEUE)
        self._restore = _Script(_RESTORE)
        self._pipeline = pipeline if pipeline is not None else AutoPipeline(client, timeout_s)
        self._nodes = NodeClients(client)

    @classmethod
    def from_url(cls, url: str, *, socket_timeout_s: float = 0.3, cluster: bool = False, **kwargs: Any) -> "RedisStore":
        """A store on its own connection pool. Each store call must answer within
        `socket_timeout_s` (so a dead Redis is noticed within a hop's deadline) and
        redis-py reconnects by itself when it returns. The client itself gets no
        socket timeout (see the class docstring); the connect timeout stays. `url`
        may name one server, Sentinels or a Redis Cluster (`redis_clients`)."""
        client = make_client(
            url,
            cluster=cluster,
            socket_timeout=None,
            socket_connect_timeout=socket_timeout_s,
            health_check_interval=0,
            max_connections=256,
        )
        use_hiredis_packing(client)
        # The hop scripts go over the lean client on a plain single-node URL (~17 µs
        # a hop less than redis-py's pipeline); redis-py serves every other command.
        single = not is_cluster(client)
        lean = lean_pipeline(url, timeout_s=socket_timeout_s, connect_timeout_s=socket_timeout_s) if single else None
        return cls(client, timeout_s=socket_timeout_s, pipeline=lean, **kwargs)

    @property
    def client(self) -> Any:
        """`redis.asyncio.Redis`, or `RedisCluster` on a cluster."""
        return self._client

    def carry_hops_on_client(self) -> None:
        """Send the hop scripts through redis-py's client as well, so that whatever
        instruments that client (tracing) sees every command. Before the first hop only:
        the lean client is dropped unused."""
        if not isinstance(self._pipeline, AutoPipeline):
            self._pipeline = AutoPipeline(self._client, self._timeout_s)

    @property
    def prefix(self) -> str:
        return self._prefix

    def submit(self, *command: Any) -> asyncio.Future[Any]:
        """Queue a command on this store's auto-pipeline now: issued in the same loop
        turn as a hop's script, it rides in the same round trip (the rate limits)."""
        return self._pipeline.submit(*command)

    def _keys(self, msisdn: str) -> tuple[str, str]:
        base = f"{self._prefix}:{{{msisdn}}}"
        return base + ":" + SESSION_KEY, base + ":lang"

    async def _eval(self, script: _Script, keys: tuple[str, ...], args: tuple[Any, ...]) -> Any:
        """Run a script: one round trip (two only right after Redis lost its script
        cache: a restart, SCRIPT FLUSH). Raises DependencyDown when Redis does not
        answer within the timeout (the batch carrying the command enforces it, so a
        caller needs no timer of its own)."""
        try:
            try:
                return await self._pipeline.submit("EVALSHA", script.sha, len(keys), *keys, *args)
            except NoScriptError:
                return await self._pipeline.submit("EVAL", script.source, len(keys), *keys, *args)
        except TimeoutError as exc:  # before OSError: TimeoutError is one
            raise DependencyDown(f"session store: no answer within {self._timeout_s:g} s") from exc
        except (RedisError, OSError) as exc:
            raise DependencyDown(f"session store: {exc.__class__.__name__}: {exc}") from exc

    async def _call(self, *command: Any, **options: Any) -> Any:
        """Any other command, with the same deadline and error mapping (`options` go to
        redis-py's reply parser, e.g. `get=True` for `SET ... GET`)."""
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._client.execute_command(*command, **options)
        except RedisError as exc:
            raise DependencyDown(f"session store: {exc}") from exc
        except TimeoutError as exc:
            raise DependencyDown(f"session store: no answer within {self._timeout_s:g} s") from exc

    counts_hops = True
    """`begin_hop(count=…)` counts the rate limits in the same script (and command)."""

    async def begin_hop(
        self,
        msisdn: str,
        session_id: str,
        hop_key: str,
        token: str,
        *,
        want_lang: bool,
        replay_within_ms: int | None = None,
        count: tuple[str, ...] = (),
        new_key_ttl_s: int = 300,
    ) -> Loaded:
        """`count`: the rate counters (`hop`, `session`) this hop adds to when it takes
        the lock; their values come back in `Loaded.counts`. The language is read with
        the session whatever `want_lang` says (one MGET either way)."""
        window = "" if replay_within_ms is None else str(replay_within_ms)
        args = (
            session_id, hop_key, token, self._lock_ttl_ms, int(_now() * 1000), window,
            1 if "hop" in count else 0, 1 if "session" in count else 0, RATE_WINDOW_MS, new_key_ttl_s,
        )
        result = await self._eval(self._begin, self._keys(msisdn), args)
        status = result[0]
        if status == b"ok":
            lang = result[2].decode() if result[2] else None
            return Loaded(LoadStatus.OK, record=result[1] or None, lang=lang, counts=(int(result[3]), int(result[4])))
        if status == b"replay":
            return Loaded(LoadStatus.REPLAY, reply=result[1])
        return Loaded(LoadStatus.LOCKED)

    async def commit_hop(
        self, msisdn: str, token: str, *, session_id: str, hop_key: str, reply: bytes, record: bytes, ttl_s: int, lang: str | None
    ) -> bool:
        args = (token, session_id, hop_key, reply, record, ttl_s, lang or "", int(_now() * 1000))
        return bool(await self._eval(self._commit, self._keys(msisdn), args))

    async def release(self, msisdn: str, token: str) -> None:
        try:
            await self._eval(self._release, (self._keys(msisdn)[0],), (token,))
        except DependencyDown:
            pass  # the lock expires by itself after lock_ttl_ms

    def _pending_key(self, msisdn: str) -> str:
        return f"{self._prefix}:{{{msisdn}}}:pending"

    async def set_pending(self, msisdn: str, kind: str, ttl_s: int) -> None:
        await self._call("SET", self._pending_key(msisdn), kind, "EX", ttl_s)

    async def get_pending(self, msisdn: str) -> str | None:
        value = await self._call("GET", self._pending_key(msisdn))
        return value.decode() if value else None

    async def take_pending(self, msisdn: str, kind: str) -> bool:
        return bool(await self._eval(self._take_pending, (self._pending_key(msisdn),), (kind,)))

    async def enqueue_sms(self, sms: OutboundSms) -> bool:
        return await self._enqueue_payloads([sms_payload(sms)], [sms]) > 0

    async def _enqueue_payloads(self, payloads: list[bytes], messages: list[OutboundSms]) -> int:
        """Queue each SMS whose dedupe key is new; returns how many were."""
        keys = (SMS_QUEUE_KEY, *(f"{SMS_DEDUPE_PREFIX}{sms.to}:{sms.dedupe_key}" for sms in messages))
        queued, dropped = await self._eval(self._enqueue, keys, (self._sms_queue_max, SMS_DEDUPE_TTL_S, *payloads))
        if dropped:
            self._dropped(int(dropped))
        return int(queued)

    def _dropped(self, count: int) -> None:
        self._log.warning("sms_queue_full", dropped=count, cap=int(self._sms_queue_max))
        if self._on_sms_dropped is not None:
            self._on_sms_dropped(count)

    async def flush_outbox(self, msisdn: str) -> int:
        """Move a subscriber's outbox (SMS written with a debit, in their slot) to the
        queue (`{sms}`) in three one-slot steps: read it, queue each SMS once (dedupe
        key), take out what was read. Cut short, the next flush or sweep finishes it:
        at least once into this method, exactly once onto the queue."""
        outbox = subscriber_key(self._prefix, msisdn, "outbox")
        payloads = await self._call("LRANGE", outbox, 0, 99)
        if not payloads:
            return 0
        await self._enqueue_payloads(payloads, [self._sms_of(raw) for raw in payloads])
        return int(await self._eval(self._take_out, (outbox,), tuple(payloads)))

    async def sweep_outboxes(self, limit: int = 10_000) -> int:
        """Move the outboxes a process left behind (it died between a debit and the
        move): SCAN on every master, at most `limit` keys. Returns SMS moved."""
        moved = 0
        seen = 0
        try:
            # On a cluster, each master in turn through a plain client of its own.
            for client in await self._nodes.masters():
                async for key in client.scan_iter(match=f"{self._prefix}:{{*}}:outbox", count=500):
                    msisdn = key.decode().split("{", 1)[1].split("}", 1)[0]
                    moved += await self.flush_outbox(msisdn)
                    seen += 1
                    if seen >= limit:
                        return moved
        except (RedisError, OSError) as exc:
            raise DependencyDown(f"session store: {exc.__class__.__name__}: {exc}") from exc
        return moved

    async def outbound_sms(self, limit: int = 100) -> list[OutboundSms]:
        raw = await self._call("LRANGE", SMS_QUEUE_KEY, 0, limit - 1)
        return [self._sms_of(item) for item in raw]

    async def recent_sms(self, msisdn: str, limit: int = 1000) -> list[OutboundSms]:
        """A subscriber's SMS among the newest `limit` queued, and any still in their
        outbox, oldest first (for the demo view)."""
        outbox = await self._call("LRANGE", subscriber_key(self._prefix, msisdn, "outbox"), 0, -1)
        queued = await self._call("LRANGE", SMS_QUEUE_KEY, -limit, -1)
        seen = set(queued)  # mid-flush an SMS is queued and not yet taken out of the outbox
        return [sms for sms in map(self._sms_of, [*queued, *(raw for raw in outbox if raw not in seen)]) if sms.to == msisdn]

    @staticmethod
    def _sms_of(raw: bytes) -> OutboundSms:
        return OutboundSms.from_payload(orjson.loads(raw))

    async def claim_sms(self, limit: int) -> list[ClaimedSms]:
        """LMOVE queue -> in-flight, `limit` times in one round trip (a pipeline)."""
        try:
            async with asyncio.timeout(self._timeout_s):
                pipe = self._client.pipeline(transaction=False)
                for _ in range(limit):
                    pipe.lmove(SMS_QUEUE_KEY, SMS_INFLIGHT_KEY, "LEFT", "RIGHT")
                moved = await pipe.execute()
        except (RedisError, TimeoutError, OSError) as exc:
            raise DependencyDown(f"session store: {exc.__class__.__name__}: {exc}") from exc
        return [ClaimedSms(raw, self._sms_of(raw)) for raw in moved if raw is not None]

    async def ack_sms(self, item: ClaimedSms) -> None:
        await self._call("LREM", SMS_INFLIGHT_KEY, 1, item.token)

    async def requeue_sms(self, item: ClaimedSms) -> None:
        await self._eval(self._requeue, (SMS_INFLIGHT_KEY, SMS_QUEUE_KEY), (item.token,))

    async def restore_inflight_sms(self) -> int:
        return int(await self._eval(self._restore, (SMS_INFLIGHT_KEY, SMS_QUEUE_KEY), ()))

    async def get_language(self, msisdn: str) -> str | None:
        value = await self._call("GET", self._keys(msisdn)[1])
        return value.decode() if value else None

    async def claim_once(self, key: str, ttl_s: int) -> bool:
        return bool(await self._call("SET", f"{self._prefix}:once:{key}", "1", "NX", "EX", ttl_s))

    async def swap(self, key: str, value: str, ttl_s: float) -> str | None:
        # `get=True`: without it redis-py reads SET's reply as OK/not OK, a bool, and the
        # value held is lost.
        held = await self._call("SET", f"{self._prefix}:swap:{key}", value, "PX", max(1, int(ttl_s * 1000)), "GET", get=True)
        return held.decode() if held is not None else None

    async def ping(self) -> bool:
        try:
            return bool(await self._call("PING"))
        except DependencyDown:
            return False

    async def prepare(self) -> None:
        """Before serving, on a cluster: read the slot map (read lazily under the first
        hops, redis-py 8.1 closed some of their connections). Else: on first use."""
        if not is_cluster(self._client):
            return
        try:
            async with asyncio.timeout(max(1.0, 3 * (self._timeout_s or 1.0))):
                await self._client.initialize()
        except (RedisError, OSError, TimeoutError) as exc:
            self._log.warning("redis_cluster_not_ready", error=exc.__class__.__name__)

    async def close(self) -> None:
        close = getattr(self._pipeline, "close", None)
        await (close() if close is not None else self._pipeline.drain())
        await self._nodes.close()
        await self._client.aclose()
