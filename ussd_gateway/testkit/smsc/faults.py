"""The SMSC simulator's fault injection: what the next `submit_sm`s meet, and `/faults` entries.

Tests prove nothing is lost or duplicated by making the simulator misbehave: throttle,
withhold or delay its `submit_sm_resp`, drop every link, resend a `deliver_sm`.
`SubmitFaults` holds the pending submit faults and decides, one `submit_sm` at a time,
which of them applies; `fault_action` checks one entry of the control API's
`POST /faults` body and returns what applies it, so nothing applies until every entry
is valid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ussd_gateway.channels.smpp.pdu import ESME_RTHROTTLED

if TYPE_CHECKING:
    from ussd_gateway.testkit.smsc.simulator import SmscSimulator

FAULT_NAMES = frozenset({"drop_links", "throttle", "withhold", "delay", "resend_next_deliver"})
"""The faults `POST /faults` accepts, each a key of its JSON body."""


@dataclass(frozen=True, slots=True)
class Throttle:
    """Answer the `submit_sm` with this error status; it is not delivered."""

    status: int


@dataclass(frozen=True, slots=True)
class Withhold:
    """Never answer the `submit_sm`; with `deliver`, it is delivered all the same."""

    deliver: bool


@dataclass(frozen=True, slots=True)
class Delay:
    """Answer the `submit_sm` after this many seconds; it is delivered then."""

    seconds: float


@dataclass
class SubmitFaults:
    """Pending faults for the next `submit_sm`s, applied in the order they arrive."""

    throttle: int = 0
    throttle_status: int = ESME_RTHROTTLED
    withhold: int = 0
    withhold_deliver: bool = False
    delay_s: float = 0.0
    delay_count: int | None = None
    """How many more submits to delay; None: until changed."""

    def take(self) -> Throttle | Withhold | Delay | None:
        """The fault the next `submit_sm` meets (counted off), or None to answer it now."""
        if self.throttle > 0:
            self.throttle -= 1
            return Throttle(self.throttle_status)
        if self.withhold > 0:
            self.withhold -= 1
            return Withhold(self.withhold_deliver)
        if self.delay_s > 0 and (self.delay_count is None or self.delay_count > 0):
            if self.delay_count is not None:
                self.delay_count -= 1
            return Delay(self.delay_s)
        return None


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name!r} count must be a non-negative integer, not {value!r}")
    return value


def fault_action(sim: SmscSimulator, name: str, value: Any) -> Callable[[], Any]:
    """Validate one `/faults` entry and return what applies it (nothing applies until all
    entries are valid).

    Raises:
        ValueError: when the entry is unknown or its value is out of range.
    """
    if name == "drop_links":
        if value is not True:
            raise ValueError("'drop_links' must be true")
        return sim.drop_links
    if name == "resend_next_deliver":
        count = 1 if value is True else _count(name, value)
        return lambda: sim.resend_next_deliver(count)
    if name == "delay":
        spec = value if isinstance(value, dict) else {"seconds": value}
        seconds, count = spec.get("seconds"), spec.get("count")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds <= 600:
            raise ValueError(f"'delay' seconds must be a number in [0, 600], not {seconds!r}")
        count = None if count is None else _count(name, count)
        return lambda: sim.delay_submit_resp(float(seconds), count)
    if name == "throttle":
        spec = value if isinstance(value, dict) else {"count": value}
        count = _count(name, spec.get("count"))
        status = spec.get("status", ESME_RTHROTTLED)
        if isinstance(status, bool) or not isinstance(status, int) or not 0 < status <= 0xFFFFFFFF:
            raise ValueError(f"'throttle' status must be a non-zero SMPP status, not {status!r}")
        return lambda: sim.throttle_next(count, status)
    if name == "withhold":
        spec = value if isinstance(value, dict) else {"count": value}
        count = _count(name, spec.get("count"))
        deliver = spec.get("deliver", False)
        if not isinstance(deliver, bool):
            raise ValueError(f"'withhold' deliver must be true or false, not {deliver!r}")
        return lambda: sim.withhold_submit_resp(count, deliver=deliver)
    raise ValueError(f"unknown fault {name!r}")
