"""The lock a hop holds, visible to the money writes it makes.

The dispatcher takes a per-subscriber lock for each hop (with a TTL of about one hop
deadline) and sets `HOP_LOCK` while the hop's step runs. A backend that keeps money
in the same Redis checks, inside its atomic write, that the lock is still this hop's:
a command that reaches Redis late (Redis was stopped, the hop already answered busy
and its lock expired) then changes nothing. A context variable rather than an
argument: the lock is the dispatcher's business, and the menus and actions between
the dispatcher and the backend have no reason to carry it.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HopLock:
    msisdn: str
    """The subscriber whose lock it is (normalised)."""
    token: str
    """The value the lock holds while it is this hop's."""


HOP_LOCK: ContextVar[HopLock | None] = ContextVar("hop_lock", default=None)
"""Set by the dispatcher for the duration of one hop's step; None outside hops (SMS
keywords, tests calling a backend directly): no fence then."""
