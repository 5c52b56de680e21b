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
from ussd_gateway.core.formats import LANGUAGES
from ussd_gateway.sessions.record import SessionRecord
from ussd_gateway.sessions.store import OutboundSms, SessionStore

from ussd_gateway.services import derived
from ussd_gateway.services.advice import suggest
from ussd_gateway.services.settings import ServiceSettings
from ussd_gateway.backend.port import (
    CYCLE_DAYS,
    Account,
    ActivePackage,
    BundleChoice,
    Catalogue,
    Confirm,
    Feedback,
    Package,
    Reward,
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
    """`4GB, 1.050 phut, 50 SMS` in the subscriber's language (see `derived.allowance`)."""
    return derived.allowance(_word_in(ctx), ctx.lang, data_mb, voice_min, sms)


def renewal_text(ctx: ActionContext, price: int, days: int, renews: bool = True) -> str:
    """How and when a package renews: `tu gia han 15.000d moi 3 ngay`, `... moi ngay`,
    or `khong tu gia han` when its renewal is off."""
    return derived.renewal(_word_in(ctx), ctx.lang, price, days, renews)


def _word_in(ctx: ActionContext) -> derived.Word:
    return lambda key, lang, variables=None: ctx.word(key, variables)  # the record's language, which `lang` is


def package_view(ctx: ActionContext, package: Package, *, renews: bool = True) -> dict[str, Any]:
    """A catalogue package for screens: `desc` is the catalogue's own description (the
    allowance sums only when the catalogue has none), `renewal` how it renews. Cached
    per language and renewal, saved in the record as a reference."""
    return derived.package_view(_word_in(ctx), ctx.lang, package, renews)


def held_renewal(account: Account) -> dict[str, bool]:
    """Code (upper case) -> whether it renews, for the packages the subscriber holds.
    Buying a held package again extends it and keeps its renewal setting."""
    return {p.code.upper(): p.auto_renew for p in account.packages if p.kind == "package"}


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
    packages = derived.packages_view(_word_in(ctx), ctx.lang, catalogue, str(_arg(ctx, "category")))
    ctx.vars["packages"] = packages
    ctx.vars["category_label"] = ctx.word("category_" + str(ctx.args["category"]))
    return "ok" if packages else "empty"


@action
async def picked_package(ctx: ActionContext) -> str:
    """The package picked from a list (`pkg`) as this subscriber would buy it: one
    they already hold keeps its renewal setting when bought again, and the confirm
    screen says so. The account is read here, once a package is picked, rather than
    for every list shown (the list screen itself says nothing of renewal)."""
    pkg = ctx.vars.get("pkg") or {}
    code = str(pkg.get("code", ""))
    renews = held_renewal(await ctx.backend.account(ctx.msisdn)).get(code.upper(), True)
    if renews != pkg.get("renews", True):
        package = (await ctx.backend.catalogue()).package(code)
        if package is not None:
            ctx.vars["pkg"] = package_view(ctx, package, renews=renews)
    return "ok"


@action
async def suggest_package(ctx: ActionContext) -> str:
    """The package that lowers the subscriber's monthly bill into `pkg` and `suggestion`
    (`services/advice.py`); outcomes replace (it replaces renewing packages, whose
    renewal the purchase then stops: `suggestion.replaces`), saving, none (nothing
    saves money: `suggestion.spend` says what they pay)."""
    catalogue = await ctx.backend.catalogue()
    usage = await ctx.backend.usage_profile(ctx.msisdn)
    account = await ctx.backend.account(ctx.msisdn)
    found = suggest(catalogue.packages, usage, account.packages)
    ctx.vars["suggestion"] = {"spend": usage.monthly_spend, "monthly_cost": 0, "saving": 0, "replaces": "", "replace_codes": []}
    if found is None:
        return "none"
    ctx.vars["pkg"] = package_view(ctx, found.package)
    ctx.vars["suggestion"].update(
        monthly_cost=found.monthly_cost, saving=found.saving,
        replaces=", ".join(p.name for p in found.replaces), replace_codes=[p.code for p in found.replaces],
    )
    return "replace" if found.replaces else "saving"


@action
async def stop_replaced(ctx: ActionContext) -> str:
    """After a suggested purchase: stop the renewal of the packages it replaces
    (`suggestion.replace_codes`), so the subscriber does not pay for both."""
    for code in ctx.vars.get("suggestion", {}).get("replace_codes", []):
        result = await ctx.backend.cancel_renewal(ctx.msisdn, str(code))
        ctx.vars["account"] = account_view(ctx, result.account)
    return "ok"


def _purchase_view(ctx: ActionContext, result: PurchaseResult, code: str, shown: tuple[int, int] | None) -> dict[str, Any]:
    """A purchase's outcome for the next screens and the SMS (`purchase`: status,
    balance, missing, expires, code, and price, days, renewal as the confirm screen
    showed them: `shown` = (price, days), else the package `pkg`)."""
    view: dict[str, Any] = {
        "status": result.status,
        "balance": result.balance,
        "missing": result.missing,
        "expires": result.package.expires if result.package else "",
        "code": code,
    }
    pkg = ctx.vars.get("pkg") or {}
    if shown is None and pkg.get("code") == code:  # the price and period the screen showed
        shown = (int(pkg["price"]), int(pkg["validity_days"]))
    if result.package is not None and shown is not None:
        (price, days), renews = shown, result.package.auto_renew
        view.update(price=price, days=days, renews=renews, renewal=renewal_text(ctx, price, days, renews))
    return view


def _confirmation(ctx: ActionContext, code: str, shown: tuple[int, int] | None) -> Confirm:
    """The confirmation SMS of a successful purchase, rendered from its result."""

    def confirm(result: PurchaseResult) -> OutboundSms:
        view = _purchase_view(ctx, result, code, shown)
        text = ctx.word("sms_purchase", {**view, "hotline": ctx.settings.hotline})
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


async def _buy(
    ctx: ActionContext, code: str, call: Callable[[Confirm], Awaitable[PurchaseResult]], shown: tuple[int, int] | None = None
) -> str:
    """A purchase or a bundle: the debit, the view for the next screens and, on ok,
    the confirmation SMS, queued exactly once per debit."""
    confirm = _confirmation(ctx, code, shown)
    result = await call(confirm)
    ctx.vars["purchase"] = _purchase_view(ctx, result, code, shown)
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
    # `label` heads a list item (`Ngay`); `per` goes mid-sentence (`10.000d/ngay`).
    ctx.vars["cycles"] = [
        {"code": c, "label": ctx.word("cycle_" + c), "per": ctx.word("per_" + c), "renewal": renewal_text(ctx, 0, days)}
        for c, days in CYCLE_DAYS.items()
    ]
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

    def table(levels: Any, label: Callable[[int], str], part: str) -> list[dict[str, Any]]:
        # `label` is a list item ("Khong chon"); `name` goes mid-sentence on the review
        # ("Goi Lan: 1GB, khong SMS, 30 phut"), saying which part is left out.
        return [
            {"index": i, "label": ctx.word("none_word") if lv.amount == 0 else label(lv.amount),
             "name": ctx.word("none_" + part) if lv.amount == 0 else label(lv.amount), "price": lv.prices[cycle]}
            for i, lv in enumerate(levels)
        ]

    # Labels are made from the amounts in the subscriber's language (the catalogue's
    # own labels are Vietnamese only).
    ctx.vars["levels"] = {
        "data": table(catalogue.bundle_data, lambda mb: describe_allowance(ctx, mb, 0, 0), "data"),
        "sms": table(catalogue.bundle_sms, lambda n: describe_allowance(ctx, 0, 0, n), "sms"),
        "voice": table(catalogue.bundle_voice, lambda minutes: describe_allowance(ctx, 0, minutes, 0), "voice"),
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
    shown = (int(ctx.vars["bundle"]["total"]), CYCLE_DAYS[choice.cycle])  # what the review screen showed
    return await _buy(
        ctx, choice.name, lambda confirm: ctx.backend.buy_bundle(ctx.msisdn, choice, ctx.idempotency_key, confirm), shown
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


def reward_view(ctx: Any, reward: Reward, catalogue: Catalogue, held: Mapping[str, bool]) -> dict[str, Any]:
    """A reward for screens, in the subscriber's language: `label` heads a list item,
    `name` goes mid-sentence. A package reward also carries its `package` (code, money
    price, days) and `renewal_note`: it renews like a bought package, at its money price from
    the main balance (or not, when the subscriber stopped its renewal: `held`)."""
    view = dataclasses.asdict(reward)
    package = catalogue.package(reward.package_code or "") if reward.kind == "package" else None
    if package is not None:
        renews = held.get(package.code.upper(), True)
        facts = {"code": package.code, "days": package.validity_days, "price": package.price}
        view.update(package=facts, name=ctx.word("reward_package", facts), renews=renews,
                    renewal_note=ctx.word("reward_renews" if renews else "reward_no_renew", facts))
    else:
        view.update(name=ctx.word("reward_credit", {"credit": reward.credit}), renewal_note="")
    view["label"] = view["name"][:1].upper() + view["name"][1:]
    return view


@action
async def list_rewards(ctx: ActionContext) -> str:
    """The rewards on offer into `rewards` (`reward_view`)."""
    catalogue = await ctx.backend.catalogue()
    held = held_renewal(await ctx.backend.account(ctx.msisdn))
    ctx.vars["rewards"] = [reward_view(ctx, r, catalogue, held) for r in catalogue.rewards]
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


def topic_view(word: Words, code: str) -> dict[str, str]:
    """A feedback topic: `label` heads a list item (`Chat luong mang`), `about` goes
    mid-sentence (`gop y ve chat luong mang`): no capital inside a sentence."""
    label = word("topic_" + code)
    return {"code": code, "label": label, "about": label[:1].lower() + label[1:]}


@action
async def feedback_topics(ctx: ActionContext) -> str:
    """The four topics into `topics`."""
    ctx.vars["topics"] = [topic_view(ctx.word, t) for t in FEEDBACK_TOPICS]
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
