"""Two binds share a campaign: each takes its turn with the SMS of the sender it
carries, each within its own `max_tps` (a second bind used to take none of them)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from helpers import make_settings
from test_campaigns import TEXTS, csv_of

from ussd_gateway.app.config import SmppSettings
from ussd_gateway.app.server import create_app
from ussd_gateway.channels.smpp.config import BindSettings
from ussd_gateway.testkit.smsc import SmscSimulator


async def test_two_binds_take_turns_with_a_campaign(aiohttp_client: Any, redis_url: str) -> None:
    smsc = SmscSimulator(port=0, enquire_link_s=None)
    await smsc.start()
    binds = tuple(
        BindSettings(name=name, password="secret", port=smsc.port, short_codes=("9090",), window=20, response_timeout_s=5.0,
                     reconnect_min_s=0.05, reconnect_max_s=0.5, max_tps=100)
        for name in ("b1", "b2")
    )
    settings = make_settings(redis_url, campaigns={"poll_s": 0.1, "quiet_start": "00:00", "quiet_end": "00:00"})
    client = await aiohttp_client(create_app(dataclasses.replace(settings, smpp=SmppSettings(binds=binds))))
    try:
        deadline = time.monotonic() + 10
        while len({e.bind_id for e in smsc.pdus if e.command == "bind_transceiver"}) < 2:
            assert time.monotonic() < deadline, "both binds up"
            await asyncio.sleep(0.05)
        made = await (await client.post("/campaigns", json={"name": "Hai bind", "texts": TEXTS, "csv": csv_of(300)})).json()
        await client.post(f"/campaigns/{made['id']}/start")
        while (status := await (await client.get(f"/campaigns/{made['id']}")).json())["sent"] < 300:
            assert time.monotonic() < deadline + 20, status
            await asyncio.sleep(0.05)
        per_bind: dict[int, int] = {}
        for entry in smsc.pdus:
            if entry.command == "submit_sm" and entry.direction == "in":
                per_bind[entry.bind_id] = per_bind.get(entry.bind_id, 0) + 1
        assert len(per_bind) == 2 and sum(per_bind.values()) == 300
        assert all(120 <= count <= 180 for count in per_bind.values()), per_bind  # in turn: about half each
    finally:
        await client.close()
        await smsc.stop()
