"""The transcript format as data: a transcript, its steps and expectations, what a run reports, and the two errors.

Parsing (`parse`) builds these records from TOML, the runner (`run`) plays them over a
channel and fills the results; both, the expectation checks (`expect`) and the template
arithmetic (`arithmetic`) share them, so they live on their own: `TranscriptError` for a
file that cannot be used, `Mismatch` for an expectation that failed while running.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_SMS_TIMEOUT_S = 5.0
MAX_WAIT_S = 300.0
"""A `wait` longer than this is refused: replays are bounded."""


# ---- errors -------------------------------------------------------------------------------
class TranscriptError(ValueError):
    """A transcript file that cannot be used: says which file, where, and what to fix."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.reason = message
        where = self.path or "<transcript>"
        if line is not None:
            where += f":{line}"
        super().__init__(f"{where}: {message}")


class Mismatch(Exception):
    """An expectation failed: what was expected (with the actual text kept apart).

    A step failure, not an error of the file: the runner reports it as the step's
    `expected` and `actual` and stops the transcript there."""

    def __init__(self, expected: str, actual: str | None = None) -> None:
        super().__init__(expected)
        self.expected = expected
        self.actual = actual


# ---- the format ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SmsExpectation:
    """An SMS that must arrive for the subscriber within `timeout_s`."""

    sender: str | None = None
    contains: tuple[str, ...] = ()
    regex: str | None = None
    timeout_s: float = DEFAULT_SMS_TIMEOUT_S


@dataclass(frozen=True, slots=True)
class Step:
    """One action (or none: check the screen already shown) and its expectations."""

    index: int
    """0 for the transcript's top-level `dial`/`sms`, then 1.. for `[[steps]]`."""
    line: int | None
    action: str | None
    """send, dial, sms, wait, hangup; None: only check the current screen."""
    value: Any = None
    """The input, the code, {"to", "text"}, the seconds; None for hangup."""
    contains: tuple[str, ...] = ()
    not_contains: tuple[str, ...] = ()
    regex: tuple[str, ...] = ()
    end: bool | None = None
    no_reply: bool = False
    sms: SmsExpectation | None = None
    description: str = ""
    timeout_s: float | None = None

    def describe(self) -> str:
        """What the step does, for reports: its description or its action."""
        if self.description:
            return self.description
        if self.action == "send":
            return f"send {self.value!r}"
        if self.action == "dial":
            return f"dial {self.value}"
        if self.action == "sms":
            return f"SMS {self.value['text']!r} to {self.value['to']}"
        if self.action == "wait":
            return f"wait {self.value}s"
        if self.action == "hangup":
            return "hang up"
        if self.sms is not None:
            return "expect an SMS"
        return "check the screen"


@dataclass(frozen=True, slots=True)
class Transcript:
    """A parsed transcript: the subscriber, the language, variables and the steps."""

    name: str
    path: str | None
    msisdn: str
    """May hold placeholders (`{msisdn}` in recorded transcripts): resolved at run time."""
    language: str | None
    steps: tuple[Step, ...]
    vars: Mapping[str, str] = field(default_factory=dict)
    description: str = ""


# ---- what a run reports -------------------------------------------------------------------
@dataclass
class StepResult:
    """How one step went. `expected`/`actual` are what a tester compares side by side."""

    index: int
    description: str
    ok: bool
    expected: str
    actual: str
    latency_s: float | None
    line: int | None = None


@dataclass
class TranscriptResult:
    """How one transcript went over one channel."""

    name: str
    channel: str
    ok: bool
    steps: list[StepResult]
    hop_latencies_s: list[float]
    """Seconds per USSD hop or SMS round trip (dials, answers, MO SMS), in order."""
    duration_s: float
    error: str | None
    """Why it failed, in one line (the failed step's expectation, or the channel's error)."""
    path: str | None = None

    @property
    def failed_step(self) -> StepResult | None:
        return next((step for step in self.steps if not step.ok), None)
