"""`ussd-gateway load`: the real CLI against a real gateway on a loopback port.

Small runs (tens of dialogues), each bounded by `--max-seconds`; the error kinds are
provoked for real: Redis stopped under the server (busy ENDs), a path that answers 404,
a port nobody listens on, a server that accepts and never answers."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import pty
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import make_settings

from ussd_gateway.testkit.smsc import SmscSimulator
from ussd_gateway.app.config import SmppSettings
from ussd_gateway.testkit.load import MIX, LoadOptions, plan_walk, run_load
from ussd_gateway.testkit.redis_server import RedisServer, free_port
from ussd_gateway.app.server import create_app

ROOT = Path(__file__).resolve().parent.parent

BUY_TRANSCRIPT = """
name = "buy D15"
msisdn = "{msisdn}"
dial = "*090#"

[[steps]]
expect_contains = "MobiFone *090#"

[[steps]]
send = "2"
expect_contains = "Mua goi cuoc"

[[steps]]
send = "1"
expect_contains = "Goi Data:"

[[steps]]
send = "1"
expect_contains = "D15"

[[steps]]
send = "1"
expect_contains = "Dang ky thanh cong goi D15"
expect_end = true
"""


async def run_cli(*args: str, stderr: Any = asyncio.subprocess.PIPE, timeout: float = 60.0,
                  interrupt_after: Callable[[], Awaitable[None]] | None = None) -> tuple[int, str, str]:
    """`ussd-gateway load ARGS` in a child process; (exit status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ussd_gateway.cli", "load", "--max-seconds", "30", *args,
        stdout=asyncio.subprocess.PIPE, stderr=stderr, stdin=asyncio.subprocess.DEVNULL, cwd=ROOT,
    )
    if interrupt_after is not None:
        await interrupt_after()
        process.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), (err or b"").decode()


async def run_json(*args: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    code, out, err = await run_cli(*args, "--json", **kwargs)
    assert out.strip(), err
    return code, json.loads(out)


def assert_ordered(result: dict[str, Any]) -> None:
    latency = result["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]


@pytest.fixture
async def server_url(aiohttp_server) -> str:  # type: ignore[no-untyped-def]
    """A gateway (memory store, demo backend) on a real loopback port."""
    server = await aiohttp_server(create_app(make_settings()))
    return f"http://127.0.0.1:{server.port}"


class TestBuiltInMix:
    @pytest.mark.parametrize("channel", ["africastalking", "json"])
    async def test_forty_dialogues_pass(self, server_url: str, channel: str) -> None:
        code, result = await run_json("--url", server_url, "--channel", channel, "--sessions", "40", "--concurrency", "8")
        assert code == 0, result
        assert result["channel"] == channel and result["stopped"] == "done"
        assert result["dialogues"] == {"planned": 40, "started": 40, "finished": 40, "ok": 40, "failed": 0, "cut": 0}
        assert result["hops"] > 40 and result["hops_per_s"] > 0
        assert result["errors"] == {"total": 0, "http_status": 0, "timeout": 0, "unexpected_screen": 0, "connection": 0}
        assert result["over_deadline"] == 0
        assert_ordered(result)
        assert sum(result["mix"].values()) == 40 and len(result["mix"]) >= 4
        assert result["msisdns"].startswith("8497")

    async def test_human_report(self, server_url: str) -> None:
        code, out, _err = await run_cli("--url", server_url, "--sessions", "12", "--concurrency", "3")
        assert code == 0
        assert "hops/s" in out and "p50" in out and "p95" in out and "p99" in out
        assert "errors     none" in out and "0 of 12 dialogues had a hop slower than 1000 ms" in out

    def test_the_mix_covers_every_service_and_navigation(self) -> None:
        import random

        walks = [plan_walk(random.Random(n)) for n in range(400)]
        assert {w.name for w in walks} == {m[0] for m in MIX}
        inputs = [s.value for w in walks for s in w.steps]
        assert "0" in inputs and "00" in inputs
        assert {w.code for w in walks} == {"*090#", "*101#"}
        # Every walk ends on END or hangs up: none leaves a dialogue waiting to resume
        # under a number a later walk uses (each dialogue has its own number anyway).
        assert all(w.steps[0].value is None for w in walks)

    async def test_deadline_zero_puts_every_dialogue_over_it(self, server_url: str) -> None:
        code, result = await run_json("--url", server_url, "--sessions", "20", "--concurrency", "4", "--deadline-ms", "0")
        assert code == 1
        assert result["errors"]["total"] == 0
        assert result["over_deadline"] == 20 == result["dialogues"]["finished"]

    async def test_bounded_in_time(self, server_url: str) -> None:
        started = asyncio.get_running_loop().time()
        code, result = await run_json("--url", server_url, "--sessions", "1000000", "--concurrency", "4",
                                      "--max-seconds", "1")
        assert asyncio.get_running_loop().time() - started < 20
        assert code == 0 and result["stopped"] == "max_seconds"
        assert 0 < result["dialogues"]["finished"] < 1000000 and result["errors"]["total"] == 0

    async def test_ctrl_c_stops_cleanly_and_reports(self, server_url: str) -> None:
        import aiohttp

        async def once_hops_flow() -> None:
            """Until the server has answered hops (the run is under way), then a bit more."""
            async with aiohttp.ClientSession() as http:
                for _ in range(200):
                    async with http.get(server_url + "/metrics") as response:
                        if 'outcome="continue"' in await response.text():
                            break
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)

        code, out, err = await run_cli("--url", server_url, "--sessions", "1000000", "--concurrency", "4",
                                       interrupt_after=once_hops_flow)
        assert code == 130, err
        assert "interrupted" in out and "hops/s" in out and "p99" in out
        assert "Traceback" not in err

    async def test_progress_is_one_updating_line_on_a_terminal(self, server_url: str) -> None:
        master, slave = pty.openpty()
        try:
            code, _out, _err = await run_cli("--url", server_url, "--sessions", "1000000", "--concurrency", "2",
                                             "--max-seconds", "1", stderr=slave)
            os.close(slave)
            slave = -1
            seen = b""
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the terminal's other side is closed and drained
                    break
                if not chunk:
                    break
                seen += chunk
        finally:
            os.close(master)
            if slave >= 0:
                os.close(slave)
        assert code == 0
        text = seen.decode()
        assert text.count("\r\x1b[K[") >= 2 and "dialogues" in text and "hops/s" in text
        assert "\n" not in text  # one line, rewritten in place

    async def test_bad_arguments(self, tmp_path: Path) -> None:
        code, _out, err = await run_cli("--sessions", "0")
        assert code == 2 and "--sessions must be at least 1" in err
        code, _out, err = await run_cli("--transcript", "/nonexistent.toml")
        assert code == 2 and "no such file" in err
        bad = tmp_path / "bad.toml"
        bad.write_text('msisdn = "{msisdn}"\nbogus = 1\n', encoding="utf-8")
        code, _out, err = await run_cli("--transcript", str(bad))
        assert code == 2 and f"{bad}:2: unknown key 'bogus'" in err


class TestTranscript:
    async def test_a_transcript_per_dialogue(self, server_url: str, tmp_path: Path) -> None:
        path = tmp_path / "buy.toml"
        path.write_text(BUY_TRANSCRIPT, encoding="utf-8")
        for channel in ("africastalking", "json"):
            code, result = await run_json("--url", server_url, "--channel", channel, "--transcript", str(path),
                                          "--sessions", "20", "--concurrency", "4")
            assert code == 0, result
            assert result["transcript"] == str(path) and result["mix"] == {"buy D15": 20}
            assert result["dialogues"]["ok"] == 20 and result["errors"]["total"] == 0
            assert result["hops"] == 20 * 5  # the dial and four answers
            assert_ordered(result)

    async def test_a_failing_transcript_counts_unexpected_screens(self, server_url: str, tmp_path: Path) -> None:
        path = tmp_path / "wrong.toml"
        path.write_text(BUY_TRANSCRIPT.replace('expect_contains = "Goi Data:"', 'expect_contains = "Goi Thoai:"'), encoding="utf-8")
        code, result = await run_json("--url", server_url, "--transcript", str(path), "--sessions", "6", "--concurrency", "2")
        assert code == 1
        assert result["errors"]["unexpected_screen"] == 6 == result["errors"]["total"]
        assert "Goi Thoai:" in result["error_examples"][0]


    async def test_a_transcript_naming_its_subscriber_is_renumbered(self, server_url: str, tmp_path: Path) -> None:
        """Each dialogue is a new subscriber (100.000d, so 85.000d after D15), unless
        --keep-msisdn: then every purchase debits the one number, and the balances differ."""
        path = tmp_path / "fixed.toml"
        path.write_text(
            BUY_TRANSCRIPT.replace('msisdn = "{msisdn}"', 'msisdn = "84910000077"').replace(
                'expect_contains = "Dang ky thanh cong goi D15"', 'expect_contains = ["Dang ky thanh cong goi D15", "TKC con 85.000d"]'
            ),
            encoding="utf-8",
        )
        code, out, err = await run_cli("--url", server_url, "--transcript", str(path), "--sessions", "12", "--concurrency", "4")
        assert code == 0, out + err
        assert "dials from 84910000077; each dialogue dials from a number of its own" in err
        code, result = await run_json("--url", server_url, "--transcript", str(path), "--sessions", "12", "--concurrency", "4",
                                      "--keep-msisdn")
        assert code == 1 and result["errors"]["total"] > 0


class TestErrorKinds:
    async def test_redis_stopped_gives_busy_ends_counted_as_unexpected_screens(
        self, own_redis: RedisServer, aiohttp_server  # type: ignore[no-untyped-def]
    ) -> None:
        server = await aiohttp_server(create_app(make_settings(own_redis.url)))
        url = f"http://127.0.0.1:{server.port}"
        code, result = await run_json("--url", url, "--sessions", "8", "--concurrency", "4")
        assert code == 0, result  # healthy first
        own_redis.stop()
        code, result = await run_json("--url", url, "--sessions", "8", "--concurrency", "4")
        assert code == 1
        assert result["errors"]["unexpected_screen"] == 8 == result["errors"]["total"]
        assert result["dialogues"]["ok"] == 0
        assert any("He thong dang ban" in example for example in result["error_examples"])
        assert result["hops"] == 8  # each dialogue stops at its first (busy) screen
        code, out, _err = await run_cli("--url", url, "--sessions", "8", "--concurrency", "4")
        assert code == 1 and "errors     8: unexpected_screen 8" in out

    async def test_http_status_connection_and_timeout(self, server_url: str) -> None:
        async def run(url: str, **changes: Any) -> dict[str, Any]:
            return await run_load(LoadOptions(sessions=6, concurrency=3, url=url, **changes))

        result = await run(server_url + "/nowhere")
        assert result["errors"]["http_status"] == 6 == result["errors"]["total"]
        assert result["http_statuses"] == {"404": 6}

        result = await run(f"http://127.0.0.1:{free_port()}")
        assert result["errors"]["connection"] == 6 == result["errors"]["total"]

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.read()  # accept, never answer
            finally:
                writer.close()

        mute = await asyncio.start_server(silent, "127.0.0.1", 0)
        try:
            port = mute.sockets[0].getsockname()[1]
            result = await run(f"http://127.0.0.1:{port}", timeout_s=0.2, deadline_ms=100)
        finally:
            mute.close()
            await mute.wait_closed()
        assert result["errors"]["timeout"] == 6 == result["errors"]["total"]
        assert result["over_deadline"] == 6


class TestSmpp:
    @pytest.fixture
    async def control(self, aiohttp_server) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
        from test_smpp_e2e import bind_for

        smsc = SmscSimulator(port=0, control_port=0)
        await smsc.start()
        try:
            settings = dataclasses.replace(make_settings(), smpp=SmppSettings(binds=(bind_for(smsc.port),)))
            await aiohttp_server(create_app(settings))
            await smsc.wait_bound(timeout=5)
            yield f"127.0.0.1:{smsc.control_port}"
        finally:
            await smsc.stop()

    async def test_the_mix_and_a_transcript_over_the_simulator(self, control: str, tmp_path: Path) -> None:
        code, result = await run_json("--smpp", control, "--sessions", "16", "--concurrency", "4")
        assert code == 0, result
        assert result["channel"] == "smpp" and result["dialogues"]["ok"] == 16
        assert_ordered(result)
        path = tmp_path / "buy.toml"
        path.write_text(BUY_TRANSCRIPT, encoding="utf-8")
        code, result = await run_json("--smpp", control, "--transcript", str(path), "--sessions", "6", "--concurrency", "2")
        assert code == 0, result
        assert result["dialogues"]["ok"] == 6 and result["hops"] == 30
