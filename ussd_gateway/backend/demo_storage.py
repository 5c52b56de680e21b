"""Where the demo backend keeps accounts: the storage contract, and its in-memory form.

A storage runs a business rule (`demo_rules`) as one atomic read-check-write per
subscriber, and remembers the outcome of each idempotent call. Every outcome is
remembered for 24 h, `insufficient` and `unknown` included: a replayed hop gets the
same answer even if the balance has since been topped up. A new hop carries a new key.
The Redis form, shared by several gateway processes, is in `demo_redis`.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable
from typing import Protocol

from ussd_gateway.backend.demo_rules import R, Rule
from ussd_gateway.backend.port import Account, Confirm, Feedback, PurchaseResult

IDEMPOTENCY_TTL_S = 24 * 3600
"""How long a money call's result is kept under its idempotency key. A key is only
ever reused by retries of the hop or SMS that made it, which come within seconds
(a gateway's retries, a resent deliver_sm, a subscriber's Retry in the web phone);
24 h covers any such retry, a day of SMSC resends and an operator replaying a
stuck queue, while bounding the keys to one day of purchases."""
FEEDBACK_MAX = 10_000


class Storage(Protocol):
    """Where accounts live; each method is atomic per subscriber."""

    async def load(self, msisdn: str) -> Account: ...

    async def change(self, msisdn: str, rule: Rule[R]) -> R: ...

    async def change_once(
        self, msisdn: str, key: str, rule: Rule[PurchaseResult], confirm: Confirm | None = None
    ) -> PurchaseResult: ...

    async def add_feedback(self, feedback: Feedback) -> None: ...

    async def list_feedback(self, limit: int) -> list[Feedback]: ...

    async def close(self) -> None: ...


class MemoryStorage:
    """One process's dict of accounts. An `asyncio.Lock` per subscriber makes each
    read-check-write atomic even if a rule ever awaits; subscribers never wait on
    each other."""

    def __init__(self, new_account: Callable[[str], Account]) -> None:
        self._new_account = new_account
        self._accounts: dict[str, Account] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._done: OrderedDict[tuple[str, str], tuple[float, PurchaseResult]] = OrderedDict()
        self._feedback: deque[Feedback] = deque(maxlen=FEEDBACK_MAX)

    def _get(self, msisdn: str) -> Account:
        account = self._accounts.get(msisdn)
        if account is None:
            account = self._accounts[msisdn] = self._new_account(msisdn)
        return account

    def _apply(self, msisdn: str, rule: Rule[R]) -> R:
        result, changed = rule(self._get(msisdn))
        if changed is not None:
            self._accounts[msisdn] = changed
        return result

    async def load(self, msisdn: str) -> Account:
        return self._get(msisdn)

    async def change(self, msisdn: str, rule: Rule[R]) -> R:
        async with self._locks[msisdn]:
            return self._apply(msisdn, rule)

    async def change_once(
        self, msisdn: str, key: str, rule: Rule[PurchaseResult], confirm: Confirm | None = None
    ) -> PurchaseResult:
        # `confirm` is the caller's to queue (DemoBackend.queues_confirmations is False).
        async with self._locks[msisdn]:
            now = time.monotonic()
            while self._done and next(iter(self._done.values()))[0] <= now:
                self._done.popitem(last=False)
            done = self._done.get((msisdn, key))
            if done is not None:
                return done[1]
            result = self._apply(msisdn, rule)
            self._done[(msisdn, key)] = (now + IDEMPOTENCY_TTL_S, result)
            return result

    async def add_feedback(self, feedback: Feedback) -> None:
        self._feedback.appendleft(feedback)

    async def list_feedback(self, limit: int) -> list[Feedback]:
        return list(self._feedback)[:limit]

    async def close(self) -> None:
        return None

    # ---- shared with the self-care services (demo_selfcare): the same lock and accounts ----
    def account_lock(self, msisdn: str) -> asyncio.Lock:
        """The lock every change of `msisdn`'s account holds."""
        return self._locks[msisdn]

    def current(self, msisdn: str) -> Account:
        """The account as it is (created from the seed on first contact); hold the lock."""
        return self._get(msisdn)

    def replace_account(self, msisdn: str, account: Account) -> None:
        """Store a changed account; hold the lock."""
        self._accounts[msisdn] = account
