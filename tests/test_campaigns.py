"""Care campaigns end to end: a real Redis, the gateway bound to the SMSC simulator,
campaigns created and started over the admin HTTP API, SMS counted where the SMSC took them."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from helpers import make_settings

from ussd_gateway.app.config import SmppSettings
from ussd_gateway.app.server import GATEWAY, create_app
from ussd_gateway.app.wiring import add_campaigns, build_gateway
from ussd_gateway.channels.smpp.config import BindSettings
from ussd_gateway.testkit.redis_server import RedisServer
from ussd_gateway.testkit.smsc import SmscSimulator

ZONE = ZoneInfo("Asia/Ho_Chi_Minh")


class Clock:
    """Unix time the test sets (quiet hours, caps); starts at 10:00 in Ho Chi Minh City."""

    def __init__(self) -> None:
        self.now = datetime(2025, 6, 2, 10, 0, tzinfo=ZONE).timestamp()

    def __call__(self) -> float:
        return self.now

    def set_local(self, day: int, hour: int, minute: int = 0, second: int = 0) -> None:
        self.now = datetime(2025, 6, day, hour, minute, second, tzinfo=ZONE).timestamp()


@dataclasses.dataclass
class Rig:
    smsc: SmscSimulator
    client: TestClient
    clock: Clock
    redis_url: str

    @property
    def gateway(self) -> Any:
        return self.client.server.app[GATEWAY]

    async def create(self, **spec: Any) -> dict[str, Any]:
        response = await self.client.post("/campaigns", json=spec)
        body = await response.json()
        assert response.status == 201, body
        return body

    async def act(self, campaign_id: str, action: str) -> Any:
        response = await self.client.post(f"/campaigns/{campaign_id}/{action}")
        assert response.status == 200, await response.text()
        return await response.json()

    async def status(self, campaign_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/campaigns/{campaign_id}")
        return await response.json()

    async def wait_for(self, campaign_id: str, check: Any, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = await self.status(campaign_id)
            if check(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"campaign never reached the expected state: {status}")
            await asyncio.sleep(0.05)

    def mts(self) -> list[str]:
        """The numbers every accepted MT SMS went to (duplicates included)."""
        return [str(p.fields["destination_addr"]) for p in self.smsc.accepted_submits if "ussd_service_op" not in p.fields]


async def make_rig(
    aiohttp_client: Any, redis_url: str, *, max_tps: float = 0.0, campaigns: dict[str, Any] | None = None,
    smsc: SmscSimulator | None = None, clock: Clock | None = None,
) -> Rig:
    if smsc is None:
        smsc = SmscSimulator(port=0, enquire_link_s=None)
        await smsc.start()
    bind = BindSettings(
        name="sim", password="secret", port=smsc.port, short_codes=("9237", "999", "9090"), window=50,
        response_timeout_s=5.0, reconnect_min_s=0.05, reconnect_max_s=0.5, max_tps=max_tps,
    )
    settings = make_settings(redis_url, campaigns={"poll_s": 0.1, **(campaigns or {})}, http={"max_body_bytes": 1_000_000})
    settings = dataclasses.replace(settings, smpp=SmppSettings(binds=(bind,)))
    clock = clock or Clock()
    gateway = build_gateway(settings)
    add_campaigns(gateway, clock=clock)
    client = await aiohttp_client(create_app(settings, gateway=gateway))
    await smsc.wait_bound(timeout=5)
    return Rig(smsc, client, clock, redis_url)


@pytest.fixture
async def rig(aiohttp_client: Any, redis_url: str) -> AsyncIterator[Rig]:
    made = await make_rig(aiohttp_client, redis_url)
    try:
        yield made
    finally:
        await made.client.close()
        await made.smsc.stop()


def csv_of(count: int, first: int = 84970000000) -> str:
    return "msisdn,name\n" + "".join(f"{first + i},Khach {i}\n" for i in range(count))


TEXTS = {"vi": "Chao {name}, cam on quy khach.", "vi_dau": "Chào {name}, cảm ơn quý khách.", "en": "Hello {name}, thank you."}


async def test_ten_thousand_subscribers_at_the_bind_cap(aiohttp_client: Any, redis_url: str) -> None:
    """10,000 SMS through a bind capped at max_tps: each subscriber gets exactly one, and
    the rate the SMSC sees stays within 10% of the cap."""
    cap = 800  # parts a second: below what a shared 2-core test machine sustains uncapped (~1,600)
    rig = await make_rig(aiohttp_client, redis_url, max_tps=cap, campaigns={"cap_per_subscriber": 0})
    try:
        made = await rig.create(name="Tri an 10k", texts=TEXTS, sender="9090", csv=csv_of(10_000))
        assert made["rows"] == 10_000
        await rig.act(made["id"], "start")
        status = await rig.wait_for(made["id"], lambda s: s["status"] == "done" and s["sent"] == 10_000, timeout=90)
        times = sorted(entry.at for entry in rig.smsc.pdus if entry.command == "submit_sm" and entry.direction == "in")
        # The rate over the run, the first and last tenth of a second (the bucket's burst) aside.
        steady = [t for t in times if times[0] + 0.1 <= t]
        rate = (len(steady) - 1) / (steady[-1] - steady[0])
        assert abs(rate - cap) <= cap * 0.10, rate
        mts = rig.mts()
        assert len(mts) == 10_000 and len(set(mts)) == 10_000
        assert status["status"] == "done" and status["queued"] == 10_000
    finally:
        await rig.client.close()
        await rig.smsc.stop()


async def test_a_restart_mid_campaign_sends_nobody_twice_and_leaves_nobody_out(aiohttp_client: Any, redis_url: str) -> None:
    """The server stops half-way through; a new one picks the campaign up where it
    stopped: every subscriber of the CSV gets exactly one SMS."""
    # Paced slowly enough (10 s for all) that the stop surely lands mid-campaign even
    # on a busy machine.
    first = await make_rig(aiohttp_client, redis_url, max_tps=200)
    made = await first.create(name="Restart", texts=TEXTS, csv=csv_of(2000))
    await first.act(made["id"], "start")
    await first.wait_for(made["id"], lambda s: s["sent"] >= 300)
    await first.client.close()  # stops the runner and the channel mid-campaign
    second = await make_rig(aiohttp_client, redis_url, max_tps=400, smsc=first.smsc)
    try:
        before = len(second.mts())
        assert 0 < before < 2000
        status = await second.wait_for(made["id"], lambda s: s["status"] == "done" and s["sent"] == 2000, timeout=60)
        await asyncio.sleep(0.3)
        mts = second.mts()
        assert sorted(mts) == sorted(str(84970000000 + i) for i in range(2000))
        assert status["queued"] == 2000
    finally:
        await second.client.close()
        await second.smsc.stop()


async def test_receipts_are_matched_to_every_sms(rig: Rig) -> None:
    """The SMSC sends a receipt for every SMS (some undelivered, some expired): each SMS's
    state follows its own receipt and the campaign counts them."""
    failing = {str(84970000000 + i) for i in range(0, 300, 7)}
    expiring = {str(84970000000 + i) for i in range(3, 300, 50)} - failing
    rig.smsc.auto_receipts = lambda to: "UNDELIV" if to in failing else "EXPIRED" if to in expiring else "DELIVRD"
    made = await rig.create(name="Receipts", texts=TEXTS, csv=csv_of(300))
    await rig.act(made["id"], "start")
    status = await rig.wait_for(made["id"], lambda s: s["delivered"] + s["failed"] + s["expired"] == 300)
    assert (status["sent"], status["delivered"], status["failed"], status["expired"]) == (
        300, 300 - len(failing) - len(expiring), len(failing), len(expiring))
    from ussd_gateway.campaigns.runner import campaign_sms_id

    one_failed = await (await rig.client.get(f"/sms/{campaign_sms_id(made['id'], sorted(failing)[0])}")).json()
    assert one_failed["state"] == "failed" and one_failed["receipt"] == "UNDELIV" and one_failed["message_id"]


async def test_quiet_hours_hold_the_night_and_resume_in_the_morning(aiohttp_client: Any, redis_url: str) -> None:
    """Started at 22:00 nothing goes out; SMS still queued when 21:00 strikes are held;
    at 08:00 everyone gets theirs, once."""
    rig = await make_rig(aiohttp_client, redis_url, max_tps=20)
    try:
        rig.clock.set_local(2, 22, 0)
        made = await rig.create(name="Night", texts=TEXTS, csv=csv_of(60))
        await rig.act(made["id"], "start")
        status = await rig.wait_for(made["id"], lambda s: (s["note"] or "").startswith("quiet hours"))
        await asyncio.sleep(0.5)
        assert rig.mts() == [] and "08:00" in status["note"]
        rig.clock.set_local(3, 20, 59, 58)  # the next evening, two seconds before quiet hours
        await rig.wait_for(made["id"], lambda s: s["sent"] >= 5)
        rig.clock.set_local(3, 21, 0, 5)
        status = await rig.wait_for(made["id"], lambda s: s["held"] > 0 and s["sent"] + s["held"] >= 60)
        sent_evening = len(rig.mts())
        await asyncio.sleep(0.5)
        assert len(rig.mts()) == sent_evening < 60
        rig.clock.set_local(4, 8, 0, 1)
        await rig.wait_for(made["id"], lambda s: s["sent"] == 60, timeout=30)
        assert sorted(rig.mts()) == sorted(str(84970000000 + i) for i in range(60))
    finally:
        await rig.client.close()
        await rig.smsc.stop()


async def test_frequency_cap_and_opt_out_hold_across_campaigns(rig: Rig) -> None:
    """At most 3 care SMS per subscriber per 7 days across campaigns; `TC` to 9090 stops
    every later campaign, `DK CSKH` starts them again."""
    opted = "84970000001"
    await rig.smsc.send_mo(opted, "9090", "TU CHOI")
    reply = await rig.smsc.next_mt(opted, timeout=5)
    assert "tu choi" in reply.text
    for number in range(4):
        made = await rig.create(name=f"Cap {number}", texts=TEXTS, csv=csv_of(3))
        await rig.act(made["id"], "start")
        status = await rig.wait_for(made["id"], lambda s: s["status"] == "done" and s["sent"] + s["capped"] + s["opted_out"] == 3)
        assert status["opted_out"] == 1
        assert (status["sent"], status["capped"]) == ((2, 0) if number < 3 else (0, 2))
    rig.clock.now += 8 * 86_400  # a week later the cap has room again
    await rig.smsc.send_mo(opted, "9090", "DK CSKH")
    await rig.smsc.next_mt(opted, timeout=5)
    made = await rig.create(name="Next week", texts=TEXTS, csv=csv_of(3))
    await rig.act(made["id"], "start")
    status = await rig.wait_for(made["id"], lambda s: s["status"] == "done" and s["sent"] == 3)
    assert status["opted_out"] == status["capped"] == 0


async def test_send_api_is_idempotent_and_tracks_each_sms(rig: Rig) -> None:
    """POST /sms/send twice with one key: one SMS each, the same ids; GET /sms/{id}
    follows it to delivered."""
    rig.smsc.auto_receipts = lambda to: "DELIVRD"
    body = {"messages": [{"to": "0901234567", "text": "Ma OTP 1234"}, {"to": "0909999999", "text": "Xin chao", "from": "999"}]}
    first = await rig.client.post("/sms/send", json=body, headers={"Idempotency-Key": "order-77"})
    again = await rig.client.post("/sms/send", json=body, headers={"Idempotency-Key": "order-77"})
    ids = (await first.json())["ids"]
    assert first.status == 202 and again.status == 200 and (await again.json())["ids"] == ids
    other = await rig.client.post("/sms/send", json={**body, "messages": body["messages"][:1]}, headers={"Idempotency-Key": "order-77"})
    assert other.status == 400
    for sms_id in ids:
        deadline = time.monotonic() + 10
        while (found := await (await rig.client.get(f"/sms/{sms_id}")).json())["state"] != "delivered":
            assert time.monotonic() < deadline, found
            await asyncio.sleep(0.05)
        assert found["receipt"] == "DELIVRD"
    await asyncio.sleep(0.3)
    assert sorted(rig.mts()) == ["84901234567", "84909999999"]
    assert (await rig.client.get("/sms/nope")).status == 404


async def test_a_redis_pause_as_the_submit_resp_arrives_leaves_no_sms_queued_or_in_flight(rig: Rig) -> None:
    """Redis refuses writes for longer than the store's timeout just as the SMSC answers a
    submit_sm: the SMS still ends `sent` (then `delivered`), off the in-flight list, sent once."""
    rig.smsc.auto_receipts = lambda to: "DELIVRD"
    rig.smsc.delay_submit_resp(0.4, count=1)
    redis = aioredis.Redis.from_url(rig.redis_url)
    try:
        response = await rig.client.post("/sms/send", json={"to": "0901234567", "text": "Ma OTP 1234"})
        (sms_id,) = (await response.json())["ids"]
        deadline = time.monotonic() + 5
        while not await redis.llen("ussd:{sms}:inflight"):  # claimed: its submit_sm is on the wire
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        await redis.execute_command("CLIENT", "PAUSE", 1200, "WRITE")
        deadline = time.monotonic() + 10
        while (found := await (await rig.client.get(f"/sms/{sms_id}")).json())["state"] != "delivered":
            assert time.monotonic() < deadline, found
            await asyncio.sleep(0.05)
        assert await redis.llen("ussd:{sms}:inflight") == 0
        assert rig.mts() == ["84901234567"]
    finally:
        await redis.aclose()
