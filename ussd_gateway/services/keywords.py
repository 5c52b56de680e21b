"""SMS keyword services: MO SMS to a short code, routed by keyword, answered by SMS.

Keywords are declared in the menu definitions beside the USSD screens of the same
service (`[[keywords]]` in kndl.toml and buy.toml) and their reply texts live there too
(`[texts]`). Matching is case-insensitive and tolerant of extra spaces and diacritics:
`dk`, ` DK `, `Đk` are all `DK`. A keyword `*` catches everything else sent to that
short code. The KNDL keywords share the pending confirmation with the USSD KNDL menu,
so a subscriber may start by SMS and finish by USSD, or the other way round.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ussd_gateway.sessions.store import SessionStore

from ussd_gateway.services.settings import ServiceSettings
from ussd_gateway.backend.port import SubscriberBackend

MAX_SMS_TEXT = 1600


def normalise_keyword_text(text: str) -> list[str]:
    """Upper-case words without diacritics: ` Đk  xn ` -> ["DK", "XN"]."""
    text = text[:MAX_SMS_TEXT].replace("đ", "d").replace("Đ", "D")
    decomposed = unicodedata.normalize("NFD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return plain.upper().split()


@dataclass(slots=True)
class KeywordContext:
    """What a keyword handler may use."""

    msisdn: str
    short_code: str
    words: list[str]
    """The message, normalised; `words[0]` is the keyword."""
    backend: SubscriberBackend
    store: SessionStore
    settings: ServiceSettings
    lang: str
    idempotency_key: str
    """Unique per MO message (a resent message carries the same one)."""
    menu: str
    """The service that declared the keyword: its texts are `menu.key`."""
    texts: Mapping[str, Any]

    def text(self, key: str, variables: Mapping[str, Any] | None = None) -> str:
        """A reply text of the service, in the subscriber's language."""
        return self.texts[f"{self.menu}.{key}"].render(variables or {}, self.lang)

    @property
    def confirm_minutes(self) -> int:
        return max(1, -(-self.settings.kndl_confirm_s // 60))


KeywordHandler = Callable[[KeywordContext], Awaitable[str | None]]
KEYWORD_HANDLERS: dict[str, KeywordHandler] = {}


def keyword_handler(func: KeywordHandler) -> KeywordHandler:
    """Register `func` for `[[keywords]] call = "<name>"`."""
    KEYWORD_HANDLERS[func.__name__] = func
    return func


def _tier(ctx: KeywordContext, tier: str) -> str:
    key = "tier_" + tier.lower().replace(" ", "_")
    return ctx.texts[key].render({}, ctx.lang) if key in ctx.texts else tier


# ---- KNDL on 9237 ------------------------------------------------------------------------
@keyword_handler
async def sms_kndl_join(ctx: KeywordContext) -> str:
    """DK: the first of the two steps (shared with the USSD KNDL menu)."""
    account = await ctx.backend.account(ctx.msisdn)
    if account.kndl is not None:
        return ctx.text("sms_already_member", {"tier": _tier(ctx, account.kndl.tier), "points": account.points})
    await ctx.store.set_pending(ctx.msisdn, "join", ctx.settings.kndl_confirm_s)
    return ctx.text("sms_join_pending", {"minutes": ctx.confirm_minutes})


@keyword_handler
async def sms_kndl_confirm(ctx: KeywordContext) -> str:
    """XN: completes a pending join or leave, or says why there is nothing to confirm."""
    if await ctx.store.take_pending(ctx.msisdn, "join"):
        result = await ctx.backend.kndl_join(ctx.msisdn)
        account = result.account
        tier = account.kndl.tier if account.kndl else ""
        key = "sms_joined" if result.status == "ok" else "sms_already_member"
        return ctx.text(key, {"tier": _tier(ctx, tier), "points": account.points})
    if await ctx.store.take_pending(ctx.msisdn, "leave"):
        await ctx.backend.kndl_leave(ctx.msisdn)
        return ctx.text("sms_left")
    return ctx.text("sms_nothing_pending", {"minutes": ctx.confirm_minutes})


@keyword_handler
async def sms_kndl_points(ctx: KeywordContext) -> str:
    """DIEM: points and tier."""
    account = await ctx.backend.account(ctx.msisdn)
    if account.kndl is None:
        return ctx.text("sms_points_nonmember", {"points": account.points})
    return ctx.text("sms_points_member", {"points": account.points, "tier": _tier(ctx, account.kndl.tier)})


@keyword_handler
async def sms_kndl_leave(ctx: KeywordContext) -> str:
    """HUY: leaving takes the same two steps as joining."""
    account = await ctx.backend.account(ctx.msisdn)
    if account.kndl is None:
        return ctx.text("sms_not_member")
    await ctx.store.set_pending(ctx.msisdn, "leave", ctx.settings.kndl_confirm_s)
    return ctx.text("sms_leave_pending", {"minutes": ctx.confirm_minutes})


@keyword_handler
async def sms_kndl_help(ctx: KeywordContext) -> str:
    """Anything else to 9237: the keywords."""
    return ctx.text("sms_help")


# ---- packages on 999 ----------------------------------------------------------------------
def _renewal(ctx: KeywordContext, days: int, renews: bool) -> str:
    """How a package renews, in the subscriber's language (the common `renew_*` words)."""
    key = "renew_off" if not renews else "renew_daily" if days == 1 else "renew_every"
    return ctx.texts[key].render({"days": days}, ctx.lang)


def _plain(text: str) -> str:
    """A name as the keyword parser sees it: upper case, no diacritics, single spaces."""
    return " ".join(normalise_keyword_text(text))


@keyword_handler
async def sms_package(ctx: KeywordContext) -> str:
    """`C90N` (or `DK C90N`) registers the package, `HUY C90N` stops its renewal (a
    self-built bundle by the name `KT` lists: `HUY Goi cua Lan`), `KT` lists active
    packages; anything else, typos included, replies how to use 999 and the codes."""
    catalogue = await ctx.backend.catalogue()
    words = ctx.words
    if len(words) >= 2 and words[0] == "DK":
        words = words[1:]  # "DK <code>", the operator's usual wording, means "<code>"
    first = words[0] if words else ""
    if first == "KT" and len(words) == 1:
        account = await ctx.backend.account(ctx.msisdn)
        if not account.packages:
            return ctx.text("sms_none_active")
        listing = "; ".join(f"{p.name} HSD {p.expires[8:10]}/{p.expires[5:7]}/{p.expires[:4]}" for p in account.packages)
        return ctx.text("sms_active", {"list": listing})
    if first == "HUY" and len(words) >= 2:
        wanted = " ".join(words[1:])
        account = await ctx.backend.account(ctx.msisdn)
        held = next((p for p in account.packages if p.code.upper() == wanted), None) or next(
            (p for p in account.packages if _plain(p.name) == wanted), None
        )
        if held is None:
            return ctx.text("sms_not_active", {"code": wanted})
        result = await ctx.backend.cancel_renewal(ctx.msisdn, held.code)
        active = next((p for p in result.account.packages if p.code == held.code), None)
        if result.status == "not_found" or active is None:
            return ctx.text("sms_not_active", {"code": wanted})
        return ctx.text("sms_renewal_cancelled", {"code": active.name, "expires": active.expires})
    package = catalogue.package(first) if first and len(words) == 1 else None
    codes = ", ".join(p.code for p in catalogue.packages)
    if package is None:
        return ctx.text("sms_unknown_code", {"code": " ".join(words)[:20] or "-", "codes": codes})
    result = await ctx.backend.purchase(ctx.msisdn, package.code, ctx.idempotency_key)
    if result.status == "insufficient":
        return ctx.text("sms_poor", {"code": package.code, "price": package.price, "missing": result.missing})
    if result.status != "ok" or result.package is None:
        return ctx.text("sms_unknown_code", {"code": package.code, "codes": codes})
    return ctx.text("sms_bought", {
        "code": package.code, "price": package.price, "days": package.validity_days,
        "renewal": _renewal(ctx, package.validity_days, result.package.auto_renew),
        "expires": result.package.expires, "balance": result.balance,
    })


# ---- routing ------------------------------------------------------------------------------
class KeywordRouter:
    """Finds the handler for an MO SMS by short code and keyword and runs it."""

    def __init__(
        self,
        menus: Any,
        backend: SubscriberBackend,
        store: SessionStore,
        settings: ServiceSettings,
        *,
        default_lang: str = "vi",
    ) -> None:
        self.texts = menus.texts
        self.backend = backend
        self.store = store
        self.settings = settings
        self.default_lang = default_lang
        self._routes: dict[tuple[str, str], tuple[KeywordHandler, str]] = {}
        for keyword in menus.keywords:
            for word in keyword.words:
                self._routes[(keyword.short_code, word)] = (KEYWORD_HANDLERS[keyword.call], keyword.menu)

    def add_route(self, short_code: str, word: str, handler: KeywordHandler, menu: str) -> None:
        """Serve `word` (`*`: anything else) on `short_code` with `handler`, for services
        declared in code rather than in the menus (the care opt-out keywords)."""
        self._routes[(short_code, word)] = (handler, menu)

    @property
    def short_codes(self) -> set[str]:
        return {code for code, _word in self._routes}

    def route(self, short_code: str, words: list[str]) -> tuple[KeywordHandler, str] | None:
        first = words[0] if words else ""
        return self._routes.get((short_code, first)) or self._routes.get((short_code, "*"))

    async def handle(self, msisdn: str, short_code: str, text: str, *, message_key: str, lang: str | None = None) -> str | None:
        """The reply to send, or None when nothing serves that short code."""
        words = normalise_keyword_text(text)
        found = self.route(short_code, words)
        if found is None:
            return None
        handler, menu = found
        context = KeywordContext(
            msisdn=msisdn,
            short_code=short_code,
            words=words,
            backend=self.backend,
            store=self.store,
            settings=self.settings,
            lang=lang or self.default_lang,
            idempotency_key=f"sms:{message_key}",
            menu=menu,
            texts=self.texts,
        )
        return await handler(context)
