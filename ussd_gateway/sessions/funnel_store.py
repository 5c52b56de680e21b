"""The menus' funnels in Redis: per-minute counts of what dialogues did on each screen.

Every gateway process counts in memory (`dispatch.funnel`) and adds its counts here
every few seconds, so `ussd-gateway report` reads one place for every worker and
instance. Layout, one hash per menu and minute:

    ussd:{funnel:buy}:29424012     (minutes since the epoch)
        "data_list|reached" -> 412    "done|ended" -> 97    "confirm|timed_out" -> 8

The hash tag is the menu: each command touches one key (Redis Cluster friendly), and
one menu's minutes share a slot. `ussd:{funnel:buy}:minutes` (a sorted set) lists the
minutes that have a bucket, so a report reads only those; `ussd:{funnel}:menus` is the
set of menus counted. Buckets expire after `keep_s` (the report's longest window).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import redis.asyncio as aioredis

EVENTS = ("reached", "ended", "timed_out")
"""What the funnel counts per screen: a dialogue arrived on it; ended on it with an
END; was dropped there (silent until the dialogue timeout, released, or replaced by
a new dial)."""

MENUS_KEY = "ussd:{funnel}:menus"


def bucket_key(menu: str, minute: int) -> str:
    return "ussd:{funnel:" + menu + "}:" + str(minute)


def minutes_key(menu: str) -> str:
    return "ussd:{funnel:" + menu + "}:minutes"


def minute_of(epoch_s: float) -> int:
    return int(epoch_s // 60)


async def add_counts(
    client: aioredis.Redis, minute: int, counts: Mapping[str, Mapping[tuple[str, str], int]], *, keep_s: int
) -> None:
    """Add one process's counts (menu -> (screen, event) -> n) to the minute's buckets:
    one pipeline of HINCRBYs, an EXPIRE per bucket and the menus' set."""
    pipe = client.pipeline(transaction=False)
    for menu, screens in counts.items():
        key = bucket_key(menu, minute)
        for (screen, event), n in screens.items():
            pipe.hincrby(key, screen + "|" + event, n)
        pipe.expire(key, keep_s)
        pipe.zadd(minutes_key(menu), {str(minute): minute})
        pipe.zremrangebyscore(minutes_key(menu), "-inf", minute - keep_s // 60 - 1)
        pipe.expire(minutes_key(menu), keep_s)
    if counts:
        pipe.sadd(MENUS_KEY, *counts)
        await pipe.execute()


async def read_counts(
    client: aioredis.Redis, first_minute: int, last_minute: int, menus: Iterable[str] | None = None
) -> dict[str, dict[str, dict[str, int]]]:
    """menu -> screen -> event -> count, summed over the minutes (both ends included)."""
    names = sorted(menus) if menus is not None else sorted(m.decode() for m in await client.smembers(MENUS_KEY))
    totals: dict[str, dict[str, dict[str, int]]] = {}
    for menu in names:
        screens: dict[str, dict[str, int]] = {}
        minutes = [int(m) for m in await client.zrangebyscore(minutes_key(menu), first_minute, last_minute)]
        for start in range(0, len(minutes), 500):  # pipelines of bounded size
            pipe = client.pipeline(transaction=False)
            for minute in minutes[start : start + 500]:
                pipe.hgetall(bucket_key(menu, minute))
            for bucket in await pipe.execute():
                for field, value in bucket.items():
                    screen, _, event = field.decode().rpartition("|")
                    row = screens.setdefault(screen, dict.fromkeys(EVENTS, 0))
                    if event in row:
                        row[event] += int(value)
        if screens:
            totals[menu] = screens
    return totals


# KEYS: a subscriber's session key. Returns the saved dialogue record (JSON), '' when
# none, nil when the key is gone. One GET: the key is a MessagePack array whose 10th
# element is the record (`sessions.hop_scripts`).
_SAVED_RECORD = """
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
return cmsgpack.unpack(raw)[10]
"""


class SavedRecords:
    """Reads a subscriber's saved dialogue record, off the hop path (one GET inside a
    script, since the session key is MessagePack that only Lua unpacks here)."""

    def __init__(self, client: aioredis.Redis, prefix: str = "ussd") -> None:
        self.client = client
        self.prefix = prefix
        self._script = client.register_script(_SAVED_RECORD)

    async def many(self, msisdns: list[str]) -> list[bytes | None]:
        """The records of these subscribers, in order (None: no key; b'': no record)."""
        if not msisdns:
            return []
        pipe = self.client.pipeline(transaction=False)
        pipe.scripts.add(self._script)  # loaded before the batch if Redis lost it
        for msisdn in msisdns:
            pipe.evalsha(self._script.sha, 1, self.prefix + ":{" + msisdn + "}:s")
        return list(await pipe.execute())
