"""A backend that reports every successful purchase to a listener (campaign attribution).

`PurchaseTap` wraps any `SubscriberBackend`: `purchase` and `buy_bundle` answer as the
backend does and then, on `ok`, call the listener with the subscriber, the purchase's
idempotency key, the package code and its price in đồng. A replayed call (the backend
answers its first result) reports again: the listener counts by the idempotency key.
Everything else passes straight through, so hops that buy nothing cost nothing more.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ussd_gateway.backend.port import BundleChoice, Catalogue, Confirm, PurchaseResult, SubscriberBackend

BUNDLE_CODE = "M090"
"""How a self-built bundle is named to the listener (the operator's name for the offer)."""
PurchaseListener = Callable[[str, str, str, int], Awaitable[None]]
"""`(msisdn, idempotency key, package code, price in đồng)`."""


def bundle_price(catalogue: Catalogue, choice: BundleChoice) -> int:
    """What a self-built bundle costs for its cycle (0 when a level is out of range)."""
    total = 0
    for levels, index in ((catalogue.bundle_data, choice.data), (catalogue.bundle_sms, choice.sms), (catalogue.bundle_voice, choice.voice)):
        if not 0 <= index < len(levels):
            return 0
        total += levels[index].prices.get(choice.cycle, 0)
    return total


class PurchaseTap:
    """`SubscriberBackend` that tells `listener` (once set) of each successful purchase."""

    def __init__(self, inner: SubscriberBackend) -> None:
        self.inner = inner
        self.listener: PurchaseListener | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def purchase(self, msisdn: str, package_code: str, idempotency_key: str, confirm: Confirm | None = None) -> PurchaseResult:
        result = await self.inner.purchase(msisdn, package_code, idempotency_key, confirm)
        if result.status == "ok" and self.listener is not None:
            package = (await self.inner.catalogue()).package(package_code)
            await self.listener(msisdn, idempotency_key, package_code, package.price if package else 0)
        return result

    async def buy_bundle(self, msisdn: str, choice: BundleChoice, idempotency_key: str, confirm: Confirm | None = None) -> PurchaseResult:
        result = await self.inner.buy_bundle(msisdn, choice, idempotency_key, confirm)
        if result.status == "ok" and self.listener is not None:
            price = bundle_price(await self.inner.catalogue(), choice)
            await self.listener(msisdn, idempotency_key, BUNDLE_CODE, price)
        return result
