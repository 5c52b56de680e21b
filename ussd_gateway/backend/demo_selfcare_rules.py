"""The demo backend's self-care rules: top-up, postpaid bills, points, advance, ending a
package.

As in `demo_rules`, each rule is a pure function; here it reads the `Account` and the
subscriber's `CareState` (top-up and points history, an advance owed, the bill,
transfers in flight) and returns `(result, changed account or None, changed state or
None)`. The storages (`demo_selfcare`) run it as one atomic read-check-write, in memory
or in Redis, so both modes behave alike by construction.

Choices the port leaves open (documented in docs/selfcare.md):
- A top-up credits the card's value plus the best current top-up bonus; an advance
  owed is repaid from that credit first, in full or as far as it goes.
- Purchases earn points: one per `dong_per_point` đồng spent, times the tier's
  percentage; non-members earn at `base_percent` (they collect points before joining).
- A points transfer goes between KNDL members only, at least `min_transfer` points.
- One advance at a time; the smallest offered amount that covers the shortfall.
- Ending a package removes it now: what is left of it is lost, nothing is refunded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from ussd_gateway.core.msisdn import mask_msisdn

from ussd_gateway.backend.demo_rules import Rule
from ussd_gateway.backend.demo_selfcare_seed import SelfcareSeed
from ussd_gateway.backend.port import (
    Account,
    AdvanceQuote,
    AdvanceResult,
    Bill,
    BillPayment,
    ChangeResult,
    PointsEntry,
    PurchaseResult,
    TopupRecord,
    TopupResult,
    TransferResult,
)

HISTORY_KEPT = 10
SEEN_KEPT = 64

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Advance:
    """An airtime advance not yet repaid."""

    amount: int
    fee: int
    owed: int
    at: str


@dataclass(frozen=True, slots=True)
class PendingTransfer:
    """Points debited from the sender, not yet known to be credited to `to`."""

    to: str
    points: int
    key: str
    sender_ref: str
    """The sender as the recipient's history shows it (masked)."""


@dataclass(frozen=True, slots=True)
class CareState:
    """A subscriber's self-care state beside the `Account`."""

    topups: tuple[TopupRecord, ...] = ()
    points_log: tuple[PointsEntry, ...] = ()
    advance: Advance | None = None
    bill: Bill | None = None
    pending: tuple[PendingTransfer, ...] = ()
    logged: tuple[str, ...] = ()
    """Keys of operations already in `points_log` (a retried log is a no-op)."""
    cards: tuple[str, ...] = ()
    """Digests of the cards this subscriber was last credited (a card claimed but not
    yet marked credited is credited once, `demo_selfcare.SelfcareDemo.topup`)."""


CareRule = Callable[[Account, CareState], tuple[R, Account | None, CareState | None]]


def _log(state: CareState, entry: PointsEntry, key: str) -> CareState:
    return replace(
        state,
        points_log=(entry, *state.points_log)[:HISTORY_KEPT],
        logged=(key, *state.logged)[:SEEN_KEPT],
    )


# ---- top-up ---------------------------------------------------------------------------------
def topup_rule(amount: int, bonus: int, now: str, card: str) -> CareRule[TopupResult]:
    """Credit the card `card` (a digest), unless this subscriber was credited it already."""

    def rule(account: Account, state: CareState) -> tuple[TopupResult, Account | None, CareState | None]:
        if card in state.cards:
            return TopupResult("used", balance=account.balance), None, None
        credit = amount + bonus
        advance = state.advance
        repaid = min(advance.owed, credit) if advance else 0
        left = advance.owed - repaid if advance else 0
        changed = replace(account, balance=account.balance + credit - repaid)
        record = TopupRecord(at=now, amount=amount, bonus=bonus, repaid=repaid)
        new_state = replace(
            state,
            topups=(record, *state.topups)[:HISTORY_KEPT],
            advance=replace(advance, owed=left) if advance and left else None,
            cards=(card, *state.cards)[:SEEN_KEPT],
        )
        result = TopupResult("ok", balance=changed.balance, amount=amount, bonus=bonus, repaid=repaid)
        return result, changed, new_state

    return rule


def refused_topup(status: str) -> CareRule[TopupResult]:
    """`invalid` or `used`: nothing changes, the answer is remembered under its key."""

    def rule(account: Account, state: CareState) -> tuple[TopupResult, Account | None, CareState | None]:
        return TopupResult(status, balance=account.balance), None, None  # type: ignore[arg-type]

    return rule


# ---- postpaid -------------------------------------------------------------------------------
def pay_bill_rule(account: Account, state: CareState) -> tuple[BillPayment, Account | None, CareState | None]:
    bill = state.bill
    if bill is None or not bill.pay_from_balance:
        return BillPayment("not_allowed", balance=account.balance, unpaid=bill.unpaid if bill else 0), None, None
    if bill.unpaid == 0:
        return BillPayment("nothing_due", balance=account.balance), None, None
    if account.balance < bill.unpaid:
        missing = bill.unpaid - account.balance
        return BillPayment("insufficient", balance=account.balance, unpaid=bill.unpaid, missing=missing), None, None
    paid = bill.unpaid
    changed = replace(account, balance=account.balance - paid)
    new_state = replace(state, bill=replace(bill, paid=bill.amount))
    return BillPayment("ok", balance=changed.balance, paid=paid, unpaid=0), changed, new_state


# ---- points ---------------------------------------------------------------------------------
def earning(inner: Rule[PurchaseResult], seed: SelfcareSeed) -> Rule[PurchaseResult]:
    """`inner` (a purchase or bundle), plus the points it earns, in the same change."""

    def rule(account: Account) -> tuple[PurchaseResult, Account | None]:
        result, changed = inner(account)
        if result.status != "ok" or changed is None:
            return result, changed
        spent = account.balance - changed.balance
        points = seed.earned(spent, account.kndl.tier if account.kndl else None)
        if points <= 0:
            return result, changed
        changed = replace(changed, points=changed.points + points)
        return replace(result, points=changed.points), changed

    return rule


def tracked(inner: Rule[PurchaseResult], kind: str, ref: str, key: str, now: str) -> CareRule[PurchaseResult]:
    """`inner` (a purchase, bundle or redemption) and, when it moves points, their entry
    in the history: one change of the account and the state, so the points and their
    history are written together with the debit, or not at all."""

    def rule(account: Account, state: CareState) -> tuple[PurchaseResult, Account | None, CareState | None]:
        result, changed = inner(account)
        if result.status != "ok" or changed is None or changed.points == account.points or key in state.logged:
            return result, changed, None
        entry = PointsEntry(at=now, kind=kind, points=changed.points - account.points, ref=ref)  # type: ignore[arg-type]
        return result, changed, _log(state, entry, key)

    return rule


def transfer_debit_rule(to: str, points: int, key: str, seed: SelfcareSeed, now: str) -> CareRule[TransferResult]:
    """The sender's side: points off, the transfer noted as pending (same change)."""

    def rule(account: Account, state: CareState) -> tuple[TransferResult, Account | None, CareState | None]:
        if account.kndl is None:
            return TransferResult("not_member", points=account.points), None, None
        if to == account.msisdn:
            return TransferResult("self", points=account.points), None, None
        if points < seed.min_transfer:
            return TransferResult("invalid", points=account.points), None, None
        if account.points < points:
            return TransferResult("insufficient", points=account.points, missing=points - account.points), None, None
        changed = replace(account, points=account.points - points)
        entry = PointsEntry(at=now, kind="sent", points=-points, ref=mask_msisdn(to))
        pending = PendingTransfer(to=to, points=points, key=key, sender_ref=mask_msisdn(account.msisdn))
        new_state = replace(_log(state, entry, key), pending=(*state.pending, pending))
        return TransferResult("ok", points=changed.points, sent=points), changed, new_state

    return rule


def transfer_credit_rule(pending: PendingTransfer, now: str) -> CareRule[int]:
    """The recipient's side (run with an idempotency key derived from the transfer)."""

    def rule(account: Account, state: CareState) -> tuple[int, Account | None, CareState | None]:
        changed = replace(account, points=account.points + pending.points)
        entry = PointsEntry(at=now, kind="received", points=pending.points, ref=pending.sender_ref)
        return changed.points, changed, _log(state, entry, "in:" + pending.key)

    return rule


def transfer_done_rule(key: str) -> CareRule[bool]:
    def rule(account: Account, state: CareState) -> tuple[bool, Account | None, CareState | None]:
        kept = tuple(p for p in state.pending if p.key != key)
        if len(kept) == len(state.pending):
            return False, None, None
        return True, None, replace(state, pending=kept)

    return rule


# ---- airtime advance ------------------------------------------------------------------------
def advance_quote(account: Account, state: CareState, missing: int, seed: SelfcareSeed) -> AdvanceQuote:
    if state.bill is not None:
        return AdvanceQuote("not_allowed")
    if state.advance is not None:
        return AdvanceQuote("owed", owed=state.advance.owed)
    amount = next((a for a in sorted(seed.advance_amounts) if a >= missing), None)
    if amount is None or missing <= 0:
        return AdvanceQuote("too_much")
    return AdvanceQuote("ok", amount=amount, fee=seed.advance_fee(amount))


def advance_rule(amount: int, seed: SelfcareSeed, now: str) -> CareRule[AdvanceResult]:
    def rule(account: Account, state: CareState) -> tuple[AdvanceResult, Account | None, CareState | None]:
        quote = advance_quote(account, state, amount, seed)
        if quote.status != "ok" or quote.amount != amount:
            status = quote.status if quote.status != "ok" else "too_much"
            return AdvanceResult(status, balance=account.balance, owed=quote.owed), None, None  # type: ignore[arg-type]
        fee = quote.fee
        changed = replace(account, balance=account.balance + amount)
        new_state = replace(state, advance=Advance(amount=amount, fee=fee, owed=amount + fee, at=now))
        return AdvanceResult("ok", balance=changed.balance, amount=amount, fee=fee, owed=amount + fee), changed, new_state

    return rule


# ---- ending a package -----------------------------------------------------------------------
def end_package_rule(code: str) -> Rule[ChangeResult]:
    wanted = code.strip().upper()

    def rule(account: Account) -> tuple[ChangeResult, Account | None]:
        kept = tuple(p for p in account.packages if p.code.upper() != wanted)
        if len(kept) == len(account.packages):
            return ChangeResult("not_found", account), None
        changed = replace(account, packages=kept)
        return ChangeResult("ok", changed), changed

    return rule
