"""`ussd-gateway load`: many simulated subscribers against a running server.

N dialogues run at concurrency C: C virtual subscribers, each with one keep-alive
connection, take dialogues one after the other until N are done (or `--max-seconds`
pass, or Ctrl-C). Every dialogue dials from a number of its own (default block
8497xxxxxxx, never a named demo subscriber), so no dialogue meets another's session,
lock or resume offer.

What a dialogue does:

- by default, a walk from a weighted mix of the services (`MIX`): the *101# balance,
  account lookup, browsing and buying packages, KNDL, VAS, feedback, the self-built
  bundle, language; some walks go back with `0` or home with `00`. Every screen is
  checked against a fragment it must hold (in Vietnamese without diacritics, the
  language of a new subscriber) and whether it is END;
- with `--transcript FILE`, that transcript (`ussd_gateway.transcripts`), its
  `{msisdn}` set to the dialogue's number.

Errors are counted by kind: `http_status` (not 200), `timeout` (no answer within
`--timeout`), `unexpected_screen` (the wrong screen, the busy END included: a
subscriber who wanted their balance and got "He thong dang ban" is a failure) and
`connection` (refused, reset, unframeable). A dialogue stops at its first error.
A dialogue is *over the deadline* when any of its hops took longer than
`--deadline-ms` (the gateway's per-screen deadline: past it, a real gateway drops the
dialogue). Exit status: 0 when every dialogue finished without error within the
deadline, 1 otherwise, 130 when interrupted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import random
import re
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO
from urllib.parse import quote

from ussd_gateway.testkit.loadclient import HttpConnection, percentile

ERROR_KINDS = ("http_status", "timeout", "unexpected_screen", "connection")
CHANNELS = ("africastalking", "json", "smpp")
DEFAULT_PREFIX = "8497"
MSISDN_DIGITS = 11  # 84 + nine digits


class HopError(Exception):
    """One hop failed; `kind` is one of ERROR_KINDS."""

    def __init__(self, kind: str, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.status = status


@dataclass(frozen=True, slots=True)
class Screen:
    text: str
    end: bool


# ---- channels: one dialler per virtual subscriber --------------------------------------------
class Dialler(Protocol):
    async def begin(self, session_id: str, msisdn: str, code: str) -> Screen: ...
    async def answer(self, value: str) -> Screen: ...
    async def hang_up(self) -> None: ...
    def close(self) -> None: ...


def _http_error(status: int, body: bytes) -> HopError:
    shown = body.decode("utf-8", "replace").strip().replace("\n", " ")[:80]
    return HopError("http_status", f"HTTP {status}: {shown}", status)


class AfricasTalkingDialler:
    """Form POSTs to /ussd/africastalking; `text` is the `*`-joined history."""

    def __init__(self, connection: HttpConnection) -> None:
        self.connection = connection
        self._fixed = b""
        self._history: list[str] = []

    async def begin(self, session_id: str, msisdn: str, code: str) -> Screen:
        self._fixed = f"sessionId={quote(session_id)}&serviceCode={quote(code)}&phoneNumber={msisdn}&text=".encode()
        self._history = []
        return await self._post()

    async def answer(self, value: str) -> Screen:
        self._history.append(value)
        return await self._post()

    async def hang_up(self) -> None:
        """Africa's Talking does not call back on release: nothing to send."""

    async def _post(self) -> Screen:
        body = self._fixed + quote("*".join(self._history), safe="").encode()
        status, reply = await self.connection.request("POST", "/ussd/africastalking", body, b"application/x-www-form-urlencoded")
        if status != 200:
            raise _http_error(status, reply)
        text = reply.decode("utf-8", "replace")
        if text[:4] not in ("CON ", "END "):
            raise HopError("unexpected_screen", f"neither CON nor END: {text[:60]!r}")
        return Screen(text[4:], text.startswith("END "))

    def close(self) -> None:
        self.connection.close()


class JsonDialler:
    """The JSON dialect, one input a hop with its `seq`, and `abort` on hanging up."""

    def __init__(self, connection: HttpConnection) -> None:
        self.connection = connection
        self._base: dict[str, Any] = {}
        self._seq = 0

    async def begin(self, session_id: str, msisdn: str, code: str) -> Screen:
        self._base = {"session_id": session_id, "msisdn": msisdn, "service_code": code}
        self._seq = 0
        return await self._post({"event": "begin", "seq": 0})

    async def answer(self, value: str) -> Screen:
        self._seq += 1
        return await self._post({"event": "continue", "input": value, "seq": self._seq})

    async def hang_up(self) -> None:
        self._seq += 1
        await self._post({"event": "abort", "seq": self._seq}, screen=False)

    async def _post(self, fields: dict[str, Any], *, screen: bool = True) -> Screen:
        body = json.dumps({**self._base, **fields}).encode()
        status, reply = await self.connection.request("POST", "/ussd", body, b"application/json")
        if status != 200:
            raise _http_error(status, reply)
        if not screen:
            return Screen("", True)
        try:
            data = json.loads(reply)
            return Screen(str(data["text"]), bool(data["end"]))
        except (ValueError, KeyError, TypeError):
            raise HopError("unexpected_screen", f"not a JSON screen: {reply[:60]!r}") from None

    def close(self) -> None:
        self.connection.close()


class SmppDialler:
    """Through `ussd-gateway smsc`'s control API: the simulator sends the deliver_sm a
    USSD gateway would and waits for the server's submit_sm (slower than HTTP)."""

    def __init__(self, connection: HttpConnection, timeout_s: float) -> None:
        self.connection = connection
        self.timeout_s = min(60.0, max(0.1, timeout_s))
        self._dialogue: int | None = None

    async def begin(self, session_id: str, msisdn: str, code: str) -> Screen:
        self._dialogue = None
        return await self._post("/ussd/start", {"msisdn": msisdn, "code": code, "timeout": self.timeout_s})

    async def answer(self, value: str) -> Screen:
        return await self._post(f"/ussd/{self._dialogue}/answer", {"text": value, "timeout": self.timeout_s})

    async def hang_up(self) -> None:
        if self._dialogue is not None:
            status, reply = await self.connection.request("POST", f"/ussd/{self._dialogue}/abort", b"{}", b"application/json")
            if status != 200:
                raise _http_error(status, reply)

    async def _post(self, path: str, fields: dict[str, Any]) -> Screen:
        status, reply = await self.connection.request("POST", path, json.dumps(fields).encode(), b"application/json")
        if status == 504:
            raise HopError("timeout", "the SMSC simulator saw no screen from the gateway in time", status)
        if status != 200:
            raise _http_error(status, reply)
        try:
            data = json.loads(reply)
            self._dialogue = int(data["dialogue_id"])
            return Screen(str(data["screen"]["text"]), bool(data["screen"]["end"]))
        except (ValueError, KeyError, TypeError):
            raise HopError("unexpected_screen", f"not a screen: {reply[:60]!r}") from None

    def close(self) -> None:
        self.connection.close()


# ---- the built-in mix ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Step:
    """Send `value` (None: dial), then expect a screen holding `expect`, END or not."""

    value: str | None
    expect: str
    end: bool = False


@dataclass(frozen=True, slots=True)
class Walk:
    name: str
    code: str
    steps: tuple[Step, ...]


HOME = "MobiFone *090#"


def _detour(rng: random.Random) -> list[Step]:
    """Sometimes a subscriber wanders off from the main menu and comes back with 00."""
    if rng.random() < 0.15:
        return [Step("2", "Mua goi cuoc"), Step("00", HOME)]
    return []


def _walk_balance(rng: random.Random) -> list[Step]:
    return [Step(None, "TKC cua quy khach:", end=True)]


def _walk_account(rng: random.Random) -> list[Step]:
    steps = [Step(None, HOME), *_detour(rng), Step("1", "Diem KNDL"), Step("1", "Goi dang dung:")]
    if rng.random() < 0.5:
        steps.append(Step("0", "Diem KNDL"))  # back
    steps.append(Step("00", HOME))
    return steps


_CATEGORIES = (("1", "Goi Data:"), ("2", "Goi Thoai:"), ("3", "Goi Combo:"))


def _walk_browse(rng: random.Random) -> list[Step]:
    key, title = rng.choice(_CATEGORIES)
    other_key, other_title = rng.choice(_CATEGORIES)
    steps = [Step(None, HOME), *_detour(rng), Step("2", "Mua goi cuoc"), Step(key, title)]
    if rng.random() < 0.5:
        steps += [Step("0", "Mua goi cuoc"), Step(other_key, other_title)]  # back, another category
    steps += [Step(str(rng.randint(1, 2)), "Dang ky?"), Step("2", "Mua goi cuoc")]  # a detail, then "no"
    return steps


def _walk_buy(rng: random.Random) -> list[Step]:
    # The first two data packages (D15, D30) fit a new subscriber's 100.000d.
    return [
        Step(None, HOME), *_detour(rng), Step("2", "Mua goi cuoc"), Step("1", "Goi Data:"),
        Step(str(rng.randint(1, 2)), "Dang ky?"), Step("1", "Dang ky thanh cong goi", end=True),
    ]


def _walk_kndl(rng: random.Random) -> list[Step]:
    steps = [Step(None, HOME), *_detour(rng), Step("4", "chua tham gia Ket noi dai lau")]
    if rng.random() < 0.5:
        return steps + [Step("0", HOME)]
    return steps + [Step("1", "dang cho xac nhan"), Step("1", "Chuc mung", end=True)]


def _walk_vas(rng: random.Random) -> list[Step]:
    return [Step(None, HOME), *_detour(rng), Step("5", "khong dung dich vu GTGT", end=True)]


def _walk_feedback(rng: random.Random) -> list[Step]:
    message = rng.choice(("Song yeu o tang 3", "Goi cuoc hop ly", "Can them goi data dem"))
    return [
        Step(None, HOME), *_detour(rng), Step("6", "Gop y ve:"), Step(str(rng.randint(1, 4)), "Nhap noi dung gop y"),
        Step(message, "Cam on quy khach", end=True),
    ]


def _walk_bundle(rng: random.Random) -> list[Step]:
    name = f"LOAD {rng.randint(1, 999)}"
    return [
        Step(None, HOME), *_detour(rng), Step("3", "Chon chu ky"), Step("1", "Chon muc Data"),
        Step(str(rng.randint(1, 3)), "Chon muc SMS"), Step(str(rng.randint(2, 3)), "Chon muc thoai"),
        Step(str(rng.randint(1, 2)), "Dat ten cho goi"), Step(name, f"Goi {name}:"),
        Step("1", f"Dang ky thanh cong goi {name}", end=True),
    ]


def _walk_language(rng: random.Random) -> list[Step]:
    return [Step(None, HOME), Step("7", "Chon ngon ngu"), Step("1", "Da chuyen sang Tieng Viet khong dau", end=True)]


MIX: tuple[tuple[str, str, int, Callable[[random.Random], list[Step]]], ...] = (
    # (name, service code, weight, steps)
    ("balance", "*101#", 20, _walk_balance),
    ("account", "*090#", 14, _walk_account),
    ("browse", "*090#", 14, _walk_browse),
    ("buy", "*090#", 14, _walk_buy),
    ("kndl", "*090#", 9, _walk_kndl),
    ("vas", "*090#", 8, _walk_vas),
    ("feedback", "*090#", 7, _walk_feedback),
    ("bundle", "*090#", 8, _walk_bundle),
    ("language", "*090#", 5, _walk_language),
)


def plan_walk(rng: random.Random) -> Walk:
    """One dialogue of the built-in mix."""
    name, code, _weight, build = rng.choices(MIX, weights=[m[2] for m in MIX])[0]
    return Walk(name, code, tuple(build(rng)))


# ---- the tally ----------------------------------------------------------------------------------
@dataclass(slots=True)
class Tally:
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


# ---- running -------------------------------------------------------------------------------------
@dataclass
class LoadOptions:
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


@dataclass
class _Run:
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


def _target(options: LoadOptions) -> str:
    if options.smpp:
        return "http://" + options.smpp if not options.smpp.startswith("http") else options.smpp
    return options.url


def _dialler(options: LoadOptions) -> Dialler:
    connection = HttpConnection(_target(options))
    if options.smpp:
        return SmppDialler(connection, options.timeout_s)
    if options.channel == "json":
        return JsonDialler(connection)
    return AfricasTalkingDialler(connection)


def _hop_failure(exc: BaseException) -> HopError:
    if isinstance(exc, HopError):
        return exc
    if isinstance(exc, TimeoutError):
        return HopError("timeout", "no answer in time")
    return HopError("connection", f"{exc.__class__.__name__}: {exc}".rstrip(": "))


async def _walk(run: _Run, dialler: Dialler, index: int, walk: Walk) -> None:
    tally, options = run.tally, run.options
    deadline = options.deadline_ms / 1000.0
    session_id = f"load-{run.run_id}-{index}"
    msisdn = run.msisdn(index)
    clock = time.perf_counter
    slowest = 0.0
    cut = False
    screen = Screen("", False)
    try:
        for number, step in enumerate(walk.steps):
            started = clock()
            try:
                async with asyncio.timeout(options.timeout_s):
                    if step.value is None:
                        screen = await dialler.begin(session_id, msisdn, walk.code)
                    else:
                        screen = await dialler.answer(step.value)
            except (HopError, OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                failure = _hop_failure(exc)
                slowest = max(slowest, clock() - started)
                if failure.kind == "http_status":
                    tally.latencies.append(clock() - started)
                tally.error(failure.kind, failure.detail, failure.status, where=f"{walk.name} hop {number + 1}: ")
                return
            elapsed = clock() - started
            tally.latencies.append(elapsed)
            slowest = max(slowest, elapsed)
            if step.expect not in screen.text or screen.end != step.end:
                shown = screen.text.replace("\n", " ")[:70]
                wanted = f"{step.expect!r}{' (END)' if step.end else ''}"
                tally.error("unexpected_screen", f"wanted {wanted}, got {'END' if screen.end else 'CON'} {shown!r}",
                            where=f"{walk.name} hop {number + 1}: ")
                if not screen.end:
                    await _quietly(dialler.hang_up(), options.timeout_s)
                return
        tally.ok += 1
        if not screen.end:
            await _quietly(dialler.hang_up(), options.timeout_s)
    except asyncio.CancelledError:
        cut = True  # stopped mid-dialogue (--max-seconds, Ctrl-C): neither ok nor failed
        raise
    finally:
        if not cut:
            tally.finished += 1
            if slowest > deadline:
                tally.over_deadline += 1


async def _quietly(hang_up: Any, timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            await hang_up
    except (HopError, OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
        pass


async def _subscriber(run: _Run, make_walk: Callable[[int], Walk]) -> None:
    dialler = _dialler(run.options)
    try:
        while (index := run.take()) is not None:
            run.tally.started += 1
            walk = make_walk(index)
            run.tally.mix[walk.name] += 1
            await _walk(run, dialler, index, walk)
    finally:
        dialler.close()


def _transcript_failure(result: Any) -> tuple[str, str, int | None]:
    """(kind, detail, HTTP status) of a failed `TranscriptResult`."""
    failed = result.failed_step
    actual = str(failed.actual) if failed is not None else ""
    detail = str(result.error or "a step failed")
    if actual.startswith("(no answer in time)"):
        return "timeout", detail, None
    if actual.startswith("(channel error)"):
        status = re.search(r"\bHTTP (\d{3})\b", actual)
        if status:
            return "http_status", detail, int(status.group(1))
        if "in time" in actual or "timed out" in actual.lower():
            return "timeout", detail, None
        return "connection", detail, None
    if actual.startswith("(") and failed is not None and failed.latency_s is None:
        return "connection", detail, None  # the channel raised something else before any screen
    shown = actual.replace("\n", " ")[:70]
    return "unexpected_screen", f"{detail}; got {shown!r}" if shown else detail, None


async def _transcript_subscriber(run: _Run, transcript: Any) -> None:
    import aiohttp

    from ussd_gateway.testkit import transcripts

    options = run.options
    kind = "smpp" if options.smpp else options.channel
    # One keep-alive connection per virtual subscriber, as with the built-in mix.
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1, force_close=False))
    channel = transcripts.make_channel(
        kind, url=None if options.smpp else options.url, smpp=options.smpp, http=http, timeout_s=options.timeout_s
    )
    deadline = options.deadline_ms / 1000.0
    tally = run.tally
    try:
        while (index := run.take()) is not None:
            tally.started += 1
            tally.mix[transcript.name] += 1
            result = await transcripts.run_transcript(
                transcript, channel, variables={"msisdn": run.msisdn(index)}, step_timeout_s=options.timeout_s
            )
            tally.finished += 1
            tally.latencies += result.hop_latencies_s
            if result.hop_latencies_s and max(result.hop_latencies_s) > deadline:
                tally.over_deadline += 1
            if result.ok:
                tally.ok += 1
            else:
                kind_, detail, status = _transcript_failure(result)
                tally.error(kind_, detail[:200], status)
    finally:
        try:
            await channel.close()
        finally:
            await http.close()


async def _progress(run: _Run, out: TextIO) -> None:
    tty = out.isatty()
    every = 0.2 if tty else 5.0
    width = 24
    try:
        while True:
            await asyncio.sleep(every)
            out.write(_progress_line(run, width, tty))
            out.flush()
    finally:
        if tty:
            out.write("\r\x1b[K")
            out.flush()


def _progress_line(run: _Run, width: int, tty: bool) -> str:
    tally = run.tally
    elapsed = max(1e-9, time.perf_counter() - run.started_at)
    done = tally.finished
    filled = int(width * done / run.planned) if run.planned else width
    bar = "#" * filled + "-" * (width - filled)
    errors = sum(tally.errors.values())
    line = (
        f"[{bar}] {done}/{run.planned} dialogues  {len(tally.latencies) / elapsed:,.0f} hops/s  "
        f"errors {errors}  over deadline {tally.over_deadline}  {elapsed:.1f}s"
    )
    return f"\r\x1b[K{line}" if tty else line + "\n"


async def run_load(options: LoadOptions, *, progress_out: TextIO | None = None) -> dict[str, Any]:
    """Run the dialogues; return the report (see `report`)."""
    tally = Tally()
    run = _Run(options=options, tally=tally, planned=options.sessions)
    rng_seed = options.seed if options.seed is not None else random.SystemRandom().randrange(2**32)
    digits = MSISDN_DIGITS - len(options.msisdn_prefix)
    run.msisdn_space = 10**digits
    # A fresh block of numbers each run (unless seeded): a rerun within the resume window
    # would otherwise meet the last run's unfinished dialogues ("1 Continue / 2 Start over").
    run.offset = random.Random(rng_seed).randrange(run.msisdn_space)
    run.run_id = uuid.uuid4().hex[:8]

    workers: list[asyncio.Task[None]] = []
    if options.transcript:
        from ussd_gateway.testkit import transcripts

        transcript = transcripts.load_transcript(options.transcript)
        if "{msisdn}" not in transcript.msisdn and not options.keep_msisdn:
            # Many dialogues from one number would queue on its lock and meet each
            # other's sessions: a load run is many subscribers, so each gets its own.
            print(
                f"load: {options.transcript} dials from {transcript.msisdn}; each dialogue dials from a number of "
                "its own instead, a new subscriber (--keep-msisdn: every dialogue from the transcript's number)",
                file=sys.stderr,
            )
            transcript = dataclasses.replace(transcript, msisdn="{msisdn}")
        for _ in range(min(options.concurrency, max(1, options.sessions))):
            workers.append(asyncio.ensure_future(_transcript_subscriber(run, transcript)))
    else:
        def make_walk(index: int) -> Walk:
            return plan_walk(random.Random(rng_seed * 1_000_003 + index))

        for _ in range(min(options.concurrency, max(1, options.sessions))):
            workers.append(asyncio.ensure_future(_subscriber(run, make_walk)))
    run.started_at = time.perf_counter()

    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    handled: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, interrupted.set)
            handled.append(signum)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
            pass
    reporter = asyncio.ensure_future(_progress(run, progress_out)) if progress_out is not None else None
    waiter = asyncio.ensure_future(interrupted.wait())
    try:
        everyone = asyncio.gather(*workers)
        done, _ = await asyncio.wait({everyone, waiter}, timeout=options.max_seconds, return_when=asyncio.FIRST_COMPLETED)
        if everyone in done:
            everyone.result()  # a bug in a worker surfaces here
        else:
            run.stopped = "interrupted" if waiter in done else "max_seconds"
            everyone.cancel()
            await asyncio.gather(everyone, return_exceptions=True)
    finally:
        wall = time.perf_counter() - run.started_at
        waiter.cancel()
        if reporter is not None:
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)
        for signum in handled:
            loop.remove_signal_handler(signum)
    return report(run, wall)


def report(run: _Run, wall: float) -> dict[str, Any]:
    options, tally = run.options, run.tally
    ordered = sorted(tally.latencies)
    ms = 1000.0

    def rounded(value: float) -> float | None:
        return None if math.isnan(value) else round(value * ms, 2)

    failed = sum(tally.errors.values())
    result: dict[str, Any] = {
        "channel": "smpp" if options.smpp else options.channel,
        "target": _target(options),
        "transcript": options.transcript,
        "sessions": options.sessions,
        "concurrency": options.concurrency,
        "stopped": run.stopped,
        "seconds": round(wall, 3),
        "dialogues": {
            "planned": run.planned,
            "started": tally.started,
            "finished": tally.finished,
            "ok": tally.ok,
            "failed": failed,
            "cut": tally.started - tally.finished,
        },
        "hops": len(ordered),
        "hops_per_s": round(len(ordered) / wall, 1) if wall > 0 else 0.0,
        "latency_ms": {
            "p50": rounded(percentile(ordered, 0.50)),
            "p95": rounded(percentile(ordered, 0.95)),
            "p99": rounded(percentile(ordered, 0.99)),
            "max": rounded(ordered[-1]) if ordered else None,
        },
        "errors": {"total": failed, **{kind: tally.errors.get(kind, 0) for kind in ERROR_KINDS}},
        "http_statuses": dict(sorted(tally.statuses.items())),
        "deadline_ms": options.deadline_ms,
        "over_deadline": tally.over_deadline,
        "mix": dict(sorted(tally.mix.items(), key=lambda kv: (-kv[1], kv[0]))),
        "msisdns": f"{run.msisdn(0)}..." if run.planned else "",
    }
    if tally.examples:
        result["error_examples"] = tally.examples
    return result


def exit_status(result: Mapping[str, Any]) -> int:
    if result["stopped"] == "interrupted":
        return 130
    return 1 if result["errors"]["total"] or result["over_deadline"] else 0


def format_report(result: Mapping[str, Any]) -> str:
    d, lat, errors = result["dialogues"], result["latency_ms"], result["errors"]
    what = f"transcript {result['transcript']}" if result["transcript"] else "the built-in mix"
    channel = {"africastalking": "Africa's Talking", "json": "JSON", "smpp": "SMPP (simulator)"}[result["channel"]]
    lines = [
        f"load: {d['finished']} of {d['planned']} dialogues of {what} at concurrency {result['concurrency']}, "
        f"{channel} via {result['target']}, {result['seconds']:.1f} s",
    ]
    if result["stopped"] == "max_seconds":
        lines.append(f"  stopped    after --max-seconds; {d['cut']} dialogue(s) cut short, {d['planned'] - d['started']} not started")
    elif result["stopped"] == "interrupted":
        lines.append(f"  stopped    interrupted; {d['cut']} dialogue(s) cut short, {d['planned'] - d['started']} not started")

    def show(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} ms"

    lines += [
        f"  dialogues  {d['ok']} ok, {d['failed']} failed",
        f"  hops       {result['hops']:,}  ({result['hops_per_s']:,.1f} hops/s)",
        f"  latency    p50 {show(lat['p50'])}  p95 {show(lat['p95'])}  p99 {show(lat['p99'])}  max {show(lat['max'])}",
    ]
    if errors["total"]:
        kinds = ", ".join(f"{kind} {errors[kind]}" for kind in ERROR_KINDS if errors[kind])
        statuses = ", ".join(f"{code} x{count}" for code, count in result["http_statuses"].items())
        lines.append(f"  errors     {errors['total']}: {kinds}" + (f" (HTTP {statuses})" if statuses else ""))
    else:
        lines.append("  errors     none")
    lines.append(
        f"  deadline   {result['over_deadline']} of {d['finished']} dialogues had a hop slower than {result['deadline_ms']:g} ms"
    )
    if result["mix"]:
        lines.append("  mix        " + ", ".join(f"{name} {count}" for name, count in result["mix"].items()))
    for example in result.get("error_examples", []):
        lines.append(f"  e.g.       {example}")
    return "\n".join(lines)


def main(options: LoadOptions, *, as_json: bool = False, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """The CLI's entry: run, print the report (text or one JSON object), exit status."""
    try:
        import uvloop

        runner: Callable[..., Any] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        runner = asyncio.run
    result = runner(run_load(options, progress_out=err if options.progress else None))
    if as_json:
        print(json.dumps(result, ensure_ascii=False), file=out)
    else:
        print(format_report(result), file=out)
    return exit_status(result)


def validate(options: LoadOptions) -> list[str]:
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


__all__: Sequence[str] = ("LoadOptions", "run_load", "report", "format_report", "exit_status", "main", "validate", "MIX", "plan_walk")
