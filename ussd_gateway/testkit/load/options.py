"""The load run's options: what `ussd-gateway load` was asked to do, and whether it makes sense.

`LoadOptions` carries the command line (how many dialogues, how many at once, which
channel and target, the deadline and timeouts, the block of numbers dialogues dial
from); `validate` lists every problem with them before anything runs, and `target_url`
is where the virtual subscribers connect: the server, or the SMSC simulator's control
API for SMPP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_PREFIX = "8497"
MSISDN_DIGITS = 11  # 84 + nine digits


@dataclass
class LoadOptions:
    """What `ussd-gateway load` was asked to do (the command line, checked by `validate`)."""

    sessions: int
    concurrency: int
    url: str = "http://127.0.0.1:8080"
    smpp: str | None = None
    channel: str = "africastalking"
    transcript: str | None = None
    deadline_ms: float = 1000.0
    timeout_s: float = 5.0
    max_seconds: float = 300.0
    msisdn_prefix: str = DEFAULT_PREFIX
    seed: int | None = None
    progress: bool = True
    keep_msisdn: bool = False
    """With a transcript that names its subscriber: keep that number for every dialogue."""


def target_url(options: LoadOptions) -> str:
    """Where the virtual subscribers connect: the simulator's control API for SMPP, else the server."""
    if options.smpp:
        return "http://" + options.smpp if not options.smpp.startswith("http") else options.smpp
    return options.url


def validate(options: LoadOptions) -> list[str]:
    """Every problem with `options`, as the CLI reports them (none: an empty list)."""
    problems = []
    if options.sessions < 1:
        problems.append("--sessions must be at least 1")
    if options.concurrency < 1:
        problems.append("--concurrency must be at least 1")
    if options.max_seconds <= 0:
        problems.append("--max-seconds must be positive")
    if options.timeout_s <= 0:
        problems.append("--timeout must be positive")
    if options.deadline_ms < 0:
        problems.append("--deadline-ms must not be negative")
    prefix = options.msisdn_prefix
    if not prefix.isdigit() or not 2 <= len(prefix) <= 8:
        problems.append("--msisdn-prefix must be 2 to 8 digits")
    elif options.sessions > 10 ** (MSISDN_DIGITS - len(prefix)):
        problems.append(f"--sessions {options.sessions} exceeds the numbers under prefix {prefix}")
    if options.channel not in ("africastalking", "json"):
        problems.append("--channel must be africastalking or json (use --smpp HOST:PORT for SMPP)")
    if options.smpp and not re.fullmatch(r"(https?://)?[\w.\-\[\]:]+:\d+/?", options.smpp):
        problems.append("--smpp must be HOST:PORT of the simulator's control API (e.g. 127.0.0.1:2776)")
    return problems
