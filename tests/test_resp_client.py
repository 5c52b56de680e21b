"""The lean Redis client of the hop scripts (`sessions/resp.py`), against a real
redis-server: the same replies as redis-py, errors per command, NOSCRIPT, a frozen
Redis, a restarted one, AUTH and SELECT from the URL."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

from ussd_gateway.sessions.redis_store import RedisStore
from ussd_gateway.sessions.resp import LeanPipeline, Target, lean_pipeline, lean_target
from ussd_gateway.testkit.redis_server import RedisServer


def test_only_plain_single_node_urls_get_the_lean_client() -> None:
    assert lean_target("redis://127.0.0.1:6380/2") == Target(host="127.0.0.1", port=6380, db=2)
    assert lean_target("redis://:s%40cret@h/0") == Target(host="h", password="s@cret")
    assert lean_target("redis://app:pw@h:1/3") == Target(host="h", port=1, db=3, username="app", password="pw")
    assert lean_target("unix:///run/redis.sock?db=4") == Target(path="/run/redis.sock", db=4)
    for url in (
        "rediss://h:6380/0",  # TLS
        "redis+sentinel://h:26379/mymaster",
        "redis+cluster://h:7000",
        "redis://h:6379/0?protocol=3",  # options this client does not implement
        "redis://h:6379/zero",
    ):
        assert lean_target(url) is None, url


async def test_replies_are_redis_pys(redis_url: str) -> None:
    pipeline = lean_pipeline(redis_url, timeout_s=1.0, connect_timeout_s=1.0)
    assert pipeline is not None
    client = aioredis.Redis.from_url(redis_url)
    script = "return {KEYS[1], tonumber(ARGV[1]) + 1, {ARGV[2], false}, redis.call('GET', KEYS[1])}"
    try:
        await client.set("k", b"\x00v\xff")
        commands = [("EVAL", script, 1, "k", 41, "é"), ("MGET", "k", "missing"), ("GET", "k"), ("INCR", "n"), ("TTL", "k")]
        ours = await asyncio.gather(*(pipeline.submit(*command) for command in commands))
        theirs = [await client.execute_command(*command) for command in commands[:3]]
        assert ours[:3] == theirs
        assert ours[0] == [b"k", 42, [b"\xc3\xa9", None], b"\x00v\xff"]  # Lua false is nil
        assert ours[3:] == [1, -1]
    finally:
        await pipeline.close()
        await client.aclose()


async def test_an_error_is_its_own_commands_and_noscript_is_told_apart(redis_url: str) -> None:
    pipeline = lean_pipeline(redis_url, timeout_s=1.0, connect_timeout_s=1.0)
    assert pipeline is not None
    try:
        bad = pipeline.submit("EVALSHA", "0" * 40, 0)
        wrong = pipeline.submit("INCR")  # wrong number of arguments
        good = pipeline.submit("PING")
        with pytest.raises(NoScriptError):
            await bad
        with pytest.raises(ResponseError, match="wrong number of arguments"):
            await wrong
        assert await good == b"PONG"
    finally:
        await pipeline.close()


async def test_the_store_reloads_its_scripts_after_redis_lost_them(redis_url: str) -> None:
    store = RedisStore.from_url(redis_url)
    assert isinstance(store._pipeline, LeanPipeline)
    client = aioredis.Redis.from_url(redis_url)
    try:
        for round_ in range(2):
            await client.script_flush()
            loaded = await store.begin_hop("84901234567", f"s{round_}", "h", f"t{round_}", want_lang=True)
            assert loaded.status.name == "OK"
            assert await store.commit_hop(
                "84901234567", f"t{round_}", session_id=f"s{round_}", hop_key="h", reply=b'["hi", false]', record=b"{}", ttl_s=60, lang=None
            )
    finally:
        await store.close()
        await client.aclose()


async def test_a_frozen_redis_times_out_then_the_next_command_reconnects(own_redis: RedisServer) -> None:
    pipeline = lean_pipeline(own_redis.url, timeout_s=0.3, connect_timeout_s=0.3)
    assert pipeline is not None
    try:
        assert await pipeline.submit("SET", "k", "before") is not None
        own_redis.pause()
        try:
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(pipeline.submit("GET", "k"), 5)
            assert time.monotonic() - started < 2  # the watchdog, not the test's own bound
        finally:
            own_redis.resume()
        # The late reply to the GET is never read as the answer to the next command.
        assert await pipeline.submit("ECHO", "after") == b"after"
        assert await pipeline.submit("GET", "k") == b"before"
    finally:
        await pipeline.close()


async def test_a_restarted_redis_fails_what_was_in_flight_then_serves_again(own_redis: RedisServer) -> None:
    pipeline = lean_pipeline(own_redis.url, timeout_s=1.0, connect_timeout_s=1.0)
    assert pipeline is not None
    try:
        assert await pipeline.submit("PING") == b"PONG"
        own_redis.stop()
        with pytest.raises(OSError):  # ConnectionError: refused or reset
            await pipeline.submit("PING")
        own_redis.start()
        assert await pipeline.submit("PING") == b"PONG"
    finally:
        await pipeline.close()


async def test_auth_and_select_come_from_the_url(own_redis: RedisServer) -> None:
    admin = aioredis.Redis.from_url(own_redis.url)
    await admin.config_set("requirepass", "s3cret word")
    try:
        url = f"redis://:s3cret%20word@127.0.0.1:{own_redis.port}/3"
        pipeline = lean_pipeline(url, timeout_s=1.0, connect_timeout_s=1.0)
        assert pipeline is not None
        try:
            await pipeline.submit("SET", "where", "db3")
        finally:
            await pipeline.close()
        checker = aioredis.Redis.from_url(url)
        try:
            assert await checker.get("where") == b"db3"
            assert await checker.execute_command("SELECT", 0) and await checker.get("where") is None
        finally:
            await checker.aclose()
        refused = lean_pipeline(f"redis://:wrong@127.0.0.1:{own_redis.port}/0", timeout_s=1.0, connect_timeout_s=1.0)
        assert refused is not None
        try:
            with pytest.raises(ConnectionError, match="refused"):
                await refused.submit("PING")
        finally:
            await refused.close()
    finally:
        reset = aioredis.Redis.from_url(f"redis://:s3cret%20word@127.0.0.1:{own_redis.port}/0")
        await reset.config_set("requirepass", "")
        await reset.aclose()
        await admin.aclose()
