"""`ussd-gateway campaign ...` on a real Redis, and what a campaign is checked for before launch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ussd_gateway.campaigns.model import parse_filter
from ussd_gateway.campaigns.sizing import sms_size
from ussd_gateway.channels.smpp.encoding import split_sms
from ussd_gateway.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else err


def test_a_campaign_from_csv_to_status(tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """create from a CSV (bad rows reported), preview shows the parts and the texts,
    start and pause move it, status and list report it."""
    csv = tmp_path / "vang.csv"
    csv.write_text("msisdn,name\n0970000001,Lan\n84970000002,Minh\nnot-a-number,X\n0970000001,Lan\n")
    code, made = run(capsys, "campaign", "create", "Tri an thang 6", "--redis-url", redis_url, "--csv", str(csv),
                     "--vi", "Chao {name}, ban co {points|number} diem.", "--vi-dau", "Chào {name}, bạn có {points|number} điểm.")
    assert code == 0 and made == {"id": "tri-an-thang-6", "target": "csv", "rows": 2, "columns": ["name"], "invalid": 1,
                                  "invalid_examples": ["not-a-number"], "duplicates": 1}
    code, preview = run(capsys, "campaign", "preview", "tri-an-thang-6", "--redis-url", redis_url)
    assert preview["targets"] == 2 and preview["sms_parts"] == {"1": 2} and preview["too_long"] == 0
    first = preview["samples"][0]
    assert first["vi"]["text"].startswith("Chao Lan, ban co ") and first["vi"]["size"].startswith("1 SMS (GSM-7")
    # No English text: the Vietnamese one, with English number formats.
    assert first["vi_dau"]["size"].startswith("1 SMS (UCS-2") and first["en"]["text"].startswith("Chao Lan, ban co ")
    assert run(capsys, "campaign", "start", "tri-an-thang-6", "--redis-url", redis_url)[1]["status"] == "running"
    assert run(capsys, "campaign", "pause", "tri-an-thang-6", "--redis-url", redis_url)[1]["status"] == "paused"
    code, refused = run(capsys, "campaign", "pause", "tri-an-thang-6", "--redis-url", redis_url)
    assert code == 1 and "is paused: cannot pause" in refused
    code, status = run(capsys, "campaign", "status", "tri-an-thang-6", "--redis-url", redis_url)
    assert status["status"] == "paused" and status["targets"] == 2 and status["sent"] == 0
    assert [c["id"] for c in run(capsys, "campaign", "list", "--redis-url", redis_url)[1]] == ["tri-an-thang-6"]


def test_a_filter_campaign_over_the_generated_population(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Filters select from the demo backend's generated subscribers; every sample matches."""
    code, made = run(capsys, "campaign", "create", "Vang chua MAX90", "--redis-url", redis_url,
                     "--filter", "tier=Vang points>=5000 lacks=MAX90 kndl=yes", "--vi", "{name}: {tier} {points|number} diem, goi {package}")
    assert code == 0 and made["target"] == "filter"
    preview = run(capsys, "campaign", "preview", made["id"], "--redis-url", redis_url, "--sample", "20")[1]
    assert 100 < preview["targets"] < 5000
    for sample in preview["samples"]:
        assert ": Vang " in sample["vi"]["text"] and "MAX90" not in sample["vi"]["text"]


def test_mistakes_are_refused_before_launch(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, error = run(capsys, "campaign", "create", "X", "--redis-url", redis_url, "--filter", "tier=Vang", "--vi", "Chao {nmae}")
    assert code == 1 and "unknown variable {nmae}" in error
    code, error = run(capsys, "campaign", "create", "X", "--redis-url", redis_url, "--filter", "colour=red", "--vi", "Chao")
    assert code == 1 and "filter term 'colour=red'" in error
    assert parse_filter("arpu=50000-200000").arpu_max == 200000


@pytest.mark.parametrize("text", ["a" * 160, "a" * 161, "[" * 80, "a" * 152 + "[" + "b" * 200, "ệ" * 70, "ệ" * 71, "😀" * 40, "ệ" * 66 + "😀" * 3])
def test_the_parts_shown_are_the_parts_sent(text: str) -> None:
    assert sms_size(text).parts == len(split_sms(text, packed=False, reference=1))


def test_status_chart_and_svg_show_the_hours(tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """SMS the SMSC took at 10:xx and 11:xx (Ho Chi Minh City) appear as bars in those
    hours; the SVG has one bar per series and hour with the same counts."""
    import asyncio
    import re
    from datetime import datetime
    from zoneinfo import ZoneInfo

    import redis.asyncio as aioredis

    from ussd_gateway.campaigns.ledger import SmsLedger
    from ussd_gateway.sessions.memory import MemoryStore
    from ussd_gateway.sessions.store import OutboundSms

    csv = tmp_path / "c.csv"
    csv.write_text("0970000001\n0970000002\n0970000003\n")
    assert run(capsys, "campaign", "create", "Gio", "--redis-url", redis_url, "--csv", str(csv), "--vi", "Chao", "--follow-up", "*090*4#")[0] == 0
    # Each SMS reads the clock twice (queued, then sent): two at 10:30, one at 11:30.
    hours = [datetime(2025, 6, 2, h, 30, tzinfo=ZoneInfo("Asia/Ho_Chi_Minh")).timestamp() for h in (10, 10, 10, 10, 11, 11)]

    async def report_sent() -> None:
        client = aioredis.Redis.from_url(redis_url)
        now = iter(hours)
        ledger = SmsLedger(client, MemoryStore(), default_sender="9090", clock=lambda: next(now))
        try:
            for index in range(3):
                sms = OutboundSms(f"8497000000{index + 1}", "9090", "Chao", f"k{index}", sms_id=f"s{index}", receipt=True)
                pipe = client.pipeline(transaction=False)
                await ledger.create(pipe, sms, "gio")
                await pipe.execute()
                await ledger.submitted(sms, f"m{index}", 0)
        finally:
            await client.aclose()

    asyncio.run(report_sent())
    code = main(["campaign", "status", "gio", "--redis-url", redis_url, "--chart", "--svg", str(tmp_path / "gio.svg")])
    out = capsys.readouterr().out
    assert code == 0 and "sent 3" in out and "follow-up *090*4#" in out and "conversions 0 · revenue 0 đ" in out
    assert re.search(r"2025-06-02 10h  sent      █+ 2\n", out) and re.search(r"2025-06-02 11h  sent      █+ 1\n", out), out
    svg = (tmp_path / "gio.svg").read_text()
    assert re.findall(r'<rect class="sent"[^>]*><title>([^<]+)</title>', svg) == ["2025-06-02T10 sent: 2", "2025-06-02T11 sent: 1"]
    import xml.etree.ElementTree as ElementTree

    assert ElementTree.fromstring(svg).tag.endswith("svg")


def _cli(*argv: str) -> list[str]:
    import sys

    return [str(Path(sys.executable).parent / "ussd-gateway"), *argv]


def test_follow_prints_lines_off_a_terminal_and_ends_on_pause(tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """No server sends it, so it stays running at 0%: following prints progress lines
    until the campaign is paused from elsewhere, then the status JSON, and exits 0."""
    import subprocess
    import time

    csv = tmp_path / "c.csv"
    csv.write_text("0970000001\n0970000002\n")
    run(capsys, "campaign", "create", "Theo doi", "--redis-url", redis_url, "--csv", str(csv), "--vi", "Chao")
    watcher = subprocess.Popen(_cli("campaign", "start", "theo-doi", "--follow", "--interval", "0.2", "--redis-url", redis_url),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        assert watcher.poll() is None  # still following
        assert run(capsys, "campaign", "pause", "theo-doi", "--redis-url", redis_url)[1]["status"] == "paused"
        out, _err = watcher.communicate(timeout=15)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 0
    lines = out.splitlines()
    assert lines[0].startswith("[" + "." * 30 + "]   0%  0/2 · sent 0") and lines[0].endswith("· running")
    assert any(line.endswith("· paused") for line in lines) and '"status": "paused"' in out and "\r" not in out


def test_follow_on_a_terminal_redraws_one_line_and_stops_on_ctrl_c(tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    import os
    import pty
    import signal
    import subprocess
    import time

    csv = tmp_path / "c.csv"
    csv.write_text("0970000001\n")
    run(capsys, "campaign", "create", "Ctrl C", "--redis-url", redis_url, "--csv", str(csv), "--vi", "Chao")
    run(capsys, "campaign", "start", "ctrl-c", "--redis-url", redis_url)
    leader, follower = pty.openpty()
    watcher = subprocess.Popen(_cli("campaign", "status", "ctrl-c", "--follow", "--redis-url", redis_url),
                               stdout=follower, stderr=follower, stdin=follower, close_fds=True)
    os.close(follower)
    seen = b""
    try:
        deadline = time.monotonic() + 15
        while seen.count(b"\r\x1b[K[") < 3 and time.monotonic() < deadline:  # redrawn in place, again and again
            seen += os.read(leader, 4096)
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(timeout=10) == 130
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
        os.close(leader)
    text = seen.decode()
    assert "\r\x1b[K[" + "." * 30 + "]   0%  0/1" in text and "stopped watching; the campaign goes on" in text
    assert "Traceback" not in text
    assert run(capsys, "campaign", "status", "ctrl-c", "--redis-url", redis_url)[1]["status"] == "running"
