"""The demo backend's accounts held in Redis, so several gateway processes share one state.

Accounts are JSON strings (written and read by this module only). Each change is a
read (one MGET), the shared business rule (`demo_rules`) run in Python, then one Lua
script that writes only if the account is still what was read: a compare-and-set,
atomic and one round trip, with no connection state to undo when a hop is cancelled
(WATCH/MULTI left an `UNWATCH` to send on a Redis that had stopped answering). Also
the Redis client factory whose timeouts fit within a hop's deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from ussd_gateway.core.errors import DependencyDown
from ussd_gateway.core.fence import HOP_LOCK
from ussd_gateway.core.msisdn import mask_msisdn
from ussd_gateway.sessions.hop_scripts import LOCK_FENCE_LUA, SESSION_KEY
from ussd_gateway.sessions.redis_clients import NodeClients, make_client
from ussd_gateway.sessions.redis_store import sms_payload, subscriber_key
from ussd_gateway.sessions.store import OutboundSms

from ussd_gateway.backend.demo_rules import R, Rule
from ussd_gateway.backend.demo_storage import FEEDBACK_MAX, IDEMPOTENCY_TTL_S
from ussd_gateway.backend.port import (
    Account,
    ActivePackage,
    Confirm,
    Feedback,
    Kndl,
    PurchaseResult,
    VasSubscription,
)

# KEYS: account, idempotency record, the subscriber's session (its hop lock), their SMS outbox, and
# optionally a document kept beside the account (the self-care state) (all in the
# subscriber's slot). ARGV: the account as read ('' when absent), the account to write
# ('' unchanged), the result to remember ('' none), its ttl s, the hop's lock token
# ('' no fence), the confirmation SMS ('' none), the outbox ttl s, and with KEYS[5]:
# the document as read ('' when absent), the document to write ('' unchanged).
# Order matters: a hop whose lock is gone (it answered busy, Redis ran this late)
# changes nothing; a key already used answers its first result; an account (or
# document) changed since it was read makes the caller read again.
_CHANGE = LOCK_FENCE_LUA + """
if ARGV[5] ~= '' and not hop_lock_is(KEYS[3], ARGV[5]) then return {'fenced'} end
if ARGV[3] ~= '' then
  local done = redis.call('GET', KEYS[2])
  if done then return {'done', done} end
end
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return {'moved'} end
if KEYS[5] and (redis.call('GET', KEYS[5]) or '') ~= ARGV[8] then return {'moved'} end
if ARGV[2] ~= '' then redis.call('SET', KEYS[1], ARGV[2]) end
if KEYS[5] and ARGV[9] ~= '' then redis.call('SET', KEYS[5], ARGV[9]) end
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4]) end
if ARGV[6] ~= '' then
  redis.call('RPUSH', KEYS[4], ARGV[6])
  redis.call('EXPIRE', KEYS[4], ARGV[7])
end
return {'ok'}
"""
_CHANGE_SHA = hashlib.sha1(_CHANGE.encode()).hexdigest()

OUTBOX_TTL_S = IDEMPOTENCY_TTL_S
"""An outbox is emptied right after the debit (or by a sweep); the TTL only bounds one
that nothing ever drains, and matches the idempotency record it was written with."""


class OutboxSink(Protocol):
    """What moves a subscriber's outbox to the SMS queue (the Redis session store)."""

    async def flush_outbox(self, msisdn: str) -> int: ...


def _account_from_json(raw: bytes | str) -> Account:
    data = orjson.loads(raw)
    kndl = data.get("kndl")
    return Account(
        msisdn=data["msisdn"], balance=data["balance"], points=data["points"],
        packages=tuple(ActivePackage(**p) for p in data.get("packages", ())),
        vas=tuple(VasSubscription(**v) for v in data.get("vas", ())),
        kndl=Kndl(**kndl) if kndl else None,
    )


def _purchase_from_json(raw: bytes | str) -> PurchaseResult:
    data = orjson.loads(raw)
    package = data.pop("package", None)
    return PurchaseResult(**data, package=ActivePackage(**package) if package else None)


def _feedback_from_json(raw: bytes | str) -> Feedback:
    return Feedback(**orjson.loads(raw))


class RedisStorage:
    """Accounts as JSON strings in Redis, one key per subscriber.

    Atomicity: read, run the rule in Python, compare-and-set in Lua (`_CHANGE`),
    retried when another call changed the account in between. The rules live once, in
    Python, shared with the memory mode; a Lua script restating pricing, activation and
    redemption would be a second copy for the tests to keep in step. A purchase costs
    two round trips (MGET, the script); a plain lookup stays one GET. Contention is
    per subscriber only (and hops of one subscriber are serialised by the hop lock),
    so the retry loop is short and bounded.

    Every key a money write touches shares the `{msisdn}` hash tag: one Redis Cluster
    slot per script. The confirmation SMS is written by the same script into the
    subscriber's outbox, so a debit and its SMS exist together or not at all; the
    outbox is then moved to the SMS queue (in the background: the hop does not wait).

    The self-care state (`demo_selfcare`) is a second document in the same slot that
    `change_beside` compares and sets in the same script as the account, so a top-up,
    a bill payment, an advance, one side of a points transfer, or a purchase with the
    points it earns, is written whole or not at all, with the same fence.

    Every call is bounded by `timeout_s`, with no socket timeout on the shared client:
    a cancelled read makes redis-py drop that connection.
    """

    MAX_ATTEMPTS = 20

    def __init__(
        self,
        client: aioredis.Redis,
        new_account: Callable[[str], Account],
        prefix: str,
        *,
        owned: bool,
        timeout_s: float = 0.3,
        outbox: OutboxSink | None = None,
        money_wait: tuple[int, int] = (0, 0),
    ) -> None:
        self._client = client
        self._wait_replicas, self._wait_timeout_ms = money_wait
        self._nodes = NodeClients(client)
        self._new_account = new_account
        self._prefix = prefix
        self._owned = owned
        self._timeout_s = timeout_s
        self._outbox = outbox
        self._feedback_key = f"{prefix}:feedback"
        self._flushes: set[asyncio.Task[None]] = set()
        self._log = structlog.get_logger("ussd_gateway.backend")

    @property
    def has_outbox(self) -> bool:
        return self._outbox is not None

    def _account_key(self, msisdn: str) -> str:
        return subscriber_key(self._prefix, msisdn, "acct")

    def _idem_key(self, msisdn: str, key: str) -> str:
        return subscriber_key(self._prefix, msisdn, "idem:" + key)

    async def _run(self, *command: Any) -> Any:
        with _redis_errors():
            try:
                async with asyncio.timeout(self._timeout_s):
                    return await self._client.execute_command(*command)
            except TimeoutError as exc:
                raise DependencyDown(f"subscriber store (Redis): no answer within {self._timeout_s:g} s") from exc

    async def load(self, msisdn: str) -> Account:
        key = self._account_key(msisdn)
        raw = await self._run("GET", key)
        if raw is not None:
            return _account_from_json(raw)
        account = self._new_account(msisdn)
        if await self._run("SET", key, orjson.dumps(account), "NX"):
            return account
        raw = await self._run("GET", key)
        if raw is None:  # deleted between SET NX and GET: only an operator does that
            return account
        return _account_from_json(raw)

    async def change(self, msisdn: str, rule: Rule[R]) -> R:
        return await self._transact(msisdn, _alone(rule), None, None, None)

    async def change_once(
        self, msisdn: str, key: str, rule: Rule[PurchaseResult], confirm: Confirm | None = None
    ) -> PurchaseResult:
        return await self._transact(msisdn, _alone(rule), key, confirm, None)

    async def change_beside(
        self,
        msisdn: str,
        key: str | None,
        rule: BesideRule[R],
        beside: Beside,
        *,
        confirm: Confirm | None = None,
    ) -> R:
        """Like `change_once` (or `change` without a key), for a rule that reads and
        changes `beside`'s document too: both written by the same script, or neither."""
        return await self._transact(msisdn, rule, key, confirm, beside)

    async def _transact(
        self, msisdn: str, rule: BesideRule[Any], idempotency_key: str | None, confirm: Confirm | None, beside: Beside | None
    ) -> Any:
        account_key = self._account_key(msisdn)
        idem_key = subscriber_key(self._prefix, msisdn, (beside.idem if beside else "idem:") + (idempotency_key or "-"))
        decode = beside.decode if beside is not None else _purchase_from_json
        lock = HOP_LOCK.get()
        fence = lock.token if lock is not None and lock.msisdn == msisdn else ""
        keys: tuple[str, ...] = (account_key, idem_key, subscriber_key(self._prefix, msisdn, SESSION_KEY), subscriber_key(self._prefix, msisdn, "outbox"))
        if beside is not None:
            keys += (subscriber_key(self._prefix, msisdn, beside.name),)
        for _ in range(self.MAX_ATTEMPTS):
            stored = await self._run("MGET", account_key, idem_key, *keys[4:])
            if idempotency_key is not None and stored[1] is not None:
                return decode(stored[1])
            account = self._new_account(msisdn) if stored[0] is None else _account_from_json(stored[0])
            doc = None if beside is None else (beside.new(msisdn) if stored[2] is None else beside.load(stored[2]))
            result, changed, doc_changed = rule(account, doc)
            write = changed if changed is not None else (account if stored[0] is None else None)
            sms: OutboundSms | None = None
            if confirm is not None and getattr(result, "status", "") == "ok":
                sms = confirm(result)
            args: tuple[Any, ...] = (
                stored[0] or b"",
                orjson.dumps(write) if write is not None else b"",
                orjson.dumps(result) if idempotency_key is not None else b"",
                IDEMPOTENCY_TTL_S,
                fence,
                sms_payload(sms) if sms is not None else b"",
                OUTBOX_TTL_S,
            )
            if beside is not None:
                # A document seen for the first time is written as made (its seed is dated).
                doc_write = doc_changed if doc_changed is not None else (doc if stored[2] is None else None)
                args += (stored[2] or b"", orjson.dumps(doc_write) if doc_write is not None else b"")
            outcome = await self._script(keys, args)
            status = outcome[0]
            if status == b"ok":
                if sms is not None:
                    self._flush_later(msisdn)
                return result
            if status == b"done":
                return decode(outcome[1])
            if status == b"fenced":
                raise DependencyDown("the hop's lock expired before its money write reached Redis; nothing was changed")
            # b"moved": another call changed the account since we read it; read again.
        raise DependencyDown(
            f"subscriber store (Redis): {self.MAX_ATTEMPTS} conflicting updates in a row on one account; retry later"
        )

    async def _script(self, keys: tuple[str, ...], args: tuple[Any, ...]) -> Any:
        if self._wait_replicas:
            return await self._script_replicated(keys, args)
        try:
            return await self._run("EVALSHA", _CHANGE_SHA, len(keys), *keys, *args)
        except DependencyDown as exc:
            if not isinstance(exc.__cause__, NoScriptError):
                raise
            return await self._run("EVAL", _CHANGE, len(keys), *keys, *args)

    async def _script_replicated(self, keys: tuple[str, ...], args: tuple[Any, ...]) -> Any:
        """The script, then `WAIT replicas timeout` on the same connection (WAIT counts
        the replicas holding that connection's writes; on a cluster, the connection to
        the master of the subscriber's slot). Asynchronous replication would otherwise
        let a failover promote a replica that never saw an acknowledged debit.

        Fewer replicas in time: the write stands on the master (it was not undone, its
        SMS is in the outbox), so the caller's success screen is the truth as far as
        anyone can know; what is uncertain is only whether a failover in the next
        moment keeps it. That is logged (`money_write_unreplicated`), not hidden behind
        a busy screen, which would invite the subscriber to buy a second time."""
        client = self._nodes.for_key(keys[0])
        with _redis_errors():
            try:
                async with asyncio.timeout(self._timeout_s + self._wait_timeout_ms / 1000):
                    for command, script in (("EVALSHA", _CHANGE_SHA), ("EVAL", _CHANGE)):
                        pipe = client.pipeline(transaction=False)
                        pipe.execute_command(command, script, len(keys), *keys, *args)
                        pipe.execute_command("WAIT", self._wait_replicas, self._wait_timeout_ms)
                        outcome, acked = await pipe.execute(raise_on_error=False)
                        if isinstance(outcome, NoScriptError):
                            continue
                        if isinstance(outcome, Exception):
                            raise outcome
                        break
            except TimeoutError as exc:
                raise DependencyDown(f"subscriber store (Redis): no answer within {self._timeout_s:g} s") from exc
        if outcome[0] == b"ok" and (isinstance(acked, Exception) or int(acked) < self._wait_replicas):
            self._log.warning("money_write_unreplicated", msisdn=mask_msisdn(keys[0].split("{", 1)[1].split("}", 1)[0]),
                              replicas=acked if not isinstance(acked, Exception) else str(acked), wanted=self._wait_replicas)
        return outcome

    def _flush_later(self, msisdn: str) -> None:
        """Move the outbox to the SMS queue without holding up the hop. If this fails
        the SMS waits in the outbox for the next sweep (`sweep_outboxes`)."""
        if self._outbox is None:
            return
        task = asyncio.get_running_loop().create_task(self._flush(msisdn))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, msisdn: str) -> None:
        try:
            assert self._outbox is not None
            await self._outbox.flush_outbox(msisdn)
        except DependencyDown as exc:
            self._log.warning("outbox_not_flushed", error=str(exc))

    async def add_feedback(self, feedback: Feedback) -> None:
        await self._run("LPUSH", self._feedback_key, orjson.dumps(feedback))
        await self._run("LTRIM", self._feedback_key, 0, FEEDBACK_MAX - 1)

    async def list_feedback(self, limit: int) -> list[Feedback]:
        if limit <= 0:
            return []
        raws = await self._run("LRANGE", self._feedback_key, 0, limit - 1)
        return [_feedback_from_json(raw) for raw in raws]

    async def close(self) -> None:
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
        await self._nodes.close()
        if self._owned:
            await self._client.aclose()

    # ---- shared with the self-care services (demo_selfcare): same client, keys, bounds ----
    @property
    def prefix(self) -> str:
        return self._prefix

    async def command(self, *command: Any) -> Any:
        """One Redis command, bounded by the storage's timeout like its own."""
        return await self._run(*command)


@dataclass(frozen=True, slots=True)
class Beside:
    """A JSON document kept beside each account, in the subscriber's slot, that a
    `change_beside` rule reads and changes with the account (the self-care state)."""

    name: str
    """Its key's suffix (`ussd:{msisdn}:<name>`)."""
    new: Callable[[str], Any]
    """The document of a subscriber who has none yet."""
    load: Callable[[bytes], Any]
    idem: str
    """The prefix of its calls' idempotency keys (`ussd:{msisdn}:<idem><key>`)."""
    decode: Callable[[bytes], Any]
    """A remembered result from its JSON."""


BesideRule = Callable[[Account, Any], tuple[R, Account | None, Any]]
"""A rule over the account and the document beside it: (result, changed account or
None, changed document or None)."""


def _alone(rule: Rule[R]) -> BesideRule[R]:
    def beside(account: Account, _doc: Any) -> tuple[R, Account | None, None]:
        return (*rule(account), None)

    return beside


@contextmanager
def _redis_errors() -> Iterator[None]:
    """Turn any Redis failure into `DependencyDown`, which the dispatcher answers with a
    "service busy" END; redis-py reconnects by itself on the next call."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise DependencyDown(
            f"subscriber store (Redis) cannot answer ({exc.__class__.__name__}: {exc}); check that Redis is up"
        ) from exc


def redis_client(url: str, *, timeout_s: float = 0.5) -> Any:
    """A client whose failures surface within a hop's deadline: short socket timeouts
    and a single immediate retry (enough to replace a connection Redis dropped), not
    redis-py's default of ten retries with back-off. Any URL form of `redis_clients`."""
    return make_client(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), retries=1),
        health_check_interval=0,
    )
