"""Package advice ("suggested for you"): from the subscriber's average monthly spend and
their data/voice mix, the package (or none) that lowers what they pay.

The model, kept deliberately plain so that every figure on the screen is one the
subscriber can check:

- What they pay now is their average monthly spend, renewing packages included.
- A candidate must cover a month of their data and voice by itself. Taking it, they
  stop the renewal of the packages they have (it replaces them): afterwards they pay
  the candidate's monthly cost, and nothing else for that usage.
- The saving is what they pay now minus that cost. Only a positive saving is advice;
  a package they already renew is not "new" advice. When no candidate saves money the
  answer is none, said plainly: advice never recommends paying more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ussd_gateway.backend.port import ActivePackage, Package, UsageProfile

DAYS_PER_MONTH = 30


@dataclass(frozen=True, slots=True)
class Suggestion:
    package: Package
    monthly_cost: int
    """đồng per 30 days, rounded up: what the subscriber pays after taking the advice."""
    saving: int
    """Average monthly spend minus `monthly_cost`; always > 0."""
    spend: int
    """What the subscriber pays now, per month (renewing packages included)."""
    replaces: tuple[ActivePackage, ...] = ()
    """Renewing packages the suggestion replaces: their renewal is stopped on purchase."""


def monthly_cost(package: Package) -> int:
    """What keeping the package renewed costs per 30 days, in whole đồng (rounded up)."""
    periods = -(-DAYS_PER_MONTH // package.validity_days)  # renewals needed to cover a month
    return package.price * periods


def _monthly(amount: int, package: Package) -> int:
    return amount * (-(-DAYS_PER_MONTH // package.validity_days))


def covers(package: Package, usage: UsageProfile) -> bool:
    """Whether a month of the package covers the subscriber's data and voice."""
    return _monthly(package.data_mb, package) >= usage.data_mb and _monthly(package.voice_min, package) >= usage.voice_min


def suggest(
    packages: Sequence[Package], usage: UsageProfile, active: Sequence[ActivePackage] = ()
) -> Suggestion | None:
    """The package that lowers the subscriber's monthly bill the most, or None when none
    does (see the module doc). `active` are the packages they have now."""
    renewing = tuple(p for p in active if p.auto_renew)
    renewing_codes = {p.code.upper() for p in renewing}
    best: Suggestion | None = None
    for package in packages:
        if package.code.upper() in renewing_codes or not covers(package, usage):
            continue
        cost = monthly_cost(package)
        saving = usage.monthly_spend - cost
        if saving <= 0:
            continue
        if best is None or (saving, -cost) > (best.saving, -best.monthly_cost):
            best = Suggestion(package, cost, saving, usage.monthly_spend, renewing)
    return best
