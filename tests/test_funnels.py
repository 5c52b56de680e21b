"""The menus' funnels: real servers on a real Redis, dialogues walked by phone, then
`ussd-gateway report` (the real command) prints where they ended and timed out.
Timeouts are counted when the dialogue timeout passes, once, whichever instance
served the last hop."""

from __future__ import annotations

import asyncio
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from helpers import Phone, make_settings

from ussd_gateway.app.server import GATEWAY, create_app
from ussd_gateway.cli.report import window
from ussd_gateway.sessions.funnel_store import read_counts

FAST = {"timeout_s": 1.0, "flush_s": 0.2}


async def _run_report(redis_url: str, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ussd_gateway.cli", "report", "--redis-url", redis_url, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def _counts(redis_url: str) -> dict[str, dict[str, dict[str, int]]]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return await read_counts(client, 0, 2**40)  # every minute kept
    finally:
        await client.aclose()


async def _settled(redis_url: str, *apps: Any) -> dict[str, dict[str, dict[str, int]]]:
    """The counts once every process has judged every dialogue it waits on (bounded)."""
    for _ in range(100):
        if all(app[GATEWAY].dispatcher.funnel.pending == 0 for app in apps):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("dialogues still waiting for their timeout")
    for app in apps:
        await app[GATEWAY].dispatcher.funnel.flush()
    return await _counts(redis_url)


def _flat(counts: dict[str, dict[str, dict[str, int]]], event: str) -> dict[str, int]:
    return {f"{screen}": c[event] for screens in counts.values() for screen, c in screens.items() if c[event]}


class TestReport:
    async def test_report_shows_where_dialogues_ended_and_timed_out(self, redis_url: str, aiohttp_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
        app = create_app(make_settings(redis_url, funnels=FAST))
        client = await aiohttp_client(app)
        bought = Phone(client, "json", msisdn="84901110001")
        await bought.dial()
        assert "Dang ky thanh cong" in (await bought.walk("2", "1", "1", "1")).text
        balance = Phone(client, "africastalking", msisdn="84901110002")
        assert (await balance.dial("*101#")).end
        silent = Phone(client, "json", msisdn="84901110003")
        await silent.dial()
        assert "Mua goi cuoc" in (await silent.send("2")).text  # then nothing: times out on buy:start
        wrong = Phone(client, "africastalking", msisdn="84901110004")
        await wrong.dial()
        assert not (await wrong.send("77")).end  # an invalid choice stays on main:home (reached once)

        counts = await _settled(redis_url, app)
        assert _flat(counts, "reached") == {
            "home": 3, "start": 2, "list": 1, "detail": 1, "done": 1, "show": 1,
        }
        assert counts["buy"]["start"]["timed_out"] == 1 and counts["main"]["home"]["timed_out"] == 1
        assert _flat(counts, "ended") == {"done": 1, "show": 1}

        svg_file = tmp_path / "funnels.svg"
        code, out, err = await _run_report(redis_url, "--since", "1h", "--json", "--svg", str(svg_file))
        assert code == 0, err
        report = json.loads(out)
        buy = {row["screen"]: row for row in report["menus"]["buy"]}
        assert [row["screen"] for row in report["menus"]["buy"]][0] == "start"  # the funnel's top first
        assert buy["start"] == {"screen": "start", "reached": 2, "ended": 0, "timed_out": 1, "drop_off": 0.5}
        assert buy["done"]["ended"] == 1 and buy["done"]["drop_off"] == 0
        assert report["menus"]["balance"] == [{"screen": "show", "reached": 1, "ended": 1, "timed_out": 0, "drop_off": 0.0}]
        bars = {g.get("data-screen"): g for g in ET.parse(svg_file).getroot() if g.get("class") == "screen"}
        assert bars["start"].get("data-timed-out") == "1" and bars["home"].get("data-reached") == "3"
        assert ET.parse(svg_file).getroot().tag == "{http://www.w3.org/2000/svg}svg"

        code, out, _ = await _run_report(redis_url, "--menu", "buy")
        lines = out.splitlines()
        assert code == 0 and "menu buy" in lines and "menu main" not in lines
        start = next(line.split() for line in lines if line.startswith("start "))
        assert start == ["start", "2", "0", "1", "50.0%"]

    async def test_a_window_before_the_dialogues_shows_none(self, redis_url: str, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        app = create_app(make_settings(redis_url, funnels=FAST))
        phone = Phone(await aiohttp_client(app), "json", msisdn="84901110005")
        assert (await phone.dial("*101#")).end
        await _settled(redis_url, app)
        code, out, _ = await _run_report(redis_url, "--from", "2020-01-01T00:00", "--to", "2020-01-02T00:00", "--json")
        assert code == 0 and json.loads(out)["menus"] == {}
        code, out, _ = await _run_report(redis_url, "--since", "10m", "--json")
        assert json.loads(out)["menus"]["balance"][0]["ended"] == 1

    async def test_bad_windows_are_refused_with_a_reason(self, redis_url: str) -> None:
        code, _, err = await _run_report(redis_url, "--since", "5 weeks")
        assert code == 2 and "--since wants a number and a unit" in err and "Traceback" not in err
        code, _, err = await _run_report(redis_url, "--from", "2026-01-02", "--to", "2026-01-01")
        assert code == 2 and "start must come before its end" in err


class TestTimeoutsAcrossInstances:
    async def test_a_dialogue_alternating_between_instances_times_out_once(self, redis_url: str, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        first, second = create_app(make_settings(redis_url, funnels=FAST)), create_app(make_settings(redis_url, funnels=FAST))
        clients = [await aiohttp_client(first), await aiohttp_client(second)]

        async def alternate(phone: Phone, *steps: str) -> Any:
            screen = None
            for n, step in enumerate(steps):
                phone.client = clients[n % 2]
                screen = await (phone.dial() if step == "dial" else phone.send(step))
            return screen

        silent = Phone(clients[0], "json", msisdn="84902220001")
        assert "Goi Data" in (await alternate(silent, "dial", "2", "1")).text  # then silence on buy:list
        bought = Phone(clients[0], "africastalking", msisdn="84902220002")
        assert (await alternate(bought, "dial", "2", "1", "1", "1")).end  # END on the second instance
        redialled = Phone(clients[0], "json", msisdn="84902220003")
        await alternate(redialled, "dial", "2")  # on buy:start, then a new dial on the other instance
        redialled.client = clients[0]
        assert (await redialled.dial("*101#")).end

        counts = await _settled(redis_url, first, second)
        assert _flat(counts, "timed_out") == {"list": 1, "start": 1}
        assert counts["buy"]["list"]["timed_out"] == 1 and counts["buy"]["start"]["timed_out"] == 1
        assert _flat(counts, "ended") == {"done": 1, "show": 1}
        assert counts["main"]["home"]["reached"] == 3 and counts["buy"]["start"]["reached"] == 3

        # Prometheus, both instances together, agrees; hops carry the screen they showed.
        exported = [await (await c.get("/metrics")).text() for c in clients]
        timed_out = sum(
            float(line.rsplit(" ", 1)[1]) for body in exported for line in body.splitlines()
            if line.startswith('ussd_funnel_total{event="timed_out"')
        )
        assert timed_out == 2
        assert any('ussd_hops_total{channel="json",outcome="continue",screen="buy:list"} 1.0' in body for body in exported)

    async def test_a_later_hop_on_another_instance_after_the_first_deadline_is_not_a_timeout(
        self, redis_url: str, aiohttp_client  # type: ignore[no-untyped-def]
    ) -> None:
        # The first instance's deadline passes while the dialogue goes on elsewhere:
        # its check finds a newer record and counts nothing.
        first = create_app(make_settings(redis_url, funnels={"timeout_s": 1.0, "flush_s": 0.2}))
        second = create_app(make_settings(redis_url, funnels={"timeout_s": 30.0, "flush_s": 0.2}))
        one, two = await aiohttp_client(first), await aiohttp_client(second)
        phone = Phone(one, "json", msisdn="84902220004")
        await phone.dial()
        phone.client = two
        await phone.send("2")
        counts = await _settled(redis_url, first)  # the first instance judged its entry
        assert _flat(counts, "timed_out") == {}
        assert second[GATEWAY].dispatcher.funnel.pending == 1


    async def test_a_released_dialogue_is_dropped_where_it_stood_once(self, redis_url: str, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        app = create_app(make_settings(redis_url, funnels=FAST))
        phone = Phone(await aiohttp_client(app), "json", msisdn="84902220005")
        await phone.dial()
        await phone.send("2")
        assert (await phone.abort()).end  # the network releases it on buy:start
        counts = await _settled(redis_url, app)
        assert counts["buy"]["start"] == {"reached": 1, "ended": 0, "timed_out": 1}


class TestBounds:
    async def test_screens_no_compiled_menu_holds_are_not_counted(self, redis_url: str) -> None:
        from ussd_gateway.app.wiring import build_gateway
        from ussd_gateway.sessions.record import SessionRecord

        # The gateway's parts without the web app: nothing to stop but its connections.
        gateway = build_gateway(make_settings(redis_url, funnels=FAST))
        try:
            funnel = gateway.dispatcher.funnel
            for menu, screen in (("buy", "no-such-screen"), ("no-such-menu", "home"), ("buy", "list")):
                funnel.saved("84902220009", SessionRecord("s", "84902220009", "*090#", menu, screen, "vi"))
            body = gateway.metrics.exposition().decode()
        finally:
            await gateway.close()
        assert "no-such" not in body and funnel.pending == 1
        assert 'ussd_funnel_total{event="reached",screen="buy:list"} 1.0' in body

    def test_memory_sessions_count_no_funnel(self) -> None:
        app = create_app(make_settings(""))
        assert app[GATEWAY].dispatcher.funnel is None


@pytest.mark.parametrize(
    ("since", "start", "end", "span_s"),
    [("1h", None, None, 3600), ("", None, None, 3600), ("7d", None, None, 7 * 86_400), ("", "2026-12-01T00:00", "2026-12-01T06:00", 6 * 3600)],
)
def test_windows(since: str, start: str | None, end: str | None, span_s: int) -> None:
    from datetime import datetime, timezone

    begin, stop = window(since, start, end, datetime(2026, 12, 2, tzinfo=timezone.utc))
    assert (stop - begin).total_seconds() == span_s
