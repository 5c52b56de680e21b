"""The in-memory store keeps the Redis store's guarantees within one process."""

from __future__ import annotations

from ussd_gateway.sessions.memory import SWEEP_EVERY, MemoryStore
from ussd_gateway.sessions.store import LoadStatus, OutboundSms


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def commit(store: MemoryStore, msisdn: str, token: str, key: str = "k", ttl: int = 60) -> bool:
    return await store.commit_hop(msisdn, token, session_id="s", hop_key=key, reply=b'["x", false]', record=b"{}", ttl_s=ttl, lang=None)


class TestMemoryStore:
    async def test_lock_replay_and_expiry(self) -> None:
        """A held lock blocks the same subscriber; a saved hop replays; TTLs expire."""
        clock = Clock()
        store = MemoryStore(lock_ttl_s=5, clock=clock)
        assert (await store.begin_hop("1", "s", "k", "t1", want_lang=False)).status is LoadStatus.OK
        assert (await store.begin_hop("1", "s", "k", "t2", want_lang=False)).status is LoadStatus.LOCKED
        assert (await store.begin_hop("2", "s", "k", "t3", want_lang=False)).status is LoadStatus.OK
        assert not await commit(store, "1", "wrong-token")
        assert await commit(store, "1", "t1")
        replay = await store.begin_hop("1", "s", "k", "t4", want_lang=False)
        assert replay.status is LoadStatus.REPLAY and replay.reply == b'["x", false]'
        clock.now += 61
        assert (await store.begin_hop("1", "s", "k", "t5", want_lang=False)).record is None

    async def test_expired_dialogues_are_swept(self) -> None:
        """Thousands of one-off subscribers do not stay in memory after their TTL."""
        clock = Clock()
        store = MemoryStore(clock=clock)
        for n in range(SWEEP_EVERY - 1):
            await store.begin_hop(str(n), "s", "", "t", want_lang=False)
            await commit(store, str(n), "t", ttl=10)
        assert len(store) == SWEEP_EVERY - 1
        clock.now += 11
        await store.begin_hop("last", "s", "", "t", want_lang=False)
        await commit(store, "last", "t")
        assert len(store) == 1

    async def test_pending_and_sms_queue(self) -> None:
        """A pending confirmation is taken once; an SMS is queued once per key."""
        clock = Clock()
        store = MemoryStore(clock=clock)
        await store.set_pending("1", "join", 600)
        assert await store.get_pending("1") == "join"
        assert not await store.take_pending("1", "leave")
        assert await store.take_pending("1", "join")
        assert not await store.take_pending("1", "join")
        await store.set_pending("1", "join", 600)
        clock.now += 601
        assert await store.get_pending("1") is None
        sms = OutboundSms(to="1", sender="MobiFone", text="hi", dedupe_key="k1")
        assert await store.enqueue_sms(sms)
        assert not await store.enqueue_sms(sms)
        assert await store.outbound_sms() == [sms]


class TestRedisStoreSameGuarantees:
    async def test_lock_replay_language_and_expiry(self, redis_url: str) -> None:
        """On a real Redis: lock, replay, remembered language and TTL, two round trips."""
        import asyncio

        from ussd_gateway.sessions.redis_store import RedisStore

        store = RedisStore.from_url(redis_url)
        try:
            assert (await store.begin_hop("1", "s", "k", "t1", want_lang=True)).status is LoadStatus.OK
            assert (await store.begin_hop("1", "s", "k", "t2", want_lang=True)).status is LoadStatus.LOCKED
            assert not await store.commit_hop("1", "bad", session_id="s", hop_key="k", reply=b"r", record=b"{}", ttl_s=1, lang=None)
            assert await store.commit_hop("1", "t1", session_id="s", hop_key="k", reply=b"r", record=b"rec", ttl_s=1, lang="en")
            replay = await store.begin_hop("1", "s", "k", "t3", want_lang=True)
            assert replay.status is LoadStatus.REPLAY and replay.reply == b"r"
            other_session = await store.begin_hop("1", "s2", "k", "t4", want_lang=True)
            assert other_session.status is LoadStatus.OK and other_session.record == b"rec" and other_session.lang == "en"
            await store.release("1", "t4")
            await asyncio.sleep(1.1)
            expired = await store.begin_hop("1", "s2", "k", "t5", want_lang=True)
            assert expired.record is None and expired.lang == "en"  # the language outlives dialogues
            assert await store.enqueue_sms(OutboundSms(to="1", sender="M", text="hi", dedupe_key="x"))
            assert not await store.enqueue_sms(OutboundSms(to="1", sender="M", text="hi", dedupe_key="x"))
            assert [s.text for s in await store.outbound_sms()] == ["hi"]
        finally:
            await store.close()
