"""What a hop costs Redis (commands, bytes), and the parts that make it cheap: one
session key per subscriber, rate counters in the BEGIN script, list items saved as
references. Counts and sizes only: never a wall-clock time."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from helpers import Phone, make_settings

from ussd_gateway.app.server import GATEWAY, create_app
from ussd_gateway.sessions.record import Derived, DerivedDict, SessionRecord
from ussd_gateway.sessions.store import LoadStatus
from ussd_gateway.testkit.redis_server import RedisServer


async def _commands(redis: aioredis.Redis) -> int:
    return int((await redis.info("stats"))["total_commands_processed"])


async def _three_hops(client, msisdn: str) -> Phone:  # type: ignore[no-untyped-def]
    phone = Phone(client, "africastalking", msisdn=msisdn)
    assert "MobiFone *090#" in (await phone.dial()).text
    assert "Mua goi cuoc" in (await phone.send("2")).text
    assert "Goi Data:" in (await phone.send("1")).text
    return phone


class TestRedisPerHop:
    async def test_at_most_six_commands_a_hop_with_rate_limits_on(self, redis_url, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        # The session store's commands. The demo backend stays in memory here: in
        # production the accounts are the billing system's, not this Redis's (on Redis,
        # the demo adds a GET of the account where a screen needs it). The per-caller
        # rate is off too: not a hop's cost but one pipeline per process every 100 ms.
        # The funnel is on (its hop side adds no command); its flush, a pipeline per
        # process every few seconds, is put off so it cannot land in the measured hops.
        settings = make_settings(
            redis_url, backend={"kind": "memory"}, limits={"peer_requests_per_second": 0}, funnels={"flush_s": 3600.0}
        )
        client = await aiohttp_client(create_app(settings))
        assert client.server.app[GATEWAY].dispatcher.limiter is not None
        assert client.server.app[GATEWAY].dispatcher.funnel is not None
        await _three_hops(client, "84907770000")  # warm: scripts loaded, catalogue cached
        redis = aioredis.Redis.from_url(redis_url)
        try:
            before = await _commands(redis)
            await _three_hops(client, "84907770001")  # a subscriber never seen: the dearest case
            used = await _commands(redis) - before - 1  # minus the INFO that read `before`
        finally:
            await redis.aclose()
        assert used <= 3 * 6, f"{used} Redis commands for 3 hops"

    async def test_a_live_session_holds_under_700_bytes(self, redis_url, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        client = await aiohttp_client(create_app(make_settings(redis_url)))
        await _three_hops(client, "84907770002")
        redis = aioredis.Redis.from_url(redis_url)
        try:
            # The session's keys; `:acct` is the demo backend's account, which in
            # production lives in the operator's billing system, not in this Redis.
            keys = [key for key in await redis.keys("*{84907770002}*") if not key.endswith(b":acct")]
            used = sum([await redis.memory_usage(key) or 0 for key in keys])
        finally:
            await redis.aclose()
        assert used <= 700, f"{used} bytes in {keys}"

    async def test_rate_counts_come_back_from_the_begin_script(self, redis_url) -> None:  # type: ignore[no-untyped-def]
        from ussd_gateway.sessions.redis_store import RedisStore

        store = RedisStore.from_url(redis_url)
        try:
            counts = []
            for n in range(3):
                loaded = await store.begin_hop("5", f"s{n}", "", f"t{n}", want_lang=False, count=("hop", "session") if n == 0 else ("hop",))
                assert loaded.status is LoadStatus.OK
                counts.append(loaded.counts)
                await store.release("5", f"t{n}")
            locked_first = await store.begin_hop("5", "s", "", "held", want_lang=False, count=("hop",))
            refused = await store.begin_hop("5", "s", "", "other", want_lang=False, count=("hop",))
        finally:
            await store.close()
        assert counts == [(1, 1), (2, 1), (3, 1)]
        assert locked_first.counts == (4, 1) and refused.status is LoadStatus.LOCKED  # a refused attempt counts nothing

    async def test_hops_over_the_limit_get_the_limited_end(self, redis_url, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        client = await aiohttp_client(create_app(make_settings(redis_url, limits={"msisdn_hops_per_minute": 2})))
        phone = Phone(client, "africastalking", msisdn="84907770003")
        assert not (await phone.dial()).end
        assert not (await phone.send("2")).end
        third = await phone.send("1")
        assert third.end and "MobiFone" not in third.text


class TestScriptsAndRestarts:
    async def test_script_flush_mid_dialogue_reloads_the_scripts(self, redis_url, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        client = await aiohttp_client(create_app(make_settings(redis_url)))
        phone = Phone(client, "africastalking", msisdn="84907770004")
        assert "MobiFone" in (await phone.dial()).text
        redis = aioredis.Redis.from_url(redis_url)
        try:
            await redis.script_flush()
        finally:
            await redis.aclose()
        assert "Mua goi cuoc" in (await phone.send("2")).text
        assert "Goi Data:" in (await phone.send("1")).text

    async def test_redis_restarted_mid_run_serves_again(self, own_redis: RedisServer, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        client = await aiohttp_client(create_app(make_settings(own_redis.url)))
        await _three_hops(client, "84907770005")
        own_redis.stop()
        down = await Phone(client, "africastalking", msisdn="84907770006").dial()
        assert down.end
        own_redis.start()
        for _ in range(50):  # the pool reconnects by itself
            screen = await Phone(client, "africastalking", msisdn="84907770007").dial()
            if not screen.end:
                break
            await asyncio.sleep(0.1)
        assert "MobiFone *090#" in screen.text and not screen.end  # (Redis lost the scripts too)
        await _three_hops(client, "84907770008")


class TestReferences:
    def test_derived_values_are_saved_as_references(self) -> None:
        record = SessionRecord(session_id="s", msisdn="1", service_code="*090#", menu="buy", screen="list", lang="vi")
        record.vars["packages"] = Derived([{"code": "D15"}], ["packages", "data", "vi"])
        record.vars["pkg"] = DerivedDict({"code": "D15"}, ["pkg", "D15", "vi"])
        raw = record.to_bytes()
        assert b"D15\"}" not in raw and b'{"$r":["packages","data","vi"]}' in raw
        loaded = SessionRecord.from_bytes(raw)
        assert loaded.refs and loaded.vars["pkg"] == {"$r": ["pkg", "D15", "vi"]}

    async def test_a_picked_package_survives_a_new_process(self, redis_url, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        """The package picked on the list screen is saved as a reference; a second
        gateway (another worker, nothing cached of this dialogue) shows it whole."""
        first = await aiohttp_client(create_app(make_settings(redis_url)))
        phone = await _three_hops(first, "84907770009")
        second = await aiohttp_client(create_app(make_settings(redis_url)))
        phone.client = second
        detail = await phone.send("1")
        assert "Dang ky?" in detail.text and "D15" in detail.text
        back = await phone.send("0")
        assert "Goi Data:" in back.text and "MAX200" in back.text
