"""The demo backend's accounts held in Redis, so several gateway processes share one state.

Accounts are JSON strings (written and read by this module only); money writes are
WATCH / MULTI / EXEC transactions around the shared business rules (`demo_rules`).
Also the Redis client factory whose timeouts fit within a hop's deadline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, WatchError

from ussd_gateway.core.errors import DependencyDown

from ussd_gateway.backend.demo_rules import R, Rule
from ussd_gateway.backend.demo_storage import FEEDBACK_MAX, IDEMPOTENCY_TTL_S
from ussd_gateway.backend.port import (
    Account,
    ActivePackage,
    Feedback,
    Kndl,
    PurchaseResult,
    VasSubscription,
)


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

    Atomicity: WATCH / MULTI / EXEC (optimistic), retried on `WatchError`, rather than
    a Lua script. The rules then live once, in Python, shared with the memory mode; a
    Lua script would restate pricing, activation and redemption in a second language
    that the tests would have to keep in step. The price is three round trips (WATCH,
    MGET, MULTI…EXEC) on the rare purchases, while a plain lookup stays one GET.
    Contention is per subscriber only, and each lost race means another call of the
    same subscriber committed, so the retry loop is bounded.

    The account key and the idempotency key share the `{msisdn}` hash tag, so WATCH,
    MGET and the transaction touch one Redis Cluster slot. Both are watched: a racing
    call with the same key that commits first makes ours retry and find its result.
    A first contact writes the seed inside the same transaction (or with SET NX on a
    plain lookup), so two processes racing create the account once.
    """

    MAX_ATTEMPTS = 100

    def __init__(
        self, client: aioredis.Redis, new_account: Callable[[str], Account], prefix: str, *, owned: bool
    ) -> None:
        self._client = client
        self._new_account = new_account
        self._prefix = prefix
        self._owned = owned
        self._feedback_key = f"{prefix}:feedback"

    def _account_key(self, msisdn: str) -> str:
        return f"{self._prefix}:{{{msisdn}}}:acct"

    def _idem_key(self, msisdn: str, key: str) -> str:
        return f"{self._prefix}:{{{msisdn}}}:idem:{key}"

    async def load(self, msisdn: str) -> Account:
        key = self._account_key(msisdn)
        with _redis_errors():
            raw = await self._client.get(key)
            if raw is not None:
                return _account_from_json(raw)
            account = self._new_account(msisdn)
            if await self._client.set(key, orjson.dumps(account), nx=True):
                return account
            raw = await self._client.get(key)
        if raw is None:  # deleted between SET NX and GET: only an operator does that
            return account
        return _account_from_json(raw)

    async def change(self, msisdn: str, rule: Rule[R]) -> R:
        return await self._transact(msisdn, rule, None)

    async def change_once(self, msisdn: str, key: str, rule: Rule[PurchaseResult]) -> PurchaseResult:
        return await self._transact(msisdn, rule, key)

    async def _transact(self, msisdn: str, rule: Rule[Any], idempotency_key: str | None) -> Any:
        account_key = self._account_key(msisdn)
        watched = [account_key]
        if idempotency_key is not None:
            watched.append(self._idem_key(msisdn, idempotency_key))
        with _redis_errors():
            for _ in range(self.MAX_ATTEMPTS):
                async with self._client.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(*watched)
                        stored = await pipe.mget(watched)
                        if idempotency_key is not None and stored[1] is not None:
                            return _purchase_from_json(stored[1])
                        account = self._new_account(msisdn) if stored[0] is None else _account_from_json(stored[0])
                        result, changed = rule(account)
                        pipe.multi()
                        if changed is not None or stored[0] is None:
                            pipe.set(account_key, orjson.dumps(changed if changed is not None else account))
                        if idempotency_key is not None:
                            pipe.set(watched[1], orjson.dumps(result), ex=IDEMPOTENCY_TTL_S)
                        if len(pipe):
                            await pipe.execute()
                        return result
                    except WatchError:
                        continue
        raise DependencyDown(
            f"subscriber store (Redis): {self.MAX_ATTEMPTS} conflicting updates in a row on one account; retry later"
        )

    async def add_feedback(self, feedback: Feedback) -> None:
        with _redis_errors():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.lpush(self._feedback_key, orjson.dumps(feedback))
                pipe.ltrim(self._feedback_key, 0, FEEDBACK_MAX - 1)
                await pipe.execute()

    async def list_feedback(self, limit: int) -> list[Feedback]:
        if limit <= 0:
            return []
        with _redis_errors():
            raws = await self._client.lrange(self._feedback_key, 0, limit - 1)
        return [_feedback_from_json(raw) for raw in raws]

    async def close(self) -> None:
        if self._owned:
            await self._client.aclose()

    # ---- shared with the self-care services (demo_selfcare): same client, keys, seed ----
    @property
    def client(self) -> aioredis.Redis:
        return self._client

    @property
    def prefix(self) -> str:
        return self._prefix

    def account_key(self, msisdn: str) -> str:
        return self._account_key(msisdn)

    def new_account(self, msisdn: str) -> Account:
        return self._new_account(msisdn)


@contextmanager
def _redis_errors() -> Iterator[None]:
    """Turn any Redis failure into `DependencyDown`, which the dispatcher answers with a
    "service busy" END; redis-py reconnects by itself on the next call."""
    try:
        yield
    except WatchError:
        raise
    except RedisError as exc:
        raise DependencyDown(
            f"subscriber store (Redis) cannot answer ({exc.__class__.__name__}: {exc}); check that Redis is up"
        ) from exc


def redis_client(url: str, *, timeout_s: float = 0.5) -> aioredis.Redis:
    """A client whose failures surface within a hop's deadline: short socket timeouts
    and a single immediate retry (enough to replace a connection Redis dropped), not
    redis-py's default of ten retries with back-off."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), retries=1),
        health_check_interval=0,
    )
