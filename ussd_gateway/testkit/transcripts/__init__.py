"""Session transcripts: scripted dialogues with expectations, run over any channel.

A transcript is a small TOML file a tester can write by hand (the format is documented
in docs/transcripts.md): who dials, what, then steps that send an input, dial again,
send an SMS, wait or hang up, each with expectations on the screen (contains, does not
contain, matches a regex whose named groups become captures, continues or ends) or on
an SMS that must arrive. `{name}` placeholders use the transcript's `[vars]`, the
caller's variables and the captures so far, with integer arithmetic (`{before - price}`)
and formats (`|money`), so "the balance dropped by the price shown" is one line. The
same transcript runs over every channel: the Africa's Talking form dialect, the
JSON dialect and SMPP through the SMSC simulator's control API. The channel only moves
screens and SMS; every expectation is checked once, in `expect`. The modules: `model`
(the format as data, the results, the errors), `parse` (TOML to transcripts),
`arithmetic` (placeholders), `expect` (the checks), `run` (playing one over a channel)
and `channels` (the handsets). Used by `ussd-gateway replay`, by the load tool
(`make_channel` + `run_transcript`), by the recorder (which writes this format) and by
the acceptance tests.
"""

from __future__ import annotations

from ussd_gateway.testkit.transcripts.arithmetic import as_number, render_template
from ussd_gateway.testkit.transcripts.channels import (
    CHANNELS,
    DEFAULT_STEP_TIMEOUT_S,
    AfricasTalkingChannel,
    Channel,
    ChannelError,
    JsonChannel,
    Screen,
    Sms,
    SmppChannel,
    make_channel,
)
from ussd_gateway.testkit.transcripts.model import (
    DEFAULT_SMS_TIMEOUT_S,
    MAX_WAIT_S,
    Mismatch,
    SmsExpectation,
    Step,
    StepResult,
    Transcript,
    TranscriptError,
    TranscriptResult,
)
from ussd_gateway.testkit.transcripts.parse import load_transcript, load_transcripts, parse_transcript
from ussd_gateway.testkit.transcripts.run import run_transcript

__all__ = [
    "CHANNELS",
    "DEFAULT_SMS_TIMEOUT_S",
    "DEFAULT_STEP_TIMEOUT_S",
    "MAX_WAIT_S",
    "AfricasTalkingChannel",
    "Channel",
    "ChannelError",
    "JsonChannel",
    "Mismatch",
    "Screen",
    "Sms",
    "SmppChannel",
    "SmsExpectation",
    "Step",
    "StepResult",
    "Transcript",
    "TranscriptError",
    "TranscriptResult",
    "as_number",
    "load_transcript",
    "load_transcripts",
    "make_channel",
    "parse_transcript",
    "render_template",
    "run_transcript",
]
