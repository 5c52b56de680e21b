"""The subscriber backend port: what the menus may ask of the operator's billing.

Two implementations: `DemoBackend` (complete, seeded from `demo_data.toml`, in memory
or in Redis) and `HttpBackend` (an operator's billing API, contract in
`docs/backend-http.md`). Money is whole đồng (`int`) everywhere; never floats.

Every method that changes money or points takes an `idempotency_key`: calling it again
with the same key returns the first call's result and changes nothing. The gateway
derives the key from (session, hop), so a gateway retry never charges twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from ussd_gateway.sessions.store import OutboundSms

Category = Literal["data", "voice", "combo"]
Cycle = Literal["day", "week", "month"]
CYCLE_DAYS: dict[str, int] = {"day": 1, "week": 7, "month": 30}


@dataclass(frozen=True, slots=True)
class Package:
    """A package on offer in the catalogue."""

    code: str
    """What the subscriber texts to 999, e.g. `C90N`."""
    name: str
    category: Category
    price: int
    """đồng per validity period."""
    validity_days: int
    data_mb: int = 0
    voice_min: int = 0
    sms: int = 0
    summary: str = ""
    """One short line (GSM-7 safe) describing the allowance, e.g. `4GB/ngay, 1000 phut noi mang`."""
    descriptions: dict[str, str] = field(default_factory=dict)
    """The catalogue's own description per language (`vi`, `vi_dau`, `en`); `summary`
    stands in for a language that is missing."""

    def description(self, lang: str) -> str:
        """The catalogue's description in `lang`, else `summary`, else ""."""
        return self.descriptions.get(lang) or self.descriptions.get("vi") or self.summary


@dataclass(frozen=True, slots=True)
class BundleLevel:
    """One choosable level of one bundle component (data, SMS or voice)."""

    label: str
    """Shown on screen, e.g. `5GB`, `100 SMS`, `Khong` (none)."""
    amount: int
    """MB, SMS or minutes per cycle."""
    prices: dict[str, int]
    """Price in đồng for each cycle (`day`, `week`, `month`)."""


@dataclass(frozen=True, slots=True)
class Reward:
    """Something a KNDL member can redeem points for."""

    code: str
    name: str
    points: int
    kind: Literal["package", "credit"]
    package_code: str | None = None
    """For `package` rewards: the catalogue package granted."""
    credit: int = 0
    """For `credit` rewards: đồng added to the main balance."""


@dataclass(frozen=True, slots=True)
class Catalogue:
    """Everything on offer; static for the life of the process."""

    packages: tuple[Package, ...]
    bundle_data: tuple[BundleLevel, ...]
    bundle_sms: tuple[BundleLevel, ...]
    bundle_voice: tuple[BundleLevel, ...]
    rewards: tuple[Reward, ...]

    def package(self, code: str) -> Package | None:
        """The package whose code is `code` (case-insensitive), if on offer."""
        wanted = code.strip().upper()
        for package in self.packages:
            if package.code.upper() == wanted:
                return package
        return None

    def in_category(self, category: str) -> list[Package]:
        """Packages of one category, in catalogue order."""
        return [p for p in self.packages if p.category == category]

    def reward(self, code: str) -> Reward | None:
        """The reward whose code is `code`, if any."""
        for reward in self.rewards:
            if reward.code == code:
                return reward
        return None


@dataclass(frozen=True, slots=True)
class ActivePackage:
    """A package or self-built bundle the subscriber has now."""

    code: str
    name: str
    expires: str
    """ISO date (`2026-12-21`) the current period ends."""
    auto_renew: bool
    data_left_mb: int = 0
    voice_left_min: int = 0
    sms_left: int = 0
    kind: Literal["package", "bundle"] = "package"


@dataclass(frozen=True, slots=True)
class VasSubscription:
    """A paid value-added content subscription."""

    code: str
    name: str
    price: int
    period: Cycle


@dataclass(frozen=True, slots=True)
class Kndl:
    """KNDL loyalty membership."""

    tier: str
    """`Kim cuong`, `Vang`, `Titan`, `Bac` or `Than thiet` (Diamond … Loyal)."""
    since: str
    """ISO date of registration."""


@dataclass(frozen=True, slots=True)
class UsageProfile:
    """A subscriber's average month, for package advice."""

    monthly_spend: int
    data_mb: int
    voice_min: int
    sms: int = 0


@dataclass(frozen=True, slots=True)
class Account:
    """What the subscriber owns, as of now."""

    msisdn: str
    balance: int
    points: int
    packages: tuple[ActivePackage, ...] = ()
    vas: tuple[VasSubscription, ...] = ()
    kndl: Kndl | None = None


@dataclass(frozen=True, slots=True)
class PurchaseResult:
    """The outcome of a purchase, a bundle or a redemption.

    `status` is `ok`, `insufficient` (nothing changed; `missing` says how much more is
    needed, in đồng or points) or `unknown` (no such package or reward).
    """

    status: Literal["ok", "insufficient", "unknown"]
    balance: int
    """Main balance after the operation (unchanged unless `ok`)."""
    points: int = 0
    """Points after the operation."""
    missing: int = 0
    package: ActivePackage | None = None


@dataclass(frozen=True, slots=True)
class ChangeResult:
    """The outcome of a cancellation or a membership change."""

    status: Literal["ok", "not_found", "already"]
    account: Account


@dataclass(frozen=True, slots=True)
class BundleChoice:
    """A self-built bundle (M090): index into each level table, a cycle and a name."""

    data: int
    sms: int
    voice: int
    cycle: Cycle
    name: str


@dataclass(frozen=True, slots=True)
class Feedback:
    """A subscriber's message to the operator."""

    msisdn: str
    topic: str
    message: str
    at: str = field(default="")
    """ISO timestamp, set by the backend when stored."""


@dataclass(frozen=True, slots=True)
class SubscriberProfile:
    """A subscriber as a care campaign selects and addresses them."""

    msisdn: str
    name: str = ""
    tier: str = ""
    """KNDL tier (`Vang`, ...), "" when not a member."""
    points: int = 0
    balance: int = 0
    arpu: int = 0
    """Average revenue per month, đồng."""
    package: str = ""
    """The code of the main active package, "" when none."""
    expiry: str = ""
    """ISO date that package ends."""
    kndl: bool = False


@dataclass(frozen=True, slots=True)
class SubscriberFilter:
    """Which subscribers a campaign targets; None/empty means "any"."""

    tiers: tuple[str, ...] = ()
    points_min: int | None = None
    points_max: int | None = None
    arpu_min: int | None = None
    arpu_max: int | None = None
    has_package: str = ""
    lacks_package: str = ""
    kndl: bool | None = None

    def selects(self, p: SubscriberProfile) -> bool:
        """True when `p` is one of the subscribers this filter wants."""
        return (
            (not self.tiers or p.tier.lower() in {t.lower() for t in self.tiers})
            and (self.points_min is None or p.points >= self.points_min)
            and (self.points_max is None or p.points <= self.points_max)
            and (self.arpu_min is None or p.arpu >= self.arpu_min)
            and (self.arpu_max is None or p.arpu <= self.arpu_max)
            and (not self.has_package or p.package.upper() == self.has_package.upper())
            and (not self.lacks_package or p.package.upper() != self.lacks_package.upper())
            and (self.kndl is None or p.kndl == self.kndl)
        )


class Unsupported(RuntimeError):
    """The backend does not offer this operation (the message says what to do instead)."""


Confirm = Callable[["PurchaseResult"], OutboundSms]
"""Renders the confirmation SMS of a successful purchase from its result."""


@runtime_checkable
class SubscriberBackend(Protocol):
    """**Protocol:** the operator's subscriber and billing system, as the menus need it.

    Every call may raise `DependencyDown` (the backend cannot answer now); the
    dispatcher turns that into a polite "service busy" END. Calls are bounded by the
    implementation's own timeout.
    """

    async def catalogue(self) -> Catalogue:
        """Packages, bundle levels and rewards on offer."""

    async def account(self, msisdn: str) -> Account:
        """Balance, active packages, VAS, points and KNDL membership."""

    async def usage_profile(self, msisdn: str) -> UsageProfile:
        """The subscriber's average month, for "suggested for you"."""

    queues_confirmations: bool
    """True when the backend queues the confirmation SMS (`confirm`) itself, atomically
    with the debit (the demo backend on Redis). Otherwise the caller queues it after
    an `ok`, idempotently (the SMS dedupe key is the idempotency key)."""

    async def purchase(
        self, msisdn: str, package_code: str, idempotency_key: str, confirm: Confirm | None = None
    ) -> PurchaseResult:
        """Debit the package price and activate it, exactly once per key."""

    async def buy_bundle(
        self, msisdn: str, choice: BundleChoice, idempotency_key: str, confirm: Confirm | None = None
    ) -> PurchaseResult:
        """Price, debit and activate a self-built bundle, exactly once per key."""

    async def cancel_renewal(self, msisdn: str, package_code: str) -> ChangeResult:
        """Stop the auto-renewal of an active package (idempotent by nature)."""

    async def cancel_vas(self, msisdn: str, vas_code: str) -> ChangeResult:
        """Cancel a VAS subscription (idempotent by nature)."""

    async def kndl_join(self, msisdn: str) -> ChangeResult:
        """Make the subscriber a KNDL member (`already` if a member)."""

    async def kndl_leave(self, msisdn: str) -> ChangeResult:
        """End the KNDL membership (`not_found` if not a member)."""

    async def redeem(self, msisdn: str, reward_code: str, idempotency_key: str) -> PurchaseResult:
        """Deduct points and grant the reward atomically, exactly once per key."""

    async def add_feedback(self, feedback: Feedback) -> None:
        """Store a subscriber's feedback where operations can list it."""

    async def list_feedback(self, limit: int = 100) -> list[Feedback]:
        """Most recent feedback first."""

    def subscribers(self, wanted: SubscriberFilter, start: int = 0) -> AsyncIterator[tuple[int, SubscriberProfile]]:
        """(position, profile) of every subscriber `wanted` selects, in a stable order,
        from position `start` on (a campaign resumes at the position after the last one
        it handled). Raises `Unsupported` when the backend cannot list subscribers."""

    async def close(self) -> None:
        """Release connections."""
