"""Package advice ("suggested for you"): the package that covers a subscriber's usage
mix at the lowest monthly cost, and what it saves against their average spend."""

from __future__ import annotations

from dataclasses import dataclass

from ussd_gateway.backend.port import Package, UsageProfile

DAYS_PER_MONTH = 30


@dataclass(frozen=True, slots=True)
class Suggestion:
    package: Package
    monthly_cost: int
    """đồng per 30 days, rounded up."""
    saving: int
    """Average monthly spend minus `monthly_cost`; 0 when the package costs more."""


def monthly_cost(package: Package) -> int:
    """What keeping the package renewed costs per 30 days, in whole đồng (rounded up)."""
    periods = -(-DAYS_PER_MONTH // package.validity_days)  # renewals needed to cover a month
    return package.price * periods


def _monthly(amount: int, package: Package) -> int:
    return amount * (-(-DAYS_PER_MONTH // package.validity_days))


def covers(package: Package, usage: UsageProfile) -> bool:
    """Whether a month of the package covers the subscriber's data and voice."""
    return _monthly(package.data_mb, package) >= usage.data_mb and _monthly(package.voice_min, package) >= usage.voice_min


def suggest(packages: list[Package] | tuple[Package, ...], usage: UsageProfile) -> Suggestion | None:
    """The cheapest package per month that covers the usage; if none covers it, the one
    covering the most of it. None when the catalogue is empty."""
    if not packages:
        return None
    covering = [p for p in packages if covers(p, usage)]
    if covering:
        best = min(covering, key=lambda p: (monthly_cost(p), p.code))
    else:
        def coverage(p: Package) -> tuple[float, int]:
            data = min(1.0, _monthly(p.data_mb, p) / usage.data_mb) if usage.data_mb else 1.0
            voice = min(1.0, _monthly(p.voice_min, p) / usage.voice_min) if usage.voice_min else 1.0
            return (data + voice, -monthly_cost(p))
        best = max(packages, key=coverage)
    cost = monthly_cost(best)
    return Suggestion(package=best, monthly_cost=cost, saving=max(0, usage.monthly_spend - cost))
