"""The demo backend's self-care seed: scratch cards, offers, points and advance rules,
postpaid bills (the `[[cards]]`, `[[offers]]`, `[points]`, `[advance]` tables and the
subscribers' `postpaid` entries of `demo_data.toml`).

Kept apart from `demo_data` (packages, bundles, rewards, subscribers) so the self-care
services grow without touching the catalogue's parser; `demo_data` hands this module
the parsed file and keeps the result in `DemoData.selfcare`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from ussd_gateway.core.msisdn import normalise_msisdn

from ussd_gateway.backend.port import Bill, Offer

DEFAULT_TIER_PERCENT: dict[str, int] = {"Than thiet": 100, "Bac": 110, "Titan": 120, "Vang": 150, "Kim cuong": 200}


def pin_digest(pin: str) -> str:
    """What the demo backend keeps of a PIN: a digest, never the PIN itself."""
    return hashlib.blake2b(pin.strip().encode(), digest_size=12, person=b"ussd-card").hexdigest()


@dataclass(frozen=True, slots=True)
class SeedOffer:
    code: str
    title: str
    until_in_days: int
    kind: str = "package"
    bonus_percent: int = 0
    min_amount: int = 0
    package_code: str | None = None

    def on(self, today: date) -> Offer:
        return Offer(
            code=self.code, title=self.title, until=(today + timedelta(days=self.until_in_days)).isoformat(),
            kind=self.kind, bonus_percent=self.bonus_percent, min_amount=self.min_amount,  # type: ignore[arg-type]
            package_code=self.package_code,
        )


@dataclass(frozen=True, slots=True)
class SeedBill:
    """A postpaid seed subscriber's bill: the previous month's, due in `due_in_days`."""

    amount: int
    paid: int = 0
    due_in_days: int = 10
    pay_from_balance: bool = True

    def on(self, today: date) -> Bill:
        period = (today.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
        return Bill(
            period=period, amount=self.amount, paid=self.paid,
            due=(today + timedelta(days=self.due_in_days)).isoformat(), pay_from_balance=self.pay_from_balance,
        )


@dataclass(frozen=True, slots=True)
class SelfcareSeed:
    """Rules and seed of the self-care services (see the module doc)."""

    cards: dict[str, int] = field(default_factory=dict)
    """PIN digest -> face value in đồng."""
    offers: tuple[SeedOffer, ...] = ()
    dong_per_point: int = 1000
    """A purchase earns one point per this many đồng, times the tier's percentage."""
    base_percent: int = 100
    """The percentage for subscribers who are not KNDL members (they earn too)."""
    tier_percent: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_TIER_PERCENT))
    min_transfer: int = 100
    """The fewest points one transfer may move."""
    advance_amounts: tuple[int, ...] = (10000, 20000, 50000)
    advance_fee_percent: int = 10
    bills: dict[str, SeedBill] = field(default_factory=dict)
    """Postpaid seed subscribers (MSISDN -> bill)."""

    def card_value(self, pin: str) -> int | None:
        return self.cards.get(pin_digest(pin))

    def earned(self, spent: int, tier: str | None) -> int:
        """Points a purchase of `spent` đồng earns (whole points, rounded down)."""
        percent = self.tier_percent.get(tier, self.base_percent) if tier else self.base_percent
        return (spent // self.dong_per_point) * percent // 100

    def advance_fee(self, amount: int) -> int:
        """The fee of an advance: `advance_fee_percent` of it, rounded up to 100đ."""
        fee = -(-amount * self.advance_fee_percent // 100)
        return -(-fee // 100) * 100

    def offers_on(self, today: date) -> tuple[Offer, ...]:
        return tuple(o.on(today) for o in self.offers)

    def bonus(self, amount: int, today: date) -> int:
        """The best top-up bonus the current offers give a card of `amount`."""
        best = 0
        for offer in self.offers:
            if offer.kind == "topup_bonus" and offer.until_in_days >= 0 and amount >= offer.min_amount:
                best = max(best, amount * offer.bonus_percent // 100)
        return best


def parse_selfcare(raw: dict[str, Any]) -> SelfcareSeed:
    """The self-care part of a parsed `demo_data.toml` (every table is optional)."""
    cards: dict[str, int] = {}
    for batch in raw.get("cards", ()):
        first, count, value = str(batch["first"]), int(batch["count"]), int(batch["value"])
        for n in range(count):
            cards[pin_digest(str(int(first) + n).zfill(len(first)))] = value
    points = raw.get("points", {})
    advance = raw.get("advance", {})
    bills = {
        normalise_msisdn(entry["msisdn"]): SeedBill(**entry["postpaid"])
        for entry in raw.get("subscribers", ())
        if "postpaid" in entry
    }
    return SelfcareSeed(
        cards=cards,
        offers=tuple(SeedOffer(**o) for o in raw.get("offers", ())),
        dong_per_point=int(points.get("dong_per_point", 1000)),
        base_percent=int(points.get("base_percent", 100)),
        tier_percent={str(k): int(v) for k, v in points.get("tier_percent", DEFAULT_TIER_PERCENT).items()},
        min_transfer=int(points.get("min_transfer", 100)),
        advance_amounts=tuple(int(a) for a in advance.get("amounts", (10000, 20000, 50000))),
        advance_fee_percent=int(advance.get("fee_percent", 10)),
        bills=bills,
    )
