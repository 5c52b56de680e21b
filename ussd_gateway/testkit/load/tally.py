"""What a load run counts while it runs: latencies, errors by kind, dialogues, and the run's own state.

`Tally` is what every virtual subscriber adds to (a hop's latency, a failure with an
example, a dialogue over the deadline); `Run` hands out the dialogues one at a time and
the number each dials from, a fresh block of numbers a run. The runner fills both and
the report reads them, so they live apart from either.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ussd_gateway.testkit.load.options import MSISDN_DIGITS, LoadOptions


@dataclass(slots=True)
class Tally:
    """What the virtual subscribers counted so far."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    mix: Counter[str] = field(default_factory=Counter)
    started: int = 0
    finished: int = 0
    ok: int = 0
    over_deadline: int = 0
    worst_dialogues: list[tuple[float, str]] = field(default_factory=list)

    def error(self, kind: str, detail: str, status: int | None = None, where: str = "") -> None:
        self.errors[kind] += 1
        if status is not None and kind == "http_status":
            self.statuses[str(status)] += 1
        if len(self.examples) < 5:
            self.examples.append(f"{kind}: {where}{detail}")


@dataclass
class Run:
    """One load run: its options and tally, the dialogues handed out, why it stopped."""

    options: LoadOptions
    tally: Tally
    planned: int
    started_at: float = 0.0
    next_index: int = 0
    stopped: str = "done"
    offset: int = 0
    run_id: str = ""
    msisdn_space: int = 1

    def take(self) -> int | None:
        if self.next_index >= self.planned:
            return None
        index = self.next_index
        self.next_index += 1
        return index

    def msisdn(self, index: int) -> str:
        digits = MSISDN_DIGITS - len(self.options.msisdn_prefix)
        return self.options.msisdn_prefix + str((self.offset + index) % self.msisdn_space).zfill(digits)
