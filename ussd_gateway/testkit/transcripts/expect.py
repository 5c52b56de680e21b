"""Transcript expectations: checking a step's screen, SMS reply and awaited SMS, and saying what was expected.

The channel only moves screens and SMS; every expectation is checked here, once, the
same on every channel: texts contained or not, regexes whose named groups become
captures, END or CON, an SMS that must arrive (others that arrive meanwhile wait for
the next `expect_sms`). `Handset` is what the subscriber has in front of them while a
transcript plays; `expected_summary` is the step's expectations as a tester reads them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ussd_gateway.testkit.transcripts.arithmetic import render_template
from ussd_gateway.testkit.transcripts.channels import Channel, Screen, Sms
from ussd_gateway.testkit.transcripts.model import Mismatch, SmsExpectation, Step


def expected_summary(step: Step, variables: Mapping[str, str], lang: str) -> str:
    lines: list[str] = []
    for text in step.contains:
        lines.append(f"contains {render_template(text, variables, lang=lang)!r}")
    for text in step.not_contains:
        lines.append(f"does not contain {render_template(text, variables, lang=lang)!r}")
    for pattern in step.regex:
        lines.append(f"matches /{pattern}/")
    if step.end is not None:
        lines.append("END (the dialogue ends)" if step.end else "CON (the dialogue continues)")
    if step.no_reply:
        lines.append("no SMS reply")
    if step.sms is not None:
        parts = ["an SMS"]
        if step.sms.sender:
            parts.append(f"from {step.sms.sender}")
        parts += [f"containing {render_template(t, variables, lang=lang)!r}" for t in step.sms.contains]
        if step.sms.regex:
            parts.append(f"matching /{step.sms.regex}/")
        lines.append(" ".join(parts))
    return "\n".join(lines) or "(no expectation)"


def safe_summary(step: Step, variables: Mapping[str, str], lang: str) -> str:
    try:
        return expected_summary(step, variables, lang)
    except Mismatch as failure:
        return failure.expected


def _show(screen: Screen | None, reply: str | None, sms_action: bool) -> str:
    if sms_action:
        return "(no reply)" if reply is None else reply
    if screen is None:
        return "(no screen yet)"
    return f"{screen.text}\n[{'END' if screen.end else 'CON'}]"


def _check_text(step: Step, text: str | None, variables: dict[str, str], lang: str, *, what: str) -> None:
    """Regexes first: their captures may be used by the same step's other expectations."""
    if text is None:
        if step.contains or step.regex:
            raise Mismatch(f"{what} was expected, but none came")
        return
    for pattern in step.regex:
        match = re.search(pattern, text)
        if match is None:
            raise Mismatch(f"{what} matches /{pattern}/")
        variables.update({k: v for k, v in match.groupdict().items() if v is not None})
    for fragment in step.contains:
        wanted = render_template(fragment, variables, lang=lang)
        if wanted not in text:
            raise Mismatch(f"{what} contains {wanted!r}")
    for fragment in step.not_contains:
        unwanted = render_template(fragment, variables, lang=lang)
        if unwanted in text:
            raise Mismatch(f"{what} does not contain {unwanted!r}")


async def _expect_sms(
    channel: Channel, msisdn: str, spec: SmsExpectation, variables: dict[str, str], lang: str, pending: list[Sms]
) -> str:
    """Wait for an SMS that fits; return its text. Others that arrive meanwhile stay
    in `pending` for the next `expect_sms` (a confirmation and a reply may cross)."""
    wanted = [render_template(t, variables, lang=lang) for t in spec.contains]

    def fits(sms: Sms) -> bool:
        if spec.sender and sms.sender != spec.sender:
            return False
        if any(text not in sms.text for text in wanted):
            return False
        return spec.regex is None or re.search(spec.regex, sms.text) is not None

    deadline = time.monotonic() + spec.timeout_s
    seen = pending
    while True:
        for sms in seen:
            if fits(sms):
                seen.remove(sms)
                if spec.regex:
                    match = re.search(spec.regex, sms.text)
                    assert match is not None
                    variables.update({k: v for k, v in match.groupdict().items() if v is not None})
                return f"from {sms.sender}: {sms.text}"
        left = deadline - time.monotonic()
        if left <= 0:
            got = "\n".join(f"from {s.sender}: {s.text}" for s in seen) or "(no SMS arrived)"
            raise Mismatch(_expected_sms_text(spec, wanted), got)
        seen += await channel.outbound_messages(msisdn, timeout=min(left, 1.0))


def _expected_sms_text(spec: SmsExpectation, wanted: Sequence[str]) -> str:
    parts = [f"an SMS within {spec.timeout_s:g}s"]
    if spec.sender:
        parts.append(f"from {spec.sender}")
    parts += [f"containing {text!r}" for text in wanted]
    if spec.regex:
        parts.append(f"matching /{spec.regex}/")
    return " ".join(parts)


@dataclass(slots=True)
class Handset:
    """What the subscriber has in front of them while a transcript plays."""

    screen: Screen | None = None
    """The last USSD screen; None before the first dial and once hung up."""
    reply: str | None = None
    on_sms: bool = False
    """The last action sent an SMS: text expectations apply to its reply."""
    pending_sms: list[Sms] = field(default_factory=list)
    """SMS that arrived but fitted no `expect_sms` yet."""

    def shown(self) -> str:
        return _show(self.screen, self.reply, self.on_sms)


async def check_step(step: Step, channel: Channel, handset: Handset, msisdn: str, scope: dict[str, Any], lang: str) -> str:
    """Check the step's expectations; what was seen (the SMS, for expect_sms)."""
    hung_up = "a screen, but the dialogue was hung up (dial again first)"
    if step.contains or step.not_contains or step.regex:
        if handset.on_sms:
            _check_text(step, handset.reply, scope, lang, what="the SMS reply")
        elif handset.screen is None:
            raise Mismatch(hung_up)
        else:
            _check_text(step, handset.screen.text, scope, lang, what="the screen")
    if step.no_reply and handset.reply is not None:
        raise Mismatch("no SMS reply")
    if step.end is not None:
        if handset.screen is None:
            raise Mismatch(hung_up)
        if handset.screen.end != step.end:
            raise Mismatch("the dialogue ends (END)" if step.end else "the dialogue continues (CON)")
    if step.sms is not None:
        return await _expect_sms(channel, msisdn, step.sms, scope, lang, handset.pending_sms)
    return handset.shown()
