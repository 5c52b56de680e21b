"""`[campaigns]` in config.toml: the rules that protect subscribers from care SMS."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CampaignSettings:
    timezone: str = "Asia/Ho_Chi_Minh"
    """Quiet hours are read on this clock."""
    quiet_start: str = "21:00"
    """From this local time nothing is sent..."""
    quiet_end: str = "08:00"
    """...until this one (the campaign resumes by itself). Equal times: no quiet hours."""
    cap_per_subscriber: int = 3
    """Care SMS one subscriber receives, at most, across all campaigns, within `cap_days`."""
    cap_days: int = 7
    optout_short_codes: tuple[str, ...] = ("9090",)
    """Where subscribers send `TC` / `TU CHOI` (stop care SMS) and `DK CSKH` (start again)."""
    default_sender: str = "9090"
    """A campaign's sender when it names none (a short code or an approved brandname)."""
    max_outstanding: int = 500
    """A running campaign keeps at most this many of its SMS queued and not yet taken
    by the SMSC (so pause, cancel and quiet hours act within about a second)."""
    batch: int = 200
    """Targets handled per step (one Redis round trip per kind of work)."""
    poll_s: float = 1.0
    """How often a gateway process looks for campaigns to run."""
    attribution_days: float = 7.0
    """A purchase within this many days of a campaign SMS (the last one a subscriber
    got) counts as that campaign's conversion, unless the campaign sets its own window."""
