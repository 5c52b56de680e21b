"""Several instances on one Redis: two `serve` processes on their own ports behind a
round-robin client, one of them also bound to an SMSC. Every hop of a dialogue may
land on either; the subscriber must not notice."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from processes import Instance, RoundRobin

from ussd_gateway.testkit.smsc import SmscSimulator

ALICE = "84901234567"  # 200.000d, not in KNDL
BOB = "84901111111"  # 3.000d
_ids = itertools.count(1)


@dataclass
class Rig:
    smsc: SmscSimulator
    smpp_instance: Instance
    http_instance: Instance
    balancer: RoundRobin


@pytest.fixture
async def rig(redis_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    smsc = SmscSimulator(port=0)
    await smsc.start()
    common = f'[sessions]\nredis_url = "{redis_url}"\n'
    with_bind = tmp_path / "a" / "config.toml"
    with_bind.parent.mkdir()
    with_bind.write_text(
        common + f'[[smpp.binds]]\nname = "smsc1"\npassword = "secret"\nport = {smsc.port}\n'
        'short_codes = ["9237", "999"]\nreconnect_min_s = 0.1\n',
        encoding="utf-8",
    )
    plain = tmp_path / "b" / "config.toml"
    plain.parent.mkdir()
    plain.write_text(common, encoding="utf-8")
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    a, b = Instance(with_bind), Instance(plain)
    try:
        await asyncio.gather(a.start(session), b.start(session))
        await smsc.wait_bound(timeout=20)
        yield Rig(smsc, a, b, RoundRobin(session, [a, b]))
    finally:
        codes = await asyncio.gather(a.stop(), b.stop())
        await session.close()
        await smsc.stop()
    assert codes == [0, 0], "an instance did not stop cleanly"


class JsonPhone:
    """A handset over the JSON dialect, every hop through the balancer."""

    def __init__(self, balancer: RoundRobin, msisdn: str) -> None:
        self.balancer = balancer
        self.msisdn = msisdn
        self.session_id = ""
        self.seq = 0
        self.last: dict | None = None  # type: ignore[type-arg]

    async def dial(self, code: str = "*090#") -> dict:  # type: ignore[type-arg]
        self.session_id, self.seq, self.code = f"rr-{next(_ids)}", 0, code
        return await self._send({"event": "begin"})

    async def send(self, value: str) -> dict:  # type: ignore[type-arg]
        self.seq += 1
        return await self._send({"event": "continue", "input": value})

    async def resend(self, value: str) -> dict:  # type: ignore[type-arg]
        """The gateway retries the last hop (same seq), through the balancer."""
        return await self._send({"event": "continue", "input": value})

    async def _send(self, extra: dict) -> dict:  # type: ignore[type-arg]
        body = {"session_id": self.session_id, "msisdn": self.msisdn, "service_code": self.code, "seq": self.seq, **extra}
        status, reply = await self.balancer.post_json("/ussd", body)
        assert status == 200, reply
        return reply  # type: ignore[no-any-return]


async def balance(balancer: RoundRobin, msisdn: str) -> str:
    reply = await JsonPhone(balancer, msisdn).dial("*101#")
    assert reply["end"], reply
    return str(reply["text"])


class TestRoundRobin:
    async def test_hops_alternate_between_instances_without_a_wrong_screen_or_a_double_debit(self, rig: Rig) -> None:
        balancer = rig.balancer
        assert "200.000" in await balance(balancer, ALICE)
        phone = JsonPhone(balancer, ALICE)
        assert "MobiFone *090#" in (await phone.dial())["text"]
        assert "Mua goi cuoc" in (await phone.send("2"))["text"]
        data = await phone.send("1")
        assert "Goi Data" in data["text"] and "D15" in data["text"]
        confirm = await phone.send("1")
        assert "D15" in confirm["text"] and "15.000" in confirm["text"] and not confirm["end"]
        bought = await phone.send("1")
        assert bought["end"] and "Dang ky thanh cong goi D15" in bought["text"]
        # The gateway did not see the answer and retries: the other instance answers
        # from the saved reply, and nothing is charged again.
        again = await phone.resend("1")
        assert again == bought
        assert "185.000" in await balance(balancer, ALICE)
        ports = set(balancer.used)
        assert ports == {rig.smpp_instance.port, rig.http_instance.port}

    async def test_africastalking_histories_alternate_too(self, rig: Rig) -> None:
        """The cumulative `text` dialect: each hop on the next instance."""
        session_id, screens = f"at-{next(_ids)}", []
        for history in ("", "2", "2*1"):
            status, body = await rig.balancer.post_form(
                "/ussd/africastalking", {"sessionId": session_id, "serviceCode": "*090#", "phoneNumber": "0909999999", "text": history}
            )
            assert status == 200
            screens.append(body)
        assert screens[0].startswith("CON MobiFone *090#")
        assert screens[1].startswith("CON Mua goi cuoc")
        assert screens[2].startswith("CON Goi Data") and "D15" in screens[2]

    async def test_a_dropped_dialogue_resumes_on_the_other_instance(self, rig: Rig) -> None:
        first = JsonPhone(rig.balancer, ALICE)
        await first.dial()  # instance A
        await first.send("2")  # B
        assert "Goi Data" in (await first.send("1"))["text"]  # A; then the call drops
        second = JsonPhone(rig.balancer, ALICE)
        offer = await second.dial()  # B, a new session id
        assert "Quy khach co giao dich chua hoan tat" in offer["text"] and "1.Tiep tuc" in offer["text"]
        resumed = await second.send("1")  # A
        assert "Goi Data" in resumed["text"] and "D15" in resumed["text"]


class TestSmppAndHttpShareState:
    async def test_a_dialogue_begun_over_smpp_resumes_over_http_on_the_other_instance(self, rig: Rig) -> None:
        dialogue = await rig.smsc.start_ussd(ALICE)
        assert "MobiFone *090#" in (await dialogue.next_screen(timeout=5)).text
        await dialogue.answer("2")
        assert "Mua goi cuoc" in (await dialogue.next_screen(timeout=5)).text
        await dialogue.answer("1")
        assert "Goi Data" in (await dialogue.next_screen(timeout=5)).text
        await dialogue.abort()  # the network releases it on the SMPP side

        phone = JsonPhone(rig.balancer, ALICE)
        phone.balancer = RoundRobin(rig.balancer.session, [rig.http_instance])  # HTTP, the instance without the bind
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        offer = await phone.dial()
        while "1.Tiep tuc" not in offer["text"] and loop.time() < deadline:  # the abort is handled on A meanwhile
            await asyncio.sleep(0.05)
            offer = await phone.dial()
        assert "1.Tiep tuc" in offer["text"]
        assert "Goi Data" in (await phone.send("1"))["text"]

    async def test_kndl_registration_started_by_smpp_sms_is_confirmed_over_http(self, rig: Rig) -> None:
        await rig.smsc.send_mo(ALICE, "9237", "DK")
        ask = await rig.smsc.next_mt(ALICE, timeout=5)
        assert "Soan XN gui 9237" in ask.text
        status, reply = await rig.balancer.post_json("/sms", {"msisdn": ALICE, "short_code": "9237", "text": "XN"}, rig.http_instance)
        assert status == 200 and "hoi vien KNDL hang Than thiet" in reply["reply"]

    async def test_kndl_registration_started_over_http_is_confirmed_by_smpp_sms(self, rig: Rig) -> None:
        status, reply = await rig.balancer.post_json("/sms", {"msisdn": BOB, "short_code": "9237", "text": "DK"}, rig.http_instance)
        assert status == 200 and "Soan XN gui 9237" in reply["reply"]
        await rig.smsc.send_mo(BOB, "9237", "XN")
        assert "hoi vien KNDL" in (await rig.smsc.next_mt(BOB, timeout=5)).text
