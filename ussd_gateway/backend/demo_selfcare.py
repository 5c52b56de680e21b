"""The demo backend's self-care services: scratch-card top-up, postpaid bills, points
history and transfers, offers, airtime advance, ending a package.

`SelfcareDemo` is the half of `DemoBackend` that implements these port methods; the
rules are in `demo_selfcare_rules`, the seed in `demo_selfcare_seed`. Each subscriber's
self-care state (`CareState`) lives beside their account, in the same storage mode:

- in memory, under the same per-subscriber lock as the account (`MemoryStorage`);
- in Redis, as `ussd:{msisdn}:care`, changed in one WATCH/MULTI/EXEC transaction with
  the account key and the call's idempotency key (`ussd:{msisdn}:cidem:<key>`), all
  under the subscriber's hash tag, so one Redis Cluster slot.

Money and points move exactly once per idempotency key, every answer (refusals too)
is remembered for 24 h, like the purchases of `demo_storage`. Two things span two
subscribers or the whole system and so cannot sit in one transaction:

- **A scratch card** is claimed first (`SET ussd:card:<digest> <msisdn>|<key> NX`,
  PINs are kept only as digests), then credited in the subscriber's transaction. A
  retried call with the same key finds its own claim and goes on; any other call
  finds the card used.
- **A points transfer** debits the sender and notes the transfer as pending in one
  transaction, credits the recipient under a key derived from the sender's (so once),
  then clears the pending note. A transfer interrupted in between is completed by the
  retry, or by the sender's next transfer.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import date, datetime, timezone
from typing import Any, Protocol, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from ussd_gateway.core.errors import DependencyDown
from ussd_gateway.core.msisdn import normalise_msisdn

from ussd_gateway.backend.demo_data import DemoData
from ussd_gateway.backend.demo_redis import RedisStorage, _account_from_json, _redis_errors
from ussd_gateway.backend.demo_rules import Rule
from ussd_gateway.backend.demo_selfcare_rules import (
    CareRule,
    CareState,
    PendingTransfer,
    advance_quote,
    advance_rule,
    end_package_rule,
    log_points_rule,
    pay_bill_rule,
    refused_topup,
    topup_rule,
    transfer_credit_rule,
    transfer_debit_rule,
    transfer_done_rule,
)
from ussd_gateway.backend.demo_selfcare_seed import pin_digest
from ussd_gateway.backend.demo_storage import IDEMPOTENCY_TTL_S, MemoryStorage
from ussd_gateway.backend.http import decode
from ussd_gateway.backend.port import (
    AdvanceQuote,
    AdvanceResult,
    Bill,
    BillPayment,
    ChangeResult,
    Offer,
    PointsEntry,
    PurchaseResult,
    TopupRecord,
    TopupResult,
    TransferResult,
)

R = TypeVar("R")
MAX_KEY_LENGTH = 200


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _key(key: str) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"idempotency_key must be a non-empty string of at most {MAX_KEY_LENGTH} characters")
    return key


class CareStore(Protocol):
    """Where the self-care state lives; `run` is atomic per subscriber."""

    async def state(self, msisdn: str) -> CareState: ...

    async def replayed(self, msisdn: str, key: str, cls: type[R]) -> R | None: ...

    async def run(self, msisdn: str, key: str | None, rule: CareRule[R], cls: type[R]) -> R: ...

    async def claim_card(self, digest: str, owner: str) -> bool: ...


class MemoryCare:
    """In this process, under the account's own lock."""

    def __init__(self, accounts: MemoryStorage, new_state: Callable[[str], CareState]) -> None:
        self._accounts = accounts
        self._new_state = new_state
        self._states: dict[str, CareState] = {}
        self._done: OrderedDict[tuple[str, str], tuple[float, Any]] = OrderedDict()
        self._cards: dict[str, str] = {}

    def _state(self, msisdn: str) -> CareState:
        state = self._states.get(msisdn)
        if state is None:
            state = self._states[msisdn] = self._new_state(msisdn)
        return state

    async def state(self, msisdn: str) -> CareState:
        return self._state(msisdn)

    async def replayed(self, msisdn: str, key: str, cls: type[R]) -> R | None:
        done = self._done.get((msisdn, key))
        return done[1] if done is not None else None

    async def run(self, msisdn: str, key: str | None, rule: CareRule[R], cls: type[R]) -> R:
        async with self._accounts.account_lock(msisdn):
            now = time.monotonic()
            while self._done and next(iter(self._done.values()))[0] <= now:
                self._done.popitem(last=False)
            if key is not None and (msisdn, key) in self._done:
                return self._done[(msisdn, key)][1]  # type: ignore[no-any-return]
            result, changed, new_state = rule(self._accounts.current(msisdn), self._state(msisdn))
            if changed is not None:
                self._accounts.replace_account(msisdn, changed)
            if new_state is not None:
                self._states[msisdn] = new_state
            if key is not None:
                self._done[(msisdn, key)] = (now + IDEMPOTENCY_TTL_S, result)
            return result

    async def claim_card(self, digest: str, owner: str) -> bool:
        return self._cards.setdefault(digest, owner) == owner


class RedisCare:
    """In Redis beside the account (see the module doc for the keys)."""

    MAX_ATTEMPTS = 100

    def __init__(self, accounts: RedisStorage, new_state: Callable[[str], CareState]) -> None:
        self._accounts = accounts
        self._client: aioredis.Redis = accounts.client
        self._prefix = accounts.prefix
        self._new_state = new_state

    def _care_key(self, msisdn: str) -> str:
        return f"{self._prefix}:{{{msisdn}}}:care"

    def _idem_key(self, msisdn: str, key: str) -> str:
        return f"{self._prefix}:{{{msisdn}}}:cidem:{key}"

    async def state(self, msisdn: str) -> CareState:
        with _redis_errors():
            raw = await self._client.get(self._care_key(msisdn))
        return self._new_state(msisdn) if raw is None else decode(CareState, orjson.loads(raw))

    async def replayed(self, msisdn: str, key: str, cls: type[R]) -> R | None:
        with _redis_errors():
            raw = await self._client.get(self._idem_key(msisdn, key))
        return None if raw is None else decode(cls, orjson.loads(raw))

    async def run(self, msisdn: str, key: str | None, rule: CareRule[R], cls: type[R]) -> R:
        watched = [self._accounts.account_key(msisdn), self._care_key(msisdn)]
        if key is not None:
            watched.append(self._idem_key(msisdn, key))
        with _redis_errors():
            for _ in range(self.MAX_ATTEMPTS):
                async with self._client.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(*watched)
                        stored = await pipe.mget(watched)
                        if key is not None and stored[2] is not None:
                            return decode(cls, orjson.loads(stored[2]))
                        account = self._accounts.new_account(msisdn) if stored[0] is None else _account_from_json(stored[0])
                        state = self._new_state(msisdn) if stored[1] is None else decode(CareState, orjson.loads(stored[1]))
                        result, changed, new_state = rule(account, state)
                        pipe.multi()
                        if changed is not None or stored[0] is None:
                            pipe.set(watched[0], orjson.dumps(changed if changed is not None else account))
                        if new_state is not None or stored[1] is None:
                            pipe.set(watched[1], orjson.dumps(new_state if new_state is not None else state))
                        if key is not None:
                            pipe.set(watched[2], orjson.dumps(result), ex=IDEMPOTENCY_TTL_S)
                        await pipe.execute()
                        return result
                    except WatchError:
                        continue
        raise DependencyDown(f"subscriber store (Redis): {self.MAX_ATTEMPTS} conflicting updates in a row on one account; retry later")

    async def claim_card(self, digest: str, owner: str) -> bool:
        key = f"{self._prefix}:card:{digest}"
        with _redis_errors():
            if await self._client.set(key, owner, nx=True):
                return True
            current = await self._client.get(key)
        return current is not None and current.decode() == owner


class SelfcareDemo:
    """The self-care methods of `DemoBackend` (a base class of it): needs `_data` and
    `_storage`."""

    _data: DemoData
    _storage: Any
    _care_store: CareStore | None = None

    @property
    def _care(self) -> CareStore:
        if self._care_store is None:
            if isinstance(self._storage, RedisStorage):
                self._care_store = RedisCare(self._storage, self._new_state)
            else:
                self._care_store = MemoryCare(self._storage, self._new_state)
        return self._care_store

    def _new_state(self, msisdn: str) -> CareState:
        seed = self._data.selfcare.bills.get(msisdn)
        return CareState(bill=seed.on(date.today()) if seed else None)

    # ---- points earned and spent by the existing purchases and redemptions ---------------------
    async def _tracked(self, msisdn: str, key: str, rule: Rule[PurchaseResult], kind: str, ref: str) -> PurchaseResult:
        """Run a purchase-like rule through the account storage, then note the points it
        moved in the history (once per key)."""
        moved: list[int] = []

        def watched(account: Any) -> tuple[PurchaseResult, Any]:
            result, changed = rule(account)
            if changed is not None:
                moved.append(changed.points - account.points)
            return result, changed

        result: PurchaseResult = await self._storage.change_once(msisdn, key, watched)
        if result.status == "ok" and moved and moved[-1]:
            entry = PointsEntry(at=_now(), kind=kind, points=moved[-1], ref=ref)  # type: ignore[arg-type]
            await self._care.run(msisdn, None, log_points_rule(entry, key), bool)
        return result

    # ---- top-up --------------------------------------------------------------------------------
    async def topup(self, msisdn: str, pin: str, idempotency_key: str) -> TopupResult:
        m, key = normalise_msisdn(msisdn), _key(idempotency_key)
        done = await self._care.replayed(m, key, TopupResult)
        if done is not None:
            return done
        seed = self._data.selfcare
        value = seed.card_value(pin)
        if value is None:
            return await self._care.run(m, key, refused_topup("invalid"), TopupResult)
        if not await self._care.claim_card(pin_digest(pin), f"{m}|{key}"):
            return await self._care.run(m, key, refused_topup("used"), TopupResult)
        rule = topup_rule(value, seed.bonus(value, date.today()), _now())
        return await self._care.run(m, key, rule, TopupResult)

    async def topup_history(self, msisdn: str, limit: int = 5) -> tuple[TopupRecord, ...]:
        return (await self._care.state(normalise_msisdn(msisdn))).topups[: max(0, limit)]

    # ---- postpaid ------------------------------------------------------------------------------
    async def bill(self, msisdn: str) -> Bill | None:
        return (await self._care.state(normalise_msisdn(msisdn))).bill

    async def pay_bill(self, msisdn: str, idempotency_key: str) -> BillPayment:
        return await self._care.run(normalise_msisdn(msisdn), _key(idempotency_key), pay_bill_rule, BillPayment)

    # ---- points --------------------------------------------------------------------------------
    async def points_history(self, msisdn: str, limit: int = 5) -> tuple[PointsEntry, ...]:
        return (await self._care.state(normalise_msisdn(msisdn))).points_log[: max(0, limit)]

    async def transfer_points(self, msisdn: str, to: str, points: int, idempotency_key: str) -> TransferResult:
        m, key, recipient = normalise_msisdn(msisdn), _key(idempotency_key), normalise_msisdn(to)
        done = await self._care.replayed(m, key, TransferResult)
        if done is None:
            await self._finish_transfers(m)  # an earlier transfer left half-done, if any
            if recipient != m and (await self._storage.load(recipient)).kndl is None:
                result = await self._care.run(m, key, _refused_transfer("recipient_not_member"), TransferResult)
            else:
                rule = transfer_debit_rule(recipient, points, key, self._data.selfcare, _now())
                result = await self._care.run(m, key, rule, TransferResult)
        else:
            result = done
        await self._finish_transfers(m)
        return result

    async def _finish_transfers(self, sender: str) -> None:
        for pending in (await self._care.state(sender)).pending:
            await self._credit(sender, pending)

    async def _credit(self, sender: str, pending: PendingTransfer) -> None:
        await self._care.run(pending.to, f"xfer:{sender}:{pending.key}", transfer_credit_rule(pending, _now()), int)
        await self._care.run(sender, None, transfer_done_rule(pending.key), bool)

    # ---- packages and offers -------------------------------------------------------------------
    async def end_package(self, msisdn: str, package_code: str) -> ChangeResult:
        result: ChangeResult = await self._storage.change(normalise_msisdn(msisdn), end_package_rule(package_code))
        return result

    async def offers(self, msisdn: str) -> tuple[Offer, ...]:
        return self._data.selfcare.offers_on(date.today())

    # ---- airtime advance -----------------------------------------------------------------------
    async def advance_quote(self, msisdn: str, missing: int) -> AdvanceQuote:
        m = normalise_msisdn(msisdn)
        account = await self._storage.load(m)
        return advance_quote(account, await self._care.state(m), missing, self._data.selfcare)

    async def take_advance(self, msisdn: str, amount: int, idempotency_key: str) -> AdvanceResult:
        rule = advance_rule(amount, self._data.selfcare, _now())
        return await self._care.run(normalise_msisdn(msisdn), _key(idempotency_key), rule, AdvanceResult)


def _refused_transfer(status: str) -> CareRule[TransferResult]:
    def rule(account: Any, state: CareState) -> tuple[TransferResult, None, None]:
        return TransferResult(status, points=account.points), None, None  # type: ignore[arg-type]

    return rule


__all__ = ["CareStore", "MemoryCare", "RedisCare", "SelfcareDemo"]
