"""The actions menu definitions call (`kind = "action"`, `call = "purchase"`).

An action reads the session variables and its `args`, calls the subscriber backend,
writes what the next screens show into the variables, and returns an outcome name the
definition routes on (`on = { ok = "done", insufficient = "poor" }`). Actions are the
only place menus touch money; every debit carries an idempotency key derived from the
dialogue (a nonce made when it begins), the hop and the action's position in the hop,
so a gateway retry is free and a recycled session id is not.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ussd_gateway.core.errors import DependencyDown
from ussd_gateway.core.formats import LANGUAGES, data_size
from ussd_gateway.sessions.record import SessionRecord
from ussd_gateway.sessions.store import OutboundSms, SessionStore

from ussd_gateway.services.advice import suggest
from ussd_gateway.services.settings import ServiceSettings
from ussd_gateway.backend.port import (
    CYCLE_DAYS,
    Account,
    ActivePackage,
    BundleChoice,
    Confirm,
    Feedback,
    Package,
    PurchaseResult,
    SubscriberBackend,
)


Words = Callable[..., str]
"""`word(key, variables=None)`: a common text rendered in the subscriber's language."""


@dataclass(slots=True)
class ActionContext:
    """Everything one action call may use."""

    msisdn: str
    session_id: str
    idempotency_key: str
    record: SessionRecord
    args: dict[str, Any]
    backend: SubscriberBackend
    store: SessionStore
    settings: ServiceSettings
    word: Words
    """A localised word from the common texts (`ctx.word("unit_min")`)."""

    @property
    def vars(self) -> dict[str, Any]:
        return self.record.vars

    @property
    def lang(self) -> str:
        return self.record.lang


Action = Callable[[ActionContext], Awaitable[str]]
ACTIONS: dict[str, Action] = {}


def action(func: Action) -> Action:
    """Register `func` under its name for menu definitions to call."""
    ACTIONS[func.__name__] = func
    return func


# ---- shaping backend data for screens -------------------------------------------------
def describe_allowance(ctx: ActionContext, data_mb: int, voice_min: int, sms: int) -> str:
    """`4GB, 1000 phut, 50 SMS` in the subscriber's language."""
    parts: list[str] = []
    if data_mb:
        parts.append(data_size(data_mb, ctx.lang))
    if voice_min:
        parts.append(f"{voice_min} {ctx.word('unit_min')}")
    if sms:
        parts.append(f"{sms} SMS")
    return ", ".join(parts) or "-"


def package_view(ctx: ActionContext, package: Package) -> dict[str, Any]:
    view = dataclasses.asdict(package)
    view["desc"] = describe_allowance(ctx, package.data_mb, package.voice_min, package.sms)
    return view


def active_view(ctx: ActionContext, active: ActivePackage) -> dict[str, Any]:
    view = dataclasses.asdict(active)
    view["remain"] = describe_allowance(ctx, active.data_left_mb, active.voice_left_min, active.sms_left)
    view["renew_label"] = ctx.word("yes_word" if active.auto_renew else "no_word")
    return view


def account_view(ctx: ActionContext, account: Account) -> dict[str, Any]:
    tier = account.kndl.tier if account.kndl else ""
    return {
        "balance": account.balance,
        "points": account.points,
        "member": account.kndl is not None,
        "tier": tier,
        "tier_label": ctx.word("tier_" + tier.lower().replace(" ", "_")) if tier else ctx.word("not_member"),
        "packages": [active_view(ctx, p) for p in account.packages],
        "vas": [
            {**dataclasses.asdict(v), "period_label": ctx.word("per_" + v.period)} for v in account.vas
        ],
    }


def _arg(ctx: ActionContext, name: str) -> Any:
    if name not in ctx.args:
        raise LookupError(f"action needs the argument {name!r}")
    return ctx.args[name]


# ---- account ----------------------------------------------------------------------------
@action
async def load_account(ctx: ActionContext) -> str:
    """Balance, packages, VAS, points and tier into `account`."""
    ctx.vars["account"] = account_view(ctx, await ctx.backend.account(ctx.msisdn))
    return "ok"


@action
async def cancel_renewal(ctx: ActionContext) -> str:
    """Stop the renewal of `args.code`; outcomes ok, not_found, already."""
    code = str(_arg(ctx, "code"))
    package = next((p for p in ctx.vars.get("account", {}).get("packages", []) if p["code"] == code), None)
    if package is not None and not package["auto_renew"]:
        return "already"
    result = await ctx.backend.cancel_renewal(ctx.msisdn, code)
    ctx.vars["account"] = account_view(ctx, result.account)
    return result.status


# ---- buying -----------------------------------------------------------------------------
@action
async def list_packages(ctx: ActionContext) -> str:
    """The packages of `args.category` into `packages`; outcomes ok, empty."""
    catalogue = await ctx.backend.catalogue()
    packages = catalogue.in_category(str(_arg(ctx, "category")))
    ctx.vars["packages"] = [package_view(ctx, p) for p in packages]
    ctx.vars["category_label"] = ctx.word("category_" + str(ctx.args["category"]))
    return "ok" if packages else "empty"


@action
async def suggest_package(ctx: ActionContext) -> str:
    """The best package for the subscriber's usage into `pkg` and `suggestion`;
    outcomes saving (it costs less than today), ok (it does not), none."""
    catalogue = await ctx.backend.catalogue()
    usage = await ctx.backend.usage_profile(ctx.msisdn)
    found = suggest(catalogue.packages, usage)
    if found is None:
        return "none"
    ctx.vars["pkg"] = package_view(ctx, found.package)
    ctx.vars["suggestion"] = {"monthly_cost": found.monthly_cost, "saving": found.saving, "spend": usage.monthly_spend}
    return "saving" if found.saving > 0 else "ok"


def _purchase_view(result: PurchaseResult, code: str) -> dict[str, Any]:
    return {
        "status": result.status,
        "balance": result.balance,
        "missing": result.missing,
        "expires": result.package.expires if result.package else "",
        "code": code,
    }


def _confirmation(ctx: ActionContext, code: str) -> Confirm:
    """The confirmation SMS of a successful purchase, rendered from its result."""

    def confirm(result: PurchaseResult) -> OutboundSms:
        text = ctx.word("sms_purchase", {**_purchase_view(result, code), "hotline": ctx.settings.hotline})
        return OutboundSms(to=ctx.msisdn, sender=ctx.settings.sms_sender, text=text, dedupe_key=ctx.idempotency_key)

    return confirm


ENQUEUE_ATTEMPTS = 3
ENQUEUE_PAUSE_S = 0.02


async def _queue_confirmation(ctx: ActionContext, sms: OutboundSms) -> None:
    """Queue the SMS of a debit the backend could not queue with it (the billing API,
    or the memory mode). Idempotent: the dedupe key is the purchase's idempotency key,
    so the gateway's retry of a hop cut off here (it re-runs the purchase, which
    answers its first result) queues the SMS once. A store down for every attempt
    fails the hop (busy END), and that retry is the next attempt."""
    for attempt in range(ENQUEUE_ATTEMPTS):
        try:
            await ctx.store.enqueue_sms(sms)
            return
        except DependencyDown:
            if attempt == ENQUEUE_ATTEMPTS - 1:
                raise
            await asyncio.sleep(ENQUEUE_PAUSE_S * (attempt + 1))


async def _buy(ctx: ActionContext, code: str, call: Callable[[Confirm], Awaitable[PurchaseResult]]) -> str:
    """A purchase or a bundle: the debit, the view for the next screens and, on ok,
    the confirmation SMS, queued exactly once per debit."""
    confirm = _confirmation(ctx, code)
    result = await call(confirm)
    ctx.vars["purchase"] = _purchase_view(result, code)
    if result.status == "ok" and not getattr(ctx.backend, "queues_confirmations", False):
        await _queue_confirmation(ctx, confirm(result))
    return result.status


@action
async def purchase(ctx: ActionContext) -> str:
    """Debit and activate `args.code`; outcomes ok, insufficient, unknown. On ok the
    confirmation SMS is queued for the SMS channel (once per debit)."""
    code = str(_arg(ctx, "code"))
    return await _buy(ctx, code, lambda confirm: ctx.backend.purchase(ctx.msisdn, code, ctx.idempotency_key, confirm))


# ---- self-built bundle (M090) -------------------------------------------------------------
@action
async def bundle_cycles(ctx: ActionContext) -> str:
    """The cycles on offer into `cycles`."""
    ctx.vars["cycles"] = [{"code": c, "label": ctx.word("cycle_" + c)} for c in CYCLE_DAYS]
    ctx.vars["bundle"] = {"total": 0}
    for stale in ("data_level", "sms_level", "voice_level", "bundle_name"):
        ctx.vars.pop(stale, None)
    # Starting over ("2 Thay doi", "1 Chon lai") drops the bundle screens from the back
    # stack: they show the choices just cleared, and `0` back to the review then bought
    # nothing the subscriber could see (a KeyError, so a "busy" END). `0` now leaves
    # the bundle service the way it was entered.
    while ctx.record.stack and ctx.record.stack[-1][0] == "bundle":
        ctx.record.stack.pop()
    return "ok"


@action
async def bundle_levels(ctx: ActionContext) -> str:
    """Each component's levels, priced for the chosen cycle, into `levels`."""
    catalogue = await ctx.backend.catalogue()
    cycle = ctx.vars["cycle"]["code"]

    def table(levels: Any, label: Callable[[int], str]) -> list[dict[str, Any]]:
        return [
            {"index": i, "label": ctx.word("none_word") if lv.amount == 0 else label(lv.amount), "price": lv.prices[cycle]}
            for i, lv in enumerate(levels)
        ]

    # Labels are made from the amounts in the subscriber's language (the catalogue's
    # own labels are Vietnamese only).
    ctx.vars["levels"] = {
        "data": table(catalogue.bundle_data, lambda mb: describe_allowance(ctx, mb, 0, 0)),
        "sms": table(catalogue.bundle_sms, lambda n: describe_allowance(ctx, 0, 0, n)),
        "voice": table(catalogue.bundle_voice, lambda minutes: describe_allowance(ctx, 0, minutes, 0)),
    }
    return "ok"


@action
async def bundle_quote(ctx: ActionContext) -> str:
    """The running total of the components in `args.parts` (`'data,sms'`) into
    `bundle`. Only the parts named count, so going back and picking again never adds a
    stale choice. Outcome empty when every component is none (nothing to buy)."""
    parts = [p.strip() for p in str(_arg(ctx, "parts")).split(",")]
    picked = [ctx.vars.get(f"{part}_level") for part in parts]
    total = sum(int(p["price"]) for p in picked if p)
    # Also keep the subtotal up to this step (`bundle.upto_sms`): a level screen shows
    # the total of the steps before it, which must not change when the subscriber comes
    # back to it with `0` after later quotes (it showed the later total before).
    ctx.vars["bundle"] = {**ctx.vars.get("bundle", {}), "total": total, f"upto_{parts[-1]}": total}
    return "empty" if len(parts) == 3 and total == 0 else "ok"


@action
async def buy_bundle(ctx: ActionContext) -> str:
    """Debit and register the bundle; outcomes ok, insufficient, unknown."""
    choice = BundleChoice(
        data=int(ctx.vars["data_level"]["index"]),
        sms=int(ctx.vars["sms_level"]["index"]),
        voice=int(ctx.vars["voice_level"]["index"]),
        cycle=ctx.vars["cycle"]["code"],
        name=str(ctx.vars["bundle_name"]).strip(),
    )
    return await _buy(
        ctx, choice.name, lambda confirm: ctx.backend.buy_bundle(ctx.msisdn, choice, ctx.idempotency_key, confirm)
    )


# ---- KNDL -------------------------------------------------------------------------------------
@action
async def kndl_status(ctx: ActionContext) -> str:
    """Membership into `account`; outcomes member, pending (a `DK` waits for `XN`),
    nonmember."""
    account = await ctx.backend.account(ctx.msisdn)
    ctx.vars["account"] = account_view(ctx, account)
    minutes = max(1, -(-ctx.settings.kndl_confirm_s // 60))  # rounded up: never "0 phut"
    ctx.vars["kndl"] = {"minutes": minutes, "short_code": ctx.settings.kndl_short_code}
    if account.kndl is not None:
        return "member"
    if await ctx.store.get_pending(ctx.msisdn) == "join":
        return "pending"
    return "nonmember"


@action
async def kndl_request_join(ctx: ActionContext) -> str:
    """The first of the two steps (same as SMS `DK`): remember a pending join."""
    await ctx.store.set_pending(ctx.msisdn, "join", ctx.settings.kndl_confirm_s)
    return "ok"


@action
async def kndl_confirm_join(ctx: ActionContext) -> str:
    """The second step (same as SMS `XN`); outcomes ok, expired (no pending join),
    already."""
    if not await ctx.store.take_pending(ctx.msisdn, "join"):
        return "expired"
    result = await ctx.backend.kndl_join(ctx.msisdn)
    ctx.vars["account"] = account_view(ctx, result.account)
    return "ok" if result.status == "ok" else "already"


@action
async def list_rewards(ctx: ActionContext) -> str:
    """The rewards on offer into `rewards`."""
    catalogue = await ctx.backend.catalogue()
    ctx.vars["rewards"] = [dataclasses.asdict(r) for r in catalogue.rewards]
    return "ok" if catalogue.rewards else "empty"


@action
async def redeem(ctx: ActionContext) -> str:
    """Deduct points for `args.code`; outcomes ok, insufficient, unknown."""
    result = await ctx.backend.redeem(ctx.msisdn, str(_arg(ctx, "code")), ctx.idempotency_key)
    ctx.vars["redeem"] = {"status": result.status, "points": result.points, "missing": result.missing, "balance": result.balance}
    return result.status


# ---- VAS ----------------------------------------------------------------------------------------
@action
async def load_vas(ctx: ActionContext) -> str:
    """The paid subscriptions into `account.vas`; outcomes ok, empty."""
    account = await ctx.backend.account(ctx.msisdn)
    ctx.vars["account"] = account_view(ctx, account)
    return "ok" if account.vas else "empty"


@action
async def cancel_vas(ctx: ActionContext) -> str:
    """Cancel `args.code`; outcomes ok, not_found."""
    result = await ctx.backend.cancel_vas(ctx.msisdn, str(_arg(ctx, "code")))
    ctx.vars["account"] = account_view(ctx, result.account)
    return "ok" if result.status in ("ok", "already") else "not_found"


# ---- feedback and language ----------------------------------------------------------------------
FEEDBACK_TOPICS = ("care", "products", "network", "other")


@action
async def feedback_topics(ctx: ActionContext) -> str:
    """The four topics into `topics`."""
    ctx.vars["topics"] = [{"code": t, "label": ctx.word("topic_" + t)} for t in FEEDBACK_TOPICS]
    return "ok"


@action
async def submit_feedback(ctx: ActionContext) -> str:
    """Store the message under the chosen topic."""
    await ctx.backend.add_feedback(
        Feedback(
            msisdn=ctx.msisdn,
            topic=str(ctx.vars["topic"]["code"]),
            message=str(ctx.vars["feedback_message"]),
            at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
    )
    return "ok"


@action
async def set_language(ctx: ActionContext) -> str:
    """Switch the dialogue, and the subscriber's next ones, to `args.lang`."""
    lang = str(_arg(ctx, "lang"))
    if lang not in LANGUAGES:
        return "error"
    ctx.record.lang = lang
    return "ok"
