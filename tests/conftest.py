"""Shared fixtures: a real redis-server per test session, flushed per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from ussd_gateway.testkit.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server on a free port for the whole run."""
    with RedisServer() as server:
        yield server


@pytest.fixture
async def redis_url(redis_server: RedisServer) -> AsyncIterator[str]:
    """The URL of an empty Redis database (flushed before each test)."""
    redis_server.start()
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    yield redis_server.url


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, which the test may stop and restart."""
    with RedisServer() as server:
        yield server


# ---- a running gateway, over every dialect and store ---------------------------------------
from helpers import Phone, make_settings  # noqa: E402

from ussd_gateway.app.server import create_app  # noqa: E402


@pytest.fixture(params=["memory", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=["africastalking", "json"])
def dialect(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def gateway_client(store_kind: str, redis_server: RedisServer, aiohttp_client):  # type: ignore[no-untyped-def]
    """An aiohttp test client on a real gateway (real TCP port), with the memory store
    or a freshly flushed real Redis."""
    url = ""
    if store_kind == "redis":
        redis_server.start()
        client = aioredis.Redis.from_url(redis_server.url)
        await client.flushdb()
        await client.aclose()
        url = redis_server.url
    return await aiohttp_client(create_app(make_settings(url)))


@pytest.fixture
def phone(gateway_client, dialect: str) -> Phone:  # type: ignore[no-untyped-def]
    """The demo subscriber 84901234567's handset on that gateway."""
    return Phone(gateway_client, dialect)
