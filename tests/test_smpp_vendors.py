"""USSD and SMS conventions that SMSCs and USSD gateways differ on, against the simulator:
USSD data coding schemes, continuations that do not repeat the code, repeated keywords,
bad source addresses, bind passwords, and no phone number in clear in the logs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog
from test_smpp_e2e import ALICE, Rig, make_rig

from ussd_gateway.channels.smpp import pdu as smpp_pdu

BOB = "84977200001"


def _ussd(msisdn: str, op: int, body: bytes, *, its: int | None = 0x0100, dest: str = "*090", dc: int = 0, **more: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "service_type": "USSD",
        "source_addr_ton": 1,
        "source_addr_npi": 1,
        "source_addr": msisdn,
        "dest_addr_ton": 0,
        "dest_addr_npi": 1,
        "destination_addr": dest,
        "esm_class": 0,
        "data_coding": dc,
        "short_message": body,
        "ussd_service_op": op,
        **more,
    }
    if its is not None:
        fields["its_session_info"] = its
    return fields


def _mo(msisdn: str, short_code: str, text: str, **more: Any) -> dict[str, Any]:
    return {
        "source_addr_ton": 1,
        "source_addr_npi": 1,
        "source_addr": msisdn,
        "dest_addr_ton": 0,
        "dest_addr_npi": 1,
        "destination_addr": short_code,
        "esm_class": 0,
        "data_coding": 0,
        "short_message": text.encode("ascii"),
        **more,
    }


@pytest.fixture
async def rig(aiohttp_client: Any) -> AsyncIterator[Rig]:
    made = await make_rig(aiohttp_client)
    try:
        yield made
    finally:
        await made.client.close()
        await made.smsc.stop()


async def _screens(rig: Rig, msisdn: str, count: int, timeout: float = 5.0) -> list[Any]:
    """The next `count` USSD submit_sm the gateway sent to `msisdn` (orphans: the
    simulator opened no dialogue for raw deliver_sm)."""
    async with asyncio.timeout(timeout):
        while len(found := [s for s in rig.smsc.orphan_screens if s.pdu.fields["destination_addr"] == msisdn]) < count:
            await asyncio.sleep(0.02)
    return found[:count]


class TestUssdDataCoding:
    async def test_dcs_0x0f_dial_reaches_the_menu(self, rig: Rig) -> None:
        """data_coding 0x0F (USSD DCS: GSM 7-bit, language unspecified) is text, not hex."""
        await rig.smsc._send_deliver(_ussd(ALICE, 1, b"*090#", dc=0x0F))
        (screen,) = await _screens(rig, ALICE, 1)
        assert "1. Tra cuu tai khoan" in screen.text

    async def test_dcs_0x0f_answer_is_read_as_text(self, rig: Rig) -> None:
        await rig.smsc._send_deliver(_ussd(ALICE, 1, b"*090#", dc=0x0F))
        await _screens(rig, ALICE, 1)
        await rig.smsc._send_deliver(_ussd(ALICE, 18, b"2", dc=0x0F, its=0x0101))
        _first, screen = await _screens(rig, ALICE, 2)
        assert "Goi Data" in screen.text or "1." in screen.text
        assert "khong dung" not in screen.text


class TestContinuationCode:
    @pytest.mark.parametrize("destination", ["", BOB, "9999"])
    async def test_continue_takes_the_code_of_the_dialogue(self, rig: Rig, destination: str) -> None:
        """op 18 with no code (or another address) in destination_addr continues the
        dialogue that *090# began."""
        await rig.smsc._send_deliver(_ussd(BOB, 1, b"*090#"))
        await _screens(rig, BOB, 1)
        await rig.smsc._send_deliver(_ussd(BOB, 18, b"2", dest=destination, its=0x0101))
        _first, screen = await _screens(rig, BOB, 2)
        assert "khong dung" not in screen.text and "Goi" in screen.text


class TestRepeatedKeywords:
    @pytest.mark.parametrize("words", [("XN", "DK", "XN"), ("DIEM", "KT", "DIEM")])
    async def test_the_same_keyword_again_is_answered(self, rig: Rig, words: tuple[str, ...]) -> None:
        """Without user_message_reference, a keyword sent again after another one is a
        new message, not a resend."""
        for word in words:
            await rig.smsc._send_deliver(_mo(BOB, "9237" if word != "KT" else "999", word))
            await rig.smsc.next_mt(BOB, timeout=5)

    async def test_a_resend_without_reference_is_answered_once(self, rig: Rig) -> None:
        rig.smsc.resend_next_deliver()
        await rig.smsc._send_deliver(_mo(BOB, "9237", "DIEM"))
        await rig.smsc.next_mt(BOB, timeout=5)
        with pytest.raises(TimeoutError):
            await rig.smsc.next_mt(BOB, timeout=0.5)


class TestBadInput:
    async def test_bad_source_address_gets_rinvsrcadr_and_the_link_stays(self, rig: Rig) -> None:
        seq = await rig.smsc._send_deliver(_mo("not-a-number", "9237", "DK"))
        assert await rig.smsc.wait_deliver_resp(seq) == 0x0000000A
        assert smpp_pdu.ESME_RINVSRCADR == 0x0000000A
        await rig.smsc.send_mo(ALICE, "9237", "DIEM")
        assert "diem" in (await rig.smsc.next_mt(ALICE, timeout=5)).text


class TestSecrets:
    def test_a_bind_without_password_is_refused(self) -> None:
        from ussd_gateway.app.config import ConfigError, parse_binds

        with pytest.raises(ConfigError, match="smsc-x.*password"):
            parse_binds([{"name": "smsc-x", "port": 2775}], "test.toml")

    async def test_no_msisdn_in_clear_in_the_logs(self, rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG)
        with structlog.testing.capture_logs() as captured:
            dialogue = await rig.smsc.start_ussd(BOB, "*090#")
            await dialogue.next_screen(timeout=5)
            await dialogue.answer("2")
            await dialogue.next_screen(timeout=5)
            await dialogue.abort()
            await rig.smsc.send_mo(BOB, "9237", "DIEM")
            await rig.smsc.next_mt(BOB, timeout=5)
            await asyncio.sleep(0.2)
        assert captured, "the dialogue logged nothing"
        text = repr(captured) + caplog.text
        assert BOB not in text and BOB[2:] not in text


class TestConcatenatedMo:
    async def test_udh16_parts_out_of_order_are_one_message(self, rig: Rig) -> None:
        for seq, body in ((2, b"EM"), (1, b"DI")):
            await rig.smsc.send_deliver(_mo(BOB, "9237", "", esm_class=0x40, short_message=bytes([6, 8, 4, 0x12, 0x34, 2, seq]) + body))
        assert "diem" in (await rig.smsc.next_mt(BOB, timeout=5)).text

    async def test_missing_part_times_out_and_the_rest_is_handled(self, aiohttp_client: Any) -> None:
        made = await make_rig(aiohttp_client, mo_concat_timeout_s=0.3)
        try:
            await made.smsc.send_deliver(_mo(BOB, "9237", "", esm_class=0x40, short_message=bytes([5, 0, 3, 9, 2, 1]) + b"DIEM"))
            reply = await made.smsc.next_mt(BOB, timeout=5)
            assert "diem" in reply.text
            body = await (await made.client.get("/metrics")).text()
            assert 'smpp_mo_concat_incomplete_total{bind="smsc-test"} 1.0' in body
        finally:
            await made.client.close()
            await made.smsc.stop()

    async def test_partial_messages_are_capped_oldest_dropped(self, aiohttp_client: Any) -> None:
        made = await make_rig(aiohttp_client, mo_concat_max=2, mo_concat_timeout_s=30.0)
        try:
            for ref in (1, 2, 3):
                await made.smsc.send_deliver(_mo(BOB, "9237", "", esm_class=0x40, short_message=bytes([5, 0, 3, ref, 2, 1]) + b"DI"))
            await asyncio.sleep(0.2)
            assert len(made.channel._reassemblers["smsc-test"]) == 2
            body = await (await made.client.get("/metrics")).text()
            assert 'smpp_mo_concat_dropped_total{bind="smsc-test"} 1.0' in body
        finally:
            await made.client.close()
            await made.smsc.stop()
