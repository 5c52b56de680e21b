"""What follows a campaign: purchases attributed to it (USSD and keyword, once each,
within its window, last touch), and its SMS counted per hour of the operator's clock
(JSON and SVG over the admin API). A real Redis, the gateway bound to the SMSC simulator."""

from __future__ import annotations

import re
from typing import Any

import pytest
from helpers import Phone
from test_campaigns import TEXTS, Rig, rig  # noqa: F401  (rig: the fixture)

from ussd_gateway.campaigns.chart import text_chart
from ussd_gateway.campaigns.runner import campaign_sms_id

A, B, C, D = "84901234561", "84901234562", "84901234563", "84901234564"


async def sent_campaign(rig: Rig, name: str, numbers: list[str], **spec: Any) -> str:
    made = await rig.create(name=name, texts=TEXTS, csv="msisdn,name\n" + "".join(f"{n},Khach\n" for n in numbers), **spec)
    await rig.act(made["id"], "start")
    await rig.wait_for(made["id"], lambda s: s["status"] == "done" and s["sent"] == len(numbers))
    return str(made["id"])


async def reply_to(rig: Rig, msisdn: str, about: str, timeout: float = 5.0) -> str:
    """The next MT to `msisdn` that names `about` (the campaign's own SMS, and earlier
    confirmations, passed over)."""
    while about not in (text := (await rig.smsc.next_mt(msisdn, timeout=timeout)).text):
        pass
    return text


async def buy_d15_on_ussd(rig: Rig, msisdn: str, *, replay: bool = False) -> None:
    phone = Phone(rig.client, "json", msisdn=msisdn)
    await phone.dial("*090#")
    screen = await phone.walk("2", "1", "1", "1")
    assert screen.end and "thanh cong goi D15" in screen.text and "85.000d" in screen.text, screen.text
    if replay:  # the USSD gateway retries the purchase hop: the backend answers its first result
        again = await phone.repeat()
        assert again.text == screen.text


async def test_purchases_after_the_sms_count_once_each_for_the_campaign(rig: Rig) -> None:
    """A buys on USSD (the hop replayed), B by keyword SMS (the MO resent): two
    conversions and their prices. D got no SMS; C buys after the window: neither counts."""
    campaign = await sent_campaign(rig, "Goi thang", [A, B, C], follow_up={"code": "*090*4#"})
    await buy_d15_on_ussd(rig, A, replay=True)
    rig.smsc.resend_next_deliver()
    await rig.smsc.send_mo(B, "999", "c90n")
    await reply_to(rig, B, "C90N")
    with pytest.raises(Exception):  # the resent MO bought nothing more
        await reply_to(rig, B, "C90N", timeout=0.5)
    await buy_d15_on_ussd(rig, D)
    status = await rig.status(campaign)
    assert (status["conversions"], status["revenue"], status["follow_up"]) == (2, 15_000 + 90_000, "*090*4#")
    rig.clock.now += 8 * 86_400  # past the 7-day window
    await buy_d15_on_ussd(rig, C)
    status = await rig.status(campaign)
    assert (status["conversions"], status["revenue"]) == (2, 105_000)


async def test_the_last_campaign_counts_and_its_rules_apply(rig: Rig) -> None:
    """A second campaign's SMS replaces the first as the subscriber's last touch; it
    counts only D30 bought by keyword, so a D15 on USSD is nobody's conversion."""
    first = await sent_campaign(rig, "Dau", [A, B])
    second = await sent_campaign(rig, "Sau", [A], follow_up={"packages": ["D30"], "via": ["sms"], "window_days": 2})
    await buy_d15_on_ussd(rig, A)
    await buy_d15_on_ussd(rig, B)
    await rig.smsc.send_mo(A, "999", "D30")
    assert "Da dang ky goi D30" in await reply_to(rig, A, "D30")
    one, two = await rig.status(first), await rig.status(second)
    assert (one["conversions"], one["revenue"]) == (1, 15_000)  # B's D15
    assert (two["conversions"], two["revenue"]) == (1, 30_000)  # A's D30 by SMS, not A's D15


async def test_a_bad_follow_up_is_refused(rig: Rig) -> None:
    response = await rig.client.post("/campaigns", json={"name": "X", "texts": TEXTS, "csv": A, "follow_up": {"via": ["email"]}})
    assert response.status == 400 and "via is ussd and/or sms" in (await response.json())["error"]


async def test_counts_per_hour_stay_in_the_hour_they_happened(rig: Rig) -> None:
    """Sent at 10:xx (Ho Chi Minh City), the receipts at 11:xx: `sent` stays in the 10h
    bar and `delivered`/`failed` go in the 11h one; the SVG draws the same numbers."""
    campaign = await sent_campaign(rig, "Theo gio", [A, B, C])
    rig.clock.set_local(2, 11, 5)
    for number, state in ((A, "DELIVRD"), (B, "DELIVRD"), (C, "UNDELIV")):
        sms = await (await rig.client.get(f"/sms/{campaign_sms_id(campaign, number)}")).json()
        await rig.smsc.send_receipt(number, "9090", sms["message_id"], state)
    await rig.wait_for(campaign, lambda s: s["delivered"] + s["failed"] == 3)
    hourly = await (await rig.client.get(f"/campaigns/{campaign}/hourly")).json()
    assert hourly["timezone"] == "Asia/Ho_Chi_Minh"
    assert hourly["hours"] == [
        {"hour": "2025-06-02T10", "sent": 3, "delivered": 0, "failed": 0, "conversions": 0},
        {"hour": "2025-06-02T11", "sent": 0, "delivered": 2, "failed": 1, "conversions": 0},
    ]
    response = await rig.client.get(f"/campaigns/{campaign}/chart.svg")
    assert response.status == 200 and response.content_type == "image/svg+xml"
    svg = await response.text()
    titles = re.findall(r"<title>([^<]+)</title>", svg)
    assert titles == ["2025-06-02T10 sent: 3", "2025-06-02T10 delivered: 0", "2025-06-02T10 failed: 0",
                      "2025-06-02T11 sent: 0", "2025-06-02T11 delivered: 2", "2025-06-02T11 failed: 1"]
    assert (await rig.client.get("/campaigns/nope/hourly")).status == 404
    assert (await rig.client.get("/campaigns/nope/chart.svg")).status == 404


def test_text_chart_scales_bars_to_the_busiest_hour() -> None:
    chart = text_chart([
        {"hour": "2025-06-02T10", "sent": 40, "delivered": 20, "failed": 0},
        {"hour": "2025-06-02T11", "sent": 10, "delivered": 30, "failed": 1},
    ], width=20)
    lines = chart.splitlines()
    assert lines[0] == "2025-06-02 10h  sent      " + "█" * 20 + " 40"
    assert lines[1].endswith("delivered " + "█" * 10 + " 20")
    assert lines[2].endswith("failed     0")
    assert lines[3].startswith("2025-06-02 11h  sent      " + "█" * 5 + " 10")
    assert text_chart([]) == "(nothing sent yet)"


async def test_hops_that_buy_nothing_touch_no_attribution_key(rig: Rig) -> None:
    """Browsing menus after a campaign SMS writes no attribution record."""
    import redis.asyncio as aioredis

    await sent_campaign(rig, "Chi xem", [A])
    phone = Phone(rig.client, "json", msisdn=A)
    await phone.dial("*090#")
    await phone.walk("1")
    client = aioredis.Redis.from_url(rig.redis_url)
    try:
        keys = sorted(k.decode() for k in await client.keys(f"ussd:{{{A}}}:*"))
        assert f"ussd:{{{A}}}:camp_touch" in keys
        assert not [k for k in keys if ":attr:" in k]
    finally:
        await client.aclose()
