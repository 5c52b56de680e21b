"""The gateway bound to an SMSC that is not ours (PyPI smpp34's server, see
independent_smsc.py): USSD dialogues with the USSD DCS and TLVs as another SMPP stack
encodes them, MO keywords and their MT replies, and what our submit_sm carry on the wire."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from helpers import make_settings
from independent_smsc import (
    TLV_ITS_SESSION_INFO,
    TLV_SAR_MSG_REF_NUM,
    TLV_SAR_SEGMENT_SEQNUM,
    TLV_SAR_TOTAL_SEGMENTS,
    TLV_USER_MESSAGE_REFERENCE,
    TLV_USSD_SERVICE_OP,
    IndependentSmsc,
    independent_smsc,  # noqa: F401  (the fixture)
)

from ussd_gateway.app.config import SmppSettings
from ussd_gateway.app.server import create_app
from ussd_gateway.channels.smpp.presets import bind_settings

SUB = "84977200001"


async def gateway(aiohttp_client: Any, smsc: IndependentSmsc, **ussd: Any) -> Any:
    bind = bind_settings(
        {
            "name": "indep", "port": smsc.port, "password": "pw", "short_codes": ["9237", "999"],
            "response_timeout_s": 2.0, "reconnect_min_s": 0.05, "reconnect_max_s": 0.5, "ussd": ussd,
        },
        "test",
    )
    settings = dataclasses.replace(make_settings(""), smpp=SmppSettings(binds=(bind,)))
    client = await aiohttp_client(create_app(settings))
    await smsc.wait_bound()
    return client


@pytest.fixture
async def bound(aiohttp_client: Any, independent_smsc: IndependentSmsc) -> AsyncIterator[IndependentSmsc]:  # noqa: F811
    client = await gateway(aiohttp_client, independent_smsc)
    yield independent_smsc
    await client.close()


def gsm(text: str) -> bytes:
    return text.encode("ascii")


class TestUssd3gpp:
    async def test_dialogue_with_dcs_0x0f_and_tlvs(self, bound: IndependentSmsc) -> None:
        """Begin *090# with data_coding 0x0F, its_session_info 0x2A00; answer "2" with no
        code in destination_addr; the screens go back with the TLVs echoed."""
        status = await bound.deliver(
            SUB, "*090", gsm("*090#"), service_type="USSD", data_coding=0x0F,
            tlvs={TLV_USSD_SERVICE_OP: b"\x01", TLV_ITS_SESSION_INFO: b"\x2a\x00"},
        )
        assert status == 0
        (menu,) = await bound.next_submits(1, SUB)
        assert b"1. Tra cuu tai khoan" in menu.short_message
        assert menu.tlvs[TLV_USSD_SERVICE_OP] == b"\x02"
        assert menu.tlvs[TLV_ITS_SESSION_INFO] == b"\x2a\x00"
        assert menu.service_type == "USSD" and menu.source_addr == "*090" and menu.data_coding == 0
        assert menu.dest_addr_ton == 1
        status = await bound.deliver(
            SUB, "", gsm("2"), service_type="USSD", data_coding=0x0F,
            tlvs={TLV_USSD_SERVICE_OP: b"\x12", TLV_ITS_SESSION_INFO: b"\x2a\x02"},
        )
        assert status == 0
        _menu, packages = await bound.next_submits(2, SUB)
        assert b"Goi" in packages.short_message and b"khong dung" not in packages.short_message

    async def test_one_screen_end_is_op_17_with_the_end_bit(self, bound: IndependentSmsc) -> None:
        await bound.deliver(SUB, "*101", gsm("*101#"), data_coding=0x0F, tlvs={TLV_USSD_SERVICE_OP: b"\x01", TLV_ITS_SESSION_INFO: b"\x07\x00"})
        (end,) = await bound.next_submits(1, SUB)
        assert end.tlvs[TLV_USSD_SERVICE_OP] == bytes([17])
        assert end.tlvs[TLV_ITS_SESSION_INFO] == b"\x07\x01"

    async def test_ucs2_answer_in_dcs_0x48(self, bound: IndependentSmsc) -> None:
        """0x48 (USSD DCS general group, UCS2) is read as UTF-16."""
        await bound.deliver(SUB, "*090", "*090#".encode("utf-16-be"), data_coding=0x48, tlvs={TLV_USSD_SERVICE_OP: b"\x01", TLV_ITS_SESSION_INFO: b"\x09\x00"})
        (menu,) = await bound.next_submits(1, SUB)
        assert b"Tra cuu" in menu.short_message


class TestUssdSixdee:
    async def test_sixdee_dialogue(self, aiohttp_client: Any, independent_smsc: IndependentSmsc) -> None:  # noqa: F811
        """The sixdee preset: 15-bit dialogue id, 0x12 answers, no code on continuations,
        0x81 with the end bit releases; replies 0x02 and the dialogue id echoed."""
        client = await gateway(aiohttp_client, independent_smsc, preset="sixdee")
        smsc = independent_smsc
        try:
            await smsc.deliver(SUB, "", gsm("*090#"), data_coding=0x0F, tlvs={TLV_USSD_SERVICE_OP: b"\x01", TLV_ITS_SESSION_INFO: b"\x12\x34"})
            (menu,) = await smsc.next_submits(1, SUB)
            assert menu.tlvs[TLV_USSD_SERVICE_OP] == b"\x02" and menu.tlvs[TLV_ITS_SESSION_INFO] == b"\x12\x34"
            await smsc.deliver(SUB, "", gsm("2"), data_coding=0x0F, tlvs={TLV_USSD_SERVICE_OP: b"\x12", TLV_ITS_SESSION_INFO: b"\x12\x34"})
            _menu, packages = await smsc.next_submits(2, SUB)
            assert b"Goi" in packages.short_message
            status = await smsc.deliver(SUB, "", b"", data_coding=0x0F, tlvs={TLV_USSD_SERVICE_OP: b"\x81", TLV_ITS_SESSION_INFO: b"\x12\x35"})
            assert status == 0
        finally:
            await client.close()


class TestSms:
    async def test_keyword_and_reply_fields_on_the_wire(self, bound: IndependentSmsc) -> None:
        assert await bound.deliver(SUB, "9237", gsm("DIEM")) == 0
        (reply,) = await bound.next_submits(1, SUB)
        assert reply.source_addr == "9237" and reply.source_addr_ton == 3
        assert reply.dest_addr_ton == 1 and reply.data_coding == 0 and reply.esm_class == 0
        assert b"diem" in reply.short_message
        assert TLV_USSD_SERVICE_OP not in reply.tlvs

    async def test_the_same_keyword_again_is_answered(self, bound: IndependentSmsc) -> None:
        """No user_message_reference: XN, DK, XN are three messages, three replies."""
        for word in ("XN", "DK", "XN"):
            assert await bound.deliver(SUB, "9237", gsm(word)) == 0
        replies = b"\n".join(s.short_message for s in await bound.next_submits(3, SUB))  # any order
        assert b"Soan DK gui 9237" in replies and b"Soan XN" in replies and b"da la hoi vien KNDL" in replies

    async def test_concatenated_mo_by_udh_and_by_sar(self, bound: IndependentSmsc) -> None:
        """"DI" + "EM" in two UDH parts, then in two sar_* parts: each one DIEM."""
        for seq, body in ((1, b"DI"), (2, b"EM")):
            await bound.deliver(SUB, "9237", bytes([5, 0, 3, 0x42, 2, seq]) + body, esm_class=0x40)
        (first,) = await bound.next_submits(1, SUB)
        assert b"diem" in first.short_message
        for seq, body in ((2, b"EM"), (1, b"DI")):
            await bound.deliver(
                SUB, "9237", body,
                tlvs={TLV_SAR_MSG_REF_NUM: b"\x01\x07", TLV_SAR_TOTAL_SEGMENTS: b"\x02", TLV_SAR_SEGMENT_SEQNUM: bytes([seq])},
            )
        _first, second = await bound.next_submits(2, SUB)
        assert b"diem" in second.short_message

    async def test_bad_source_address_gets_rinvsrcadr_and_the_link_stays(self, bound: IndependentSmsc) -> None:
        assert await bound.deliver("abc", "9237", gsm("DK")) == 0x0A
        assert await bound.deliver(SUB, "9237", gsm("DIEM"), tlvs={TLV_USER_MESSAGE_REFERENCE: b"\x00\x05"}) == 0
        (reply,) = await bound.next_submits(1, SUB)
        assert b"diem" in reply.short_message
