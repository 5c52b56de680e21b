"""Running a transcript over a channel: each step's action, its expectations, the result.

`run_transcript` plays a parsed transcript over any channel (the Africa's Talking form
dialect, the JSON dialect, or SMPP through the SMSC simulator's control API), one step
at a time within its time budget, and stops at the first failed step: what follows
depends on a screen that was not the one expected. A failure of the server or the
channel is a failed step with the reason, never an exception.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from ussd_gateway.testkit.transcripts.arithmetic import render_template
from ussd_gateway.testkit.transcripts.channels import DEFAULT_STEP_TIMEOUT_S, Channel, ChannelError
from ussd_gateway.testkit.transcripts.expect import Handset, check_step, expected_summary, safe_summary
from ussd_gateway.testkit.transcripts.model import Mismatch, StepResult, Transcript, TranscriptResult


async def _act(step: Step, channel: Channel, handset: Handset, msisdn: str, language: str | None, scope: dict[str, Any], lang: str) -> float | None:
    """Do the step's action; the seconds the hop took (None for wait, hangup, none)."""
    started = time.perf_counter()
    if step.action == "dial":
        handset.screen = await channel.dial(msisdn, render_template(step.value, scope, lang=lang), language)
        handset.on_sms = False
    elif step.action == "send":
        if handset.screen is None or handset.screen.end:
            # Channels differ here (a closed SMPP dialogue refuses, HTTP re-shows the
            # END): make it the transcript's error, the same on all of them.
            state = "was hung up" if handset.screen is None else "has ended (END)"
            raise Mismatch(f"an open dialogue to answer, but it {state}: dial again first")
        handset.screen = await channel.send(render_template(step.value, scope, lang=lang))
        handset.on_sms = False
    elif step.action == "sms":
        text = render_template(step.value["text"], scope, lang=lang)
        handset.reply = await channel.sms(msisdn, render_template(step.value["to"], scope, lang=lang), text)
        handset.on_sms = True
    elif step.action == "wait":
        await asyncio.sleep(step.value)
        return None
    elif step.action == "hangup":
        await channel.hangup()
        handset.screen = None
        return None
    else:
        return None
    return time.perf_counter() - started


async def run_transcript(
    transcript: Transcript,
    channel: Channel,
    *,
    variables: Mapping[str, str] | None = None,
    step_timeout_s: float = DEFAULT_STEP_TIMEOUT_S,
) -> TranscriptResult:
    """Play `transcript` over `channel`; stop at the first failed step (what follows
    depends on a screen that was not the one expected). Never raises for a failure of
    the server or the channel: that is a failed step with the reason.

    `variables` (e.g. from `--var`) override the transcript's `[vars]`; captures
    override both as the transcript runs. Each step must finish within
    `step_timeout_s` (plus its own wait or SMS timeout), or its `timeout`."""
    started = time.perf_counter()
    scope: dict[str, Any] = {**transcript.vars, **(variables or {})}
    lang = transcript.language or "vi"
    results: list[StepResult] = []
    hops: list[float] = []
    error: str | None = None
    try:
        msisdn = render_template(transcript.msisdn, scope, lang=lang)
    except Mismatch as failure:
        error = f"msisdn {transcript.msisdn!r}: {failure.expected}; give it with --var (e.g. --var msisdn=84910000001)"
        results.append(StepResult(0, "who dials", False, error, "", None, None))
        return TranscriptResult(transcript.name, getattr(channel, "name", "?"), False, results, hops, 0.0, error, transcript.path)
    scope.setdefault("msisdn", msisdn)
    handset = Handset()
    if any(step.sms is not None for step in transcript.steps):
        try:
            # SMS from before this run (an earlier replay of the same number) are not
            # what this transcript expects: take them out of the way first.
            await asyncio.wait_for(channel.outbound_messages(msisdn), step_timeout_s)
        except (ChannelError, TimeoutError):
            pass  # the first step will meet the same problem and report it
    for step in transcript.steps:
        description = step.describe()
        budget = step.timeout_s or (
            step_timeout_s + (step.value if step.action == "wait" else 0.0) + (step.sms.timeout_s if step.sms else 0.0)
        )
        latency: float | None = None
        try:
            async with asyncio.timeout(budget):
                latency = await _act(step, channel, handset, msisdn, transcript.language, scope, lang)
                if latency is not None:
                    hops.append(latency)
                actual = await check_step(step, channel, handset, msisdn, scope, lang)
            results.append(StepResult(step.index, description, True, expected_summary(step, scope, lang), actual, latency, step.line))
            continue
        except Mismatch as failure:
            actual = failure.actual if failure.actual is not None else handset.shown()
            results.append(StepResult(step.index, description, False, failure.expected, actual, latency, step.line))
            error = f"step {step.index} ({description}): expected {failure.expected}"
        except TimeoutError:
            results.append(StepResult(step.index, description, False, safe_summary(step, scope, lang), "(no answer in time)", None, step.line))
            error = f"step {step.index} ({description}): no answer within {budget:g}s"
        except ChannelError as failure:
            results.append(StepResult(step.index, description, False, safe_summary(step, scope, lang), f"(channel error) {failure}", None, step.line))
            error = f"step {step.index} ({description}): {failure}"
        except Exception as failure:  # a bug or an unexpected answer: a failed step, not a crash of the run
            shown = f"({type(failure).__name__}) {failure}"
            results.append(StepResult(step.index, description, False, safe_summary(step, scope, lang), shown, None, step.line))
            error = f"step {step.index} ({description}): {type(failure).__name__}: {failure}"
        break
    return TranscriptResult(
        name=transcript.name,
        channel=getattr(channel, "name", "?"),
        ok=error is None,
        steps=results,
        hop_latencies_s=hops,
        duration_s=time.perf_counter() - started,
        error=error,
        path=transcript.path,
    )
