"""Recording dialogues as transcripts: from the terminal phone, and live in the server.

Both write the transcript format of `ussd_gateway.testkit.transcripts` (docs/transcripts.md),
with expectations taken from the screens seen: the first line of each screen (cut
before anything that changes from day to day, such as a date) and whether it ended.
That is deliberately loose: a recording is the start of a regression test, and a
tester tightens it by hand.

Live recording (`[recording]` in config.toml, off by default) samples dialogues by
their session id, so every hop of a sampled dialogue is kept and the others cost one
hash. MSISDNs never reach the file: the transcript dials `{msisdn}`, given at replay
with `--var msisdn=…`, and says in a comment whose masked number it was. The buffers
live in the process's memory (a dialogue whose hops go to several workers is recorded
in parts by each); they are bounded, and a failure to record is logged, never felt by
the subscriber.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from ussd_gateway.core.hop import Hop, HopKind, Reply
from ussd_gateway.core.msisdn import mask_msisdn
from ussd_gateway.menus.secret import MASKED_PIN, masked

_DATE = re.compile(r"\b\d{1,2}/\d{1,2}/\d{2,4}\b")
MAX_FRAGMENT = 60


@dataclass(slots=True)
class RecordedHop:
    """One hop as the subscriber lived it: what they typed (None for the dial) and the
    screen that came back; `hangup` for a dialogue they dropped."""

    input: str | None
    text: str = ""
    end: bool = False
    hangup: bool = False


def toml_string(value: str) -> str:
    """A TOML basic string (JSON's escapes are a subset TOML accepts)."""
    return json.dumps(value, ensure_ascii=False)


def escape_braces(text: str) -> str:
    """Expectations are templates: a literal brace must be doubled."""
    return text.replace("{", "{{").replace("}", "}}")


def stable_fragment(screen: str) -> str:
    """The part of a screen worth expecting at replay: its first line, cut before a
    date and at a word boundary within MAX_FRAGMENT characters. Empty when nothing
    stable is left (then only END/CON is expected)."""
    for line in screen.split("\n"):
        line = line.strip()
        if not line:
            continue
        date = _DATE.search(line)
        if date:
            line = line[: date.start()]
        if len(line) > MAX_FRAGMENT:
            cut = line.rfind(" ", 0, MAX_FRAGMENT)
            line = line[: cut if cut > 20 else MAX_FRAGMENT]
        line = line.rstrip(" ,.:;(-")
        # Drop a trailing word the date cut in half ("HSD " is kept, "HSD" alone is fine).
        return line
    return ""


def transcript_text(
    hops: Sequence[RecordedHop],
    *,
    msisdn: str,
    code: str,
    language: str | None = None,
    name: str | None = None,
    header: Iterable[str] = (),
    mask: str | None = None,
    number_as_variable: bool = False,
) -> str:
    """Render a played dialogue as transcript TOML, ready for `ussd-gateway replay`.

    `mask`: the real MSISDN to hide; the transcript then dials `{msisdn}` and every
    occurrence of the number in screens and inputs becomes `{msisdn}` too.
    `number_as_variable`: dial `{msisdn}` with the number as its default in `[vars]`,
    so `--var msisdn=…` replays the session as another subscriber."""

    def hide(text: str) -> str:
        text = escape_braces(text).replace(escape_braces(MASKED_PIN), MASKED_PIN)
        if mask:
            for form in {mask, "0" + mask[2:] if mask.startswith("84") else mask}:
                text = text.replace(form, "{msisdn}")
        return text

    lines = [f"# {line}" for line in header]
    if name:
        lines.append(f"name = {toml_string(name)}")
    lines.append(f"msisdn = {toml_string('{msisdn}' if mask or number_as_variable else msisdn)}")
    if language:
        lines.append(f"language = {toml_string(language)}")
    lines.append(f"dial = {toml_string(hide(code) if mask else code)}")
    if number_as_variable and not mask:
        lines += ["", "[vars]", f"msisdn = {toml_string(msisdn)}   # replay as someone else: --var msisdn=…"]
    for hop in hops:
        lines.append("")
        if hop.hangup:
            lines += ["# the subscriber hung up here (no END): redialling within the resume window offers it back", "[[steps]]", "hangup = true"]
            continue
        lines += [f"#   {row}" for row in (hop.text or "(empty screen)").split("\n")]
        lines.append("[[steps]]")
        if hop.input is not None:
            lines.append(f"send = {toml_string(hide(hop.input))}")
        fragment = stable_fragment(hop.text)
        if fragment:
            lines.append(f"expect_contains = {toml_string(hide(fragment))}")
        lines.append(f"expect_end = {'true' if hop.end else 'false'}")
    return "\n".join(lines) + "\n"


# ---- the terminal phone's recorder --------------------------------------------------------
@dataclass(slots=True)
class SessionRecorder:
    """What `ussd-gateway sim --record FILE` keeps while the session plays."""

    msisdn: str
    code: str
    language: str | None = None
    hops: list[RecordedHop] = field(default_factory=list)

    def screen(self, answer: str | None, text: str, end: bool) -> None:
        self.hops.append(RecordedHop(answer, text, end))

    def hangup(self) -> None:
        self.hops.append(RecordedHop(None, hangup=True))

    def write(self, path: str | Path, *, channel: str) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        header = [
            f"Recorded with `ussd-gateway sim --record` over {channel} on {stamp}.",
            "Expectations are each screen's first line and END/CON; the full screens are in comments.",
            f"Replay: ussd-gateway replay {target}  (add --var msisdn=… to play it as another subscriber)",
        ]
        target.write_text(
            transcript_text(
                self.hops, msisdn=self.msisdn, code=self.code, language=self.language, header=header, name=target.stem, number_as_variable=True
            ),
            encoding="utf-8",
        )
        return target


# ---- live recording in the server --------------------------------------------------------
def sampled(session_id: str, rate: float) -> bool:
    """Deterministic per dialogue: every hop of a session id gets the same answer, in
    every process, so a sampled dialogue is recorded whole."""
    if rate >= 1:
        return True
    if rate <= 0:
        return False
    digest = hashlib.blake2b(session_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < rate


@dataclass(slots=True)
class _Dialogue:
    msisdn: str
    code: str
    language: str | None
    history: str
    started: float
    last: float
    hops: list[RecordedHop] = field(default_factory=list)


class LiveRecorder:
    """Turns sampled dialogues into transcripts in `directory`.

    The dispatcher calls `observe(hop, reply, outcome)` after each hop; that only
    appends to a bounded in-memory buffer. A transcript is written (in a thread, off the
    event loop) when its dialogue ends, is released, is replaced by a new dial under
    the same session id, or has been idle `idle_s` (gateways that never report a
    release, such as Africa's Talking)."""

    def __init__(
        self,
        directory: str | Path,
        sample_rate: float,
        *,
        max_open: int = 1000,
        max_hops: int = 64,
        idle_s: float = 300.0,
        clock: Any = time.monotonic,
    ) -> None:
        self.directory = Path(directory)
        self.sample_rate = sample_rate
        self.max_open = max_open
        self.max_hops = max_hops
        self.idle_s = idle_s
        self.clock = clock
        self.log = structlog.get_logger("ussd_gateway.recording")
        self._open: dict[str, _Dialogue] = {}
        self._writes: set[asyncio.Future[Any]] = set()
        self._next_sweep = 0.0
        self.secret_codes: frozenset[str] = frozenset()
        """Service codes whose dialled inputs are masked (`secret_parts`)."""
        self.secret_prompts: tuple[str, ...] = ()
        """Prompts whose answers are masked (`secret_parts`)."""
        self.written = 0
        self.dropped = 0
        """Dialogues not recorded because `max_open` were already buffered."""

    def observe(self, hop: Hop, reply: Reply, outcome: str = "") -> None:
        """Note one answered hop. Cheap, never raises (a recording is not worth a hop)."""
        try:
            self._observe(hop, reply, outcome)
        except Exception:
            self.log.exception("recording_failed", session=self._name(hop.session_id))

    def _observe(self, hop: Hop, reply: Reply, outcome: str) -> None:
        now = self.clock()
        if now >= self._next_sweep:
            self._next_sweep = now + min(5.0, self.idle_s)
            self._sweep(now)
        if outcome in ("replay", "unknown_service") or not sampled(hop.session_id, self.sample_rate):
            return
        key = hop.session_id
        if hop.kind is HopKind.BEGIN:
            if key in self._open:
                self._finish(key, "the same session id dialled again")
            if len(self._open) >= self.max_open:
                self.dropped += 1
                return
            embedded = hop.inputs or (tuple(hop.history.split("*")) if hop.history else ())
            secret = hop.service_code in self.secret_codes
            embedded = tuple(self._masked(value, secret) for value in embedded)
            code = hop.service_code if not embedded else "*" + "*".join([hop.service_code[1:-1], *embedded]) + "#"
            dialogue = _Dialogue(hop.msisdn, code, hop.language, hop.history or "", now, now)
            dialogue.hops.append(RecordedHop(None, reply.text, reply.end))
            self._open[key] = dialogue
        else:
            dialogue = self._open.get(key)
            if dialogue is None:
                return
            dialogue.last = now
            if hop.kind is HopKind.ABORT:
                dialogue.hops.append(RecordedHop(None, hangup=True))
                self._finish(key, "released")
                return
            if hop.history is not None:
                from ussd_gateway.dispatch.dispatcher import new_inputs

                inputs = new_inputs(hop.history, dialogue.history) or ()
                dialogue.history = hop.history
            else:
                inputs = hop.inputs
            if not inputs:
                return
            shown = next((h.text for h in reversed(dialogue.hops) if h.text), "")
            secret = any(prompt in shown for prompt in self.secret_prompts)
            inputs = tuple(self._masked(value, secret) for value in inputs)
            for value in inputs[:-1]:
                dialogue.hops.append(RecordedHop(value, "", False))
            dialogue.hops.append(RecordedHop(inputs[-1], reply.text, reply.end))
        if reply.end:
            self._finish(key, "ended")
        elif len(dialogue.hops) >= self.max_hops:
            self._finish(key, f"cut after {self.max_hops} hops")

    @staticmethod
    def _masked(value: str, secret: bool) -> str:
        """`{pin}` for an answer to a secret screen or anything shaped like a PIN."""
        return masked(value, secret)

    def _sweep(self, now: float) -> None:
        for key in [k for k, d in self._open.items() if now - d.last > self.idle_s]:
            self._finish(key, f"abandoned (no END and no release within {self.idle_s:g}s)")

    @staticmethod
    def _name(session_id: str) -> str:
        return hashlib.blake2b(session_id.encode(), digest_size=5).hexdigest()

    def _finish(self, key: str, why: str) -> None:
        dialogue = self._open.pop(key)
        name = self._name(key)
        # Intermediate hops of a multi-input hop carry no screen: expect nothing of them.
        header = [
            f"Recorded live on {time.strftime('%Y-%m-%d %H:%M:%S')} from {mask_msisdn(dialogue.msisdn)} (dialogue {name}): {why}.",
            "The subscriber's number is masked: give one at replay, e.g.",
            "  ussd-gateway replay FILE --var msisdn=84910000001",
            "Expectations are each screen's first line and END/CON; the full screens are in comments.",
        ]
        if MASKED_PIN in dialogue.code or any(h.input == MASKED_PIN for h in dialogue.hops):
            header.append(f"Scratch-card PINs are masked as {MASKED_PIN}: give a card at replay with --var pin=….")
        text = transcript_text(dialogue.hops, msisdn=dialogue.msisdn, code=dialogue.code, language=dialogue.language, header=header, mask=dialogue.msisdn)
        path = self.directory / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}.toml"
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write(path, text)
            return
        future = loop.run_in_executor(None, self._write, path, text)
        self._writes.add(future)
        future.add_done_callback(self._writes.discard)

    def _write(self, path: Path, text: str) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            self.written += 1
        except OSError as error:
            self.log.warning("recording_not_written", path=str(path), error=str(error))

    async def flush(self) -> None:
        """Write every buffered dialogue now and wait for the files (at shutdown)."""
        for key in list(self._open):
            self._finish(key, "the server stopped")
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)


def build_recorder(settings: Any) -> LiveRecorder | None:
    """The live recorder for `[recording]`, or None when it is off."""
    if not settings.enabled or settings.sample_rate <= 0:
        return None
    return LiveRecorder(settings.directory, settings.sample_rate, max_open=settings.max_open, idle_s=settings.idle_s)
