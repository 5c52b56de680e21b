"""The self-care actions: scratch-card top-up (`*100*PIN#` and `*090#`), postpaid bill,
points history and transfer, ending a package now, current offers, airtime advance, and
the `KT` keyword (allowances by SMS).

Registered into the same `ACTIONS` / `KEYWORD_HANDLERS` tables as `actions.py` and
`keywords.py` (this module is imported by the `services` package). Money and points
move only in the backend, with the action's idempotency key, so a retried hop moves
them once. A PIN is read from the session variables, sent to the backend, and dropped
from the variables at once: it is never kept in the saved dialogue, logged or shown.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from ussd_gateway.core.errors import BadRequest
from ussd_gateway.core.formats import money, number
from ussd_gateway.core.msisdn import normalise_msisdn

from ussd_gateway.services.actions import ActionContext, action
from ussd_gateway.services.derived import allowance
from ussd_gateway.services.keywords import KeywordContext, keyword_handler
from ussd_gateway.services.pin_guard import guard_for

VIETNAM_TIME = timezone(timedelta(hours=7))
HISTORY_SHOWN = 5


def _when(at: str) -> str:
    """A UTC timestamp as the subscriber's local day and time: `01/12 21:35`."""
    try:
        moment = datetime.fromisoformat(at).astimezone(VIETNAM_TIME)
    except ValueError:
        return at[:10]
    return moment.strftime("%d/%m %H:%M")


def _wait(ctx: ActionContext, seconds: int) -> str:
    """`24 gio` / `35 phut`, rounded up."""
    if seconds >= 3600:
        return f"{-(-seconds // 3600)} {ctx.word('topup.unit_hour')}"
    return f"{max(1, -(-seconds // 60))} {ctx.word('unit_min')}"


# ---- top-up ---------------------------------------------------------------------------------
@action
async def topup_card(ctx: ActionContext) -> str:
    """Top up with the PIN in `pin`; outcomes ok, invalid, used, locked. Only `invalid`
    counts towards the lockout (a used card is a subscriber's own, seldom a guess). The
    PIN leaves the variables here, whatever the outcome."""
    pin = str(ctx.vars.pop("pin", "")).strip()
    settings = ctx.settings
    guard = guard_for(ctx.store, settings)
    view: dict[str, Any] = {"max": settings.topup_max_failures}
    ctx.vars["topup"] = view
    locked = await guard.locked_for(ctx.msisdn)
    if locked:
        view["wait"] = _wait(ctx, locked)
        return "locked"
    result = await ctx.backend.topup(ctx.msisdn, pin, ctx.idempotency_key)
    view.update(amount=result.amount, bonus=result.bonus, repaid=result.repaid, balance=result.balance)
    if result.status != "invalid":
        return result.status  # ok, or used: a used card is the subscriber's own, not a guess
    failures, locked = await guard.failed(ctx.msisdn)
    if locked:
        view["wait"] = _wait(ctx, locked)
        return "locked"
    view["left"] = max(0, settings.topup_max_failures - failures)
    return result.status


@action
async def topup_history(ctx: ActionContext) -> str:
    """The last top-ups into `history.lines`; outcomes ok, empty."""
    records = await ctx.backend.topup_history(ctx.msisdn, HISTORY_SHOWN)
    lines = []
    for r in records:
        line = f"{_when(r.at)} {money(r.amount, ctx.lang)}"
        if r.bonus:
            line += f" +{money(r.bonus, ctx.lang)} {ctx.word('topup.bonus_word')}"
        if r.repaid:
            line += f" -{money(r.repaid, ctx.lang)} {ctx.word('topup.advance_word')}"
        lines.append(line)
    ctx.vars["history"] = {"lines": "\n".join(lines)}
    return "ok" if records else "empty"


# ---- postpaid -------------------------------------------------------------------------------
@action
async def load_bill(ctx: ActionContext) -> str:
    """The bill into `bill`; outcomes due (something unpaid), paid, prepaid."""
    bill = await ctx.backend.bill(ctx.msisdn)
    if bill is None:
        return "prepaid"
    account = await ctx.backend.account(ctx.msisdn)
    ctx.vars["bill"] = {
        "period": f"{bill.period[5:7]}/{bill.period[:4]}",
        "amount": bill.amount,
        "paid": bill.paid,
        "unpaid": bill.unpaid,
        "due": bill.due,
        "can_pay": bill.pay_from_balance,
        "balance": account.balance,
    }
    return "due" if bill.unpaid else "paid"


@action
async def pay_bill(ctx: ActionContext) -> str:
    """Pay what is unpaid from the linked main balance; outcomes ok, insufficient,
    nothing_due, not_allowed."""
    result = await ctx.backend.pay_bill(ctx.msisdn, ctx.idempotency_key)
    ctx.vars["payment"] = {"paid": result.paid, "balance": result.balance, "missing": result.missing, "unpaid": result.unpaid}
    return result.status


# ---- points ---------------------------------------------------------------------------------
@action
async def points_history(ctx: ActionContext) -> str:
    """The last movements of points into `history.lines`; outcomes ok, empty."""
    entries = await ctx.backend.points_history(ctx.msisdn, HISTORY_SHOWN)
    lines = [
        f"{_when(e.at)} {'+' if e.points > 0 else ''}{number(e.points, ctx.lang)} {ctx.word('points.kind_' + e.kind)} {e.ref}".rstrip()
        for e in entries
    ]
    ctx.vars["history"] = {"lines": "\n".join(lines)}
    return "ok" if entries else "empty"


@action
async def transfer_recipient(ctx: ActionContext) -> str:
    """Check the number in `transfer_to`; outcomes ok (`recipient`), self, not_member,
    invalid."""
    try:
        to = normalise_msisdn(str(ctx.vars.get("transfer_to", "")))
    except BadRequest:
        return "invalid"
    if to == ctx.msisdn:
        return "self"
    account = await ctx.backend.account(to)
    if account.kndl is None:
        return "not_member"
    ctx.vars["recipient"] = {"msisdn": to, "shown": "0" + to[2:] if to.startswith("84") else to}
    return "ok"


@action
async def transfer_points(ctx: ActionContext) -> str:
    """Move `transfer_amount` points to `recipient`; outcomes ok, insufficient,
    recipient_not_member, not_member, self, invalid."""
    amount = int(str(ctx.vars.get("transfer_amount", "0")).strip() or 0)
    result = await ctx.backend.transfer_points(ctx.msisdn, ctx.vars["recipient"]["msisdn"], amount, ctx.idempotency_key)
    ctx.vars["transfer"] = {"sent": result.sent, "points": result.points, "missing": result.missing}
    return result.status


# ---- packages -------------------------------------------------------------------------------
@action
async def end_package(ctx: ActionContext) -> str:
    """End `args.code` now; outcomes ok, not_found."""
    code = str(ctx.args.get("code", ""))
    result = await ctx.backend.end_package(ctx.msisdn, code)
    return "ok" if result.status == "ok" else "not_found"


@action
async def load_offers(ctx: ActionContext) -> str:
    """The current offers into `offers`; outcomes ok, empty."""
    offers = await ctx.backend.offers(ctx.msisdn)
    ctx.vars["offers"] = [
        {"code": o.code, "title": o.title, "until": o.until, "kind": o.kind, "bonus_percent": o.bonus_percent, "min_amount": o.min_amount}
        for o in offers
    ]
    return "ok" if offers else "empty"


# ---- airtime advance ------------------------------------------------------------------------
@action
async def advance_offer(ctx: ActionContext) -> str:
    """After a purchase refused for `purchase.missing`: the advance that covers it into
    `advance`; outcomes ok, owed (one is still unpaid), none (no advance fits)."""
    missing = int(ctx.vars.get("purchase", {}).get("missing", 0))
    quote = await ctx.backend.advance_quote(ctx.msisdn, missing)
    ctx.vars["advance"] = {"amount": quote.amount, "fee": quote.fee, "owed": quote.owed, "missing": missing}
    if quote.status == "ok":
        return "ok"
    return "owed" if quote.status == "owed" else "none"


@action
async def take_advance(ctx: ActionContext) -> str:
    """Take the advance offered in `advance`; outcomes ok, refused."""
    result = await ctx.backend.take_advance(ctx.msisdn, int(ctx.vars["advance"]["amount"]), ctx.idempotency_key)
    ctx.vars["advance"] = {**ctx.vars["advance"], "balance": result.balance, "owed": result.owed}
    return "ok" if result.status == "ok" else "refused"


# ---- allowances by SMS (KT to 999) ----------------------------------------------------------
@keyword_handler
async def sms_allowances(ctx: KeywordContext) -> str:
    """KT: each active package with what is left of it and its expiry."""
    account = await ctx.backend.account(ctx.msisdn)
    if not account.packages:
        return ctx.text("sms_none_active")
    def word(key: str, lang: str, variables: dict[str, Any] | None = None) -> str:
        return ctx.texts[key].render(variables or {}, lang)

    parts = []
    for p in account.packages:
        left = allowance(word, ctx.lang, p.data_left_mb, p.voice_left_min, p.sms_left, none="0")
        parts.append(ctx.text("sms_allowance_item", {"name": p.name, "left": left, "expires": p.expires}))
    return ctx.text("sms_allowances", {"list": "; ".join(parts)})


# ---- `menus check`: the longest values these actions put into screens ------------------------
def worst_case_variables(words: Any, lang: str, longest_money: int, most_points: int) -> dict[str, Any]:
    """Session variables at their widest, for the screen budget check."""
    line = f"31/12 23:59 {money(longest_money, lang)} +{money(longest_money, lang)} {words('topup.bonus_word')} -{money(longest_money, lang)} {words('topup.advance_word')}"
    kinds = ("earn", "redeem", "sent", "received")
    widest_kind = max((words("points.kind_" + k) for k in kinds), key=len)
    points_line = f"31/12 23:59 +{number(most_points, lang)} {widest_kind} 8490****999"
    wait = max((f"99 {words('topup.unit_hour')}", f"59 {words('unit_min')}"), key=len)
    return {
        "topup": {"amount": longest_money, "bonus": longest_money, "repaid": longest_money, "balance": longest_money,
                  "left": 9, "max": 9, "wait": wait},
        "history": {"lines": "\n".join([max(line, points_line, key=len)] * HISTORY_SHOWN)},
        "bill": {"period": "12/2026", "amount": longest_money, "paid": longest_money, "unpaid": longest_money,
                 "due": "2026-12-31", "can_pay": True, "balance": longest_money},
        "payment": {"paid": longest_money, "balance": longest_money, "missing": longest_money, "unpaid": longest_money},
        "recipient": {"msisdn": "84999999999", "shown": "0999999999"},
        "transfer_to": "0999999999",
        "transfer_amount": str(most_points),
        "transfer": {"sent": most_points, "points": most_points, "missing": most_points},
        "offers": [{"code": "W" * 10, "title": "W" * 44, "until": "2026-12-31", "kind": "topup_bonus", "bonus_percent": 100, "min_amount": longest_money}],
        "offer": {"code": "W" * 10, "title": "W" * 44, "until": "2026-12-31", "kind": "topup_bonus", "bonus_percent": 100, "min_amount": longest_money},
        "advance": {"amount": longest_money, "fee": longest_money, "owed": longest_money, "missing": longest_money, "balance": longest_money},
    }

