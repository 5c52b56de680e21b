"""The demo backend's self-care services: scratch-card top-up, postpaid bills, points
history and transfers, offers, airtime advance, ending a package.

`SelfcareDemo` is the half of `DemoBackend` that implements these port methods; the
rules are in `demo_selfcare_rules`, the seed in `demo_selfcare_seed`. Each subscriber's
self-care state (`CareState`) lives beside their account, in the same storage mode:

- in memory, under the same per-subscriber lock as the account (`MemoryStorage`);
- in Redis, as `ussd:{msisdn}:care`, written with the account, the call's idempotency
  record (`ussd:{msisdn}:cidem:<key>`) and any confirmation SMS by the demo backend's
  one compare-and-set script (`RedisStorage.change_beside`, fenced by the hop's lock),
  all under the subscriber's hash tag, so one Redis Cluster slot. No WATCH/MULTI.

Money and points move exactly once per idempotency key, every answer (refusals too)
is remembered for 24 h, like the purchases of `demo_storage`. The points a purchase
earns, and their history entry, are written by the same change as its debit.
Two things span two subscribers or the whole system and so cannot sit in one script:

- **A scratch card** is claimed first for the subscriber (`SET ussd:card:<digest>
  <msisdn> NX`, PINs are kept only as digests), then credited in the subscriber's
  change, which notes the card's digest in their state, then marked credited
  (`<msisdn>|done`). Another subscriber finds the card used; so does this subscriber
  once it is marked. A claim whose credit never ran (Redis stopped, the hop's lock
  expired) stays this subscriber's: the retried hop, or a new dial of the same card,
  credits it then, and the note in the state stops a second credit between the
  credit and the mark.
- **A points transfer** is two single-slot steps, each idempotent, completed by retry.
  (1) In the sender's slot, one change debits the points, logs them and adds a pending
  transfer record (`CareState.pending`, id = the call's key) to the sender's state.
  (2) In the recipient's slot, one change credits them under the idempotency key
  `xfer:<sender>:<id>` (so at most once, whoever runs it), then a last change in the
  sender's slot drops the pending record. A transfer interrupted after (1) is
  completed by the retry of the call (same key: its remembered answer, then step 2),
  or by the sender's next transfer. Step 2 is not fenced by the hop's lock: it only
  ever completes a debit already made.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import date, datetime, timezone
from typing import Any, Protocol, TypeVar

import orjson

from ussd_gateway.core.errors import DependencyDown
from ussd_gateway.core.msisdn import normalise_msisdn

from ussd_gateway.backend.demo_data import DemoData
from ussd_gateway.backend.demo_redis import Beside, RedisStorage, _purchase_from_json
from ussd_gateway.backend.demo_rules import Rule
from ussd_gateway.backend.demo_selfcare_rules import (
    CareRule,
    CareState,
    PendingTransfer,
    advance_quote,
    advance_rule,
    end_package_rule,
    pay_bill_rule,
    refused_topup,
    topup_rule,
    tracked,
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
    Confirm,
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

    async def run(self, msisdn: str, key: str | None, rule: CareRule[R], cls: type[R], confirm: Confirm | None = None) -> R: ...

    async def claim_card(self, digest: str, owner: str) -> bool: ...

    async def card_credited(self, digest: str, owner: str) -> None: ...


class MemoryCare:
    """In this process, under the account's own lock: a rule's account and state are
    stored together, with nothing awaited in between."""

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

    async def run(self, msisdn: str, key: str | None, rule: CareRule[R], cls: type[R], confirm: Confirm | None = None) -> R:
        # `confirm` is the caller's to queue (DemoBackend.queues_confirmations is False).
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

    async def card_credited(self, digest: str, owner: str) -> None:
        self._cards[digest] = owner + "|done"


class RedisCare:
    """In Redis beside the account (see the module doc for the keys): every change is
    `RedisStorage.change_beside`, the account storage's fenced compare-and-set."""

    def __init__(self, accounts: RedisStorage, new_state: Callable[[str], CareState]) -> None:
        self._accounts = accounts
        self._prefix = accounts.prefix
        self._new_state = new_state
        self._sides: dict[type, Beside] = {}

    def _beside(self, cls: type[R]) -> Beside:
        """The care state, with `cls` results remembered: purchases under the account
        storage's own `idem:` keys, self-care calls under `cidem:`."""
        side = self._sides.get(cls)
        if side is None:
            if cls is PurchaseResult:
                idem, result = "idem:", _purchase_from_json
            else:
                idem, result = "cidem:", lambda raw: decode(cls, orjson.loads(raw))
            side = Beside("care", self._new_state, lambda raw: decode(CareState, orjson.loads(raw)), idem, result)
            self._sides[cls] = side
        return side

    async def state(self, msisdn: str) -> CareState:
        raw = await self._accounts.command("GET", f"{self._prefix}:{{{msisdn}}}:care")
        return self._new_state(msisdn) if raw is None else decode(CareState, orjson.loads(raw))

    async def replayed(self, msisdn: str, key: str, cls: type[R]) -> R | None:
        raw = await self._accounts.command("GET", f"{self._prefix}:{{{msisdn}}}:cidem:{key}")
        return None if raw is None else decode(cls, orjson.loads(raw))

    async def run(self, msisdn: str, key: str | None, rule: CareRule[R], cls: type[R], confirm: Confirm | None = None) -> R:
        result: R = await self._accounts.change_beside(msisdn, key, rule, self._beside(cls), confirm=confirm)
        return result

    async def claim_card(self, digest: str, owner: str) -> bool:
        key = f"{self._prefix}:card:{digest}"
        if await self._accounts.command("SET", key, owner, "NX"):
            return True
        current = await self._accounts.command("GET", key)
        return current is not None and current.decode() == owner

    async def card_credited(self, digest: str, owner: str) -> None:
        await self._accounts.command("SET", f"{self._prefix}:card:{digest}", owner + "|done", "XX")


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
    async def _tracked(
        self, msisdn: str, key: str, rule: Rule[PurchaseResult], kind: str, ref: str, confirm: Confirm | None = None
    ) -> PurchaseResult:
        """Run a purchase-like rule with the history entry of the points it moves, in one
        change of the account and the care state (one script on Redis, one step under
        the subscriber's lock in memory), once per key."""
        return await self._care.run(msisdn, key, tracked(rule, kind, ref, key, _now()), PurchaseResult, confirm)

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
        card = pin_digest(pin)
        if not await self._care.claim_card(card, m):
            return await self._care.run(m, key, refused_topup("used"), TopupResult)
        rule = topup_rule(value, seed.bonus(value, date.today()), _now(), card)
        result = await self._care.run(m, key, rule, TopupResult)
        try:
            await self._care.card_credited(card, m)
        except DependencyDown:
            pass  # credited all the same; the note in the state answers a new dial `used`
        return result

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
