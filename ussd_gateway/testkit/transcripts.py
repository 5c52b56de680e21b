"""Session transcripts: scripted dialogues with expectations, run over any channel.

A transcript is a small TOML file a tester can write by hand (the format is documented
in docs/transcripts.md): who dials, what, then steps that send an input, dial again,
send an SMS, wait or hang up, each with expectations on the screen (contains, does not
contain, matches a regex whose named groups become captures, continues or ends) or on
an SMS that must arrive. `{name}` placeholders use the transcript's `[vars]`, the
caller's variables and the captures so far, with integer arithmetic (`{before - price}`)
and formats (`|money`), so "the balance dropped by the price shown" is one line.

The same transcript runs over every channel: the Africa's Talking form dialect, the
JSON dialect and SMPP through the SMSC simulator's control API. The channel only moves
screens and SMS; every expectation is checked here, once.

Used by `ussd-gateway replay`, by the load tool (`make_channel` + `run_transcript`), by
the recorder (which writes this format) and by the acceptance tests.
"""

from __future__ import annotations

import ast
import asyncio
import difflib
import re
import time
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ussd_gateway.core.formats import LANGUAGES, money
from ussd_gateway.core.formats import number as grouped_number

from ussd_gateway.testkit.transcript_channels import (  # noqa: F401  (re-exported: the runner's public API)
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


class _Mismatch(Exception):
    """An expectation failed: what was expected (with the actual text kept apart)."""

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


_TOP_KEYS = {"name", "description", "msisdn", "language", "dial", "sms", "vars", "steps"}
_STEP_KEYS = {
    "send", "dial", "sms", "wait", "hangup",
    "expect_contains", "expect_not_contains", "expect_regex", "expect_end", "expect_no_reply", "expect_sms",
    "description", "timeout",
}  # fmt: skip
_ACTIONS = ("send", "dial", "sms", "wait", "hangup")
_SMS_KEYS = {"to", "text"}
_EXPECT_SMS_KEYS = {"from", "contains", "regex", "timeout"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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


def _check_template(text: str) -> None:
    """Raise ValueError when a `{…}` placeholder is malformed (checked at load)."""
    for expression, _filter in _placeholders(text):
        _parse_expression(expression)


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
                _check_template(text)
            except ValueError as error:
                raise fail(f"{key} {text!r}: {error}", key) from None
    for key in ("send", "dial"):
        if action == key:
            try:
                _check_template(value)
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
                _check_template(text)
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
        _check_template(msisdn)
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
        if not _NAME.match(key):
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


# ---- placeholders, captures and arithmetic -------------------------------------------------
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


def _placeholders(text: str) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for match in _PLACEHOLDER.finditer(text):
        if match.group(1) is None:
            continue
        body = match.group(1)
        expression, _, fmt = body.partition("|")
        if fmt and fmt.strip() not in _FORMATS:
            raise ValueError(f"unknown format |{fmt.strip()} in {{{body}}} (use {', '.join('|' + f for f in _FORMATS)})")
        out.append((expression.strip(), fmt.strip() or None))
    return out


_ALLOWED_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Name, ast.Constant, ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.USub, ast.UAdd, ast.Load)


def _parse_expression(expression: str) -> ast.Expression:
    """`balance_before - price`: names, whole numbers, + - * // and parentheses only."""
    if not expression:
        raise ValueError("empty placeholder {} (write {name}, or {{ for a literal brace)")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        raise ValueError(f"{{{expression}}} is not a name or integer arithmetic (a - b, a + 1000, 2 * a)") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES) or isinstance(node, ast.Constant) and (
            not isinstance(node.value, int) or isinstance(node.value, bool)
        ):
            raise ValueError(f"{{{expression}}} may use names, whole numbers, + - * // and parentheses only")
    return tree


def as_number(name: str, value: str) -> int:
    """A captured amount as an integer: `200.000d`, `200,000 VND`, `1.250`, `-15000` all
    read as whole numbers (group separators and units are dropped)."""
    text = value.strip()
    negative = text.startswith("-")
    digits = re.sub(r"\D", "", text)
    if not digits:
        raise _Mismatch(f"variable {name} = {value!r} is not a number, so it cannot be used in arithmetic")
    return -int(digits) if negative else int(digits)


_FORMATS = {  # the screens' own filters, so a computed amount reads as the screen shows it
    "money": money,
    "number": grouped_number,
    "int": lambda amount, lang: str(amount),
}


def _evaluate(node: ast.AST, variables: Mapping[str, str]) -> int:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, variables)
    if isinstance(node, ast.Constant):
        return int(node.value)
    if isinstance(node, ast.Name):
        if node.id not in variables:
            raise _Mismatch(f"unknown variable {node.id!r} (known: {', '.join(sorted(variables)) or 'none'})")
        return as_number(node.id, variables[node.id])
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand, variables)
        return -operand if isinstance(node.op, ast.USub) else operand
    assert isinstance(node, ast.BinOp)
    left, right = _evaluate(node.left, variables), _evaluate(node.right, variables)
    if isinstance(node.op, ast.Add):
        return left + right
    if isinstance(node.op, ast.Sub):
        return left - right
    if isinstance(node.op, ast.Mult):
        return left * right
    if right == 0:
        raise _Mismatch("division by zero")
    return left // right


def render_template(text: str, variables: Mapping[str, str], *, lang: str = "vi") -> str:
    """Replace `{…}` placeholders. `{name}` is the variable as captured; an expression
    (`{a - b}`) or a format (`{a|money}`) reads the values as numbers. `{{`/`}}` are
    literal braces. Raises _Mismatch (a step failure) for unknown variables."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        body = match.group(1)
        expression, _, fmt = body.partition("|")
        expression, fmt = expression.strip(), fmt.strip()
        if not fmt and _NAME.match(expression):
            if expression not in variables:
                raise _Mismatch(f"unknown variable {expression!r} (known: {', '.join(sorted(variables)) or 'none'})")
            return variables[expression]
        try:
            tree = _parse_expression(expression)
        except ValueError as error:
            raise _Mismatch(str(error)) from None
        return _FORMATS[fmt or "int"](_evaluate(tree, variables), lang)

    return _PLACEHOLDER.sub(replace, text)


# ---- running -------------------------------------------------------------------------------
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


def _expected_summary(step: Step, variables: Mapping[str, str], lang: str) -> str:
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


def _safe_summary(step: Step, variables: Mapping[str, str], lang: str) -> str:
    try:
        return _expected_summary(step, variables, lang)
    except _Mismatch as failure:
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
            raise _Mismatch(f"{what} was expected, but none came")
        return
    for pattern in step.regex:
        match = re.search(pattern, text)
        if match is None:
            raise _Mismatch(f"{what} matches /{pattern}/")
        variables.update({k: v for k, v in match.groupdict().items() if v is not None})
    for fragment in step.contains:
        wanted = render_template(fragment, variables, lang=lang)
        if wanted not in text:
            raise _Mismatch(f"{what} contains {wanted!r}")
    for fragment in step.not_contains:
        unwanted = render_template(fragment, variables, lang=lang)
        if unwanted in text:
            raise _Mismatch(f"{what} does not contain {unwanted!r}")


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
            raise _Mismatch(_expected_sms_text(spec, wanted), got)
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
class _Handset:
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


async def _act(step: Step, channel: Channel, handset: _Handset, msisdn: str, language: str | None, scope: dict[str, Any], lang: str) -> float | None:
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
            raise _Mismatch(f"an open dialogue to answer, but it {state}: dial again first")
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


async def _check(step: Step, channel: Channel, handset: _Handset, msisdn: str, scope: dict[str, Any], lang: str) -> str:
    """Check the step's expectations; what was seen (the SMS, for expect_sms)."""
    hung_up = "a screen, but the dialogue was hung up (dial again first)"
    if step.contains or step.not_contains or step.regex:
        if handset.on_sms:
            _check_text(step, handset.reply, scope, lang, what="the SMS reply")
        elif handset.screen is None:
            raise _Mismatch(hung_up)
        else:
            _check_text(step, handset.screen.text, scope, lang, what="the screen")
    if step.no_reply and handset.reply is not None:
        raise _Mismatch("no SMS reply")
    if step.end is not None:
        if handset.screen is None:
            raise _Mismatch(hung_up)
        if handset.screen.end != step.end:
            raise _Mismatch("the dialogue ends (END)" if step.end else "the dialogue continues (CON)")
    if step.sms is not None:
        return await _expect_sms(channel, msisdn, step.sms, scope, lang, handset.pending_sms)
    return handset.shown()


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
    except _Mismatch as failure:
        error = f"msisdn {transcript.msisdn!r}: {failure.expected}; give it with --var (e.g. --var msisdn=84910000001)"
        results.append(StepResult(0, "who dials", False, error, "", None, None))
        return TranscriptResult(transcript.name, getattr(channel, "name", "?"), False, results, hops, 0.0, error, transcript.path)
    scope.setdefault("msisdn", msisdn)
    handset = _Handset()
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
                actual = await _check(step, channel, handset, msisdn, scope, lang)
            results.append(StepResult(step.index, description, True, _expected_summary(step, scope, lang), actual, latency, step.line))
            continue
        except _Mismatch as failure:
            actual = failure.actual if failure.actual is not None else handset.shown()
            results.append(StepResult(step.index, description, False, failure.expected, actual, latency, step.line))
            error = f"step {step.index} ({description}): expected {failure.expected}"
        except TimeoutError:
            results.append(StepResult(step.index, description, False, _safe_summary(step, scope, lang), "(no answer in time)", None, step.line))
            error = f"step {step.index} ({description}): no answer within {budget:g}s"
        except ChannelError as failure:
            results.append(StepResult(step.index, description, False, _safe_summary(step, scope, lang), f"(channel error) {failure}", None, step.line))
            error = f"step {step.index} ({description}): {failure}"
        except Exception as failure:  # a bug or an unexpected answer: a failed step, not a crash of the run
            shown = f"({type(failure).__name__}) {failure}"
            results.append(StepResult(step.index, description, False, _safe_summary(step, scope, lang), shown, None, step.line))
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
