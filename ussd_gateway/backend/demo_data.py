"""The demo backend's seed: `demo_data.toml` parsed into a catalogue, defaults and named subscribers.

Kept apart from the storages and the rules because it is read once, at start-up, and
also by the menu checker, which needs the catalogue but no account state.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from ussd_gateway.core.msisdn import normalise_msisdn

from ussd_gateway.backend.demo_selfcare_seed import SelfcareSeed, parse_selfcare
from ussd_gateway.backend.port import (
    Account,
    ActivePackage,
    BundleLevel,
    Catalogue,
    Kndl,
    Package,
    Reward,
    UsageProfile,
    VasSubscription,
)

DEFAULT_DATA_PATH = Path(__file__).with_name("demo_data.toml")


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
    selfcare: SelfcareSeed = SelfcareSeed()
    """Cards, offers, points and advance rules, postpaid bills (`demo_selfcare_seed`)."""

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
        selfcare=parse_selfcare(raw),
    )
