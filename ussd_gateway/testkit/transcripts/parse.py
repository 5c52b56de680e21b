"""Reading transcripts: TOML text and files into checked `Transcript`s, errors with file and line.

A tester writes transcripts by hand (the format is documented in docs/transcripts.md),
so every mistake is caught when the file is loaded, before any hop, and reported with
the line to edit and, for a misspelt key, the key meant: unknown keys, two actions in a
step, a bad regex or placeholder, an expectation on a step that shows no screen.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ussd_gateway.core.formats import LANGUAGES

from ussd_gateway.testkit.transcripts.arithmetic import NAME, check_template
from ussd_gateway.testkit.transcripts.model import (
    DEFAULT_SMS_TIMEOUT_S,
    MAX_WAIT_S,
    SmsExpectation,
    Step,
    Transcript,
    TranscriptError,
)

_TOP_KEYS = {"name", "description", "msisdn", "language", "dial", "sms", "vars", "steps"}
_STEP_KEYS = {
    "send", "dial", "sms", "wait", "hangup",
    "expect_contains", "expect_not_contains", "expect_regex", "expect_end", "expect_no_reply", "expect_sms",
    "description", "timeout",
}  # fmt: skip
_ACTIONS = ("send", "dial", "sms", "wait", "hangup")
_SMS_KEYS = {"to", "text"}
_EXPECT_SMS_KEYS = {"from", "contains", "regex", "timeout"}


class _Locator:
    """Finds the line of a `[[steps]]` table and of a key in it, so an error about the
    fifth step's `expect_end` points at the line a tester has to edit (tomllib keeps no
    positions once parsed)."""

    _STEPS = re.compile(r"^\s*\[\[\s*steps\s*\]\]")

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.step_lines = [n + 1 for n, line in enumerate(self.lines) if self._STEPS.match(line)]

    def step(self, index: int) -> int | None:
        return self.step_lines[index - 1] if 0 < index <= len(self.step_lines) else None

    def key(self, name: str, index: int = 0) -> int | None:
        """The line of `name = …` in step `index` (0: the top level, before any step)."""
        start = (self.step(index) or 0) if index else 0
        stop = self.step_lines[index] - 1 if index < len(self.step_lines) else len(self.lines)
        if index == 0:
            stop = self.step_lines[0] - 1 if self.step_lines else len(self.lines)
        pattern = re.compile(rf"^\s*(?:\[\s*)?{re.escape(name)}\b")
        for number in range(start, stop):
            if pattern.match(self.lines[number]):
                return number + 1
        return self.step(index) if index else None


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"{what} must be a string or a list of strings, not {value!r}")


def _unknown(keys: Iterable[str], known: set[str], where: str) -> str | None:
    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return f"unknown key {key!r}{hint}; known keys: {', '.join(sorted(known))}"
    return None


def _parse_step(raw: Any, index: int, loc: _Locator, path: str | None) -> Step:
    where = "the top level" if index == 0 else f"step {index}"

    def fail(message: str, key: str | None = None) -> TranscriptError:
        line = loc.key(key, index) if key else (loc.step(index) if index else None)
        return TranscriptError(f"{where}: {message}", path=path, line=line)

    if not isinstance(raw, Mapping):
        raise fail("must be a table of keys ([[steps]] followed by key = value lines)")
    problem = _unknown(raw, _STEP_KEYS, where)
    if problem:
        raise fail(problem, next(k for k in raw if k not in _STEP_KEYS))
    actions = [name for name in _ACTIONS if name in raw]
    if len(actions) > 1:
        raise fail(f"has {' and '.join(actions)}: one action per step (split it into two [[steps]])", actions[1])
    action = actions[0] if actions else None
    value: Any = None
    if action == "send":
        value = raw["send"]
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise fail(f"send must be a string (the subscriber's input), not {value!r}", "send")
    elif action == "dial":
        value = raw["dial"]
        if not isinstance(value, str) or not value.strip():
            raise fail(f"dial must be a USSD code like \"*090#\", not {value!r}", "dial")
    elif action == "sms":
        value = raw["sms"]
        if not isinstance(value, Mapping):
            raise fail('sms must be a table: sms = { to = "9237", text = "DK" }', "sms")
        problem = _unknown(value, _SMS_KEYS, "sms")
        if problem:
            raise fail(f"sms: {problem}", "sms")
        if not all(isinstance(value.get(k), str) for k in ("to", "text")):
            raise fail('sms needs `to` (the short code) and `text`, both strings: sms = { to = "9237", text = "DK" }', "sms")
        value = {"to": value["to"], "text": value["text"]}
    elif action == "wait":
        value = raw["wait"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_WAIT_S:
            raise fail(f"wait must be a number of seconds between 0 and {MAX_WAIT_S:g}, not {value!r}", "wait")
        value = float(value)
    elif action == "hangup":
        if raw["hangup"] is not True:
            raise fail("hangup must be `true` (drop the dialogue without an END, as a lost signal does)", "hangup")
    try:
        contains = _strings(raw.get("expect_contains", []), "expect_contains")
        not_contains = _strings(raw.get("expect_not_contains", []), "expect_not_contains")
        regexes = _strings(raw.get("expect_regex", []), "expect_regex")
    except ValueError as error:
        bad = next(k for k in ("expect_contains", "expect_not_contains", "expect_regex") if k in str(error))
        raise fail(str(error), bad) from None
    for pattern in regexes:
        try:
            re.compile(pattern)
        except re.error as error:
            raise fail(f"expect_regex {pattern!r} is not a valid regular expression: {error}", "expect_regex") from None
    for key, texts in (("expect_contains", contains), ("expect_not_contains", not_contains)):
        for text in texts:
            try:
                check_template(text)
            except ValueError as error:
                raise fail(f"{key} {text!r}: {error}", key) from None
    for key in ("send", "dial"):
        if action == key:
            try:
                check_template(value)
            except ValueError as error:
                raise fail(f"{key} {value!r}: {error}", key) from None
    end = raw.get("expect_end")
    if end is not None and not isinstance(end, bool):
        raise fail(f"expect_end must be true (the screen ends the dialogue) or false (it continues), not {end!r}", "expect_end")
    no_reply = raw.get("expect_no_reply", False)
    if not isinstance(no_reply, bool):
        raise fail("expect_no_reply must be true or false", "expect_no_reply")
    if action == "sms" and end is not None:
        raise fail("expect_end applies to USSD screens; an SMS reply has no END (check it with expect_contains)", "expect_end")
    if action in ("wait", "hangup") and (contains or not_contains or regexes or end is not None):
        raise fail(f"{action} shows no screen: put the screen's expectations on the step that shows it", action)
    if no_reply and action != "sms":
        raise fail("expect_no_reply applies to a step that sends an SMS", "expect_no_reply")
    sms: SmsExpectation | None = None
    if "expect_sms" in raw:
        spec = raw["expect_sms"]
        if spec is True:
            spec = {}
        if not isinstance(spec, Mapping):
            raise fail('expect_sms must be a table: expect_sms = { from = "MobiFone", contains = "D15" }', "expect_sms")
        problem = _unknown(spec, _EXPECT_SMS_KEYS, "expect_sms")
        if problem:
            raise fail(f"expect_sms: {problem}", "expect_sms")
        try:
            sms_contains = _strings(spec.get("contains", []), "expect_sms.contains")
            for text in sms_contains:
                check_template(text)
            sms_regex = spec.get("regex")
            if sms_regex is not None:
                if not isinstance(sms_regex, str):
                    raise ValueError("expect_sms.regex must be a string")
                re.compile(sms_regex)
            sender = spec.get("from")
            if sender is not None and not isinstance(sender, str):
                raise ValueError("expect_sms.from must be a string (the sender: a short code or a name)")
            sms_timeout = spec.get("timeout", DEFAULT_SMS_TIMEOUT_S)
            if isinstance(sms_timeout, bool) or not isinstance(sms_timeout, int | float) or not 0 < sms_timeout <= 120:
                raise ValueError("expect_sms.timeout must be seconds in (0, 120]")
        except (ValueError, re.error) as error:
            raise fail(str(error), "expect_sms") from None
        sms = SmsExpectation(sender, sms_contains, sms_regex, float(sms_timeout))
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise fail("description must be a string", "description")
    timeout = raw.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 120):
        raise fail("timeout must be seconds in (0, 120]", "timeout")
    if action is None and not (contains or not_contains or regexes or end is not None or sms):
        raise fail("does nothing: give it an action (send, dial, sms, wait, hangup) or an expectation (expect_…)")
    line = loc.step(index) if index else loc.key(action or "dial", 0)
    return Step(
        index=index,
        line=line,
        action=action,
        value=value,
        contains=contains,
        not_contains=not_contains,
        regex=regexes,
        end=end,
        no_reply=no_reply,
        sms=sms,
        description=description,
        timeout_s=float(timeout) if timeout is not None else None,
    )


def parse_transcript(text: str, *, path: str | Path | None = None, name: str | None = None) -> Transcript:
    """Parse a transcript from TOML text. Raises TranscriptError (with the line)."""
    where = str(path) if path is not None else None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        match = re.search(r"\(at line (\d+), column \d+\)", str(error))
        raise TranscriptError(f"not valid TOML: {error}", path=where, line=int(match.group(1)) if match else None) from None
    loc = _Locator(text)

    def fail(message: str, key: str | None = None) -> TranscriptError:
        return TranscriptError(message, path=where, line=loc.key(key) if key else None)

    problem = _unknown(data, _TOP_KEYS, "the top level")
    if problem:
        raise fail(problem, next(k for k in data if k not in _TOP_KEYS))
    msisdn = data.get("msisdn")
    if isinstance(msisdn, int):
        msisdn = str(msisdn)
    if not isinstance(msisdn, str) or not msisdn.strip():
        raise fail('needs `msisdn = "84910000001"` (who dials; "{msisdn}" to give it at replay with --var msisdn=…)', "msisdn" if "msisdn" in data else None)
    try:
        check_template(msisdn)
    except ValueError as error:
        raise fail(f"msisdn {msisdn!r}: {error}", "msisdn") from None
    language = data.get("language")
    if language is not None and language not in LANGUAGES:
        raise fail(f"language must be one of {', '.join(LANGUAGES)}, not {language!r}", "language")
    variables = data.get("vars", {})
    if not isinstance(variables, Mapping):
        raise fail("[vars] must be a table of name = value", "vars")
    clean_vars: dict[str, str] = {}
    for key, value in variables.items():
        if not NAME.match(key):
            raise fail(f"variable name {key!r} must be a word (letters, digits, _)", "vars")
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise fail(f"variable {key} must be a string or an integer, not {value!r}", "vars")
        clean_vars[key] = str(value)
    steps: list[Step] = []
    starts = [k for k in ("dial", "sms") if k in data]
    if len(starts) > 1:
        raise fail("has both dial and sms at the top level: start with one, put the other in a step", "sms")
    if starts:
        steps.append(_parse_step({starts[0]: data[starts[0]]}, 0, loc, where))
    raw_steps = data.get("steps", [])
    if not isinstance(raw_steps, list):
        raise fail("steps must be an array of tables: write each as [[steps]]", "steps")
    for number, raw in enumerate(raw_steps, start=1):
        steps.append(_parse_step(raw, number, loc, where))
    if not steps:
        raise fail('has nothing to do: start with dial = "*090#" (or sms = { to = "9237", text = "DK" }) and add [[steps]]')
    first = steps[0]
    if first.action not in ("dial", "sms"):
        line = first.line
        raise TranscriptError(
            f"step {first.index}: the first action must dial a code or send an SMS (add dial = \"*090#\" at the top)",
            path=where,
            line=line,
        )
    title = data.get("name")
    if title is not None and not isinstance(title, str):
        raise fail("name must be a string", "name")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise fail("description must be a string", "description")
    fallback = name or (Path(path).stem if path is not None else "transcript")
    return Transcript(
        name=title or fallback,
        path=where,
        msisdn=msisdn.strip(),
        language=language,
        steps=tuple(steps),
        vars=clean_vars,
        description=description,
    )


def load_transcript(path: str | Path) -> Transcript:
    """Read and parse one transcript file. Raises TranscriptError with file:line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise TranscriptError(f"cannot read it: {error.strerror or error}", path=path) from None
    except UnicodeDecodeError as error:
        raise TranscriptError(f"is not UTF-8 text: {error}", path=path) from None
    return parse_transcript(text, path=path)


def load_transcripts(paths: Iterable[str | Path]) -> list[Transcript]:
    """Load files and folders (a folder: its `*.toml`, sorted, not recursive).

    Every file is parsed before any runs, so a typo in the fortieth transcript stops
    the replay at once rather than after thirty-nine sessions."""
    found: list[Transcript] = []
    for entry in paths:
        entry = Path(entry)
        if entry.is_dir():
            files = sorted(entry.glob("*.toml"))
            if not files:
                raise TranscriptError("is a folder without any *.toml transcript", path=entry)
            found += [load_transcript(file) for file in files]
        elif entry.exists():
            found.append(load_transcript(entry))
        else:
            raise TranscriptError("no such file or folder", path=entry)
    return found
