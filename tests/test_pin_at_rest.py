"""No scratch-card PIN is kept in Redis in clear, whatever the channel: after top-ups
dialled in one hop (`*100*PIN#`), typed on the prompt, wrong, and of the wrong length,
over Africa's Talking, JSON and SMPP, every key and every value of every type in the
Redis that holds sessions and accounts is scanned for the PINs. The places a PIN
would land otherwise: the dispatcher's replay key (an Africa's Talking key is the
cumulative `text`), the session record's input history, the accounts' state."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from helpers import make_settings
from test_transcripts import serving

from ussd_gateway.testkit.transcripts.channels import make_channel

CARDS = ["100000000016", "100000000017", "100000000018", "100000000019", "500000000008", "500000000009"]
WRONG = ["999999999966", "999999999955", "999999999944"]
SHORT = "12345678901"  # 11 digits: refused by the prompt's check, still typed on it


async def _everything(client: aioredis.Redis) -> bytes:
    """Every key and every value in the database, whatever its type."""
    found: list[bytes] = []
    async for key in client.scan_iter(count=1000):
        found.append(key)
        kind = (await client.type(key)).decode()
        value: Any
        if kind == "string":
            value = [await client.get(key)]
        elif kind == "hash":
            value = [b for pair in (await client.hgetall(key)).items() for b in pair]
        elif kind == "list":
            value = await client.lrange(key, 0, -1)
        elif kind == "set":
            value = list(await client.smembers(key))
        elif kind == "zset":
            value = [m for m, _ in await client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            value = [b for _, fields in await client.xrange(key) for pair in fields.items() for b in pair]
        else:
            raise AssertionError(f"unexpected Redis type {kind} at {key!r}")
        found += [v if isinstance(v, bytes) else str(v).encode() for v in value if v is not None]
    return b"\n".join(found)


async def test_no_pin_in_redis_after_top_ups_over_every_channel(redis_url: str) -> None:
    settings = make_settings(redis_url)
    dialled = iter(CARDS)
    for kind, number in (("africastalking", "84921000001"), ("json", "84921000002"), ("smpp", "84921000003")):
        async with serving("smpp" if kind == "smpp" else "json", settings=settings) as endpoint:
            channel = make_channel(kind, url=endpoint.url, smpp=endpoint.smpp)
            try:
                screen = await channel.dial(number, f"*100*{next(dialled)}#")
                assert screen.end and screen.text.startswith("Nap the thanh cong"), (kind, screen.text)
                screen = await channel.dial(number, "*100#")
                assert not screen.end, (kind, screen.text)
                screen = await channel.send(SHORT)
                assert "12-15" in screen.text, (kind, screen.text)
                screen = await channel.send(WRONG[0])
                assert "Ma the khong dung" in screen.text and not screen.end, (kind, screen.text)
                screen = await channel.send("1")
                screen = await channel.send(next(dialled))
                assert screen.end and screen.text.startswith("Nap the thanh cong"), (kind, screen.text)
                screen = await channel.dial(number, f"*100*{WRONG[1]}#")
                assert "Ma the khong dung" in screen.text, (kind, screen.text)
                # Left open on purpose: the dialogue's record stays in the store.
                await channel.dial(number, "*100#")
                await channel.send(WRONG[2])
            finally:
                await channel.close()
    client = aioredis.Redis.from_url(redis_url)
    try:
        dump = await _everything(client)
    finally:
        await client.aclose()
    assert b":acct" in dump and b"}:s\n" in dump, "the scan saw the stores"
    for pin in [*CARDS, *WRONG, SHORT]:
        assert pin.encode() not in dump, pin
