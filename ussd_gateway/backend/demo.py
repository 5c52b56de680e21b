"""The demo subscriber backend: the whole port, seeded from `demo_data.toml`.

Two storage modes behind one class: in memory (one process: tests, the web phone page)
and Redis (several gateway processes share one state). The seed is parsed in
`demo_data`, the business rules live once in `demo_rules`, and the storages
(`demo_storage`, `demo_redis`) only make each rule an atomic read-check-write, so both
modes behave identically by construction.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import date, datetime, timezone

import redis.asyncio as aioredis

from ussd_gateway.core.msisdn import normalise_msisdn

from ussd_gateway.backend.demo_data import DemoData, load_demo_data
from ussd_gateway.backend.demo_redis import OutboxSink, RedisStorage, redis_client
from ussd_gateway.backend.demo_rules import (
    bundle_rule,
    cancel_renewal_rule,
    cancel_vas_rule,
    kndl_join_rule,
    kndl_leave_rule,
    purchase_rule,
    redeem_rule,
)
from ussd_gateway.backend.demo_selfcare import SelfcareDemo
from ussd_gateway.backend.demo_selfcare_rules import earning
from ussd_gateway.backend.demo_storage import MemoryStorage, Storage
from ussd_gateway.backend.population import Population
from ussd_gateway.backend.port import (
    Account,
    BundleChoice,
    Catalogue,
    ChangeResult,
    Confirm,
    Feedback,
    PurchaseResult,
    SubscriberFilter,
    SubscriberProfile,
    UsageProfile,
)

__all__ = ["DemoBackend", "DemoData", "load_demo_data"]

MAX_KEY_LENGTH = 200


class DemoBackend(SelfcareDemo):
    """`SubscriberBackend` over the seed data, in memory or in Redis.

    MSISDNs are normalised (`0901234567` and `84901234567` are one subscriber). Any
    number not in the seed gets the seed's defaults on first contact, so load tests can
    use as many subscribers as they like. The self-care services (top-up, postpaid,
    points, offers, advance) are the `SelfcareDemo` half.
    """

    def __init__(self, data: DemoData, storage: Storage, population: Population | None = None) -> None:
        self._data = data
        self._storage = storage
        self.population = population or Population()
        """The generated crowd campaigns filter (`population.py`); its members get their
        generated account on first contact."""
        # On Redis with an outbox, the money script queues the confirmation SMS with
        # the debit. In memory, the caller's enqueue right after the purchase is as
        # atomic: neither awaits anything that suspends, so no cancel falls between.
        self.queues_confirmations = isinstance(storage, RedisStorage) and storage.has_outbox

    @classmethod
    def in_memory(cls, data: DemoData | None = None) -> "DemoBackend":
        """State lives in this process and dies with it."""
        data = data if data is not None else load_demo_data()
        crowd = Population()
        return cls(data, MemoryStorage(lambda msisdn: _first_contact(data, crowd, msisdn)), crowd)

    @classmethod
    def on_redis(
        cls,
        client_or_url: aioredis.Redis | str,
        data: DemoData | None = None,
        prefix: str = "ussd",
        *,
        outbox: OutboxSink | None = None,
        timeout_s: float = 0.3,
        money_wait: tuple[int, int] = (0, 0),
    ) -> "DemoBackend":
        """State lives in Redis, shared by every gateway process. Given a URL, the
        backend owns its client and closes it in `close()`; given a client, the caller
        does."""
        data = data if data is not None else load_demo_data()
        owned = isinstance(client_or_url, str)
        client = redis_client(client_or_url) if isinstance(client_or_url, str) else client_or_url
        crowd = Population()
        storage = RedisStorage(
            client, lambda msisdn: _first_contact(data, crowd, msisdn), prefix, owned=owned, timeout_s=timeout_s, outbox=outbox,
            money_wait=money_wait,
        )
        return cls(data, storage, crowd)

    @property
    def data(self) -> DemoData:
        return self._data

    async def catalogue(self) -> Catalogue:
        return self._data.catalogue

    async def account(self, msisdn: str) -> Account:
        return await self._storage.load(normalise_msisdn(msisdn))

    async def usage_profile(self, msisdn: str) -> UsageProfile:
        return self._data.usage(normalise_msisdn(msisdn))

    async def purchase(
        self, msisdn: str, package_code: str, idempotency_key: str, confirm: Confirm | None = None
    ) -> PurchaseResult:
        # The debit, the points it earns and their history entry: one change (`_tracked`).
        rule = earning(purchase_rule(self._data.catalogue, package_code, date.today()), self._data.selfcare)
        key = _checked_key(idempotency_key)
        return await self._tracked(normalise_msisdn(msisdn), key, rule, "earn", package_code.upper(), confirm)

    async def buy_bundle(
        self, msisdn: str, choice: BundleChoice, idempotency_key: str, confirm: Confirm | None = None
    ) -> PurchaseResult:
        key = _checked_key(idempotency_key)
        rule = earning(bundle_rule(self._data.catalogue, choice, key, date.today()), self._data.selfcare)
        return await self._tracked(normalise_msisdn(msisdn), key, rule, "earn", choice.name, confirm)

    async def redeem(self, msisdn: str, reward_code: str, idempotency_key: str) -> PurchaseResult:
        rule = redeem_rule(self._data.catalogue, reward_code, date.today())
        return await self._tracked(normalise_msisdn(msisdn), _checked_key(idempotency_key), rule, "redeem", reward_code)

    async def cancel_renewal(self, msisdn: str, package_code: str) -> ChangeResult:
        return await self._storage.change(normalise_msisdn(msisdn), cancel_renewal_rule(package_code))

    async def cancel_vas(self, msisdn: str, vas_code: str) -> ChangeResult:
        return await self._storage.change(normalise_msisdn(msisdn), cancel_vas_rule(vas_code))

    async def kndl_join(self, msisdn: str) -> ChangeResult:
        return await self._storage.change(normalise_msisdn(msisdn), kndl_join_rule(date.today()))

    async def kndl_leave(self, msisdn: str) -> ChangeResult:
        return await self._storage.change(normalise_msisdn(msisdn), kndl_leave_rule)

    async def add_feedback(self, feedback: Feedback) -> None:
        stamped = replace(
            feedback,
            msisdn=normalise_msisdn(feedback.msisdn),
            at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        await self._storage.add_feedback(stamped)

    async def list_feedback(self, limit: int = 100) -> list[Feedback]:
        return await self._storage.list_feedback(limit)

    async def subscribers(self, wanted: SubscriberFilter, start: int = 0) -> AsyncIterator[tuple[int, SubscriberProfile]]:
        """The generated crowd's subscribers `wanted` selects, by index (as generated:
        what a subscriber since changed by USSD is not reflected)."""
        for count, found in enumerate(self.population.matching(wanted, start)):
            yield found
            if count % 500 == 499:
                await asyncio.sleep(0)  # a long walk must not hold the loop

    async def close(self) -> None:
        await self._storage.close()


def _first_contact(data: DemoData, crowd: Population, msisdn: str) -> Account:
    """A named subscriber's seed, a crowd member's generated account, else the defaults."""
    if msisdn not in data.subscribers:
        generated = crowd.account(msisdn, date.today())
        if generated is not None:
            return generated
    return data.new_account(msisdn, date.today())


def _checked_key(key: str) -> str:
    """An empty key would make every purchase a replay of the first one."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"idempotency_key must be a non-empty string of at most {MAX_KEY_LENGTH} characters")
    return key
