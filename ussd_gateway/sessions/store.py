"""The session store protocol: one read and one write per hop.

A hop is `begin_hop` (one round trip: replay check, per-subscriber lock, load) then
`commit_hop` (one round trip: save, expire, unlock). Both stores, in memory and Redis,
keep the same guarantees: two hops of one subscriber's dialogue never run at once, and
a repeated hop (same session id, same hop key) is answered from the saved reply.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class LoadStatus(enum.Enum):
    OK = "ok"
    """The lock is ours; `record` is the subscriber's last dialogue, if any."""
    REPLAY = "replay"
    """This hop was already answered: send `reply` again, change nothing."""
    LOCKED = "locked"
    """Another hop of this subscriber is running; try again shortly."""


@dataclass(frozen=True, slots=True)
class Loaded:
    status: LoadStatus
    record: bytes | None = None
    reply: bytes | None = None
    lang: str | None = None
    """The subscriber's remembered language, when asked for."""
    counts: tuple[int, int] | None = None
    """Hops and new dialogues in the subscriber's rate window after this hop, when the
    store counted them (`begin_hop(count=…)`); None when it does not count."""


@dataclass(frozen=True, slots=True)
class OutboundSms:
    """An SMS for the SMS channel to send (purchase confirmations, keyword replies)."""

    to: str
    sender: str
    text: str
    dedupe_key: str
    """The same key is queued once, so a retried hop never sends twice."""
    sms_id: str = ""
    """Tracked SMS (campaigns, `POST /sms/send`): its id in the SMS ledger, whose state
    the channel updates when the SMSC takes it and when its delivery receipt comes."""
    receipt: bool = False
    """Ask the SMSC for a delivery receipt (`registered_delivery`)."""
    until: float = 0.0
    """Unix time after which it must not be sent any more (a campaign's quiet hours
    start); 0: no limit."""

    def extras(self) -> dict[str, object]:
        """The optional fields that are set, for a queue's payload."""
        found: dict[str, object] = {}
        if self.sms_id:
            found["id"] = self.sms_id
        if self.receipt:
            found["dlr"] = 1
        if self.until:
            found["until"] = self.until
        return found

    @classmethod
    def from_payload(cls, item: dict[str, object]) -> "OutboundSms":
        """The SMS a queue's payload holds (`to`, `from`, `text`, `key`, and `extras`)."""
        return cls(
            to=str(item["to"]), sender=str(item["from"]), text=str(item["text"]), dedupe_key=str(item["key"]),
            sms_id=str(item.get("id", "")), receipt=bool(item.get("dlr")), until=float(item.get("until", 0.0)),  # type: ignore[arg-type]
        )


@dataclass(frozen=True, slots=True)
class ClaimedSms:
    """An outbound SMS taken from the queue for sending; ack it when sent, requeue it
    when it could not be."""

    token: object
    """The store's handle on the queued item."""
    sms: OutboundSms


@runtime_checkable
class SessionStore(Protocol):
    """**Protocol:** where dialogues, locks, pending confirmations and outbound SMS live."""

    async def begin_hop(
        self, msisdn: str, session_id: str, hop_key: str, token: str, *, want_lang: bool, replay_within_ms: int | None = None
    ) -> Loaded:
        """Replay check, lock and load in one step. `hop_key` "" disables the replay check;
        `replay_within_ms` limits it to a saved reply at most that old (a begin)."""

    async def commit_hop(
        self, msisdn: str, token: str, *, session_id: str, hop_key: str, reply: bytes, record: bytes, ttl_s: int, lang: str | None
    ) -> bool:
        """Save the record and the reply and release the lock; False if the lock was lost."""

    async def release(self, msisdn: str, token: str) -> None:
        """Release the lock without saving (the hop failed)."""

    async def set_pending(self, msisdn: str, kind: str, ttl_s: int) -> None:
        """Remember a pending confirmation (KNDL `DK` waiting for `XN`)."""

    async def get_pending(self, msisdn: str) -> str | None:
        """The pending confirmation's kind, if one is still within its window."""

    async def take_pending(self, msisdn: str, kind: str) -> bool:
        """Atomically consume the pending confirmation if it is of `kind`."""

    async def enqueue_sms(self, sms: OutboundSms) -> bool:
        """Queue an SMS once per dedupe key; False if that key was already queued."""

    async def outbound_sms(self, limit: int = 100) -> list[OutboundSms]:
        """The queued SMS, oldest first, without removing them."""

    async def recent_sms(self, msisdn: str, limit: int = 1000) -> list[OutboundSms]:
        """The subscriber's SMS among the newest `limit` queued, oldest first."""

    async def claim_sms(self, limit: int) -> list[ClaimedSms]:
        """Move up to `limit` SMS from the queue to in-flight, oldest first."""

    async def ack_sms(self, item: ClaimedSms) -> None:
        """The SMS was handed to the SMSC: forget it."""

    async def requeue_sms(self, item: ClaimedSms) -> None:
        """The SMS could not be sent now: back to the head of the queue."""

    async def restore_inflight_sms(self) -> int:
        """At start-up: SMS a stopped process had in flight go back to the queue
        (sent at least once: a crash between the SMSC's answer and the ack resends)."""

    async def get_language(self, msisdn: str) -> str | None:
        """The subscriber's remembered language (for SMS replies)."""

    async def claim_once(self, key: str, ttl_s: int) -> bool:
        """True the first time `key` is claimed within `ttl_s` (duplicate MO SMS)."""

    async def swap(self, key: str, value: str, ttl_s: float) -> str | None:
        """Set `key` to `value` for `ttl_s` seconds and return what it held (None when
        nothing, or it expired), in one atomic step (MO SMS and USSD resend checks)."""

    async def ping(self) -> bool:
        """True when the store answers (for `/readyz`)."""

    async def close(self) -> None:
        """Release connections."""
