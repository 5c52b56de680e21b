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


# ---- self-care services: top-up, postpaid, points, offers, airtime advance ---------------
@dataclass(frozen=True, slots=True)
class TopupResult:
    """The outcome of a scratch-card top-up.

    `status` is `ok` (credited), `invalid` (no such card PIN) or `used` (the card was
    already used, by anyone). Only `ok` changes anything.
    """

    status: Literal["ok", "invalid", "used"]
    balance: int
    """Main balance after the top-up."""
    amount: int = 0
    """The card's face value, đồng."""
    bonus: int = 0
    """Promotional bonus credited on top of `amount` (see `offers`)."""
    repaid: int = 0
    """Taken from the top-up to repay an airtime advance (see `take_advance`)."""


@dataclass(frozen=True, slots=True)
class TopupRecord:
    """One past top-up (newest first in a history)."""

    at: str
    """ISO timestamp (UTC)."""
    amount: int
    bonus: int = 0
    repaid: int = 0
    channel: str = "card"


@dataclass(frozen=True, slots=True)
class Bill:
    """A postpaid subscriber's current bill."""

    period: str
    """The billed month, `YYYY-MM`."""
    amount: int
    """The bill's total, đồng."""
    paid: int
    """Paid so far."""
    due: str
    """ISO date by which the rest must be paid."""
    pay_from_balance: bool = False
    """Whether the bill may be paid from the subscriber's linked main balance."""

    @property
    def unpaid(self) -> int:
        return max(0, self.amount - self.paid)


@dataclass(frozen=True, slots=True)
class BillPayment:
    """The outcome of paying a bill from the linked main balance.

    `status`: `ok` (paid in full), `insufficient` (`missing` more needed; nothing
    changed), `nothing_due`, or `not_allowed` (not postpaid, or no linked balance).
    """

    status: Literal["ok", "insufficient", "nothing_due", "not_allowed"]
    balance: int
    paid: int = 0
    """Paid by this call."""
    unpaid: int = 0
    """Still unpaid after the call."""
    missing: int = 0


@dataclass(frozen=True, slots=True)
class PointsEntry:
    """One movement of loyalty points (newest first in a history)."""

    at: str
    kind: Literal["earn", "redeem", "sent", "received"]
    points: int
    """Signed: positive earned or received, negative spent or sent."""
    ref: str = ""
    """What it was for: a package code, a reward code, the other member's masked number."""


@dataclass(frozen=True, slots=True)
class TransferResult:
    """The outcome of a points transfer to another KNDL member.

    `status`: `ok`, `insufficient` (`missing` points), `not_member` (the sender is not a
    member), `recipient_not_member`, `self` (to one's own number) or `invalid` (fewer
    than the minimum). Only `ok` changes anything.
    """

    status: Literal["ok", "insufficient", "not_member", "recipient_not_member", "self", "invalid"]
    points: int
    """The sender's points after the call."""
    sent: int = 0
    missing: int = 0


@dataclass(frozen=True, slots=True)
class Offer:
    """A current promotion."""

    code: str
    title: str
    """One short line, GSM-7 safe (`Tang 20% the nap tu 50.000d`)."""
    until: str
    """ISO date of the last day."""
    kind: Literal["topup_bonus", "package"] = "package"
    bonus_percent: int = 0
    """For `topup_bonus`: the percentage of the card value credited as a bonus."""
    min_amount: int = 0
    """For `topup_bonus`: the smallest card value that earns it."""
    package_code: str | None = None
    """For `package`: the package the offer is about."""


@dataclass(frozen=True, slots=True)
class AdvanceQuote:
    """What airtime advance (ứng tiền) the subscriber may take now to cover `missing`.

    `status`: `ok` (`amount` and `fee` offered), `owed` (an advance is still unpaid),
    `too_much` (no advance covers the shortfall) or `not_allowed` (postpaid).
    """

    status: Literal["ok", "owed", "too_much", "not_allowed"]
    amount: int = 0
    fee: int = 0
    owed: int = 0
    """Still owed from an earlier advance."""


@dataclass(frozen=True, slots=True)
class AdvanceResult:
    """The outcome of taking an advance: `ok` credits `amount` now and owes
    `amount + fee`, repaid from the next top-up; anything else changes nothing."""

    status: Literal["ok", "owed", "too_much", "not_allowed"]
    balance: int
    amount: int = 0
    fee: int = 0
    owed: int = 0


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

    # ---- self-care services ------------------------------------------------------------
    async def topup(self, msisdn: str, pin: str, idempotency_key: str) -> TopupResult:
        """Credit a scratch card's value (and any bonus, less any advance owed) exactly
        once per key; a card is usable once, by anyone."""

    async def topup_history(self, msisdn: str, limit: int = 5) -> tuple[TopupRecord, ...]:
        """The last top-ups, newest first."""

    async def bill(self, msisdn: str) -> Bill | None:
        """The current bill of a postpaid subscriber; None for prepaid."""

    async def pay_bill(self, msisdn: str, idempotency_key: str) -> BillPayment:
        """Pay what is unpaid from the linked main balance, exactly once per key."""

    async def points_history(self, msisdn: str, limit: int = 5) -> tuple[PointsEntry, ...]:
        """The last movements of points, newest first."""

    async def transfer_points(self, msisdn: str, to: str, points: int, idempotency_key: str) -> TransferResult:
        """Move points to another member, exactly once per key (both sides)."""

    async def end_package(self, msisdn: str, package_code: str) -> ChangeResult:
        """End an active package now: what is left of it is lost, nothing is refunded
        (idempotent by nature: `not_found` once it is gone)."""

    async def offers(self, msisdn: str) -> tuple[Offer, ...]:
        """The promotions open to the subscriber now."""

    async def advance_quote(self, msisdn: str, missing: int) -> AdvanceQuote:
        """The advance that would cover a shortfall of `missing` đồng, and its fee."""

    async def take_advance(self, msisdn: str, amount: int, idempotency_key: str) -> AdvanceResult:
        """Credit an advance of `amount` now (owed with its fee), exactly once per key."""

    def subscribers(self, wanted: SubscriberFilter, start: int = 0) -> AsyncIterator[tuple[int, SubscriberProfile]]:
        """(position, profile) of every subscriber `wanted` selects, in a stable order,
        from position `start` on (a campaign resumes at the position after the last one
        it handled). Raises `Unsupported` when the backend cannot list subscribers."""

    async def close(self) -> None:
        """Release connections."""
