"""Money and messages stay one-to-one: every success screen and every confirmation SMS
is one debit, and every debit one confirmation SMS, whatever the gateway does with
session ids, and however Redis fails."""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc

import pytest
import redis.asyncio as aioredis
from helpers import Phone, make_settings

from ussd_gateway.app.server import GATEWAY, create_app
from ussd_gateway.sessions.memory import MemoryStore
from ussd_gateway.testkit.redis_server import RedisServer

BUSY = "He thong dang ban"


async def balance_of(client, msisdn: str) -> str:  # type: ignore[no-untyped-def]
    return (await Phone(client, "json", msisdn=msisdn).dial("*101#")).text


async def sms_to(client, msisdn: str) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    return await (await client.get("/sms/outbound", params={"to": msisdn})).json()


class TestRecycledSessionIds:
    async def test_a_reused_session_id_buys_again_and_is_debited(self, gateway_client, dialect) -> None:  # type: ignore[no-untyped-def]
        """Two dialogues under one session id (the gateway recycled it after END):
        the second purchase is a new debit with its own SMS, not the first's record."""
        phone = Phone(gateway_client, dialect)
        await phone.dial(session_id="recycled-1")
        first = await phone.walk("2", "1", "1", "1")
        assert first.end and "185.000d" in first.text
        await phone.dial(session_id="recycled-1")
        second = await phone.walk("2", "1", "1", "1")
        assert second.end and "170.000d" in second.text
        assert "170.000d" in await balance_of(gateway_client, phone.msisdn)
        assert len(await sms_to(gateway_client, phone.msisdn)) == 2

    async def test_a_new_begin_under_an_old_id_is_not_a_replay(self, store_kind, redis_server, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        """A dialogue that ended on its first screen (*101#), then a new dialogue under
        the same id once the retry window has passed: fresh screen, not the saved one.
        A retry within the window is still answered from the saved reply."""
        url = ""
        if store_kind == "redis":
            redis_server.start()
            client = aioredis.Redis.from_url(redis_server.url)
            await client.flushdb()
            await client.aclose()
            url = redis_server.url
        client = await aiohttp_client(create_app(make_settings(url, sessions={"begin_retry_ms": 300})))
        phone = Phone(client, "json")
        first = await phone.dial("*101#", session_id="same-id")
        assert "200.000d" in first.text
        assert (await phone.repeat()).text == first.text  # a retried begin: replayed
        # The balance moves outside any dialogue (an SMS purchase), the session record
        # stays as it was; the same id dialled again after the window is a new dialogue.
        await client.post("/sms", json={"msisdn": phone.msisdn, "short_code": "999", "text": "D15"})
        await asyncio.sleep(0.4)
        again = await Phone(client, "json").dial("*101#", session_id="same-id")
        assert "185.000d" in again.text, again.text

    async def test_smpp_session_number_wrap_does_not_replay_a_purchase(self, gateway_client) -> None:  # type: ignore[no-untyped-def]
        """The same its_session_info number (8 bits, wrapped) for a later dialogue: a
        new debit. Over the dispatcher as the SMPP channel builds its hops."""
        from ussd_gateway.core.hop import Hop, HopKind

        dispatcher = gateway_client.server.app[GATEWAY].dispatcher
        msisdn = "84905550001"

        async def dialogue() -> str:
            sid = f"smpp:{msisdn}:7"
            reply = await dispatcher.handle(Hop("smpp", sid, msisdn, "*090#", HopKind.BEGIN, hop_key="i:7:*090#"))
            for n, value in enumerate(("2", "1", "1", "1")):
                reply = await dispatcher.handle(Hop("smpp", sid, msisdn, "*090#", HopKind.CONTINUE, inputs=(value,), hop_key=f"i:7:{value}:{n}"))
            return reply.text

        assert "85.000d" in await dialogue()
        assert "70.000d" in await dialogue()


class TestSmsPerSubscriber:
    async def test_two_numbers_sharing_a_session_id_each_get_their_sms(self, gateway_client, dialect) -> None:  # type: ignore[no-untyped-def]
        a = Phone(gateway_client, dialect, msisdn="84905550011")
        b = Phone(gateway_client, dialect, msisdn="84905550012")
        await a.dial(session_id="shared")
        await b.dial(session_id="shared")
        assert "85.000d" in (await a.walk("2", "1", "1", "1")).text
        assert "85.000d" in (await b.walk("2", "1", "1", "1")).text
        assert len(await sms_to(gateway_client, a.msisdn)) == 1
        assert len(await sms_to(gateway_client, b.msisdn)) == 1

    async def test_money_and_message_keys_carry_the_subscriber_tag(self, redis_url, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        client = await aiohttp_client(create_app(make_settings(redis_url)))
        phone = Phone(client, "json", msisdn="84905550021")
        await phone.dial()
        await phone.walk("2", "1", "1", "1")
        r = aioredis.Redis.from_url(redis_url)
        try:
            keys = [k.decode() async for k in r.scan_iter(match="*")]
        finally:
            await r.aclose()
        guarded = [k for k in keys if ":idem:" in k or "outbox" in k]
        assert guarded, keys
        assert all("{84905550021}" in k for k in guarded), keys
        # An SMS's dedupe key lives beside the queue (one slot for the queueing script),
        # named by the number, so two subscribers' keys never collide.
        dedupe = [k for k in keys if "dedupe" in k]
        assert dedupe and all(k.startswith("ussd:{sms}:dedupe:84905550021:") for k in dedupe), keys


class TestOutboundSmsGrowth:
    async def test_the_demo_view_finds_the_newest_sms(self, gateway_client) -> None:  # type: ignore[no-untyped-def]
        from ussd_gateway.sessions.store import OutboundSms

        store = gateway_client.server.app[GATEWAY].store
        for n in range(1200):
            await store.enqueue_sms(OutboundSms(to=f"8490{n:07d}", sender="9237", text="x", dedupe_key=f"k{n}"))
        phone = Phone(gateway_client, "json", msisdn="84905550031")
        await phone.dial()
        await phone.walk("2", "1", "1", "1")
        assert len(await sms_to(gateway_client, phone.msisdn)) == 1

    async def test_the_queue_is_capped_and_drops_are_counted(self, redis_url) -> None:  # type: ignore[no-untyped-def]
        from ussd_gateway.sessions.redis_store import RedisStore
        from ussd_gateway.sessions.store import OutboundSms

        dropped: list[int] = []
        store = RedisStore.from_url(redis_url, sms_queue_max=50, on_sms_dropped=dropped.append)
        try:
            for n in range(80):
                await store.enqueue_sms(OutboundSms(to="84905550041", sender="9237", text=str(n), dedupe_key=f"c{n}"))
            queued = await store.outbound_sms(1000)
        finally:
            await store.close()
        assert len(queued) == 50 and queued[-1].text == "79"
        assert sum(dropped) == 30


class TestMemoryPerDialogue:
    async def test_the_memory_store_keeps_only_the_bytes_it_needs(self) -> None:
        """Bytes held per finished dialogue (record, reply, keys), measured."""
        import orjson

        store = MemoryStore()
        record = orjson.dumps({"sid": "x" * 20, "menu": "main", "screen": "start", "vars": {}, "stack": []})
        reply = orjson.dumps(["MobiFone *090#: 1 Tai khoan 2 Mua goi", False])
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for n in range(2000):
            msisdn = f"8490{n:07d}"
            token = f"t{n}"
            await store.begin_hop(msisdn, f"s{n}", "", token, want_lang=False)
            await store.commit_hop(
                msisdn, token, session_id=f"s{n}", hop_key="t:", reply=orjson.dumps(orjson.loads(reply)),
                record=orjson.dumps(orjson.loads(record)), ttl_s=300, lang=None,
            )
        per_dialogue = (tracemalloc.get_traced_memory()[0] - before) / 2000
        tracemalloc.stop()
        assert per_dialogue < 1500, f"{per_dialogue:.0f} bytes per dialogue"


class TestLocksOfDeadHops:
    async def test_a_dead_hops_lock_frees_within_about_a_deadline(self, redis_url, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        client = await aiohttp_client(create_app(make_settings(redis_url)))
        store = client.server.app[GATEWAY].store
        loaded = await store.begin_hop("84905550051", "dead", "", "a-dead-hop", want_lang=False)
        assert loaded.status.value == "ok"
        deadline = client.server.app[GATEWAY].dispatcher.settings.hop_deadline_s
        await asyncio.sleep(deadline * 1.5)
        screen = await Phone(client, "json", msisdn="84905550051").dial()
        assert not screen.end and "MobiFone" in screen.text


class TestHungRedisDuringMoney:
    async def test_a_purchase_with_redis_frozen_is_busy_within_the_deadline(self, own_redis: RedisServer, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        """Redis frozen right before the purchase hop: the answer is the busy END within
        the deadline (2x slack), and once Redis is back the retried hop tells the truth."""
        client = await aiohttp_client(create_app(make_settings(own_redis.url)))
        phone = Phone(client, "json", msisdn="84905550061")
        await phone.dial()
        await phone.walk("2", "1", "1")
        deadline = client.server.app[GATEWAY].dispatcher.settings.hop_deadline_s
        own_redis.pause()
        try:
            started = time.perf_counter()
            screen = await phone.send("1")
            elapsed = time.perf_counter() - started
        finally:
            await asyncio.sleep(1.5)
            own_redis.resume()
        assert screen.end and BUSY in screen.text
        assert elapsed < deadline * 2, elapsed
        await asyncio.sleep(deadline * 1.5)
        retried = await phone.repeat()
        balance = await balance_of(client, phone.msisdn)
        if "85.000d" in balance:  # the debit happened: the retry shows its success
            assert "85.000d" in retried.text and retried.end
            assert len(await sms_to(client, phone.msisdn)) == 1
        else:
            assert "100.000d" in balance and "85.000d" not in retried.text
            assert len(await sms_to(client, phone.msisdn)) == 0


class TestOutboxSweep:
    async def test_an_outbox_left_behind_reaches_the_queue(self, redis_url: str, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        """A process died between a debit and moving its SMS (the SMS sits in the
        subscriber's outbox): the next worker to start moves it to the SMS queue."""
        from ussd_gateway.sessions.redis_store import sms_payload, subscriber_key
        from ussd_gateway.sessions.store import OutboundSms

        msisdn = "84905550077"
        orphan = OutboundSms(to=msisdn, sender="MobiFone", text="Dang ky thanh cong goi D15", dedupe_key="n1:3:1")
        raw = aioredis.Redis.from_url(redis_url)
        await raw.rpush(subscriber_key("ussd", msisdn, "outbox"), sms_payload(orphan))
        client = await aiohttp_client(create_app(make_settings(redis_url, sessions={"outbox_sweep_s": 0.05})))
        for _ in range(100):
            if await sms_to(client, msisdn):
                break
            await asyncio.sleep(0.02)
        assert [s["text"] for s in await sms_to(client, msisdn)] == ["Dang ky thanh cong goi D15"]
        assert await raw.llen(subscriber_key("ussd", msisdn, "outbox")) == 0
        await raw.aclose()
