"""The hop path's cheaper parts do what the parts they replaced did: the deadline
queue, the form parser, the log line's timestamp and its once-per-turn write, and the
list pages kept per list view."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
from pathlib import Path
from unittest import mock
from urllib.parse import parse_qsl

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from ussd_gateway.channels.http.body import parse_form
from ussd_gateway.core.logs import IsoUtcStamper, TurnBufferedLogger, configure_logging
from ussd_gateway.dispatch.deadline import Deadlines
from ussd_gateway.menus.compiler import load_menus
from ussd_gateway.menus.engine import Engine
from ussd_gateway.sessions.record import SessionRecord


# ---- one timer for every hop's deadline ------------------------------------------------------
async def test_a_hop_past_its_deadline_is_cancelled_and_told_so() -> None:
    deadlines = Deadlines(0.05)
    outcome: list[str] = []

    async def hop(seconds: float) -> None:
        expiry = deadlines.enter()
        try:
            await asyncio.sleep(seconds)
            outcome.append("answered")
        except asyncio.CancelledError:
            assert Deadlines.leave(expiry) and not expiry.task.cancelling()
            outcome.append("timed out")
        finally:
            Deadlines.leave(expiry)

    await asyncio.gather(hop(0.0), hop(5.0), hop(0.01))
    assert sorted(outcome) == ["answered", "answered", "timed out"]


async def test_a_task_that_left_its_deadline_is_never_cancelled_later() -> None:
    """The task answering a hop goes on serving its keep-alive connection: the deadline
    of a hop it finished must not cancel whatever it does next."""
    deadlines = Deadlines(0.02)

    async def connection() -> str:
        expiry = deadlines.enter()
        Deadlines.leave(expiry)
        await asyncio.sleep(0.1)  # five deadline periods later, still running
        return "next request served"

    assert await connection() == "next request served"


# ---- the form parser -----------------------------------------------------------------------------
form_text = st.text(alphabet="ab=&+%2F3AeE9c*#6dD", max_size=40)
"""Hex digits enough for escaped separators (%26, %3D, %3d) and percent signs (%25)."""


@settings(max_examples=3000, deadline=None)
@given(form_text, st.sampled_from(["utf-8", "latin-1", "ascii"]))
def test_the_form_parser_reads_what_parse_qsl_reads(text: str, charset: str) -> None:
    try:
        expected: dict[str, str] = {}
        for name, value in parse_qsl(text, keep_blank_values=True, encoding=charset, errors="strict"):
            expected.setdefault(name, value)
    except UnicodeDecodeError:
        with pytest.raises(UnicodeDecodeError):
            parse_form(text, charset)
        return
    assert parse_form(text, charset) == expected


def test_an_africastalking_form() -> None:
    body = "sessionId=ATUid_1&serviceCode=%2A090%23&phoneNumber=%2B84901234567&text=2%2A1&text=9"
    assert parse_form(body) == {"sessionId": "ATUid_1", "serviceCode": "*090#", "phoneNumber": "+84901234567", "text": "2*1"}


# ---- the log line ---------------------------------------------------------------------------------
@settings(max_examples=2000)
@given(st.integers(0, 4_102_444_800 * 10**9))
def test_the_timestamp_is_the_one_structlog_wrote(ns: int) -> None:
    moment = datetime.datetime.fromtimestamp(ns // 10**9, datetime.timezone.utc).replace(microsecond=ns % 10**9 // 1000)
    with mock.patch("time.time_ns", return_value=ns):
        stamped = IsoUtcStamper()(None, "info", {})
    assert stamped == {"timestamp": moment.isoformat().replace("+00:00", "Z")}


async def test_log_lines_leave_once_per_loop_turn_in_order(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    with path.open("w") as stream:
        configure_logging(fmt="json", stream=stream)
        try:
            log = structlog.get_logger("ussd_gateway.hop")
            log.info("hop", channel="africastalking", msisdn="8490****567", end=False, latency_ms=1.5)
            log.warning("dependency_down", error="TimeoutError")
            assert path.read_text() == ""  # still this turn
            await asyncio.sleep(0)
            lines = [json.loads(line) for line in path.read_text().splitlines()]
        finally:
            structlog.reset_defaults()
    assert [line["event"] for line in lines] == ["hop", "dependency_down"]
    assert list(lines[0]) == ["channel", "msisdn", "end", "latency_ms", "event", "level", "timestamp"]
    assert lines[0]["level"] == "info" and lines[1]["level"] == "warning"


def test_outside_a_loop_a_line_is_written_at_once() -> None:
    sink = io.BytesIO()
    TurnBufferedLogger(sink).msg(b'{"event":"started"}')
    assert sink.getvalue() == b'{"event":"started"}\n'


# ---- list pages kept per list view --------------------------------------------------------------
async def test_a_kept_list_page_follows_the_heading_it_reads() -> None:
    async def no_action(*_args: object) -> str:
        return "ok"

    menus = load_menus()
    engine = Engine(menus, no_action)
    shared = [{"code": "D1", "price": 10000, "validity_days": 1}, {"code": "D7", "price": 50000, "validity_days": 7}]

    def page(label: str, items: list[dict[str, object]]) -> str:
        record = SessionRecord(
            session_id="s", msisdn="84901234567", service_code="*090#", menu="buy", screen="list", lang="en", started=0.0, updated=0.0
        )
        record.vars = {"packages": items, "category_label": label}
        return engine.render(record).text

    first, second, again = page("Data", shared), page("Voice", shared), page("Data", shared)
    assert "Data" in first and "Voice" in second and "Data" not in second
    assert again == first
    changed = [*shared, {"code": "D30", "price": 90000, "validity_days": 30}]
    assert "D30" in page("Data", changed) and "D30" not in page("Data", shared)


def test_a_line_left_by_a_stopped_loop_is_written_with_the_next() -> None:
    sink = io.BytesIO()
    logger = TurnBufferedLogger(sink)

    async def last_words() -> None:
        logger.msg(b'{"event":"stopping"}')

    loop = asyncio.new_event_loop()
    loop.run_until_complete(last_words())
    loop.close()  # before the turn that would have written it
    asyncio.run(last_words())  # a new loop: the old line first, then this one at its turn's end
    assert sink.getvalue() == b'{"event":"stopping"}\n{"event":"stopping"}\n'
