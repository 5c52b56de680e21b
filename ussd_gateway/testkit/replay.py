"""`ussd-gateway replay`: run transcripts against a running server and report like CI.

Transcripts run concurrently (`--concurrency`), except that transcripts dialling the
same subscriber run one after another in the order given: two dialogues of one MSISDN
at once would meet in the server's per-subscriber state (resume offers, balances), and
a replay must not fail because of its own scheduling. Each failed step is printed with
the expected and the actual screen side by side; JUnit XML (one testcase per
transcript) lets CI show the same.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from ussd_gateway.testkit.transcripts import (
    DEFAULT_STEP_TIMEOUT_S,
    Channel,
    Mismatch,
    Transcript,
    TranscriptResult,
    render_template,
    run_transcript,
)

ChannelFactory = Callable[[], Channel]


def subscriber_of(transcript: Transcript, variables: Mapping[str, str]) -> str:
    """The MSISDN a transcript dials with these variables (its own text if unresolved)."""
    try:
        return render_template(transcript.msisdn, {**transcript.vars, **variables})
    except Mismatch:
        return transcript.msisdn


async def run_many(
    transcripts: Sequence[Transcript],
    make: ChannelFactory,
    *,
    concurrency: int = 8,
    variables: Mapping[str, str] | None = None,
    step_timeout_s: float = DEFAULT_STEP_TIMEOUT_S,
    on_result: Callable[[TranscriptResult], None] | None = None,
) -> list[TranscriptResult]:
    """Run every transcript, each on a handset of its own from `make`; results in the
    order given. Transcripts of one subscriber run in sequence (see the module doc)."""
    variables = dict(variables or {})
    groups: dict[str, list[int]] = {}
    for index, transcript in enumerate(transcripts):
        groups.setdefault(subscriber_of(transcript, variables), []).append(index)
    results: list[TranscriptResult | None] = [None] * len(transcripts)
    limit = asyncio.Semaphore(max(1, concurrency))

    async def run_group(indices: list[int]) -> None:
        for index in indices:
            async with limit:
                channel = make()
                try:
                    result = await run_transcript(transcripts[index], channel, variables=variables, step_timeout_s=step_timeout_s)
                finally:
                    await channel.close()
            results[index] = result
            if on_result is not None:
                on_result(result)

    await asyncio.gather(*(run_group(indices) for indices in groups.values()))
    return [result for result in results if result is not None]


# ---- the terminal report -----------------------------------------------------------------
def _column(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for line in text.split("\n"):
        lines += textwrap.wrap(line, width, replace_whitespace=False, drop_whitespace=False) or [""]
    return lines


def side_by_side(left: str, right: str, *, width: int | None = None, titles: tuple[str, str] = ("expected", "actual")) -> str:
    """Two columns, wrapped to fit the terminal: what the transcript wanted beside what
    the server showed, so the difference is visible without scrolling."""
    total = width or shutil.get_terminal_size((100, 24)).columns
    column = max(20, (min(total, 160) - 3) // 2)
    a, b = _column(left, column), _column(right, column)
    rows = [f"{titles[0]:<{column}} | {titles[1]}", f"{'-' * column}-+-{'-' * column}"]
    for n in range(max(len(a), len(b))):
        rows.append(f"{(a[n] if n < len(a) else ''):<{column}} | {b[n] if n < len(b) else ''}".rstrip())
    return "\n".join(rows)


def format_failure(result: TranscriptResult, *, width: int | None = None) -> str:
    """A failed transcript: where it is, which step, and the two screens side by side."""
    step = result.failed_step
    where = result.path or result.name
    if step is None:
        return f"FAIL {result.name} [{result.channel}] ({where}): {result.error}"
    line = f":{step.line}" if step.line else ""
    header = f"FAIL {result.name} [{result.channel}] {where}{line}\n  step {step.index}: {step.description}"
    return header + "\n" + textwrap.indent(side_by_side(step.expected, step.actual, width=width), "  ")


def summary_line(results: Sequence[TranscriptResult], elapsed_s: float) -> str:
    failed = sum(not r.ok for r in results)
    steps = sum(len(r.steps) for r in results)
    hops = [h for r in results for h in r.hop_latencies_s]
    slowest = f", slowest hop {max(hops) * 1000:.0f} ms" if hops else ""
    verdict = "OK" if not failed else "FAILED"
    return f"{verdict}: {len(results) - failed} passed, {failed} failed ({len(results)} transcripts, {steps} steps, {len(hops)} hops{slowest}) in {elapsed_s:.1f}s"


# ---- JUnit XML ------------------------------------------------------------------------------
def junit_xml(results: Sequence[TranscriptResult], *, suite: str = "transcripts") -> ET.ElementTree:
    """One testsuite, one testcase per transcript (classname: the channel), a
    <failure> with the failed step's expectation and screen for CI to show."""
    failures = sum(not r.ok for r in results)
    root = ET.Element(
        "testsuite",
        name=suite,
        tests=str(len(results)),
        failures=str(failures),
        errors="0",
        time=f"{sum(r.duration_s for r in results):.3f}",
    )
    for result in results:
        case = ET.SubElement(
            root,
            "testcase",
            name=result.name,
            classname=f"transcripts.{result.channel}",
            time=f"{result.duration_s:.3f}",
            file=result.path or "",
        )
        if not result.ok:
            step = result.failed_step
            failure = ET.SubElement(case, "failure", message=result.error or "failed", type="TranscriptFailure")
            if step is not None:
                failure.text = f"step {step.index}: {step.description}\n\nexpected:\n{step.expected}\n\nactual:\n{step.actual}\n"
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(results: Sequence[TranscriptResult], path: str | Path, *, suite: str = "transcripts") -> None:
    tree = junit_xml(results, suite=suite)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tree.write(path, encoding="utf-8", xml_declaration=True)


# ---- the command ----------------------------------------------------------------------------
def parse_vars(pairs: Sequence[str]) -> dict[str, str]:
    """`--var k=v` pairs; raises ValueError naming the bad one."""
    found: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip().isidentifier():
            raise ValueError(f"--var {pair!r}: write NAME=VALUE (e.g. --var msisdn=84910000001)")
        found[name.strip()] = value
    return found


def replay(
    paths: Sequence[str],
    *,
    channel: str,
    url: str | None,
    smpp: str | None,
    concurrency: int = 8,
    junit: str | None = None,
    variables: Mapping[str, str] | None = None,
    step_timeout_s: float = DEFAULT_STEP_TIMEOUT_S,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Load, run, print, write JUnit; 0 when every transcript passed, 1 when any
    failed, 2 when the transcripts or the options are wrong (nothing ran)."""
    from ussd_gateway.testkit.transcripts import TranscriptError, load_transcripts, make_channel

    try:
        transcripts = load_transcripts(paths)
    except TranscriptError as error:
        print(f"replay: {error}", file=err)
        return 2
    try:
        make_channel(channel, url=url, smpp=smpp)  # validates the options before any hop
    except ValueError as error:
        print(f"replay: {error}", file=err)
        return 2
    color = out.isatty() and os.environ.get("NO_COLOR") is None

    def mark(result: TranscriptResult) -> None:
        if result.ok:
            text = "ok  "
            if color:
                text = f"\x1b[32m{text}\x1b[0m"
        else:
            text = "FAIL"
            if color:
                text = f"\x1b[31m{text}\x1b[0m"
        print(f"{text} {result.name} [{result.channel}] {result.duration_s * 1000:.0f} ms", file=out, flush=True)

    async def run() -> list[TranscriptResult]:
        import aiohttp

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=step_timeout_s + 5)) as http:
            return await run_many(
                transcripts,
                lambda: make_channel(channel, url=url, smpp=smpp, http=http, timeout_s=step_timeout_s),
                concurrency=concurrency,
                variables=variables,
                step_timeout_s=step_timeout_s,
                on_result=mark,
            )

    started = time.perf_counter()
    results = asyncio.run(run())
    failed = [r for r in results if not r.ok]
    if failed:
        print(file=out)
    for result in failed:
        print(format_failure(result), file=out)
        print(file=out)
    print(summary_line(results, time.perf_counter() - started), file=out)
    if junit:
        write_junit(results, junit, suite=f"transcripts.{channel}")
        print(f"JUnit XML: {junit}", file=out)
    return 1 if failed else 0
