"""docs/grafana-dashboard.json charts what the server exports: every metric its
queries name is on a running server's /metrics (`serve --workers 2` on Redis, bound
to the SMSC simulator, after a few dialogues and SMS)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiohttp
from processes import Instance

from ussd_gateway.testkit.smsc import SmscSimulator

PROJECT = Path(__file__).resolve().parents[1]
DASHBOARD = PROJECT / "docs" / "grafana-dashboard.json"
PANELS_WANTED = {"hops", "latency", "dialogues", "busy", "smpp binds", "smpp traffic", "sms dropped", "worker restarts", "funnel", "drop-off", "slowest screens"}


def queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b((?:ussd|smpp)_[a-z_]+)\b", expr))


def test_the_dashboard_has_the_panels_operators_look_for() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    titles = " | ".join(panel["title"].lower() for panel in dashboard["panels"])
    assert all(word in titles for word in PANELS_WANTED), titles
    assert any("histogram_quantile(0.99" in expr and "ussd_hop_seconds_bucket" in expr for expr in queries())
    assert any("by (screen)" in expr and 'event="timed_out"' in expr for expr in queries())  # the funnel's drop-off


async def test_every_metric_the_dashboard_uses_is_exported(redis_url: str, tmp_path: Path) -> None:
    smsc = SmscSimulator(port=0)
    await smsc.start()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[sessions]\nredis_url = "{redis_url}"\n[limits]\nmsisdn_sessions_per_minute = 2\n'
        f'[[smpp.binds]]\nname = "smsc1"\npassword = "secret"\nport = {smsc.port}\nshort_codes = ["9237", "999"]\n',
        encoding="utf-8",
    )
    instance = Instance(config, "--workers", "2")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        try:
            await instance.start(session)
            await smsc.wait_bound(timeout=20, count=2)

            async def hop(session_id: str, msisdn: str, seq: int = 0, value: str = "", code: str = "*090#") -> dict:  # type: ignore[type-arg]
                body = {"session_id": session_id, "msisdn": msisdn, "service_code": code, "seq": seq}
                body.update({"event": "continue", "input": value} if seq else {"event": "begin"})
                async with session.post(instance.url + "/ussd", json=body) as response:
                    return await response.json()  # type: ignore[no-any-return]

            assert (await hop("d-1", "84901234567", code="*101#"))["end"]  # started, ended
            await hop("d-2", "84901234567")
            assert "thao tac qua nhanh" in (await hop("d-3", "84901234567"))["text"]  # over 2 dialogues a minute
            await hop("d-4", "84909999999")
            await hop("d-5", "84909999999")  # the first one dropped: timed out
            for seq, value in enumerate(("2", "1", "1", "1"), start=1):  # buy D15: a confirmation SMS goes out
                reply = await hop("d-5", "84909999999", seq, value)
            assert "Dang ky thanh cong" in reply["text"]
            assert "D15" in (await smsc.next_mt("84909999999", timeout=10)).text
            await smsc.send_mo("84909999999", "9237", "DIEM")  # an MO SMS and its reply
            await smsc.next_mt("84909999999", timeout=5)
            async with session.get(instance.url + "/metrics") as response:
                exported = await response.text()
        finally:
            await instance.stop()
            await smsc.stop()
    names = {line.split("{")[0].split(" ")[0] for line in exported.splitlines() if line and not line.startswith("#")}
    used = set().union(*(metric_names(expr) for expr in queries()))
    assert used, "the dashboard names no metric"
    missing = sorted(used - names)
    assert not missing, f"the dashboard queries metrics the server does not export: {missing}"
