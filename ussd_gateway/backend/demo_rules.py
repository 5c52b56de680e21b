"""The demo backend's business rules: pricing, activation, bundles, points and KNDL.

Each rule is a pure function from an immutable `Account` to `(result, changed account
or None)`; a storage (`demo_storage`, `demo_redis`) only supplies an atomic
read-check-write around it. So the memory and Redis modes behave identically by
construction, and the tests run every behaviour against both.

Choices the port leaves open:
- Buying a package that is already active *extends* it: the new period starts when the
  current one ends (or today, if that is later) and the package's allowances are added
  to what is left. Nothing is forfeited. Its auto-renewal stays as the subscriber set
  it: buying again never silently turns a stopped renewal back on.
- Buying earns loyalty points: `DemoBackend` wraps these rules with
  `demo_selfcare_rules.earning` (the rates are in `demo_data.toml` `[points]`).
- Redeeming as a non-member of KNDL answers `unknown`, as for a reward that does not
  exist: there is no reward for this subscriber. The menus only offer redemption to
  members, so this is a guard, not a flow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from datetime import date, timedelta
from typing import TypeVar

from ussd_gateway.backend.port import (
    CYCLE_DAYS,
    Account,
    ActivePackage,
    BundleChoice,
    BundleLevel,
    Catalogue,
    ChangeResult,
    Kndl,
    Package,
    PurchaseResult,
)

NEW_MEMBER_TIER = "Than thiet"
BUNDLE_PREFIX = "M090"

R = TypeVar("R")
Rule = Callable[[Account], tuple[R, Account | None]]
"""A business rule: the result, and the changed account (`None` when nothing changed)."""


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
