"""The gateway bound to the SMSC simulator over real TCP: USSD dialogues, keyword SMS,
long SMS, receipts and every injected fault, with nothing lost or duplicated."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from helpers import make_settings

from ussd_gateway.channels.smpp.config import BindSettings
from ussd_gateway.testkit.smsc import SmscSimulator
from ussd_gateway.testkit.redis_server import RedisServer
from ussd_gateway.app.server import GATEWAY, SMPP, create_app

ALICE = "84901234567"
POOR = "84901111111"
GOLD = "84909999999"


@dataclass
class Rig:
    smsc: SmscSimulator
    client: TestClient

    @property
    def gateway(self) -> Any:
        return self.client.server.app[GATEWAY]

    @property
    def channel(self) -> Any:
        return self.client.server.app[SMPP]

    async def dial(self, msisdn: str = ALICE, code: str = "*090#", *, fresh: bool = True) -> tuple[Any, Any]:
        """Dial a code; `fresh` declines a resume offer left by an earlier test step."""
        dialogue = await self.smsc.start_ussd(msisdn, code)
        screen = await dialogue.next_screen(timeout=5)
        if fresh and "1.Tiep tuc" in screen.text:
            await dialogue.answer("2")
            screen = await dialogue.next_screen(timeout=5)
        return dialogue, screen

    async def walk(self, dialogue: Any, *answers: str) -> Any:
        screen = None
        for answer in answers:
            await dialogue.answer(answer)
            screen = await dialogue.next_screen(timeout=5)
        return screen

    async def balance(self, msisdn: str = ALICE) -> str:
        _dialogue, screen = await self.dial(msisdn, "*101#")
        assert screen.end
        return screen.text


def bind_for(port: int, **changes: Any) -> BindSettings:
    values: dict[str, Any] = {
        "name": "smsc-test",
        "password": "secret",
        "port": port,
        "short_codes": ("9237", "999"),
        "enquire_link_s": 5.0,
        "response_timeout_s": 2.0,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.5,
    }
    values.update(changes)
    return BindSettings(**values)


async def make_rig(aiohttp_client: Any, redis_url: str = "", **bind_changes: Any) -> Rig:
    smsc = SmscSimulator(port=0)
    await smsc.start()
    settings = make_settings(redis_url)
    from ussd_gateway.app.config import SmppSettings
    import dataclasses

    settings = dataclasses.replace(settings, smpp=SmppSettings(binds=(bind_for(smsc.port, **bind_changes),)))
    client = await aiohttp_client(create_app(settings))
    await smsc.wait_bound(timeout=5)
    return Rig(smsc, client)


@pytest.fixture(params=["memory", "redis"])
async def rig(request: pytest.FixtureRequest, aiohttp_client: Any, redis_server: RedisServer) -> AsyncIterator[Rig]:
    """A gateway with one transceiver bind to a fresh SMSC simulator, on each store."""
    url = ""
    if request.param == "redis":
        redis_server.start()
        client = aioredis.Redis.from_url(redis_server.url)
        await client.flushdb()
        await client.aclose()
        url = redis_server.url
    made = await make_rig(aiohttp_client, url)
    try:
        yield made
    finally:
        await made.client.close()
        await made.smsc.stop()


class TestUssdOverSmpp:
    async def test_main_menu_and_a_purchase(self, rig: Rig) -> None:
        """*090# over SMPP: screens arrive as submit_sm op 2, the END as op 17; one debit."""
        dialogue, screen = await rig.dial()
        assert not screen.end and "1. Tra cuu tai khoan" in screen.text
        assert screen.pdu.fields["ussd_service_op"] == 2
        done = await rig.walk(dialogue, "2", "1", "1", "1")
        assert done.end and "185.000d" in done.text
        assert done.pdu.fields["ussd_service_op"] == 17
        assert done.pdu.fields["its_session_info"] & 0x01 == 1
        assert "185.000d" in await rig.balance()

    async def test_every_service_answers(self, rig: Rig) -> None:
        """Account, bundle, KNDL, VAS, feedback and language all work over SMPP."""
        dialogue, _ = await rig.dial()
        assert "TKC: 200.000d" in (await rig.walk(dialogue, "1")).text
        dialogue, _ = await rig.dial()
        screen = await rig.walk(dialogue, "3", "3", "2", "2", "1", "Goi SMPP")
        assert "Goi SMPP" in screen.text and "1. Mua" in screen.text
        dialogue, _ = await rig.dial(GOLD)
        assert "Vang" in (await rig.walk(dialogue, "4")).text
        dialogue, _ = await rig.dial()
        assert "FunRing" in (await rig.walk(dialogue, "5")).text
        dialogue, _ = await rig.dial()
        thanks = await rig.walk(dialogue, "6", "1", "Rat tot")
        assert thanks.end and "Cam on" in thanks.text
        dialogue, _ = await rig.dial()
        english = await rig.walk(dialogue, "7", "3")
        assert english.end and "English" in english.text
        _d, screen = await rig.dial()
        assert "My account" in screen.text

    async def test_diacritics_screen_goes_out_as_ucs2(self, rig: Rig) -> None:
        """A vi_dau screen needs UCS-2: data_coding 8, and reads back intact."""
        dialogue, _ = await rig.dial()
        await rig.walk(dialogue, "7", "2")
        _d, screen = await rig.dial()
        assert "Tra cứu tài khoản" in screen.text
        assert screen.pdu.fields["data_coding"] == 8

    async def test_resent_deliver_is_answered_once(self, rig: Rig) -> None:
        """The SMSC resends the purchase deliver_sm: one screen, one debit."""
        dialogue, _ = await rig.dial()
        await rig.walk(dialogue, "2", "1", "1")
        rig.smsc.resend_next_deliver()
        await dialogue.answer("1")
        done = await dialogue.next_screen(timeout=5)
        assert done.end and "185.000d" in done.text
        await asyncio.sleep(0.3)
        submits = [p for p in rig.smsc.pdus if p.direction == "in" and p.command == "submit_sm"]
        end_screens = [p for p in submits if p.fields.get("ussd_service_op") == 17]
        assert len(end_screens) == 1
        # The purchase's confirmation SMS went out through the bind too, once.
        confirmations = [p for p in submits if "ussd_service_op" not in p.fields and b"D15" in p.fields.get("short_message", b"")]
        assert len(confirmations) == 1
        assert "185.000d" in await rig.balance()

    async def test_abort_releases_and_resume_is_offered(self, rig: Rig) -> None:
        """A released dialogue gets no screen; redialling offers to continue."""
        dialogue, _ = await rig.dial()
        await rig.walk(dialogue, "2", "1")
        await dialogue.abort()
        await asyncio.sleep(0.2)
        _d, screen = await rig.dial(fresh=False)
        assert "1.Tiep tuc" in screen.text

    async def test_dialogue_may_continue_on_another_gateway(self, aiohttp_client: Any, redis_url: str) -> None:
        """Two gateway processes share Redis: a dialogue begun on one continues on the other."""
        first = await make_rig(aiohttp_client, redis_url)
        second_client = await aiohttp_client(create_app(make_settings(redis_url)))
        try:
            dialogue, _ = await first.dial()
            await first.walk(dialogue, "2")
            from ussd_gateway.core.hop import Hop, HopKind

            from ussd_gateway.channels.smpp.ussd import session_id as smpp_session_id

            session_id = smpp_session_id(first.channel.binds[0], {"its_session_info": dialogue.session_info}, ALICE)
            reply = await second_client.server.app[GATEWAY].dispatcher.handle(
                Hop("smpp", session_id, ALICE, "*090#", HopKind.CONTINUE, inputs=("1",), hop_key="u:other")
            )
            assert "Goi Data:" in reply.text
        finally:
            await first.smsc.stop()


class TestKeywordSms:
    async def test_dk_then_xn_by_sms(self, rig: Rig) -> None:
        """DK to 9237 asks for XN; XN registers; replies come from 9237."""
        await rig.smsc.send_mo(ALICE, "9237", " dk ")
        reply = await rig.smsc.next_mt(ALICE, timeout=5)
        assert reply.sender == "9237" and "Soan XN gui 9237" in reply.text
        await rig.smsc.send_mo(ALICE, "9237", "XN")
        assert "hoi vien KNDL hang Than thiet" in (await rig.smsc.next_mt(ALICE, timeout=5)).text

    async def test_dk_by_sms_then_confirm_by_ussd(self, rig: Rig) -> None:
        """The pending registration is shared: start by SMS, finish on *090*4#."""
        await rig.smsc.send_mo(ALICE, "9237", "Đk")
        await rig.smsc.next_mt(ALICE, timeout=5)
        dialogue, _ = await rig.dial()
        pending = await rig.walk(dialogue, "4")
        assert "cho xac nhan" in pending.text
        assert "hoi vien KNDL" in (await rig.walk(dialogue, "1")).text

    async def test_xn_without_dk(self, rig: Rig) -> None:
        """XN with nothing pending replies why and what to do."""
        await rig.smsc.send_mo(POOR, "9237", "xn")
        assert "Soan DK gui 9237" in (await rig.smsc.next_mt(POOR, timeout=5)).text

    async def test_package_code_to_999_debits_once_even_when_resent(self, rig: Rig) -> None:
        """C90N to 999 registers it; the SMSC resending the MO charges nothing more."""
        rig.smsc.resend_next_deliver()
        await rig.smsc.send_mo(ALICE, "999", "c90n")
        reply = await rig.smsc.next_mt(ALICE, timeout=5)
        assert "C90N" in reply.text and "110.000d" in reply.text
        with pytest.raises(Exception):
            await rig.smsc.next_mt(ALICE, timeout=0.5)
        assert "110.000d" in await rig.balance()

    async def test_long_reply_in_parts_gsm7_and_ucs2(self, rig: Rig) -> None:
        """The 999 code list is longer than one SMS: concatenated parts, reassembled."""
        await rig.smsc.send_mo(ALICE, "999", "???")
        reply = await rig.smsc.next_mt(ALICE, timeout=5)
        assert "Ma goi ??? khong dung" in reply.text and "21G" in reply.text
        assert reply.parts >= 1
        dialogue, _ = await rig.dial()
        await rig.walk(dialogue, "7", "2")
        await rig.smsc.send_mo(ALICE, "999", "xyz")  # not "???" again: that would be a resend
        long_ucs2 = await rig.smsc.next_mt(ALICE, timeout=5)
        assert "Mã gói XYZ không đúng" in long_ucs2.text and long_ucs2.parts >= 2
        assert all(p.fields["data_coding"] == 8 and p.fields["esm_class"] & 0x40 for p in long_ucs2.pdus)

    async def test_receipt_is_not_a_keyword(self, rig: Rig) -> None:
        """A delivery receipt is counted, answered, and never replied to."""
        await rig.smsc.send_receipt(ALICE, "9237", "abc123")
        with pytest.raises(Exception):
            await rig.smsc.next_mt(ALICE, timeout=0.5)
        body = await (await rig.client.get("/metrics")).text()
        assert 'smpp_delivery_receipts_total{bind="smsc-test"} 1.0' in body


class TestFaults:
    async def test_link_drop_reconnects_and_queued_sms_goes_out(self, rig: Rig) -> None:
        """The link drops; the bind comes back by itself; the reply is delivered."""
        await rig.smsc.drop_links()
        await rig.smsc.wait_bound(timeout=5)
        await rig.smsc.send_mo(ALICE, "9237", "DIEM")
        assert "1.250 diem" in (await rig.smsc.next_mt(ALICE, timeout=5)).text

    async def test_throttled_submit_is_retried(self, rig: Rig) -> None:
        """ESME_RTHROTTLED twice, then accepted: the SMS arrives once."""
        rig.smsc.throttle_next(2)
        await rig.smsc.send_mo(ALICE, "9237", "DIEM")
        assert "1.250 diem" in (await rig.smsc.next_mt(ALICE, timeout=5)).text
        with pytest.raises(Exception):
            await rig.smsc.next_mt(ALICE, timeout=0.5)

    async def test_sms_waits_in_the_queue_while_the_bind_is_down(self, aiohttp_client: Any) -> None:
        """MO handled while no bind can send: the reply waits, then goes out on reconnect."""
        made = await make_rig(aiohttp_client)
        try:
            gateway = made.gateway
            from ussd_gateway.sessions.store import OutboundSms

            await made.smsc.stop()
            await gateway.store.enqueue_sms(OutboundSms(to=ALICE, sender="9237", text="Xin chao", dedupe_key="q1"))
            await asyncio.sleep(0.3)
            assert [s.text for s in await gateway.store.outbound_sms()] == ["Xin chao"]
            smsc = SmscSimulator(port=made.smsc.port)
            await smsc.start()
            try:
                await smsc.wait_bound(timeout=5)
                assert (await smsc.next_mt(ALICE, timeout=5)).text == "Xin chao"
            finally:
                await smsc.stop()
        finally:
            await made.client.close()


class TestBindModesAndOptions:
    @pytest.mark.parametrize(
        "changes",
        [{"mode": "transmitter_receiver"}, {"gsm7_packed": True}, {"long_sms": "payload"}],
        ids=["tx+rx", "gsm7-packed", "message_payload"],
    )
    async def test_dialogue_and_long_sms(self, aiohttp_client: Any, changes: dict[str, Any]) -> None:
        """Two binds (tx + rx), packed GSM-7, or long SMS in message_payload: same screens and replies."""
        smsc = SmscSimulator(port=0, gsm7_packed=changes.get("gsm7_packed", False))
        await smsc.start()
        import dataclasses

        from ussd_gateway.app.config import SmppSettings

        settings = dataclasses.replace(make_settings(), smpp=SmppSettings(binds=(bind_for(smsc.port, **changes),)))
        client = await aiohttp_client(create_app(settings))
        try:
            await smsc.wait_bound(timeout=5, count=2 if changes.get("mode") == "transmitter_receiver" else 1)
            if changes.get("mode") == "transmitter_receiver":
                assert sorted(b.mode for b in smsc.binds) == ["receiver", "transmitter"]
            dialogue = await smsc.start_ussd(ALICE)
            screen = await dialogue.next_screen(timeout=5)
            assert "1. Tra cuu tai khoan" in screen.text
            await smsc.send_mo(ALICE, "999", "nope")
            reply = await smsc.next_mt(ALICE, timeout=5)
            assert "Ma goi NOPE khong dung" in reply.text and "21G" in reply.text
            if changes.get("long_sms") == "payload":
                assert "message_payload" in reply.pdus[0].fields and reply.parts == 1
        finally:
            await client.close()
            await smsc.stop()


class TestDeadlinesAndDurability:
    async def test_screen_past_its_deadline_is_dropped_and_counted(self, aiohttp_client: Any) -> None:
        """The SMSC throttles everything: the screen is dropped at its deadline, counted."""
        from ussd_gateway.channels.smpp.config import UssdDialect

        made = await make_rig(aiohttp_client, ussd=UssdDialect(reply_deadline_s=0.5))
        try:
            made.smsc.throttle_next(1000)
            await made.smsc.start_ussd(ALICE)
            await asyncio.sleep(1.0)
            body = await (await made.client.get("/metrics")).text()
            assert 'smpp_ussd_replies_dropped_total{bind="smsc-test"} 1.0' in body
        finally:
            await made.client.close()
            await made.smsc.stop()

    async def test_slow_submit_resp_still_one_screen_each(self, rig: Rig) -> None:
        """submit_sm_resp delayed 0.3 s: every screen still arrives, once, in order."""
        rig.smsc.delay_submit_resp(0.3, count=3)
        dialogue, screen = await rig.dial()
        assert "Tra cuu tai khoan" in screen.text
        assert "Mua goi cuoc" in (await rig.walk(dialogue, "2")).text
        assert "Goi Data:" in (await rig.walk(dialogue, "1")).text
        screens = [p for p in rig.smsc.pdus if p.direction == "in" and p.command == "submit_sm"]
        assert len(screens) == 3

    async def test_code_not_carried_by_the_bind_gets_a_polite_end(self, aiohttp_client: Any) -> None:
        """A bind limited to *101# answers *090# with the unknown-service END."""
        made = await make_rig(aiohttp_client, service_codes=("*101#",))
        try:
            _d, screen = await made.dial(code="*090#")
            assert screen.end and "Ma dich vu khong dung" in screen.text
            _d, balance = await made.dial(code="*101#")
            assert balance.end and "200.000d" in balance.text
        finally:
            await made.client.close()
            await made.smsc.stop()

    async def test_withheld_response_is_resent_not_lost(self, rig: Rig) -> None:
        """No submit_sm_resp for the reply: it is sent again and arrives once."""
        rig.smsc.withhold_submit_resp(1)
        await rig.smsc.send_mo(GOLD, "9237", "DIEM")
        reply = await rig.smsc.next_mt(GOLD, timeout=8)
        assert "52.000 diem" in reply.text
        with pytest.raises(Exception):
            await rig.smsc.next_mt(GOLD, timeout=0.5)

    async def test_queue_survives_a_gateway_restart(self, aiohttp_client: Any, redis_url: str) -> None:
        """An SMS queued while no bind was up is sent by the next gateway process."""
        from ussd_gateway.sessions.store import OutboundSms

        made = await make_rig(aiohttp_client, redis_url)
        port = made.smsc.port
        await made.smsc.stop()
        await made.gateway.store.enqueue_sms(OutboundSms(to=ALICE, sender="999", text="Con cho gui", dedupe_key="restart-1"))
        await made.client.close()  # the gateway stops with the SMS still queued
        smsc = SmscSimulator(port=port)
        await smsc.start()
        try:
            import dataclasses

            from ussd_gateway.app.config import SmppSettings

            settings = dataclasses.replace(make_settings(redis_url), smpp=SmppSettings(binds=(bind_for(port),)))
            client = await aiohttp_client(create_app(settings))
            await smsc.wait_bound(timeout=5)
            assert (await smsc.next_mt(ALICE, timeout=5)).text == "Con cho gui"
            await client.close()
        finally:
            await smsc.stop()


class TestShortcutDialOverSmpp:
    async def test_shortcut_then_continue(self, rig: Rig) -> None:
        """*090*2*1# lands on the data list, and the next answers continue that dialogue."""
        dialogue, screen = await rig.dial(code="*090*2*1#")
        assert "Goi Data:" in screen.text
        detail = await rig.walk(dialogue, "1")
        assert "Goi D15" in detail.text and "Dang ky?" in detail.text


class TestSubscriberLimitsOverSmpp:
    async def test_mo_sms_over_the_rate_is_accepted_and_not_answered(self, aiohttp_client: Any) -> None:
        """A subscriber (or a machine) texting faster than `msisdn_sms_per_minute` gets
        no more replies: no loop with an automated sender, and the SMSC does not resend."""
        import dataclasses

        from ussd_gateway.app.config import SmppSettings

        smsc = SmscSimulator(port=0)
        await smsc.start()
        settings = make_settings(limits={"msisdn_sms_per_minute": 3})
        settings = dataclasses.replace(settings, smpp=SmppSettings(binds=(bind_for(smsc.port),)))
        client = await aiohttp_client(create_app(settings))
        try:
            await smsc.wait_bound(timeout=5)
            for text in ("DIEM", "XN", "DIEM"):
                await smsc.send_mo(POOR, "9237", text)
                await smsc.next_mt(POOR, timeout=5)
            await smsc.send_mo(POOR, "9237", "XN")
            with pytest.raises(TimeoutError):
                await smsc.next_mt(POOR, timeout=1)
            assert 'ussd_limited_total{limit="sms"} 1.0' in (await (await client.get("/metrics")).text())
        finally:
            await client.close()
            await smsc.stop()
