"""The self-care services: scratch-card top-up, postpaid bill, points (earning, history,
transfers), ending a package, offers, airtime advance. Money and points move exactly
once under retried calls and hops and under concurrent dialogues (memory and a real
Redis); PINs never reach logs, metrics, recordings or the stores; the HTTP backend and
the test billing server speak the new routes."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import structlog.testing
from aiohttp import web
from helpers import make_settings
from test_transcripts import serving

from ussd_gateway.app.server import GATEWAY
from ussd_gateway.core.errors import DependencyDown
from ussd_gateway.backend import DemoBackend, HttpBackend, load_demo_data
from ussd_gateway.backend.demo_selfcare import RedisCare, SelfcareDemo
from ussd_gateway.testkit.billing_server import create_billing_app
from ussd_gateway.testkit.transcripts import load_transcript

DATA = load_demo_data()
ALICE = "84901234567"  # 200.000d, MAX90, 1.250 points, not a member
POOR = "84901111111"  # 3.000d
GOLD = "84909999999"  # Vang, 52.000 points
POSTPAID = "84902222222"  # bill 245.000d, 100.000d paid, 300.000d linked balance
BAC = "84903333333"  # Bac, 3.000 points
TITAN = "84904444444"  # Titan, 10.000 points
CARD_10K = [f"1000000000{n:02d}" for n in range(1, 21)]
CARD_50K = [f"5000000000{n:02d}" for n in range(1, 11)]
_numbers = itertools.count(1)


def fresh() -> str:
    return f"849200{next(_numbers):05d}"


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[DemoBackend]:
    demo = DemoBackend.in_memory(DATA) if request.param == "memory" else DemoBackend.on_redis(redis_url, DATA)
    try:
        yield demo
    finally:
        await demo.close()


# ---- the demo backend, both storage modes -------------------------------------------------------
class TestTopupBackend:
    async def test_a_card_credits_once_per_key_and_is_usable_once(self, backend: DemoBackend) -> None:
        """A 10.000d card: ok; the same key again answers the same; any other call finds it used."""
        first = await backend.topup(ALICE, CARD_10K[0], "k1")
        assert (first.status, first.amount, first.bonus, first.balance) == ("ok", 10000, 0, 210000)
        assert await backend.topup(ALICE, CARD_10K[0], "k1") == first
        assert (await backend.topup(ALICE, CARD_10K[0], "k2")).status == "used"
        assert (await backend.topup(POOR, CARD_10K[0], "k1")).status == "used"
        assert (await backend.account(ALICE)).balance == 210000
        assert (await backend.account(POOR)).balance == 3000

    async def test_wrong_pin_and_bonus(self, backend: DemoBackend) -> None:
        """An unknown PIN is `invalid`; a 50.000d card earns the 20% bonus."""
        assert (await backend.topup(ALICE, "123456789012", "w")).status == "invalid"
        result = await backend.topup(ALICE, CARD_50K[0], "b")
        assert (result.amount, result.bonus, result.balance) == (50000, 10000, 260000)
        history = await backend.topup_history(ALICE)
        assert [(h.amount, h.bonus) for h in history] == [(50000, 10000)]

    async def test_concurrent_calls_with_one_card(self, backend: DemoBackend) -> None:
        """30 concurrent calls of two subscribers, retries and new keys mixed, on one
        50.000d card: it is credited once, to one subscriber."""
        number = fresh()
        pairs = [(who, f"key-{n % 7}") for n, who in enumerate([number, ALICE] * 15)]
        results = await asyncio.gather(*(backend.topup(who, CARD_50K[1], key) for who, key in pairs))
        assert len({pair for pair, r in zip(pairs, results) if r.status == "ok"}) == 1  # one call won (retries of it replay)
        total = (await backend.account(number)).balance - 100000 + (await backend.account(ALICE)).balance - 200000
        assert total == 60000
        winners = {r.balance for r in results if r.status == "ok"}
        assert len(winners) == 1

    async def test_concurrent_retries_of_one_call(self, backend: DemoBackend) -> None:
        """The same call (same key) 20 times at once: one credit, 20 identical answers."""
        number = fresh()
        results = await asyncio.gather(*(backend.topup(number, CARD_10K[1], "same") for _ in range(20)))
        assert len(set(results)) == 1 and results[0].status == "ok"
        assert (await backend.account(number)).balance == 110000

    async def test_concurrent_cards_of_one_subscriber_all_count(self, backend: DemoBackend) -> None:
        """Ten different cards at once for one subscriber: every one is credited."""
        number = fresh()
        results = await asyncio.gather(*(backend.topup(number, pin, f"c{pin}") for pin in CARD_10K[10:20]))
        assert all(r.status == "ok" for r in results)
        assert (await backend.account(number)).balance == 200000
        assert len(await backend.topup_history(number, 50)) == 10


class TestAdvanceBackend:
    async def test_a_card_claimed_but_not_credited_is_credited_by_a_new_dial(
        self, backend: DemoBackend, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The card is claimed, then the credit fails (Redis stopped, the hop's lock
        expired): the subscriber's next dial of it, in a new dialogue, credits it once;
        after that it is used, for them and for anyone else."""
        care = backend._care
        original = type(care).run
        calls = {"n": 0}

        async def fail_first_credit(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == 1:
                raise DependencyDown("the credit never reached the store")
            return await original(self, *args, **kwargs)

        monkeypatch.setattr(type(care), "run", fail_first_credit)
        number = fresh()
        with pytest.raises(DependencyDown):
            await backend.topup(number, CARD_10K[15], "first-dialogue")
        assert (await backend.account(number)).balance == 100000
        credited = await backend.topup(number, CARD_10K[15], "second-dialogue")
        assert (credited.status, credited.balance) == ("ok", 110000)
        assert (await backend.topup(number, CARD_10K[15], "third-dialogue")).status == "used"
        assert (await backend.topup(ALICE, CARD_10K[15], "someone-else")).status == "used"
        assert (await backend.account(number)).balance == 110000

    async def test_advance_is_repaid_once_by_top_ups(self, backend: DemoBackend) -> None:
        """3.000d short of 12.000d: 20.000d offered with a 2.000d fee; taken twice with
        one key, credited once; the next top-ups repay 22.000d exactly once."""
        number = POOR
        quote = await backend.advance_quote(number, 12000)
        assert (quote.status, quote.amount, quote.fee) == ("ok", 20000, 2000)
        taken = await backend.take_advance(number, 20000, "adv")
        assert await backend.take_advance(number, 20000, "adv") == taken
        assert (taken.balance, taken.owed) == (23000, 22000)
        assert (await backend.take_advance(number, 20000, "adv2")).status == "owed"
        assert (await backend.advance_quote(number, 1000)).status == "owed"
        first = await backend.topup(number, CARD_10K[2], "t1")
        assert await backend.topup(number, CARD_10K[2], "t1") == first
        assert (first.repaid, first.balance) == (10000, 23000)
        second = await backend.topup(number, CARD_50K[2], "t2")
        assert (second.repaid, second.balance) == (12000, 23000 + 60000 - 12000)
        third = await backend.topup(number, CARD_10K[3], "t3")
        assert third.repaid == 0
        assert (await backend.advance_quote(number, 1000)).status == "ok"

    async def test_no_advance_beyond_the_largest(self, backend: DemoBackend) -> None:
        assert (await backend.advance_quote(ALICE, 60000)).status == "too_much"
        assert (await backend.advance_quote(POSTPAID, 1000)).status == "not_allowed"


class TestBillBackend:
    async def test_bill_is_paid_once(self, backend: DemoBackend) -> None:
        """Concurrent payments, retries and new keys: 145.000d leaves the balance once."""
        bill = await backend.bill(POSTPAID)
        assert bill is not None and (bill.amount, bill.paid, bill.unpaid, bill.pay_from_balance) == (245000, 100000, 145000, True)
        results = await asyncio.gather(*(backend.pay_bill(POSTPAID, f"p{n % 3}") for n in range(12)))
        assert {r.status for r in results} == {"ok", "nothing_due"}
        assert (await backend.account(POSTPAID)).balance == 155000
        assert (await backend.bill(POSTPAID)).unpaid == 0  # type: ignore[union-attr]
        assert await backend.bill(ALICE) is None
        assert (await backend.pay_bill(ALICE, "x")).status == "not_allowed"


class TestPointsBackend:
    async def test_purchases_earn_points_by_tier(self, backend: DemoBackend) -> None:
        """Gold (Vang, 150%) buying D15 earns 22 points; a non-member 15; both in the history."""
        assert (await backend.purchase(GOLD, "D15", "g")).points == 52022
        assert (await backend.purchase(GOLD, "D15", "g")).points == 52022
        assert [(e.kind, e.points, e.ref) for e in await backend.points_history(GOLD)] == [("earn", 22, "D15")]
        assert (await backend.purchase(ALICE, "D15", "a")).points == 1265
        await backend.redeem(GOLD, "R-10K", "r")
        assert [(e.kind, e.points) for e in await backend.points_history(GOLD)] == [("redeem", -1000), ("earn", 22)]

    async def test_transfer_moves_points_exactly_once(self, backend: DemoBackend) -> None:
        """Bac (3.000 points) sends 1.000 points under 10 keys, each sent 3 times at once:
        three go through, the rest are short; Titan gains exactly what Bac lost."""
        calls = [backend.transfer_points(BAC, "0904444444", 1000, f"x{n}") for n in range(10) for _ in range(3)]
        results = await asyncio.gather(*calls)
        ok_keys = {n for n, r in zip([n for n in range(10) for _ in range(3)], results) if r.status == "ok"}
        assert len(ok_keys) == 3
        assert (await backend.account(BAC)).points == 0
        assert (await backend.account(TITAN)).points == 13000
        received = [e for e in await backend.points_history(TITAN, 10) if e.kind == "received"]
        assert [e.points for e in received] == [1000, 1000, 1000] and received[0].ref == "8490****333"

    async def test_transfer_refusals(self, backend: DemoBackend) -> None:
        assert (await backend.transfer_points(BAC, BAC, 500, "s")).status == "self"
        assert (await backend.transfer_points(BAC, POOR, 500, "n")).status == "recipient_not_member"
        assert (await backend.transfer_points(ALICE, GOLD, 500, "m")).status == "not_member"
        assert (await backend.transfer_points(BAC, GOLD, 50, "i")).status == "invalid"
        short = await backend.transfer_points(BAC, GOLD, 5000, "f")
        assert (short.status, short.missing) == ("insufficient", 2000)
        assert (await backend.account(GOLD)).points == 52000

    async def test_an_interrupted_transfer_is_completed_by_the_retry(self, backend: DemoBackend, monkeypatch: pytest.MonkeyPatch) -> None:
        """The sender is debited, then the process stops before the recipient is
        credited: the retry (same key) credits the recipient, once."""
        original = SelfcareDemo._credit
        calls = {"n": 0}

        async def crash_once(self: Any, sender: str, pending: Any) -> None:
            calls["n"] += 1
            if calls["n"] == 1:
                raise ConnectionError("the worker died here")
            await original(self, sender, pending)

        monkeypatch.setattr(SelfcareDemo, "_credit", crash_once)
        with pytest.raises(ConnectionError):
            await backend.transfer_points(BAC, TITAN, 1000, "half")
        assert (await backend.account(BAC)).points == 2000
        assert (await backend.account(TITAN)).points == 10000
        again = await backend.transfer_points(BAC, TITAN, 1000, "half")
        assert again.status == "ok"
        again = await backend.transfer_points(BAC, TITAN, 1000, "half")
        assert (await backend.account(BAC)).points == 2000
        assert (await backend.account(TITAN)).points == 11000


class TestPackagesAndOffers:
    async def test_end_package_now(self, backend: DemoBackend) -> None:
        ended = await backend.end_package(ALICE, "max90")
        assert ended.status == "ok" and ended.account.packages == ()
        assert (await backend.end_package(ALICE, "MAX90")).status == "not_found"

    async def test_offers(self, backend: DemoBackend) -> None:
        offers = await backend.offers(ALICE)
        assert [(o.code, o.kind) for o in offers] == [("NAP50", "topup_bonus"), ("C90N-KM", "package")]


async def test_the_redis_store_keeps_no_pin(redis_url: str) -> None:
    """After top-ups (good, used, wrong), no Redis key or value holds a PIN."""
    backend = DemoBackend.on_redis(redis_url, DATA)
    try:
        await backend.topup(ALICE, CARD_10K[4], "a")
        await backend.topup(POOR, CARD_10K[4], "b")
        await backend.topup(POOR, "987654321098", "c")
        assert isinstance(backend._care, RedisCare)
    finally:
        await backend.close()
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = await client.keys("*")
        dump = b"".join(keys) + b"".join([v for v in await client.mget(keys) if v])
    finally:
        await client.aclose()
    assert CARD_10K[4].encode() not in dump and b"987654321098" not in dump


# ---- the HTTP backend against the test billing server --------------------------------------------
@pytest.fixture
async def billing() -> AsyncIterator[tuple[HttpBackend, str]]:
    demo = DemoBackend.in_memory(DATA)
    runner = web.AppRunner(create_billing_app(demo, token="t"))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    client = HttpBackend(url, timeout_s=2, token="t")
    try:
        yield client, url
    finally:
        await client.close()
        await runner.cleanup()
        await demo.close()


class TestHttpContract:
    async def test_topup_routes(self, billing: tuple[HttpBackend, str]) -> None:
        client, _ = billing
        assert (await client.topup(ALICE, CARD_50K[3], "h1")).bonus == 10000
        assert (await client.topup(ALICE, CARD_50K[3], "h1")).status == "ok"  # replayed
        assert (await client.topup(ALICE, CARD_50K[3], "h2")).status == "used"
        assert (await client.topup(ALICE, "111111111111", "h3")).status == "invalid"
        assert [h.amount for h in await client.topup_history(ALICE)] == [50000]

    async def test_bill_points_offers_advance_end(self, billing: tuple[HttpBackend, str]) -> None:
        client, _ = billing
        bill = await client.bill(POSTPAID)
        assert bill is not None and bill.unpaid == 145000
        assert await client.bill(ALICE) is None
        assert (await client.pay_bill(POSTPAID, "p")).status == "ok"
        assert (await client.pay_bill(POSTPAID, "p2")).status == "nothing_due"
        assert (await client.pay_bill(ALICE, "p3")).status == "not_allowed"
        assert (await client.transfer_points(BAC, TITAN, 500, "t")).sent == 500
        assert (await client.transfer_points(BAC, POOR, 500, "t2")).status == "recipient_not_member"
        assert (await client.transfer_points(BAC, TITAN, 9000, "t3")).status == "insufficient"
        assert [e.kind for e in await client.points_history(BAC)] == ["sent"]
        assert len(await client.offers(ALICE)) == 2
        assert (await client.advance_quote(POOR, 5000)).amount == 10000
        assert (await client.take_advance(POOR, 10000, "a")).owed == 11000
        assert (await client.take_advance(POOR, 10000, "a2")).status == "owed"
        assert (await client.end_package(ALICE, "MAX90")).status == "ok"
        assert (await client.end_package(ALICE, "MAX90")).status == "not_found"

    async def test_malformed_requests_are_400(self, billing: tuple[HttpBackend, str]) -> None:
        _, url = billing
        headers = {"Authorization": "Bearer t"}
        async with aiohttp.ClientSession(headers=headers) as http:
            for path, body in [
                ("/v1/subscribers/84901234567/topups", {"idempotency_key": "k"}),
                ("/v1/subscribers/84901234567/points/transfers", {"to": GOLD, "points": 1.5, "idempotency_key": "k"}),
                ("/v1/subscribers/84901234567/advances", {"amount": "1000", "idempotency_key": "k"}),
            ]:
                async with http.post(url + path, json=body) as response:
                    assert response.status == 400, path
                    assert "error" in await response.json()
            async with http.get(url + "/v1/subscribers/84901234567/advance?missing=-1") as response:
                assert response.status == 400


# ---- through the gateway: retried hops, concurrent dialogues, workers, secrets ---------------------
async def _hop(http: aiohttp.ClientSession, url: str, session: str, msisdn: str, code: str, seq: int, value: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"session_id": session, "msisdn": msisdn, "service_code": code, "event": "begin" if value is None else "continue", "seq": seq}
    if value is not None:
        body["input"] = value
    async with http.post(url + "/ussd", json=body) as response:
        assert response.status == 200
        return await response.json()  # type: ignore[no-any-return]


async def _balance(http: aiohttp.ClientSession, url: str, msisdn: str) -> str:
    return str((await _hop(http, url, f"bal-{next(_numbers)}", msisdn, "*101#", 0))["text"])


class TestThroughTheGateway:
    async def test_a_retried_top_up_hop_credits_once(self, redis_url: str) -> None:
        """*100*PIN# sent 8 times at once, then 3 more times, as a gateway retrying one
        hop: one credit; and the Africa's Talking form of the same."""
        number = fresh()
        async with serving(settings=make_settings(redis_url)) as endpoint, aiohttp.ClientSession() as http:
            code = f"*100*{CARD_50K[4]}#"
            answers = await asyncio.gather(*(_hop(http, endpoint.url, "retry-1", number, code, 0) for _ in range(8)))
            answers += [await _hop(http, endpoint.url, "retry-1", number, code, 0) for _ in range(3)]
            assert {a["text"] for a in answers} == {"Nap the thanh cong 50.000d, KM 10.000d. TKC: 160.000d."}
            assert "160.000d" in await _balance(http, endpoint.url, number)
            form = {"sessionId": "at-1", "serviceCode": "*100#", "phoneNumber": number, "text": CARD_10K[5]}
            texts = []
            for _ in range(3):
                async with http.post(endpoint.url + "/ussd/africastalking", data=form) as response:
                    texts.append(await response.text())
            assert texts == ["END Nap the thanh cong 10.000d. TKC: 170.000d."] * 3

    async def test_concurrent_dialogues_of_one_subscriber(self, redis_url: str) -> None:
        """Ten dialogues of one subscriber at once with one card: one is credited, the
        others are told it is used; ten dialogues with ten cards: all credited."""
        number = fresh()
        async with serving(settings=make_settings(redis_url)) as endpoint, aiohttp.ClientSession() as http:
            code = f"*100*{CARD_50K[5]}#"
            answers = await asyncio.gather(*(_hop(http, endpoint.url, f"d{n}", number, code, 0) for n in range(10)))
            credited = [a for a in answers if a["text"].startswith("Nap the thanh cong")]
            assert len(credited) == 1
            assert all("da duoc su dung" in a["text"] for a in answers if a not in credited), answers
            assert "160.000d" in await _balance(http, endpoint.url, number)
            other = fresh()
            cards = CARD_10K[6:10] + CARD_50K[6:10]
            answers = await asyncio.gather(*(_hop(http, endpoint.url, f"e{pin}", other, f"*100*{pin}#", 0) for pin in cards))
            assert all(a["text"].startswith("Nap the thanh cong") for a in answers)
            assert f"{100000 + 4 * 10000 + 4 * 60000:,}".replace(",", ".") + "d" in await _balance(http, endpoint.url, other)

    async def test_points_transfer_hop_retried_and_concurrent(self, redis_url: str) -> None:
        """The confirming hop of a transfer, retried 5 times at once: Titan gains 1.000 once."""
        async with serving(settings=make_settings(redis_url)) as endpoint, aiohttp.ClientSession() as http:
            url = endpoint.url
            await _hop(http, url, "x", BAC, "*090#", 0)
            for seq, value in enumerate(["4", "3", "0904444444", "1000"], start=1):
                await _hop(http, url, "x", BAC, "*090#", seq, value)
            answers = await asyncio.gather(*(_hop(http, url, "x", BAC, "*090#", 5, "1") for _ in range(5)))
            assert {a["text"] for a in answers} == {"Da chuyen 1.000 diem cho 0904444444. Diem con lai: 2.000."}
            backend = endpoint.app[GATEWAY].backend
            assert (await backend.account(TITAN)).points == 11000

    async def test_the_lockout_is_shared_by_workers_on_redis(self, redis_url: str) -> None:
        """Wrong PINs split between two gateways on one Redis lock both after five."""
        number = fresh()
        settings = make_settings(redis_url)
        async with serving(settings=settings) as one, serving(settings=settings) as two, aiohttp.ClientSession() as http:
            for n in range(5):
                worker = (one, two)[n % 2]
                answer = await _hop(http, worker.url, f"w{n}", number, f"*100*99999999990{n}#", 0)
            assert "tam khoa 24 gio" in answer["text"]
            for worker in (one, two):
                answer = await _hop(http, worker.url, f"z{worker.url}", number, f"*100*{CARD_10K[10 if worker is one else 11]}#", 0)
                assert "tam khoa" in answer["text"] and answer["end"]
            assert "100.000d" in await _balance(http, one.url, number)

    async def test_the_lockout_in_memory(self) -> None:
        number = fresh()
        settings = make_settings(services={"topup_max_failures": 2, "topup_lock_s": 90})
        async with serving(settings=settings) as endpoint, aiohttp.ClientSession() as http:
            first = await _hop(http, endpoint.url, "m1", number, "*100*999999999991#", 0)
            assert "con 1 lan thu" in first["text"]
            second = await _hop(http, endpoint.url, "m2", number, "*100*999999999992#", 0)
            assert "Quy khach da nhap sai ma the 2 lan. Chuc nang nap the tam khoa 2 phut." in second["text"]

    async def test_pins_never_reach_logs_metrics_or_recordings(self, tmp_path: Path) -> None:
        """A one-hop top-up, a PIN typed on the prompt and a wrong PIN: no log event,
        /metrics or recorded transcript carries one; recordings say `{pin}`."""
        directory = tmp_path / "rec"
        settings = make_settings(recording={"enabled": True, "sample_rate": 1.0, "directory": str(directory)})
        pins = [CARD_10K[12], CARD_10K[13], "999999999977", "12345678901"]
        number = fresh()
        async with serving(settings=settings) as endpoint, aiohttp.ClientSession() as http:
            with structlog.testing.capture_logs() as logs:
                await _hop(http, endpoint.url, "s1", number, f"*100*{pins[0]}#", 0)
                await _hop(http, endpoint.url, "s2", number, "*090#", 0)
                for seq, value in enumerate(["8", "1", pins[3], pins[1]], start=1):
                    await _hop(http, endpoint.url, "s2", number, "*090#", seq, value)
                await _hop(http, endpoint.url, "s3", number, "*100#", 0)
                await _hop(http, endpoint.url, "s3", number, "*100#", 1, pins[2])
            async with http.get(endpoint.url + "/metrics") as response:
                metrics = await response.text()
            await endpoint.app[GATEWAY].dispatcher.recorder.flush()  # type: ignore[union-attr]
        assert any(e["event"] == "hop" for e in logs)
        logged = repr(logs)
        files = sorted(directory.glob("*.toml"))
        assert len(files) == 3
        recorded = "\n".join(f.read_text() for f in files)
        for pin in pins:
            assert pin not in logged and pin not in metrics and pin not in recorded, pin
        assert 'dial = "*100*{pin}#"' in recorded and 'send = "{pin}"' in recorded and "--var pin=" in recorded
        for file in files:
            load_transcript(file)  # a recorded file with {pin} is a valid transcript


async def test_smpp_answers_a_pin_dial_without_echoing_the_pin() -> None:
    """Over SMPP, `*100*PIN#` is answered from `*100`: the PIN is not sent back in any
    submit_sm, and the top-up is done."""
    async with serving("smpp") as endpoint:
        from ussd_gateway.testkit.transcripts import make_channel

        channel = make_channel("smpp", smpp=endpoint.smpp)
        screen = await channel.dial(fresh(), f"*100*{CARD_10K[14]}#")
        await channel.close()
        assert screen.end and screen.text.startswith("Nap the thanh cong 10.000d")
        async with aiohttp.ClientSession() as http, http.get(f"http://{endpoint.smpp}/pdus") as response:
            entries = (await response.json())["pdus"]
    submits = [e for e in entries if e["command"] == "submit_sm"]
    assert submits and all(e["fields"]["source_addr"] == "*100" for e in submits)
    assert not any(CARD_10K[14] in repr(e["fields"]) for e in submits)
