"""Running a load: C virtual subscribers take N dialogues one after the other, and `main` for the CLI.

Each virtual subscriber keeps one connection and takes dialogues until N are done (or
`--max-seconds` pass, or Ctrl-C), each from a number of its own so no dialogue meets
another's session, lock or resume offer; a dialogue is a walk of the built-in mix or,
with `--transcript`, that transcript. Errors are counted by kind: `http_status` (not
200), `timeout` (no answer within `--timeout`), `unexpected_screen` (the wrong screen,
the busy END included) and `connection` (refused, reset, unframeable); a dialogue stops
at its first error, and is *over the deadline* when any of its hops took longer than
`--deadline-ms` (past it, a real gateway drops the dialogue).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import re
import signal
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any, TextIO

from ussd_gateway.testkit.load.diallers import Dialler, HopError, Screen, hop_failure, make_dialler
from ussd_gateway.testkit.load.mix import Walk, plan_walk
from ussd_gateway.testkit.load.options import MSISDN_DIGITS, LoadOptions
from ussd_gateway.testkit.load.report import exit_status, format_report, report
from ussd_gateway.testkit.load.tally import Run, Tally


async def _walk(run: Run, dialler: Dialler, index: int, walk: Walk) -> None:
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
                failure = hop_failure(exc)
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


async def _subscriber(run: Run, make_walk: Callable[[int], Walk]) -> None:
    dialler = make_dialler(run.options)
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


async def _transcript_subscriber(run: Run, transcript: Any) -> None:
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


async def _progress(run: Run, out: TextIO) -> None:
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


def _progress_line(run: Run, width: int, tty: bool) -> str:
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
    run = Run(options=options, tally=tally, planned=options.sessions)
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
