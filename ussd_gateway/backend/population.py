"""A generated demo population: many subscribers, deterministic from a seed, made lazily.

The named subscribers of `demo_data.toml` are few and hand-written; care campaigns need
a crowd whose tiers, points, ARPU and packages vary, so that a filter such as "Gold
members with 10.000 points or more who do not hold MAX90" selects some and not others.
Subscriber `i` (0 <= i < size) is `84970000000 + i` and everything about them is drawn
from `Random(f"{seed}:{i}")`: the same seed gives the same crowd on every machine and
in every process, and nothing is stored until a subscriber is first contacted.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

from ussd_gateway.backend.port import Account, ActivePackage, Kndl, SubscriberFilter, SubscriberProfile

FIRST_MSISDN = 84970000000
TIERS = ("Than thiet", "Bac", "Titan", "Vang", "Kim cuong")
"""KNDL tiers, lowest first (as `Kndl.tier` spells them)."""
_TIER_WEIGHTS = (40, 30, 15, 10, 5)
_FAMILY = ("Nguyen", "Tran", "Le", "Pham", "Hoang", "Vu", "Dang", "Bui", "Do", "Ho")
_GIVEN = ("An", "Binh", "Chi", "Dung", "Giang", "Ha", "Hung", "Lan", "Linh", "Mai", "Minh", "Nam", "Phuong", "Quang", "Thu", "Tuan")
# (code, name, days of validity, weight): what a subscriber of the crowd may hold.
_PACKAGES = (("D15", "D15", 3, 10), ("D30", "D30", 7, 15), ("MAX90", "MAX90", 30, 25), ("MAX200", "MAX200", 30, 8), ("C120", "C120", 30, 12))


@dataclass(frozen=True, slots=True)
class Population:
    """`size` generated subscribers drawn from `seed`; `size` 0 means none."""

    size: int = 50_000
    seed: int = 2024

    def index_of(self, msisdn: str) -> int | None:
        """The subscriber's index, or None when `msisdn` is not one of the crowd."""
        if not msisdn.isdigit():
            return None
        index = int(msisdn) - FIRST_MSISDN
        return index if 0 <= index < self.size else None

    def profile(self, index: int, today: date | None = None) -> SubscriberProfile:
        """Subscriber `index` as a campaign sees them."""
        rng = random.Random(f"{self.seed}:{index}")
        name = f"{rng.choice(_FAMILY)} {rng.choice(_GIVEN)}"
        arpu = int(rng.lognormvariate(11.3, 0.6)) // 1000 * 1000  # median about 80.000đ a month
        member = rng.random() < 0.55
        tier = rng.choices(TIERS, _TIER_WEIGHTS)[0] if member else ""
        points = int(rng.expovariate(1 / (2_000 + 6_000 * TIERS.index(tier)))) if member else rng.randrange(0, 3_000)
        balance = rng.randrange(0, 300) * 1_000
        package = expiry = ""
        if rng.random() < 0.7:
            code, _name, days, _w = rng.choices(_PACKAGES, [p[3] for p in _PACKAGES])[0]
            package = code
            expiry = ((today or date.today()) + timedelta(days=rng.randrange(0, days + 1))).isoformat()
        return SubscriberProfile(
            msisdn=str(FIRST_MSISDN + index), name=name, tier=tier, points=points, balance=balance,
            arpu=arpu, package=package, expiry=expiry, kndl=member,
        )

    def account(self, msisdn: str, today: date) -> Account | None:
        """The account a crowd subscriber has on first contact (None: not one of them)."""
        index = self.index_of(msisdn)
        if index is None:
            return None
        p = self.profile(index, today)
        packages = ()
        if p.package:
            name = next(n for code, n, _d, _w in _PACKAGES if code == p.package)
            packages = (ActivePackage(code=p.package, name=name, expires=p.expiry, auto_renew=True),)
        since = (today - timedelta(days=365)).isoformat()
        return Account(
            msisdn=msisdn, balance=p.balance, points=p.points, packages=packages,
            kndl=Kndl(tier=p.tier, since=since) if p.kndl else None,
        )

    def matching(self, wanted: SubscriberFilter, start: int = 0) -> Iterator[tuple[int, SubscriberProfile]]:
        """(position, profile) of every subscriber `wanted` selects, from position `start`
        on; the position is the index in the crowd, so a resumed walk starts where it left."""
        today = date.today()
        for index in range(max(0, start), self.size):
            profile = self.profile(index, today)
            if wanted.selects(profile):
                yield index, profile
