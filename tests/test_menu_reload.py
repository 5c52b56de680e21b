"""Menus that change while subscribers are in them: reload, refusal, rollback, and a
reload reaching every instance through Redis. Real servers, real Redis."""

from __future__ import annotations

import json
import shutil
import itertools
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Phone, make_settings

from ussd_gateway.app.server import create_app
from ussd_gateway.menus.compiler import DEFINITIONS_DIR
from ussd_gateway.testkit.redis_server import RedisServer, free_port

PROJECT = Path(__file__).resolve().parents[1]
ADMIN = {"Authorization": "Bearer admin-secret"}
OLD_HOME, NEW_HOME = "MobiFone *090#", "MobiFone *090# - moi"


@pytest.fixture
def definitions(tmp_path: Path) -> Path:
    """A private copy of the shipped definitions, to edit while the server runs."""
    target = tmp_path / "definitions"
    shutil.copytree(DEFINITIONS_DIR, target)
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def new_version(definitions: Path) -> None:
    """Version 2: a new heading on the main menu and on the package menu."""
    edit(definitions / "main.toml", f'vi = "{OLD_HOME}"', f'vi = "{NEW_HOME}"')
    edit(definitions / "buy.toml", 'text = { vi = "Mua goi cuoc"', 'text = { vi = "Chon loai goi (v2)"')


def break_definitions(definitions: Path) -> None:
    """An option leading to a screen that does not exist: `menus check` refuses it."""
    edit(definitions / "buy.toml", 'goto = "load_voice"', 'goto = "load_voyce"')


@pytest.fixture
async def client(definitions: Path, redis_url: str, aiohttp_client):  # type: ignore[no-untyped-def]
    settings = make_settings(redis_url, menus={"directory": str(definitions)}, admin={"token": "admin-secret"})
    return await aiohttp_client(create_app(settings))


class TestReloadOnOneServer:
    async def test_a_dialogue_spanning_a_reload_finishes_on_its_old_menus(self, client, definitions: Path) -> None:  # type: ignore[no-untyped-def]
        """Someone in the menus when they change keeps the version they began on, to
        the end (back, forward, a purchase); someone dialling afterwards gets the new one."""
        before = Phone(client, "json", msisdn="84901234567")
        assert OLD_HOME in (await before.dial()).text
        assert "Mua goi cuoc" in (await before.send("2")).text

        new_version(definitions)
        response = await client.post("/admin/menus/reload", headers=ADMIN)
        assert response.status == 200
        result = await response.json()
        assert result["status"] == "reloaded" and result["version"] != result["previous"]

        after = Phone(client, "africastalking", msisdn="84909999999")
        home = await after.dial()
        assert NEW_HOME in home.text
        assert "Chon loai goi (v2)" in (await after.send("2")).text

        # The first dialogue: back to its main menu, into buy again, then a purchase.
        assert NEW_HOME not in (back := await before.send("0")).text and OLD_HOME in back.text
        again = await before.send("2")
        assert "Mua goi cuoc" in again.text and "(v2)" not in again.text
        await before.send("1")  # data packages
        confirm = await before.send("1")  # D15
        assert "D15" in confirm.text
        done = await before.send("1")
        assert done.end and "thanh cong" in done.text.lower()

        # Its next dialogue is on the new version.
        assert NEW_HOME in (await before.dial()).text

    async def test_a_broken_definition_is_refused_and_the_old_one_serves(self, client, definitions: Path) -> None:  # type: ignore[no-untyped-def]
        break_definitions(definitions)
        response = await client.post("/admin/menus/reload", headers=ADMIN)
        assert response.status == 422
        body = await response.json()
        assert body["status"] == "refused"
        assert any("buy:load_voyce" in problem for problem in body["problems"])
        phone = Phone(client, "json")
        assert OLD_HOME in (await phone.dial()).text
        assert "Goi Thoai" in (await phone.send("2")).text

    async def test_a_screen_over_the_budget_is_refused(self, client, definitions: Path) -> None:  # type: ignore[no-untyped-def]
        edit(
            definitions / "balance.toml",
            'vi = "TKC cua quy khach: {account.balance|money}."',
            'vi = "TKC cua quy khach: {account.balance|money}. ' + "Chuc quy khach mot ngay vui ve. " * 6 + '"',
        )
        response = await client.post("/admin/menus/reload", headers=ADMIN)
        assert response.status == 422
        assert any("balance:show (vi): renders" in p for p in (await response.json())["problems"])

    async def test_rollback_brings_back_the_previous_version(self, client, definitions: Path) -> None:  # type: ignore[no-untyped-def]
        new_version(definitions)
        assert (await client.post("/admin/menus/reload", headers=ADMIN)).status == 200
        in_v2 = Phone(client, "json", msisdn="84909999999")
        assert NEW_HOME in (await in_v2.dial()).text

        response = await client.post("/admin/menus/rollback", headers=ADMIN)
        assert response.status == 200 and (await response.json())["status"] == "rolled back"
        assert NEW_HOME not in (await Phone(client, "json").dial()).text
        # A dialogue begun on version 2 still finishes on it.
        assert "Chon loai goi (v2)" in (await in_v2.send("2")).text
        # Rolling back again goes forward to version 2 (the one before the current one).
        assert (await client.post("/admin/menus/rollback", headers=ADMIN)).status == 200
        assert NEW_HOME in (await Phone(client, "json", msisdn="84901111111").dial()).text

    async def test_the_routes_want_the_admin_token(self, client, definitions: Path) -> None:  # type: ignore[no-untyped-def]
        new_version(definitions)
        assert (await client.post("/admin/menus/reload")).status == 401
        assert (await client.post("/admin/menus/reload", headers={"Authorization": "Bearer wrong"})).status == 401
        assert OLD_HOME in (await Phone(client, "json").dial()).text
        assert NEW_HOME not in (await Phone(client, "json").dial()).text

    async def test_without_an_admin_token_the_routes_are_off(self, definitions: Path, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        client = await aiohttp_client(create_app(make_settings("", menus={"directory": str(definitions)})))
        response = await client.post("/admin/menus/reload")
        assert response.status == 403 and "SIGHUP" in (await response.json())["error"]


# ---- real processes ----------------------------------------------------------------------------
def _get(port: int, path: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _post(port: int, path: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, dict]:  # type: ignore[type-arg]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=json.dumps(body or {}).encode(),
        headers={"Content-Type": "application/json", **(headers or {})}, method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def dial(port: int, session_id: str, msisdn: str = "84901234567") -> str:
    status, reply = _post(port, "/ussd", {"session_id": session_id, "msisdn": msisdn, "service_code": "*090#", "event": "begin", "seq": 0})
    assert status == 200, reply
    return str(reply["text"])


def eventually(check, seconds: float = 15.0):  # type: ignore[no-untyped-def]
    """Poll `check` until it returns something true (bounded)."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    """Start `ussd-gateway serve` processes with a config; SIGTERM afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start(config: Path, *args: str) -> int:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "ussd_gateway.cli", "serve", "--config", str(config), "--port", str(port), *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
        )
        started.append(process)
        ready = eventually(lambda: process.poll() is not None or _ready(port), 30)
        assert process.poll() is None and ready, "server did not become ready"
        return port

    start.processes = started  # type: ignore[attr-defined]
    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _ready(port: int) -> bool:
    try:
        return _get(port, "/readyz")[0] == 200
    except OSError:
        return False


def write_config(tmp_path: Path, definitions: Path, redis_url: str) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[sessions]\nredis_url = "{redis_url}"\n[menus]\ndirectory = "{definitions}"\n[admin]\ntoken = "admin-secret"\n',
        encoding="utf-8",
    )
    return config


class TestReloadAcrossInstances:
    def test_a_reload_on_one_instance_reaches_the_other_through_redis(
        self, servers, definitions: Path, redis_server: RedisServer, tmp_path: Path  # type: ignore[no-untyped-def]
    ) -> None:
        redis_server.start()
        config = write_config(tmp_path, definitions, redis_server.url)
        a, b = servers(config), servers(config)
        version = _get(a, "/readyz")[1]["menus"]
        assert _get(b, "/readyz")[1]["menus"] == version
        # A dialogue begun on B before the reload.
        assert OLD_HOME in dial(b, "x-before", "84909999999")

        new_version(definitions)
        status, result = _post(a, "/admin/menus/reload", headers=ADMIN)
        assert status == 200 and result["status"] == "reloaded"
        assert eventually(lambda: NEW_HOME in dial(b, f"x-{time.monotonic()}", "84901111111"))
        assert _get(b, "/readyz")[1]["menus"] == result["version"]
        # The dialogue from before carries on, on either instance, on its version.
        status, reply = _post(a, "/ussd", {"session_id": "x-before", "msisdn": "84909999999", "service_code": "*090#", "event": "continue", "input": "2", "seq": 1})
        assert status == 200 and "Mua goi cuoc" in reply["text"]

        # One command rolls every instance back.
        rolled = subprocess.run(
            [sys.executable, "-m", "ussd_gateway.cli", "menus", "rollback", "--redis-url", redis_server.url],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )
        assert rolled.returncode == 0, rolled.stderr
        assert "announced to 2 server process(es)" in rolled.stdout
        for port in (a, b):
            assert eventually(lambda port=port: _get(port, "/readyz")[1]["menus"] == version)
            assert OLD_HOME in dial(port, f"y-{port}") and NEW_HOME not in dial(port, f"z-{port}")

        # A broken definition announced from the command line is refused before it goes out.
        break_definitions(definitions)
        refused = subprocess.run(
            [sys.executable, "-m", "ussd_gateway.cli", "menus", "reload", "--redis-url", redis_server.url, "--dir", str(definitions)],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )
        assert refused.returncode == 1 and "buy:load_voyce" in refused.stdout
        assert _get(a, "/readyz")[1]["menus"] == version

    def test_sighup_reloads_every_worker(self, servers, definitions: Path, own_redis: RedisServer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
        """SIGHUP to the supervisor of `--workers 2` reaches both workers: every new
        dialogue, whichever worker takes it, gets the new menus. (A Redis of its own:
        nothing another test's processes publish on the menus channel reaches it.)"""
        config = write_config(tmp_path, definitions, own_redis.url)
        port = servers(config, "--workers", "2")
        assert all(OLD_HOME in dial(port, f"h-0-{n}", f"8493000{n:04d}") for n in range(12))
        new_version(definitions)
        servers.processes[-1].send_signal(signal.SIGHUP)

        attempts = itertools.count()

        def all_new() -> bool:
            # New numbers each attempt: redialling the same ones in a loop would meet the
            # per-subscriber dialogue rate (a polite END), not the menus under test.
            attempt = next(attempts)
            seen[:] = [dial(port, f"h-{attempt}-{n}", f"8492{attempt:03d}{n:04d}") for n in range(12)]
            return all(NEW_HOME in screen for screen in seen)

        seen: list[str] = []
        assert eventually(all_new), [screen.split("\n")[0] for screen in seen]
        assert servers.processes[-1].poll() is None
