"""The command line as an operator and a tester use it: serve, sim, feedback list."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import make_settings

from ussd_gateway.testkit.redis_server import RedisServer, free_port
from ussd_gateway.app.server import create_app
from ussd_gateway.testkit.sim import run_sim

PROJECT = Path(__file__).resolve().parents[1]


def wait_healthy(port: int, process: subprocess.Popen[bytes], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited early: {process.stderr.read().decode() if process.stderr else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=0.5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("server did not become healthy")


def hop(port: int, body: dict) -> dict:  # type: ignore[type-arg]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/ussd", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture
def serve() -> Iterator:  # type: ignore[type-arg]
    """Start `ussd-gateway serve` with arguments; stopped with SIGTERM afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> tuple[int, subprocess.Popen[bytes]]:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "ussd_gateway.cli", "serve", "--port", str(port), *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=PROJECT,
        )
        started.append(process)
        wait_healthy(port, process)
        return port, process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr is not None:
            process.stderr.close()


class TestServe:
    def test_embedded_defaults_serve_a_dialogue_and_stop_on_sigterm(self, serve) -> None:  # type: ignore[no-untyped-def]
        """`serve` with no config answers *090# and exits cleanly on SIGTERM."""
        port, process = serve()
        reply = hop(port, {"session_id": "cli-1", "msisdn": "0901234567", "service_code": "*090#", "event": "begin"})
        assert reply["end"] is False and "MobiFone *090#" in reply["text"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0

    def test_two_workers_share_sessions_through_redis(self, serve, redis_server: RedisServer) -> None:  # type: ignore[no-untyped-def]
        """With --workers 2 every hop may land on either process; dialogues still work
        and /metrics adds up both workers."""
        redis_server.start()
        port, process = serve("--workers", "2", "--redis-url", redis_server.url)
        for n in range(20):
            base = {"session_id": f"w-{n}", "msisdn": f"8491{n:07d}", "service_code": "*090#"}
            assert "MobiFone" in hop(port, {**base, "event": "begin", "seq": 0})["text"]
            assert "Mua goi cuoc" in hop(port, {**base, "event": "continue", "input": "2", "seq": 1})["text"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
        assert 'ussd_hops_total{channel="json",outcome="begin",screen="main:home"} 20.0' in body

    def test_workers_without_redis_is_refused(self) -> None:
        """Several workers cannot share a memory store: a clear error, exit 2."""
        result = subprocess.run(
            [sys.executable, "-m", "ussd_gateway.cli", "serve", "--workers", "2", "--port", str(free_port())],
            capture_output=True, text=True, timeout=30, cwd=PROJECT,
        )
        assert result.returncode == 2
        assert "needs a shared session store" in result.stderr


class TestSim:
    async def test_sim_plays_a_dialogue_to_the_end(self, aiohttp_server) -> None:  # type: ignore[no-untyped-def]
        """The terminal phone shows each screen, sends the answers, stops at END."""
        server = await aiohttp_server(create_app(make_settings()))
        answers = ["1", "1", "1"]

        def read(_prompt: str) -> str:
            if not answers:
                raise EOFError  # the tester hangs up (Ctrl-D)
            return answers.pop(0)

        out = io.StringIO()
        code = await asyncio.to_thread(
            run_sim, url=str(server.make_url("/")), msisdn="0901234567", code="*090#", lang="en", read=read, out=out
        )
        shown = out.getvalue()
        assert code == 0
        assert "My account" in shown and "Balance: 200,000 VND" in shown
        assert "MAX90" in shown and "[reply" in shown and "(hung up)" in shown

    async def test_sim_ends_with_end_screen(self, aiohttp_server) -> None:  # type: ignore[no-untyped-def]
        """*101# is one END screen; the sim prints it and exits 0 without asking."""
        server = await aiohttp_server(create_app(make_settings()))
        out = io.StringIO()
        code = await asyncio.to_thread(
            run_sim, url=str(server.make_url("/")), msisdn="84901111111", code="*101#", read=lambda _p: "", out=out
        )
        assert code == 0 and "3.000d" in out.getvalue() and "[END" in out.getvalue()

    def test_sim_explains_a_missing_server(self, capsys) -> None:  # type: ignore[no-untyped-def]
        """No server listening: one clear line, exit 1."""
        code = run_sim(url=f"http://127.0.0.1:{free_port()}", msisdn="84901234567", code="*090#", read=lambda _p: "")
        assert code == 1
        assert "Is `ussd-gateway serve` running?" in capsys.readouterr().err


class TestFeedbackList:
    async def test_feedback_left_by_ussd_is_listed_for_operations(self, aiohttp_client, redis_url: str) -> None:  # type: ignore[no-untyped-def]
        """Feedback typed on the phone shows in `ussd-gateway feedback list`."""
        from helpers import Phone

        client = await aiohttp_client(create_app(make_settings(redis_url)))
        phone = Phone(client, "json")
        await phone.dial()
        screen = await phone.walk("6", "3", "Song yeu o Quan 7")
        assert screen.end
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "ussd_gateway.cli", "feedback", "list", "--redis-url", redis_url],
            capture_output=True, text=True, timeout=30, cwd=PROJECT,
        )
        assert result.returncode == 0, result.stderr
        item = json.loads(result.stdout.splitlines()[0])
        assert item["topic"] == "network" and item["message"] == "Song yeu o Quan 7" and item["msisdn"] == "84901234567"


class TestSmppFromTheCommandLine:
    async def test_serve_binds_answers_and_unbinds_on_sigterm(self, tmp_path: Path) -> None:
        """`serve` with a [[smpp.binds]] config binds to the SMSC, serves a USSD dialogue
        over it, and on SIGTERM unbinds cleanly before exiting."""
        from ussd_gateway.testkit.smsc import SmscSimulator

        async with SmscSimulator(port=0) as smsc:
            config = tmp_path / "config.toml"
            config.write_text(
                f'[[smpp.binds]]\nname = "main"\npassword = "secret"\nport = {smsc.port}\nshort_codes = ["9237", "999"]\nreconnect_min_s = 0.1\n',
                encoding="utf-8",
            )
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ussd_gateway.cli", "serve", "--config", str(config), "--port", str(free_port()),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=PROJECT,
            )
            try:
                await smsc.wait_bound(timeout=20)
                dialogue = await smsc.start_ussd("84901234567")
                screen = await dialogue.next_screen(timeout=5)
                assert "Tra cuu tai khoan" in screen.text
                process.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(process.wait(), 20) == 0
                assert any(p.command == "unbind" and p.direction == "in" for p in smsc.pdus)
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()

    async def test_sim_dials_through_the_smsc_simulator(self, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        """`sim --smpp` plays a dialogue through the simulator's control API and the bind."""
        import dataclasses

        from ussd_gateway.channels.smpp.config import BindSettings
        from ussd_gateway.testkit.smsc import SmscSimulator
        from ussd_gateway.app.config import SmppSettings

        async with SmscSimulator(port=0, control_port=free_port()) as smsc:
            settings = dataclasses.replace(
                make_settings(), smpp=SmppSettings(binds=(BindSettings(name="b", password="secret", port=smsc.port, reconnect_min_s=0.05),))
            )
            await aiohttp_client(create_app(settings))
            await smsc.wait_bound(timeout=5)
            answers = ["1"]

            def read(_prompt: str) -> str:
                if not answers:
                    raise EOFError
                return answers.pop(0)

            out = io.StringIO()
            code = await asyncio.to_thread(
                run_sim, url="", msisdn="84909999999", code="*090#", read=read, out=out, smpp=f"127.0.0.1:{smsc.control_port}"
            )
            assert code == 0
            shown = out.getvalue()
            assert "Tra cuu tai khoan" in shown and "TKC: 150.000d" in shown and "(hung up)" in shown
