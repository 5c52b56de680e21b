"""The demo subscriber backend: the whole port, seeded from `demo_data.toml`.

Two storage modes behind one class: in memory (one process: tests, the web phone page)
and Redis (several gateway processes share one state). The business rules (pricing,
activation, points) are written once, as pure functions from an immutable `Account` to
`(result, changed account or None)`; a storage only supplies an atomic
read-check-write around them, plus the idempotency record. So both modes behave
identically by construction, and the tests run every behaviour against both.

Choices the port leaves open:
- Buying a package that is already active *extends* it: the new period starts when the
  current one ends (or today, if that is later), the package's allowances are added to
  what is left, and auto-renewal is switched back on. Nothing is forfeited.
- Buying earns no loyalty points (the real operator credits points monthly, off-line).
- Redeeming as a non-member of KNDL answers `unknown`, as for a reward that does not
  exist: there is no reward for this subscriber. The menus only offer redemption to
  members, so this is a guard, not a flow.
- Every outcome of an idempotent call is remembered for 24 h, `insufficient` and
  `unknown` included: a replayed hop gets the same answer even if the balance has
  since been topped up. A new hop carries a new key.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import tomllib
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, WatchError

from ussd_gateway.core.errors import DependencyDown
from ussd_gateway.core.msisdn import normalise_msisdn

from ussd_gateway.backend.port import (
    CYCLE_DAYS,
    Account,
    ActivePackage,
    BundleChoice,
    BundleLevel,
    Catalogue,
    ChangeResult,
    Feedback,
    Kndl,
    Package,
    PurchaseResult,
    Reward,
    UsageProfile,
    VasSubscription,
)

DEFAULT_DATA_PATH = Path(__file__).with_name("demo_data.toml")
IDEMPOTENCY_TTL_S = 24 * 3600
FEEDBACK_MAX = 10_000
MAX_KEY_LENGTH = 200
NEW_MEMBER_TIER = "Than thiet"
BUNDLE_PREFIX = "M090"

R = TypeVar("R")
Rule = Callable[[Account], tuple[R, Account | None]]
"""A business rule: the result, and the changed account (`None` when nothing changed)."""


# ---- Seed data ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeedPackage:
    """An active package of a seed subscriber; its expiry is relative to first contact."""

    code: str
    name: str
    expires_in_days: int
    auto_renew: bool = True
    data_left_mb: int = 0
    voice_left_min: int = 0
    sms_left: int = 0
    kind: str = "package"

    def on(self, today: date) -> ActivePackage:
        expires = (today + timedelta(days=self.expires_in_days)).isoformat()
        return ActivePackage(
            code=self.code, name=self.name, expires=expires, auto_renew=self.auto_renew,
            data_left_mb=self.data_left_mb, voice_left_min=self.voice_left_min,
            sms_left=self.sms_left, kind=self.kind,  # type: ignore[arg-type]
        )


@dataclass(frozen=True, slots=True)
class SeedSubscriber:
    """A named subscriber of `demo_data.toml`, as it is before first contact."""

    balance: int
    points: int
    packages: tuple[SeedPackage, ...]
    vas: tuple[VasSubscription, ...]
    kndl: Kndl | None
    usage: UsageProfile


@dataclass(frozen=True, slots=True)
class DemoData:
    """The parsed seed: the catalogue, the defaults and the named subscribers."""

    catalogue: Catalogue
    default_balance: int
    default_points: int
    default_usage: UsageProfile
    subscribers: dict[str, SeedSubscriber]

    def new_account(self, msisdn: str, today: date) -> Account:
        """The account `msisdn` has on first contact: its seed, or the defaults."""
        seed = self.subscribers.get(msisdn)
        if seed is None:
            return Account(msisdn=msisdn, balance=self.default_balance, points=self.default_points)
        return Account(
            msisdn=msisdn, balance=seed.balance, points=seed.points,
            packages=tuple(p.on(today) for p in seed.packages), vas=seed.vas, kndl=seed.kndl,
        )

    def usage(self, msisdn: str) -> UsageProfile:
        seed = self.subscribers.get(msisdn)
        return seed.usage if seed is not None else self.default_usage


def load_demo_data(path: str | Path | None = None) -> DemoData:
    """Parse `demo_data.toml` (or the file at `path`).

    Raises:
        ValueError: the file is malformed; the message names the offending entry.
    """
    source = Path(path) if path is not None else DEFAULT_DATA_PATH
    with source.open("rb") as handle:
        raw = tomllib.load(handle)
    _reject_floats(raw, source.name)
    try:
        return _parse(raw)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{source}: malformed demo data ({exc!r}); compare with {DEFAULT_DATA_PATH.name}") from exc


def _reject_floats(value: Any, where: str) -> None:
    """Money, points and allowances are whole numbers; a `1.5` in the seed is a typo."""
    if isinstance(value, float):
        raise ValueError(f"{where}: {value!r} is not a whole number (money is đồng, allowances are MB/minutes/SMS)")
    if isinstance(value, dict):
        for key, item in value.items():
            _reject_floats(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _reject_floats(item, f"{where}[{index}]")


def _parse(raw: dict[str, Any]) -> DemoData:
    bundle = raw.get("bundle", {})
    catalogue = Catalogue(
        packages=tuple(Package(**p) for p in raw["packages"]),
        bundle_data=tuple(BundleLevel(**level) for level in bundle.get("data", ())),
        bundle_sms=tuple(BundleLevel(**level) for level in bundle.get("sms", ())),
        bundle_voice=tuple(BundleLevel(**level) for level in bundle.get("voice", ())),
        rewards=tuple(Reward(**r) for r in raw.get("rewards", ())),
    )
    defaults = raw["defaults"]
    default_usage = UsageProfile(**defaults["usage"])
    subscribers: dict[str, SeedSubscriber] = {}
    for entry in raw.get("subscribers", ()):
        msisdn = normalise_msisdn(entry["msisdn"])
        kndl = entry.get("kndl")
        subscribers[msisdn] = SeedSubscriber(
            balance=entry.get("balance", defaults["balance"]),
            points=entry.get("points", defaults.get("points", 0)),
            packages=tuple(SeedPackage(**p) for p in entry.get("packages", ())),
            vas=tuple(VasSubscription(**v) for v in entry.get("vas", ())),
            kndl=Kndl(**kndl) if kndl else None,
            usage=UsageProfile(**entry["usage"]) if "usage" in entry else default_usage,
        )
    return DemoData(
        catalogue=catalogue,
        default_balance=defaults["balance"],
        default_points=defaults.get("points", 0),
        default_usage=default_usage,
        subscribers=subscribers,
    )


# ---- Business rules: pure functions of (account, request) ------------------------------


def _result(status: str, account: Account, *, missing: int = 0, package: ActivePackage | None = None) -> PurchaseResult:
    return PurchaseResult(
        status=status, balance=account.balance, points=account.points,  # type: ignore[arg-type]
        missing=missing, package=package,
    )


def _activate(account: Account, package: Package, today: date) -> tuple[Account, ActivePackage]:
    """Add `package` to the account, extending it when already active (see module doc)."""
    wanted = package.code.upper()
    packages = list(account.packages)
    for index, current in enumerate(packages):
        if current.kind == "package" and current.code.upper() == wanted:
            start = max(date.fromisoformat(current.expires), today)
            active = replace(
                current,
                expires=(start + timedelta(days=package.validity_days)).isoformat(),
                auto_renew=True,
                data_left_mb=current.data_left_mb + package.data_mb,
                voice_left_min=current.voice_left_min + package.voice_min,
                sms_left=current.sms_left + package.sms,
            )
            packages[index] = active
            return replace(account, packages=tuple(packages)), active
    active = ActivePackage(
        code=package.code, name=package.name,
        expires=(today + timedelta(days=package.validity_days)).isoformat(), auto_renew=True,
        data_left_mb=package.data_mb, voice_left_min=package.voice_min, sms_left=package.sms,
    )
    return replace(account, packages=(*packages, active)), active


def purchase_rule(catalogue: Catalogue, code: str, today: date) -> Rule[PurchaseResult]:
    def rule(account: Account) -> tuple[PurchaseResult, Account | None]:
        package = catalogue.package(code)
        if package is None:
            return _result("unknown", account), None
        if account.balance < package.price:
            return _result("insufficient", account, missing=package.price - account.balance), None
        debited = replace(account, balance=account.balance - package.price)
        changed, active = _activate(debited, package, today)
        return _result("ok", changed, package=active), changed

    return rule


def _level(levels: tuple[BundleLevel, ...], index: int) -> BundleLevel | None:
    """`levels[index]`, refusing negative indexes (Python would count from the end)."""
    return levels[index] if 0 <= index < len(levels) else None


def bundle_code(idempotency_key: str, taken: set[str]) -> str:
    """`M090` + 4 hex digits derived from the key: stable for a retried hop, distinct
    from the subscriber's other bundles."""
    salt = 0
    while True:
        digest = hashlib.blake2b(f"{idempotency_key}/{salt}".encode(), digest_size=2).hexdigest().upper()
        code = BUNDLE_PREFIX + digest
        if code not in taken:
            return code
        salt += 1


def bundle_rule(catalogue: Catalogue, choice: BundleChoice, key: str, today: date) -> Rule[PurchaseResult]:
    def rule(account: Account) -> tuple[PurchaseResult, Account | None]:
        levels = (
            _level(catalogue.bundle_data, choice.data),
            _level(catalogue.bundle_sms, choice.sms),
            _level(catalogue.bundle_voice, choice.voice),
        )
        if choice.cycle not in CYCLE_DAYS or None in levels:
            return _result("unknown", account), None
        data, sms, voice = levels  # type: ignore[misc]
        if data.amount == sms.amount == voice.amount == 0:
            return _result("unknown", account), None
        price = data.prices[choice.cycle] + sms.prices[choice.cycle] + voice.prices[choice.cycle]
        if account.balance < price:
            return _result("insufficient", account, missing=price - account.balance), None
        active = ActivePackage(
            code=bundle_code(key, {p.code.upper() for p in account.packages}),
            name=choice.name.strip() or BUNDLE_PREFIX,
            expires=(today + timedelta(days=CYCLE_DAYS[choice.cycle])).isoformat(),
            auto_renew=True, data_left_mb=data.amount, voice_left_min=voice.amount,
            sms_left=sms.amount, kind="bundle",
        )
        changed = replace(account, balance=account.balance - price, packages=(*account.packages, active))
        return _result("ok", changed, package=active), changed

    return rule


def redeem_rule(catalogue: Catalogue, reward_code: str, today: date) -> Rule[PurchaseResult]:
    def rule(account: Account) -> tuple[PurchaseResult, Account | None]:
        reward = catalogue.reward(reward_code)
        if reward is None or account.kndl is None:
            return _result("unknown", account), None
        package = catalogue.package(reward.package_code or "") if reward.kind == "package" else None
        if reward.kind == "package" and package is None:
            return _result("unknown", account), None
        if account.points < reward.points:
            return _result("insufficient", account, missing=reward.points - account.points), None
        changed = replace(account, points=account.points - reward.points)
        if package is None:
            changed = replace(changed, balance=changed.balance + reward.credit)
            return _result("ok", changed), changed
        changed, active = _activate(changed, package, today)
        return _result("ok", changed, package=active), changed

    return rule


def cancel_renewal_rule(code: str) -> Rule[ChangeResult]:
    wanted = code.strip().upper()

    def rule(account: Account) -> tuple[ChangeResult, Account | None]:
        packages = list(account.packages)
        for index, current in enumerate(packages):
            if current.code.upper() == wanted:
                if not current.auto_renew:
                    return ChangeResult("ok", account), None
                packages[index] = replace(current, auto_renew=False)
                changed = replace(account, packages=tuple(packages))
                return ChangeResult("ok", changed), changed
        return ChangeResult("not_found", account), None

    return rule


def cancel_vas_rule(code: str) -> Rule[ChangeResult]:
    wanted = code.strip().upper()

    def rule(account: Account) -> tuple[ChangeResult, Account | None]:
        kept = tuple(v for v in account.vas if v.code.upper() != wanted)
        if len(kept) == len(account.vas):
            return ChangeResult("not_found", account), None
        changed = replace(account, vas=kept)
        return ChangeResult("ok", changed), changed

    return rule


def kndl_join_rule(today: date) -> Rule[ChangeResult]:
    def rule(account: Account) -> tuple[ChangeResult, Account | None]:
        if account.kndl is not None:
            return ChangeResult("already", account), None
        changed = replace(account, kndl=Kndl(tier=NEW_MEMBER_TIER, since=today.isoformat()))
        return ChangeResult("ok", changed), changed

    return rule


def kndl_leave_rule(account: Account) -> tuple[ChangeResult, Account | None]:
    """Leaving keeps the points: they belong to the subscriber, not to the membership."""
    if account.kndl is None:
        return ChangeResult("not_found", account), None
    changed = replace(account, kndl=None)
    return ChangeResult("ok", changed), changed


# ---- Serialisation of the stored JSON (written by this module only) --------------------


def _account_from_json(raw: bytes | str) -> Account:
    data = orjson.loads(raw)
    kndl = data.get("kndl")
    return Account(
        msisdn=data["msisdn"], balance=data["balance"], points=data["points"],
        packages=tuple(ActivePackage(**p) for p in data.get("packages", ())),
        vas=tuple(VasSubscription(**v) for v in data.get("vas", ())),
        kndl=Kndl(**kndl) if kndl else None,
    )


def _purchase_from_json(raw: bytes | str) -> PurchaseResult:
    data = orjson.loads(raw)
    package = data.pop("package", None)
    return PurchaseResult(**data, package=ActivePackage(**package) if package else None)


def _feedback_from_json(raw: bytes | str) -> Feedback:
    return Feedback(**orjson.loads(raw))


# ---- Storage --------------------------------------------------------------------------


class _Storage(Protocol):
    """Where accounts live; each method is atomic per subscriber."""

    async def load(self, msisdn: str) -> Account: ...

    async def change(self, msisdn: str, rule: Rule[R]) -> R: ...

    async def change_once(self, msisdn: str, key: str, rule: Rule[PurchaseResult]) -> PurchaseResult: ...

    async def add_feedback(self, feedback: Feedback) -> None: ...

    async def list_feedback(self, limit: int) -> list[Feedback]: ...

    async def close(self) -> None: ...


class _MemoryStorage:
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

    async def change_once(self, msisdn: str, key: str, rule: Rule[PurchaseResult]) -> PurchaseResult:
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


class _RedisStorage:
    """Accounts as JSON strings in Redis, one key per subscriber.

    Atomicity: WATCH / MULTI / EXEC (optimistic), retried on `WatchError`, rather than
    a Lua script. The rules then live once, in Python, shared with the memory mode; a
    Lua script would restate pricing, activation and redemption in a second language
    that the tests would have to keep in step. The price is three round trips (WATCH,
    MGET, MULTI…EXEC) on the rare purchases, while a plain lookup stays one GET.
    Contention is per subscriber only, and each lost race means another call of the
    same subscriber committed, so the retry loop is bounded.

    The account key and the idempotency key share the `{msisdn}` hash tag, so WATCH,
    MGET and the transaction touch one Redis Cluster slot. Both are watched: a racing
    call with the same key that commits first makes ours retry and find its result.
    A first contact writes the seed inside the same transaction (or with SET NX on a
    plain lookup), so two processes racing create the account once.
    """

    MAX_ATTEMPTS = 100

    def __init__(
        self, client: aioredis.Redis, new_account: Callable[[str], Account], prefix: str, *, owned: bool
    ) -> None:
        self._client = client
        self._new_account = new_account
        self._prefix = prefix
        self._owned = owned
        self._feedback_key = f"{prefix}:feedback"

    def _account_key(self, msisdn: str) -> str:
        return f"{self._prefix}:{{{msisdn}}}:acct"

    def _idem_key(self, msisdn: str, key: str) -> str:
        return f"{self._prefix}:{{{msisdn}}}:idem:{key}"

    async def load(self, msisdn: str) -> Account:
        key = self._account_key(msisdn)
        with _redis_errors():
            raw = await self._client.get(key)
            if raw is not None:
                return _account_from_json(raw)
            account = self._new_account(msisdn)
            if await self._client.set(key, orjson.dumps(account), nx=True):
                return account
            raw = await self._client.get(key)
        if raw is None:  # deleted between SET NX and GET: only an operator does that
            return account
        return _account_from_json(raw)

    async def change(self, msisdn: str, rule: Rule[R]) -> R:
        return await self._transact(msisdn, rule, None)

    async def change_once(self, msisdn: str, key: str, rule: Rule[PurchaseResult]) -> PurchaseResult:
        return await self._transact(msisdn, rule, key)

    async def _transact(self, msisdn: str, rule: Rule[Any], idempotency_key: str | None) -> Any:
        account_key = self._account_key(msisdn)
        watched = [account_key]
        if idempotency_key is not None:
            watched.append(self._idem_key(msisdn, idempotency_key))
        with _redis_errors():
            for _ in range(self.MAX_ATTEMPTS):
                async with self._client.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(*watched)
                        stored = await pipe.mget(watched)
                        if idempotency_key is not None and stored[1] is not None:
                            return _purchase_from_json(stored[1])
                        account = self._new_account(msisdn) if stored[0] is None else _account_from_json(stored[0])
                        result, changed = rule(account)
                        pipe.multi()
                        if changed is not None or stored[0] is None:
                            pipe.set(account_key, orjson.dumps(changed if changed is not None else account))
                        if idempotency_key is not None:
                            pipe.set(watched[1], orjson.dumps(result), ex=IDEMPOTENCY_TTL_S)
                        if len(pipe):
                            await pipe.execute()
                        return result
                    except WatchError:
                        continue
        raise DependencyDown(
            f"subscriber store (Redis): {self.MAX_ATTEMPTS} conflicting updates in a row on one account; retry later"
        )

    async def add_feedback(self, feedback: Feedback) -> None:
        with _redis_errors():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.lpush(self._feedback_key, orjson.dumps(feedback))
                pipe.ltrim(self._feedback_key, 0, FEEDBACK_MAX - 1)
                await pipe.execute()

    async def list_feedback(self, limit: int) -> list[Feedback]:
        if limit <= 0:
            return []
        with _redis_errors():
            raws = await self._client.lrange(self._feedback_key, 0, limit - 1)
        return [_feedback_from_json(raw) for raw in raws]

    async def close(self) -> None:
        if self._owned:
            await self._client.aclose()


@contextmanager
def _redis_errors() -> Iterator[None]:
    """Turn any Redis failure into `DependencyDown`, which the dispatcher answers with a
    "service busy" END; redis-py reconnects by itself on the next call."""
    try:
        yield
    except WatchError:
        raise
    except RedisError as exc:
        raise DependencyDown(
            f"subscriber store (Redis) cannot answer ({exc.__class__.__name__}: {exc}); check that Redis is up"
        ) from exc


def redis_client(url: str, *, timeout_s: float = 0.5) -> aioredis.Redis:
    """A client whose failures surface within a hop's deadline: short socket timeouts
    and a single immediate retry (enough to replace a connection Redis dropped), not
    redis-py's default of ten retries with back-off."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), retries=1),
        health_check_interval=0,
    )


# ---- The backend ----------------------------------------------------------------------


class DemoBackend:
    """`SubscriberBackend` over the seed data, in memory or in Redis.

    MSISDNs are normalised (`0901234567` and `84901234567` are one subscriber). Any
    number not in the seed gets the seed's defaults on first contact, so load tests can
    use as many subscribers as they like.
    """

    def __init__(self, data: DemoData, storage: _Storage) -> None:
        self._data = data
        self._storage = storage

    @classmethod
    def in_memory(cls, data: DemoData | None = None) -> "DemoBackend":
        """State lives in this process and dies with it."""
        data = data if data is not None else load_demo_data()
        return cls(data, _MemoryStorage(lambda msisdn: data.new_account(msisdn, date.today())))

    @classmethod
    def on_redis(
        cls, client_or_url: aioredis.Redis | str, data: DemoData | None = None, prefix: str = "ussd"
    ) -> "DemoBackend":
        """State lives in Redis, shared by every gateway process. Given a URL, the
        backend owns its client and closes it in `close()`; given a client, the caller
        does."""
        data = data if data is not None else load_demo_data()
        owned = isinstance(client_or_url, str)
        client = redis_client(client_or_url) if isinstance(client_or_url, str) else client_or_url
        storage = _RedisStorage(client, lambda msisdn: data.new_account(msisdn, date.today()), prefix, owned=owned)
        return cls(data, storage)

    @property
    def data(self) -> DemoData:
        return self._data

    async def catalogue(self) -> Catalogue:
        return self._data.catalogue

    async def account(self, msisdn: str) -> Account:
        return await self._storage.load(normalise_msisdn(msisdn))

    async def usage_profile(self, msisdn: str) -> UsageProfile:
        return self._data.usage(normalise_msisdn(msisdn))

    async def purchase(self, msisdn: str, package_code: str, idempotency_key: str) -> PurchaseResult:
        rule = purchase_rule(self._data.catalogue, package_code, date.today())
        return await self._storage.change_once(normalise_msisdn(msisdn), _checked_key(idempotency_key), rule)

    async def buy_bundle(self, msisdn: str, choice: BundleChoice, idempotency_key: str) -> PurchaseResult:
        key = _checked_key(idempotency_key)
        rule = bundle_rule(self._data.catalogue, choice, key, date.today())
        return await self._storage.change_once(normalise_msisdn(msisdn), key, rule)

    async def redeem(self, msisdn: str, reward_code: str, idempotency_key: str) -> PurchaseResult:
        rule = redeem_rule(self._data.catalogue, reward_code, date.today())
        return await self._storage.change_once(normalise_msisdn(msisdn), _checked_key(idempotency_key), rule)

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

    async def close(self) -> None:
        await self._storage.close()


def _checked_key(key: str) -> str:
    """An empty key would make every purchase a replay of the first one."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"idempotency_key must be a non-empty string of at most {MAX_KEY_LENGTH} characters")
    return key
