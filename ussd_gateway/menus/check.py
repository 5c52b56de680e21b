"""`ussd-gateway menus check`: everything `load_menus` checks (unknown targets,
unreachable screens, dead ends, missing translations), plus the screen budget: every
screen rendered in every language at the longest data the demo catalogue can produce.
An END screen must fit one screen unless it says `pageable = true` (then its pages but
the last are CONs with "98"); a screen marked `pageable = false` must fit likewise.
Pageable screens are paged, and each page must fit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ussd_gateway.menus.engine import Engine
from ussd_gateway.menus.model import LANGUAGES, MenuSet, Screen, Text
from ussd_gateway.menus.text import ScreenBudget, screen_cost

LONGEST_DATE = "2026-12-31"


@dataclass
class _Words:
    texts: dict[str, Text]
    lang: str

    def __call__(self, key: str, variables: dict[str, Any] | None = None) -> str:
        return self.texts[key].render(variables or {}, self.lang)


def _longest(values: list[Any]) -> Any:
    return max(values, key=lambda v: len(str(v))) if values else ""


def worst_case_variables(menus: MenuSet, lang: str, demo_data: Path | None = None) -> dict[str, Any]:
    """Session variables holding, field by field, the longest value the demo data can
    put there (a safe over-approximation of any one subscriber's screen)."""
    from ussd_gateway.services.actions import FEEDBACK_TOPICS, account_view, active_view, package_view, reward_view, topic_view
    from ussd_gateway.backend import load_demo_data
    from ussd_gateway.backend.port import Account, ActivePackage, Kndl, VasSubscription

    data = load_demo_data(demo_data)
    catalogue = data.catalogue
    words = _Words(menus.texts, lang)

    class Ctx:
        pass

    ctx: Any = Ctx()
    ctx.lang, ctx.word = lang, words
    seeds = list(data.subscribers.values())
    # Balances and points grow (top-ups, credit rewards); allow eight and six digits.
    biggest_balance = max([s.balance for s in seeds] + [data.default_balance, 99_999_999])
    most_points = max([s.points for s in seeds] + [999_999])
    tiers = ["Kim cuong", "Vang", "Titan", "Bac", "Than thiet"]
    longest_tier = _longest([words("tier_" + t.lower().replace(" ", "_")) for t in tiers] + [words("not_member")])
    actives = [
        ActivePackage(
            code=p.code, name=p.name, expires=LONGEST_DATE, auto_renew=True,
            data_left_mb=p.data_mb, voice_left_min=p.voice_min, sms_left=p.sms,
        )
        for p in catalogue.packages
    ]
    vas = [v for s in seeds for v in s.vas] or [VasSubscription("X", "X", 0, "month")]
    account = account_view(
        ctx,
        Account(msisdn="84900000000", balance=biggest_balance, points=most_points, packages=tuple(actives), vas=tuple(vas),
                kndl=Kndl(tier="Than thiet", since=LONGEST_DATE)),
    )
    account["tier_label"] = longest_tier
    package_views = [package_view(ctx, p) for p in catalogue.packages]
    widest_package = {key: _longest([v[key] for v in package_views]) for key in package_views[0]}
    widest_active = {key: _longest([v[key] for v in (active_view(ctx, a) for a in actives)]) for key in active_view(ctx, actives[0])}
    widest_vas = {key: _longest([v[key] for v in account["vas"]]) for key in account["vas"][0]}
    categories = {c: [v for v in package_views if v["category"] == c] for c in ("data", "voice", "combo")}
    most_prices = max(sum(l.prices[c] for l in levels) for levels in (catalogue.bundle_data, catalogue.bundle_sms, catalogue.bundle_voice) for c in ("day", "week", "month"))
    bundle_total = sum(max(max(l.prices.values()) for l in levels) for levels in (catalogue.bundle_data, catalogue.bundle_sms, catalogue.bundle_voice))

    def levels(table: Any, part: str) -> list[dict[str, Any]]:
        return [
            {"index": i, "label": words("none_word") if l.amount == 0 else l.label,
             "name": words("none_" + part) if l.amount == 0 else l.label, "price": max(l.prices.values())}
            for i, l in enumerate(table)
        ]

    level_tables = {"data": levels(catalogue.bundle_data, "data"), "sms": levels(catalogue.bundle_sms, "sms"), "voice": levels(catalogue.bundle_voice, "voice")}
    cycles = [
        {"code": c, "label": words("cycle_" + c), "per": words("per_" + c),
         "renewal": words("renew_daily") if days == 1 else words("renew_every", {"days": days})}
        for c, days in (("day", 1), ("week", 7), ("month", 30))
    ]
    rewards = [{**reward_view(ctx, r, catalogue, {}), "points": most_points} for r in catalogue.rewards]
    highest_price = max(p.price for p in catalogue.packages)
    from ussd_gateway.services.selfcare import worst_case_variables as selfcare_worst_case

    return {
        **selfcare_worst_case(words, lang, biggest_balance, most_points),
        "account": account,
        "packages": max(categories.values(), key=len),
        "category_label": _longest([words("category_" + c) for c in categories]),
        "pkg": {**widest_package, **widest_active},
        "suggestion": {
            "monthly_cost": highest_price * 10, "saving": biggest_balance, "spend": biggest_balance,
            "replaces": ", ".join(p.name for p in catalogue.packages[:2]), "replace_codes": [],
        },
        "purchase": {
            "balance": biggest_balance, "missing": max(highest_price, bundle_total, most_prices), "expires": LONGEST_DATE, "code": "W" * 20,
            "price": max(highest_price, bundle_total), "days": 30, "renews": True,
            "renewal": _longest([words("renew_every", {"days": 30}), words("renew_daily"), words("renew_off")]),
        },
        "cycles": cycles,
        "cycle": _longest(cycles),
        "levels": level_tables,
        "data_level": max(level_tables["data"], key=lambda l: len(l["name"])),
        "sms_level": max(level_tables["sms"], key=lambda l: len(l["name"])),
        "voice_level": max(level_tables["voice"], key=lambda l: len(l["name"])),
        "bundle": {"total": bundle_total},
        "bundle_name": "W" * 20,
        "kndl": {"minutes": 999, "short_code": "99999"},
        "rewards": rewards,
        "reward": max(rewards, key=lambda r: len(r["name"]) + len(r["renewal_note"])) if rewards else {},
        "redeem": {"points": most_points, "missing": most_points, "balance": biggest_balance},
        "svc": widest_vas,
        "topics": [topic_view(words, t) for t in FEEDBACK_TOPICS],
        "topic": _longest([topic_view(words, t) for t in FEEDBACK_TOPICS]),
        "feedback_message": "W" * 160,
    }


def rendering_engine(menus: MenuSet, budget: ScreenBudget) -> Engine:
    """An engine for rendering screens only: its actions never run."""

    async def no_action(*_args: Any) -> str:
        return "ok"

    return Engine(menus, no_action, budget=budget)


def shown_screens(menus: MenuSet, demo_data: Path | None = None) -> Iterator[tuple[str, dict[str, Any], Screen]]:
    """Every screen a subscriber is shown (not the transient ones), in each language,
    with that language's worst-case variables (`worst_case_variables`)."""
    for lang in LANGUAGES:
        variables = worst_case_variables(menus, lang, demo_data)
        for menu in menus.menus.values():
            for screen in menu.screens.values():
                if not screen.transient:
                    yield lang, variables, screen


def check_screen_budget(menus: MenuSet, budget: ScreenBudget, demo_data: Path | None = None) -> list[str]:
    """Problems with rendered screens: an END (or `pageable = false`) screen that
    would need paging, or a template naming a variable nothing provides."""
    problems: list[str] = []
    engine = rendering_engine(menus, budget)
    for lang, variables, screen in shown_screens(menus, demo_data):
        scope = dict(variables)
        if screen.kind == "list":
            scope["item"] = {}
        texts = [screen.text, screen.item, screen.empty] + [o.label for o in screen.options] + [v.error for v in screen.validators]
        for text in texts:
            if text is None:
                continue
            for path in text.templates[lang].paths:
                root = path.split(".")[0]
                if root != "item" and root not in variables:
                    problems.append(f"{screen.qualified} ({lang}): template uses {{{path}}}, which no action provides")
        pages = engine.paginate_screen(screen, variables, lang, has_footer=screen.kind != "end")
        if len(pages) > 1 and not screen.pageable:
            used, limit, encoding = screen_cost("\n".join(engine.screen_lines(screen, variables, lang)), budget)
            what = "an END screen cannot page unless it says pageable = true" if screen.kind == "end" else "it is marked pageable = false"
            problems.append(
                f"{screen.qualified} ({lang}): renders {used}/{limit} {encoding} at the longest demo data; {what}. Shorten the text."
            )
    return problems
