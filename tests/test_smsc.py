"""The SMSC simulator over real TCP, against a minimal ESME written here with smpp.pdu.

The gateway's SMPP tests lean on the simulator to tell the truth about what crossed
the wire and to misbehave exactly as asked, so each behaviour is checked from the
ESME's side of a real socket, not from the simulator's own bookkeeping alone.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ussd_gateway.channels.smpp.config import UssdDialect
from ussd_gateway.channels.smpp.dcs import decode_ussd
from ussd_gateway.channels.smpp.encoding import decode_text, split_sms
from ussd_gateway.channels.smpp.pdu import (
    ESME_RALYBND,
    ESME_RINVBNDSTS,
    ESME_RINVCMDID,
    ESME_RINVCMDLEN,
    ESME_RINVPASWD,
    ESME_RINVSYSID,
    ESME_RMSGQFUL,
    ESME_ROK,
    ESME_RTHROTTLED,
    Pdu,
    decode,
    encode,
    frame_length,
)
from ussd_gateway.testkit.smsc import LoggedPdu, SmscError, SmscSimulator, format_pdu
from ussd_gateway.core.msisdn import mask_msisdn
from ussd_gateway.testkit.redis_server import free_port

PROJECT = Path(__file__).resolve().parents[1]
MSISDN = "84901234567"
VIETNAMESE = "Đăng ký gói C90N thành công, cảm ơn quý khách"


class Esme:
    """A minimal ESME: binds, answers the SMSC's requests, correlates its own."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, auto_answer: bool = True) -> None:
        self.reader, self.writer = reader, writer
        self.auto_answer = auto_answer
        self.inbox: asyncio.Queue[Pdu] = asyncio.Queue()
        """Requests from the SMSC (and unmatched responses), in arrival order."""
        self.pending: dict[int, asyncio.Future[Pdu]] = {}
        self.closed = asyncio.Event()
        self.sequence = 0
        self.task = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, port: int, *, auto_answer: bool = True) -> Esme:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, auto_answer=auto_answer)

    async def _read(self) -> None:
        try:
            while True:
                header = await self.reader.readexactly(4)
                pdu = decode(header + await self.reader.readexactly(frame_length(header) - 4))
                future = self.pending.pop(pdu.sequence, None)
                if pdu.is_response and future is not None:
                    future.set_result(pdu)
                    continue
                if self.auto_answer and pdu.command in ("deliver_sm", "enquire_link", "unbind"):
                    fields = {"message_id": ""} if pdu.command == "deliver_sm" else {}
                    self.send(f"{pdu.command}_resp", sequence=pdu.sequence, **fields)
                self.inbox.put_nowait(pdu)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed.set()

    def send(self, command: str, *, sequence: int | None = None, **fields: Any) -> int:
        if sequence is None:
            self.sequence += 1
            sequence = self.sequence
        self.writer.write(encode(command, sequence=sequence, **fields))
        return sequence

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def request(self, command: str, timeout: float = 2.0, **fields: Any) -> Pdu:
        """Send a request and wait for its response."""
        future: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
        sequence = self.send(command, **fields)
        self.pending[sequence] = future
        return await asyncio.wait_for(future, timeout)

    async def bind(self, system_id: str = "ussdgw", password: str = "secret", mode: str = "transceiver") -> Pdu:
        return await self.request(f"bind_{mode}", system_id=system_id, password=password)

    async def submit(self, timeout: float = 2.0, **fields: Any) -> Pdu:
        return await self.request("submit_sm", timeout, **fields)

    async def next(self, command: str = "deliver_sm", timeout: float = 2.0) -> Pdu:
        """The next request of `command` from the SMSC (others skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                pdu = await self.inbox.get()
                if pdu.command == command:
                    return pdu

    async def close(self) -> None:
        self.writer.close()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


def screen(to: str, session: int, text: str, op: int) -> dict[str, Any]:
    """submit_sm fields of a USSD screen, as the gateway sends it."""
    return {
        "service_type": "USSD", "source_addr": "*090", "destination_addr": to, "data_coding": 0,
        "short_message": text.encode("ascii"), "ussd_service_op": op, "its_session_info": session,
    }  # fmt: skip


def sms(to: str, body: bytes, *, sender: str = "9237", data_coding: int = 0, esm_class: int = 0) -> dict[str, Any]:
    return {
        "source_addr": sender, "destination_addr": to, "data_coding": data_coding,
        "esm_class": esm_class, "short_message": body,
    }  # fmt: skip


def concatenated(text: bytes, size: int, *, ref: int, sixteen_bit: bool = False) -> list[bytes]:
    """`text` split into UDH parts (8- or 16-bit reference), as an ESME sends a long SMS."""
    chunks = [text[i : i + size] for i in range(0, len(text), size)]
    parts = []
    for seq, chunk in enumerate(chunks, 1):
        if sixteen_bit:
            udh = bytes([6, 0x08, 4, ref >> 8, ref & 0xFF, len(chunks), seq])
        else:
            udh = bytes([5, 0x00, 3, ref, len(chunks), seq])
        parts.append(udh + chunk)
    return parts


@pytest.fixture
async def sim() -> AsyncIterator[SmscSimulator]:
    async with SmscSimulator(enquire_link_s=None) as simulator:
        yield simulator


@pytest.fixture
async def esme(sim: SmscSimulator) -> AsyncIterator[Esme]:
    """A transceiver bound to `sim`."""
    client = await Esme.connect(sim.port)
    assert (await client.bind()).status == ESME_ROK
    yield client
    await client.close()


class TestBind:
    async def test_transceiver_bind_is_accepted_and_listed(self, sim: SmscSimulator) -> None:
        """A bind with the configured credentials succeeds and shows up in `binds`."""
        client = await Esme.connect(sim.port)
        try:
            response = await client.bind()
            assert (response.command, response.status) == ("bind_transceiver_resp", ESME_ROK)
            assert response.fields["system_id"] == "SMSCSIM"
            binds = await sim.wait_bound(1.0)
            assert [(b.system_id, b.mode) for b in binds] == [("ussdgw", "transceiver")]
        finally:
            await client.close()

    async def test_bad_credentials_are_refused(self, sim: SmscSimulator) -> None:
        """A wrong password gets ESME_RINVPASWD and an unknown system_id ESME_RINVSYSID."""
        client = await Esme.connect(sim.port)
        try:
            assert (await client.bind(password="guess")).status == ESME_RINVPASWD
            assert (await client.bind(system_id="intruder")).status == ESME_RINVSYSID
            assert sim.binds == []
        finally:
            await client.close()

    async def test_second_bind_and_submit_before_bind_are_refused(self, sim: SmscSimulator) -> None:
        """Bind state is enforced: submit_sm unbound and a second bind are errors."""
        client = await Esme.connect(sim.port)
        try:
            refused = await client.submit(**sms(MSISDN, b"hi"))
            assert refused.status == ESME_RINVBNDSTS
            assert (await client.bind()).status == ESME_ROK
            assert (await client.bind()).status == ESME_RALYBND
        finally:
            await client.close()

    async def test_transmitter_and_receiver_pair(self, sim: SmscSimulator) -> None:
        """deliver_sm go to the receiver; the receiver may not submit."""
        transmitter, receiver = await Esme.connect(sim.port), await Esme.connect(sim.port)
        try:
            assert (await transmitter.bind(mode="transmitter")).status == ESME_ROK
            with pytest.raises(SmscError):
                await sim.send_mo(MSISDN, "9237", "DK")
            assert (await receiver.bind(mode="receiver")).status == ESME_ROK
            await sim.wait_bound(1.0, count=2, receiver=True)
            await sim.send_mo(MSISDN, "9237", "DK")
            assert (await receiver.next()).fields["destination_addr"] == "9237"
            assert transmitter.inbox.empty()
            assert (await receiver.submit(**sms(MSISDN, b"x"))).status == ESME_RINVBNDSTS
            assert (await transmitter.submit(**sms(MSISDN, b"x"))).status == ESME_ROK
        finally:
            await transmitter.close()
            await receiver.close()


class TestLink:
    async def test_enquire_link_is_answered(self, esme: Esme) -> None:
        """enquire_link gets enquire_link_resp ESME_ROK."""
        response = await esme.request("enquire_link")
        assert (response.command, response.status) == ("enquire_link_resp", ESME_ROK)

    async def test_simulator_sends_its_own_enquire_link(self) -> None:
        """With `enquire_link_s` set, the simulator probes the bind periodically."""
        async with SmscSimulator(enquire_link_s=0.05) as simulator:
            client = await Esme.connect(simulator.port)
            try:
                await client.bind()
                await client.next("enquire_link", timeout=1.0)
                await client.next("enquire_link", timeout=1.0)
                await asyncio.sleep(0.05)
                assert any(p.command == "enquire_link_resp" and p.direction == "in" for p in simulator.pdus)
            finally:
                await client.close()

    async def test_unbind_is_answered_and_closes(self, sim: SmscSimulator, esme: Esme) -> None:
        """unbind gets unbind_resp, then the simulator closes the connection."""
        assert (await esme.request("unbind")).command == "unbind_resp"
        await asyncio.wait_for(esme.closed.wait(), 1.0)
        assert sim.binds == []

    async def test_unknown_command_gets_generic_nack(self, esme: Esme) -> None:
        """A command the SMSC does not serve (here query_sm, then an unknown id) is nacked."""
        response = await esme.request("query_sm", message_id="1", source_addr="9237")
        assert (response.command, response.status) == ("generic_nack", ESME_RINVCMDID)
        esme.send_raw(bytes.fromhex("00000010 00001234 00000000 00000063"))
        nack = await esme.next("generic_nack")
        assert (nack.status, nack.sequence) == (ESME_RINVCMDID, 0x63)

    async def test_garbage_does_not_kill_the_simulator(self, sim: SmscSimulator, esme: Esme) -> None:
        """A truncated body is nacked and the link goes on; an absurd length is nacked
        and that link closed; new binds still work."""
        esme.send_raw(bytes.fromhex("00000014 00000009 00000000 00000007 41424344"))  # bind with no NULs
        nack = await esme.next("generic_nack")
        assert (nack.status, nack.sequence) == (ESME_RINVCMDLEN, 7)
        assert (await esme.request("enquire_link")).status == ESME_ROK
        esme.send_raw(b"GET / HTTP/1.1\r\n\r\n")
        assert (await esme.next("generic_nack")).status == ESME_RINVCMDLEN
        await asyncio.wait_for(esme.closed.wait(), 1.0)
        assert any(p.command == "invalid" for p in sim.pdus)
        fresh = await Esme.connect(sim.port)
        try:
            assert (await fresh.bind()).status == ESME_ROK
        finally:
            await fresh.close()

    async def test_random_frames_are_survived(self, sim: SmscSimulator) -> None:
        """Hundreds of well-framed random PDUs on a bound link: every one is answered or
        ignored, and the link and the simulator stay up."""
        rng = random.Random(3)
        client = await Esme.connect(sim.port)
        try:
            await client.bind()
            commands = [0x4, 0x5, 0x9, 0x15, 0x103, 0x80000004, 0x7, rng.getrandbits(32)]
            for n in range(300):
                body = rng.randbytes(rng.randrange(0, 80))
                header = (16 + len(body)).to_bytes(4, "big") + rng.choice(commands).to_bytes(4, "big")
                client.send_raw(header + bytes(4) + (1000 + n).to_bytes(4, "big") + body)
            assert (await client.request("enquire_link")).status == ESME_ROK
            assert sim.binds
        finally:
            await client.close()

    async def test_stop_unbinds_the_esme(self) -> None:
        """Stopping sends unbind so the ESME can tell maintenance from a crash."""
        simulator = SmscSimulator(enquire_link_s=None)
        await simulator.start()
        client = await Esme.connect(simulator.port)
        try:
            await client.bind()
            await simulator.stop()
            assert (await client.next("unbind", timeout=1.0)).command == "unbind"
            await asyncio.wait_for(client.closed.wait(), 1.0)
        finally:
            await client.close()

    async def test_every_pdu_is_logged_both_ways(self, sim: SmscSimulator, esme: Esme) -> None:
        """The PDU log holds the bind and its response with direction and sequence."""
        logged = [(p.direction, p.command, p.status) for p in sim.pdus]
        assert logged[:2] == [("in", "bind_transceiver", 0), ("out", "bind_transceiver_resp", 0)]
        assert sim.pdus[0].fields["password"] == "secret"


class TestUssd:
    async def test_dialogue_round_trip(self, sim: SmscSimulator, esme: Esme) -> None:
        """begin (op 1) -> screen op 2 (not end) -> answer (op 18) -> screen op 17 (end)."""
        dialogue = await sim.start_ussd(MSISDN, "*090#")
        begin = await esme.next()
        fields = begin.fields
        assert fields["ussd_service_op"] == 1 and fields["esm_class"] == 0
        assert fields["service_type"] == "USSD"
        assert (fields["source_addr"], fields["destination_addr"]) == (MSISDN, "*090")
        assert fields["data_coding"] == 0x0F  # the USSD DCS: GSM 7-bit, language unspecified
        assert decode_ussd(fields["data_coding"], fields["short_message"], packed=False) == "*090#"
        session = fields["its_session_info"]
        assert session == dialogue.session_info == dialogue.number << 8 and not session & 1
        first_umr = fields["user_message_reference"]

        assert (await esme.submit(**screen(MSISDN, session, "1. Balance\n2. Packages", 2))).status == ESME_ROK
        first = await dialogue.next_screen(1.0)
        assert (first.text, first.end) == ("1. Balance\n2. Packages", False)

        await dialogue.answer("1")
        answer = await esme.next()
        assert answer.fields["ussd_service_op"] == 18
        assert answer.fields["its_session_info"] == session
        assert decode_ussd(answer.fields["data_coding"], answer.fields["short_message"], packed=False) == "1"
        assert answer.fields["user_message_reference"] == first_umr + 1

        await esme.submit(**screen(MSISDN, session | 1, "Balance: 50000 VND", 17))
        last = await dialogue.next_screen(1.0)
        assert (last.text, last.end, dialogue.ended) == ("Balance: 50000 VND", True, True)
        with pytest.raises(SmscError):
            await dialogue.answer("2")

    async def test_session_number_follows_the_dialect_mask(self, sim: SmscSimulator, esme: Esme) -> None:
        """Dialogues differ in the session_mask bits; a screen whose other bits differ
        (SMPP 3.4's dialogue-unit sequence) still belongs to its dialogue."""
        one, two = await sim.start_ussd(MSISDN), await sim.start_ussd(MSISDN)
        sessions = [(await esme.next()).fields["its_session_info"] for _ in range(2)]
        assert sessions[0] & 0xFF00 != sessions[1] & 0xFF00 and not (sessions[0] | sessions[1]) & 0xFF
        await esme.submit(**screen(MSISDN, sessions[1] | 0x06, "two", 2))
        assert (await two.next_screen(1.0)).text == "two"
        assert one.screens == []
        async with SmscSimulator(enquire_link_s=None, dialect=UssdDialect(session_mask=0xFFFE)) as simulator:
            client = await Esme.connect(simulator.port)
            try:
                await client.bind()
                dialogue = await simulator.start_ussd(MSISDN)
                assert (await client.next()).fields["its_session_info"] == dialogue.number << 1
            finally:
                await client.close()

    async def test_end_bit_alone_ends_the_dialogue(self, sim: SmscSimulator, esme: Esme) -> None:
        """The its_session_info end bit marks the last screen even with op 2."""
        dialogue = await sim.start_ussd(MSISDN)
        session = (await esme.next()).fields["its_session_info"]
        await esme.submit(**screen(MSISDN, session | 1, "Bye", 2))
        assert (await dialogue.next_screen(1.0)).end

    async def test_screens_are_matched_to_their_dialogue(self, sim: SmscSimulator, esme: Esme) -> None:
        """Two concurrent dialogues each get their own screen; an unknown session is an
        orphan, unless its op begins one (a USSD push: USSR 2 or USSN 3)."""
        one, two = await sim.start_ussd(MSISDN), await sim.start_ussd("84912345678")
        sessions = [(await esme.next()).fields["its_session_info"] for _ in range(2)]
        await esme.submit(**screen("84912345678", sessions[1], "for two", 2))
        await esme.submit(**screen(MSISDN, sessions[0], "for one", 2))
        await esme.submit(**screen(MSISDN, 0x7F00, "nobody's", 17))
        await esme.submit(**screen(MSISDN, 0x7E00, "pushed", 2))
        assert (await one.next_screen(1.0)).text == "for one"
        assert (await two.next_screen(1.0)).text == "for two"
        assert [s.text for s in sim.orphan_screens] == ["nobody's"]
        pushed = await sim.next_push(MSISDN, timeout=1.0)
        assert pushed.number == 0x7E and (await pushed.next_screen(1.0)).text == "pushed"
        with pytest.raises(TimeoutError):
            await one.next_screen(0.1)

    async def test_abort_sends_the_dialect_abort_op(self, sim: SmscSimulator, esme: Esme) -> None:
        """abort() sends the dialect's abort op with the end bit set."""
        dialogue = await sim.start_ussd(MSISDN)
        session = (await esme.next()).fields["its_session_info"]
        await dialogue.abort()
        aborted = await esme.next()
        assert aborted.fields["ussd_service_op"] == 32
        assert aborted.fields["its_session_info"] == session | 1

    async def test_dialect_options_shape_the_begin(self) -> None:
        """A dialect without its_session_info matches screens by MSISDN instead."""
        dialect = UssdDialect(service_type="", session_id_from="msisdn")
        async with SmscSimulator(enquire_link_s=None, dialect=dialect) as simulator:
            client = await Esme.connect(simulator.port)
            try:
                await client.bind()
                dialogue = await simulator.start_ussd(MSISDN, "*101#", destination="101")
                begin = await client.next()
                assert "its_session_info" not in begin.fields
                assert begin.fields["destination_addr"] == "101"
                fields = screen("+" + MSISDN, 0, "Hi", 17)
                del fields["its_session_info"]
                await client.submit(**fields)
                assert (await dialogue.next_screen(1.0)).end
            finally:
                await client.close()

    async def test_no_bind_is_a_clear_error(self, sim: SmscSimulator) -> None:
        """Starting a dialogue with nobody bound raises SmscError, not a hang."""
        with pytest.raises(SmscError, match="no receiver"):
            await sim.start_ussd(MSISDN)


class TestSms:
    async def test_mo_in_gsm7(self, sim: SmscSimulator, esme: Esme) -> None:
        """Text in the GSM alphabet goes as data_coding 0, without USSD TLVs."""
        await sim.send_mo(MSISDN, "9237", "DK 1 @ £")
        mo = await esme.next()
        assert mo.fields["data_coding"] == 0 and mo.fields["esm_class"] == 0
        assert "ussd_service_op" not in mo.fields and "its_session_info" not in mo.fields
        assert (mo.fields["source_addr"], mo.fields["destination_addr"]) == (MSISDN, "9237")
        assert decode_text(0, mo.fields["short_message"]) == "DK 1 @ £"

    async def test_mo_in_ucs2(self, sim: SmscSimulator, esme: Esme) -> None:
        """Vietnamese with diacritics goes as UCS-2 (data_coding 8)."""
        await sim.send_mo(MSISDN, "999", VIETNAMESE)
        mo = await esme.next()
        assert mo.fields["data_coding"] == 8
        assert mo.fields["short_message"].decode("utf-16-be") == VIETNAMESE

    async def test_mo_with_forced_coding(self, sim: SmscSimulator, esme: Esme) -> None:
        """A forced data_coding is honoured (UCS-2 for plain ASCII here)."""
        await sim.send_mo(MSISDN, "9237", "XN", data_coding=8)
        assert (await esme.next()).fields["short_message"] == "XN".encode("utf-16-be")
        with pytest.raises(ValueError):
            await sim.send_mo(MSISDN, "9237", VIETNAMESE, data_coding=0)

    async def test_single_mt(self, sim: SmscSimulator, esme: Esme) -> None:
        """A one-part MT is returned with its sender, recipient and text."""
        response = await esme.submit(**sms(MSISDN, b"Ban da dang ky"))
        assert response.status == ESME_ROK and response.fields["message_id"]
        mt = await sim.next_mt(MSISDN, 1.0)
        assert (mt.to, mt.sender, mt.text, mt.parts) == (MSISDN, "9237", "Ban da dang ky", 1)

    async def test_three_part_gsm7_mt_is_reassembled(self, sim: SmscSimulator, esme: Esme) -> None:
        """Three UDH parts (8-bit reference), sent out of order, come back as one text."""
        text = ("Chuc mung! " * 40)[:400]
        parts = concatenated(text.encode("ascii"), 153, ref=0x2A)
        assert len(parts) == 3
        for body in (parts[1], parts[0], parts[2]):
            await esme.submit(**sms(MSISDN, body, esm_class=0x40))
        mt = await sim.next_mt(MSISDN, 1.0)
        assert (mt.text, mt.parts, len(mt.pdus)) == (text, 3, 3)

    async def test_packed_gsm7_mt_from_the_project_splitter(self) -> None:
        """Packed GSM-7 parts (fill bits after the UDH, escapes) reassemble exactly."""
        text = ("Goi C90N {uu dai} 90.000d/thang [KM] ~ " * 12)[:420]
        async with SmscSimulator(enquire_link_s=None, gsm7_packed=True) as simulator:
            client = await Esme.connect(simulator.port)
            try:
                await client.bind()
                parts = split_sms(text, packed=True, reference=7)
                assert len(parts) > 2
                for part in parts:
                    await client.submit(**sms(MSISDN, part.short_message, data_coding=part.data_coding, esm_class=part.esm_class))
                mt = await simulator.next_mt(MSISDN, 1.0)
                assert (mt.text, mt.parts) == (text, len(parts))
            finally:
                await client.close()

    async def test_ucs2_mt_with_16_bit_reference(self, sim: SmscSimulator, esme: Esme) -> None:
        """UCS-2 parts with a 16-bit concatenation reference reassemble too."""
        text = VIETNAMESE * 3
        for body in concatenated(text.encode("utf-16-be"), 134, ref=0x1234, sixteen_bit=True):
            await esme.submit(**sms(MSISDN, body, data_coding=8, esm_class=0x40))
        mt = await sim.next_mt(MSISDN, 1.0)
        assert mt.text == text and mt.parts > 1

    async def test_message_payload_mt(self, sim: SmscSimulator, esme: Esme) -> None:
        """A long MT sent whole in message_payload is one SMS."""
        text = VIETNAMESE * 4
        fields = sms(MSISDN, b"", data_coding=8)
        del fields["short_message"]
        await esme.submit(message_payload=text.encode("utf-16-be"), **fields)
        mt = await sim.next_mt(MSISDN, 1.0)
        assert (mt.text, mt.parts) == (text, 1)

    async def test_next_mt_filters_by_msisdn(self, sim: SmscSimulator, esme: Esme) -> None:
        """next_mt(msisdn) skips other subscribers' SMS, leaving them queued."""
        await esme.submit(**sms("84912345678", b"other"))
        await esme.submit(**sms(MSISDN, b"mine"))
        assert (await sim.next_mt(MSISDN, 1.0)).text == "mine"
        assert (await sim.next_mt(timeout=1.0)).text == "other"

    async def test_delivery_receipt(self, sim: SmscSimulator, esme: Esme) -> None:
        """A receipt has esm_class 0x04, the receipt TLVs and the standard text."""
        await sim.send_receipt(MSISDN, "9237", "0000002A", "DELIVRD")
        receipt = await esme.next()
        fields = receipt.fields
        assert fields["esm_class"] == 0x04
        assert (fields["receipted_message_id"], fields["message_state"]) == ("0000002A", 2)
        text = fields["short_message"].decode("ascii")
        assert text.startswith("id:0000002A ") and " stat:DELIVRD " in text

    async def test_buffers_are_bounded(self) -> None:
        """The PDU log and the unread MT queue keep at most `pdu_log_limit` entries."""
        async with SmscSimulator(enquire_link_s=None, pdu_log_limit=20) as simulator:
            client = await Esme.connect(simulator.port)
            try:
                await client.bind()
                for n in range(30):
                    await client.submit(**sms(MSISDN, f"m{n}".encode("ascii")))
                assert len(simulator.pdus) <= 20 and simulator.pdu_log_base > 0
                assert len(simulator.accepted_submits) <= 20
                assert (await simulator.next_mt(MSISDN, 1.0)).text != "m0"
            finally:
                await client.close()

    async def test_deliver_resp_is_tracked(self, sim: SmscSimulator, esme: Esme) -> None:
        """wait_deliver_resp returns the status the ESME answered."""
        sequence = await sim.send_mo(MSISDN, "9237", "DIEM")
        assert await sim.wait_deliver_resp(sequence, 1.0) == ESME_ROK


class TestFaults:
    async def test_throttle(self, sim: SmscSimulator, esme: Esme) -> None:
        """Throttled submits get the error status and are not delivered; later ones are."""
        sim.throttle_next(1)
        sim_status = ESME_RTHROTTLED
        assert (await esme.submit(**sms(MSISDN, b"one"))).status == sim_status == 0x58
        sim.throttle_next(1, status=ESME_RMSGQFUL)
        assert (await esme.submit(**sms(MSISDN, b"two"))).status == ESME_RMSGQFUL
        assert (await esme.submit(**sms(MSISDN, b"three"))).status == ESME_ROK
        assert (await sim.next_mt(MSISDN, 1.0)).text == "three"
        assert [p.fields["short_message"] for p in sim.accepted_submits] == [b"three"]

    async def test_throttled_screen_is_not_seen(self, sim: SmscSimulator, esme: Esme) -> None:
        """A USSD screen answered with an error never reaches next_screen."""
        dialogue = await sim.start_ussd(MSISDN)
        session = (await esme.next()).fields["its_session_info"]
        sim.throttle_next(1)
        assert (await esme.submit(**screen(MSISDN, session, "lost", 2))).status == ESME_RTHROTTLED
        await esme.submit(**screen(MSISDN, session, "retried", 2))
        assert (await dialogue.next_screen(1.0)).text == "retried"
        with pytest.raises(TimeoutError):
            await dialogue.next_screen(0.1)

    async def test_withhold(self, sim: SmscSimulator, esme: Esme) -> None:
        """A withheld submit gets no response at all and is not delivered."""
        sim.withhold_submit_resp(1)
        with pytest.raises(TimeoutError):
            await esme.submit(0.3, **sms(MSISDN, b"lost"))
        assert (await esme.submit(**sms(MSISDN, b"kept"))).status == ESME_ROK
        assert (await sim.next_mt(MSISDN, 1.0)).text == "kept"
        assert len(sim.accepted_submits) == 1

    async def test_withhold_with_delivery_models_a_lost_response(self, sim: SmscSimulator, esme: Esme) -> None:
        """withhold(deliver=True): no response, yet the SMS reached the handset."""
        sim.withhold_submit_resp(1, deliver=True)
        with pytest.raises(TimeoutError):
            await esme.submit(0.2, **sms(MSISDN, b"arrived"))
        assert (await sim.next_mt(MSISDN, 1.0)).text == "arrived"

    async def test_delay(self, sim: SmscSimulator, esme: Esme) -> None:
        """Delayed responses come late, and only then is the submit delivered."""
        sim.delay_submit_resp(0.3, count=1)
        started = time.monotonic()
        sending = asyncio.create_task(esme.submit(**sms(MSISDN, b"late")))
        await asyncio.sleep(0.1)
        assert sim.accepted_submits == []
        assert (await sending).status == ESME_ROK
        assert time.monotonic() - started >= 0.3
        started = time.monotonic()
        await esme.submit(**sms(MSISDN, b"prompt"))
        assert time.monotonic() - started < 0.2

    async def test_drop_links(self, sim: SmscSimulator, esme: Esme) -> None:
        """drop_links closes the ESME's connection abruptly; it may bind again."""
        await sim.drop_links()
        await asyncio.wait_for(esme.closed.wait(), 1.0)
        assert sim.binds == []
        assert not any(p.command == "unbind" for p in sim.pdus)
        again = await Esme.connect(sim.port)
        try:
            await again.bind()
            assert len(await sim.wait_bound(1.0)) == 1
        finally:
            await again.close()

    async def test_resend_next_deliver(self, sim: SmscSimulator, esme: Esme) -> None:
        """The next deliver_sm arrives twice: identical fields, different sequence."""
        sim.resend_next_deliver()
        dialogue = await sim.start_ussd(MSISDN)
        first, second = await esme.next(), await esme.next()
        assert first.fields == second.fields
        assert first.sequence != second.sequence
        assert first.fields["its_session_info"] == dialogue.session_info
        await sim.send_mo(MSISDN, "9237", "DK")
        await esme.next()
        with pytest.raises(TimeoutError):
            await esme.next(timeout=0.1)


class TestControlApi:
    @staticmethod
    async def gateway(esme: Esme) -> None:
        """A toy gateway: a two-screen menu over USSD, an echo on SMS."""
        while True:
            pdu = await esme.next(timeout=30)
            fields = pdu.fields
            msisdn = fields["source_addr"]
            if fields.get("ussd_service_op") == 1:
                await esme.submit(**screen(msisdn, fields["its_session_info"], "1. Balance", 2))
            elif fields.get("ussd_service_op") == 18:
                await esme.submit(**screen(msisdn, fields["its_session_info"] | 1, "Balance: 50000", 17))
            elif "ussd_service_op" not in fields and fields["esm_class"] == 0:
                text = decode_text(fields["data_coding"], fields["short_message"])
                await esme.submit(**sms(msisdn, f"Got {text}".encode("ascii"), sender=fields["destination_addr"]))

    async def test_round_trip(self) -> None:
        """Start, answer and end a dialogue, send an MO, read the log, inject a fault."""
        async with SmscSimulator(enquire_link_s=None, control_port=0) as simulator:
            client = await Esme.connect(simulator.port)
            await client.bind()
            gateway = asyncio.create_task(self.gateway(client))
            base = f"http://127.0.0.1:{simulator.control_port}"
            try:
                async with aiohttp.ClientSession() as http:
                    async with http.post(f"{base}/ussd/start", json={"msisdn": MSISDN, "code": "*090#"}) as r:
                        assert r.status == 200
                        started = await r.json()
                    assert started["screen"] == {"text": "1. Balance", "end": False}
                    answer = f"{base}/ussd/{started['dialogue_id']}/answer"
                    async with http.post(answer, json={"text": "1"}) as r:
                        assert (await r.json())["screen"] == {"text": "Balance: 50000", "end": True}
                    async with http.post(answer, json={"text": "1"}) as r:
                        assert r.status == 409
                    async with http.post(f"{base}/mo", json={"msisdn": MSISDN, "short_code": "9237", "text": "DIEM"}) as r:
                        assert (await r.json())["reply"] == "Got DIEM"
                    async with http.get(f"{base}/pdus", params={"since": "2"}) as r:
                        log = await r.json()
                    assert log["pdus"][0]["index"] == 2 and log["next"] == len(simulator.pdus)
                    assert "deliver_sm" in [p["command"] for p in log["pdus"]]
                    assert any(p["text"] == "Got DIEM" for p in log["pdus"])
                    async with http.post(f"{base}/faults", json={"throttle": {"count": 1}, "resend_next_deliver": True}) as r:
                        assert (await r.json())["applied"] == ["throttle", "resend_next_deliver"]
                    assert (await client.submit(**sms(MSISDN, b"x"))).status == ESME_RTHROTTLED
                    async with http.post(f"{base}/faults", json={"drop_links": True}) as r:
                        assert r.status == 200
                    await asyncio.wait_for(client.closed.wait(), 1.0)
            finally:
                gateway.cancel()
                await asyncio.gather(gateway, return_exceptions=True)
                await client.close()

    async def test_bad_requests_get_400_with_a_reason(self) -> None:
        """Malformed JSON, missing fields, unknown faults and bad params are 400s."""
        async with SmscSimulator(enquire_link_s=None, control_port=0) as simulator:
            base = f"http://127.0.0.1:{simulator.control_port}"
            async with aiohttp.ClientSession() as http:
                for method, path, body in (
                    ("POST", "/ussd/start", b"{not json"),
                    ("POST", "/ussd/start", b'{"code": "*090#"}'),
                    ("POST", "/ussd/start", b'{"msisdn": 84901234567}'),
                    ("POST", "/faults", b'{"explode": true}'),
                    ("POST", "/faults", b'{"throttle": -1}'),
                    ("POST", "/ussd/abc/answer", b'{"text": "1"}'),
                    ("GET", "/pdus?since=x", b""),
                ):
                    async with http.request(method, f"{base}{path}", data=body) as r:
                        assert r.status == 400, (path, body)
                        assert (await r.json())["error"]
                async with http.post(f"{base}/ussd/start", json={"msisdn": MSISDN}) as r:
                    assert r.status == 409  # nobody bound
                async with http.post(f"{base}/ussd/999/abort") as r:
                    assert r.status == 404


class TestCli:
    def test_pdu_line_masks_msisdns(self) -> None:
        """The printed line masks phone numbers but keeps short codes readable."""
        entry = LoggedPdu(0.0, "out", 1, "deliver_sm", 9, 0, {
            "source_addr": MSISDN, "destination_addr": "*090", "ussd_service_op": 1,
            "its_session_info": 2, "data_coding": 0, "short_message": b"*090#",
        })  # fmt: skip
        line = format_pdu(entry, mask=mask_msisdn)
        assert MSISDN not in line and "from=8490****567" in line and "to=*090" in line
        assert "op=1" in line and "session=0x0002" in line and "seq=9" in line and "'*090#'" in line

    async def test_smsc_command_serves_and_prints(self) -> None:
        """`ussd-gateway smsc` accepts a bind, prints masked PDU lines, exits on SIGTERM."""
        port, control = free_port(), free_port()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ussd_gateway.cli", "smsc", "--port", str(port), "--control-port", str(control),
            "--system-id", "tester", "--password", "pw",
            stdout=asyncio.subprocess.PIPE, cwd=PROJECT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        assert process.stdout is not None
        try:
            banner = (await asyncio.wait_for(process.stdout.readline(), 15)).decode()
            assert f"127.0.0.1:{port}" in banner and str(control) in banner
            client = await Esme.connect(port)
            try:
                assert (await client.bind("tester", "pw")).status == ESME_ROK
                await client.submit(**sms(MSISDN, b"hello"))
                lines = [(await asyncio.wait_for(process.stdout.readline(), 5)).decode() for _ in range(4)]
            finally:
                await client.close()
            assert "bind_transceiver" in lines[0] and "submit_sm" in lines[2]
            assert "to=8490****567" in lines[2] and MSISDN not in "".join(lines)
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 10) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
