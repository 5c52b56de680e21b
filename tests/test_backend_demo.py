"""The demo subscriber backend, every behaviour in both storage modes (memory, real Redis)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis

from ussd_gateway.backend import (
    BundleChoice,
    DemoBackend,
    Feedback,
    Kndl,
    SubscriberBackend,
    build_backend,
    load_demo_data,
)
from ussd_gateway.backend.demo_data import DEFAULT_DATA_PATH, DemoData
from ussd_gateway.core.errors import BadRequest, DependencyDown
from ussd_gateway.testkit.redis_server import RedisServer

DATA = load_demo_data()
ALICE = "84901234567"  # 200,000đ, MAX90 active, FUNRING + MCLIP, 1,250 points, not a member
POOR = "84901111111"  # 3,000đ
GOLD = "84909999999"  # KNDL Vang, 52,000 points, 150,000đ
NEWBIE = "84907777777"  # not in the seed: the defaults, 100,000đ


def in_days(days: int) -> str:
    return (date.today() + timedelta(days=days)).isoformat()


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[DemoBackend]:
    """The demo backend in each storage mode; Redis mode on a freshly flushed server."""
    demo = DemoBackend.in_memory(DATA) if request.param == "memory" else DemoBackend.on_redis(redis_url, DATA)
    try:
        yield demo
    finally:
        await demo.close()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A raw client to look at the keys the backend writes."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


class TestSeedData:
    def test_catalogue_has_packages_in_every_category(self) -> None:
        """The seed offers at least 8 packages across data, voice and combo, priced in whole đồng."""
        catalogue = DATA.catalogue
        assert len(catalogue.packages) >= 8
        assert {p.category for p in catalogue.packages} == {"data", "voice", "combo"}
        assert all(type(p.price) is int for p in catalogue.packages)
        assert catalogue.package("c90n").price == 90000

    def test_bundle_levels_and_rewards_are_parsed(self) -> None:
        """Bundle levels carry a price per cycle and level 0 is `Khong`; rewards are typed."""
        assert DATA.catalogue.bundle_data[0].label == "Khong"
        assert DATA.catalogue.bundle_voice[2].prices == {"day": 12000, "week": 30000, "month": 60000}
        assert DATA.catalogue.reward("R-10K").credit == 10000

    def test_a_float_in_the_seed_is_refused(self, tmp_path: Path) -> None:
        """A price like 1.5 is a typo: loading fails and names the entry."""
        text = DEFAULT_DATA_PATH.read_text().replace("price = 15000", "price = 15000.5", 1)
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ValueError, match=r"packages\[0\]\.price"):
            load_demo_data(bad)

    def test_is_a_subscriber_backend(self) -> None:
        """DemoBackend satisfies the port's runtime-checkable protocol."""
        assert isinstance(DemoBackend.in_memory(DATA), SubscriberBackend)


class TestAccount:
    async def test_named_subscriber_alice(self, backend: DemoBackend) -> None:
        """84901234567 has 200,000đ, one active MAX90, two VAS, 1,250 points and no KNDL."""
        account = await backend.account(ALICE)
        assert (account.balance, account.points, account.kndl) == (200000, 1250, None)
        assert [p.code for p in account.packages] == ["MAX90"]
        assert account.packages[0].expires == in_days(12)
        assert account.packages[0].data_left_mb == 18432
        assert [v.code for v in account.vas] == ["FUNRING", "MCLIP"]

    async def test_named_subscribers_poor_and_gold(self, backend: DemoBackend) -> None:
        """84901111111 has 3,000đ; 84909999999 is a Gold (Vang) member with 52,000 points."""
        assert (await backend.account(POOR)).balance == 3000
        gold = await backend.account(GOLD)
        assert gold.kndl == Kndl(tier="Vang", since="2021-03-15")
        assert gold.points == 52000

    async def test_unknown_msisdn_gets_the_defaults(self, backend: DemoBackend) -> None:
        """A number not in the seed starts with 100,000đ and nothing active."""
        account = await backend.account(NEWBIE)
        assert (account.balance, account.points, account.packages, account.vas, account.kndl) == (100000, 0, (), (), None)

    async def test_msisdn_forms_are_one_subscriber(self, backend: DemoBackend) -> None:
        """0901234567, +84901234567 and 84901234567 reach the same account."""
        await backend.purchase("0901234567", "D15", "k1")
        assert (await backend.account("+84901234567")).balance == 185000
        assert (await backend.account(ALICE)).msisdn == ALICE

    async def test_not_a_phone_number_is_refused(self, backend: DemoBackend) -> None:
        """Garbage where an MSISDN belongs is a BadRequest, never a new account."""
        with pytest.raises(BadRequest):
            await backend.account("84}90{1")

    async def test_usage_profile_from_seed_or_defaults(self, backend: DemoBackend) -> None:
        """Seed subscribers have their own average month; others get the defaults."""
        assert (await backend.usage_profile(GOLD)).monthly_spend == 320000
        assert (await backend.usage_profile(NEWBIE)).data_mb == 6144

    async def test_catalogue_is_the_seed(self, backend: DemoBackend) -> None:
        """The catalogue served is the one parsed from demo_data.toml."""
        assert await backend.catalogue() == DATA.catalogue


class TestPurchase:
    async def test_debits_and_activates(self, backend: DemoBackend) -> None:
        """Buying D15 debits 15,000đ and adds it with 3 days of validity and auto-renewal."""
        result = await backend.purchase(ALICE, "D15", "k1")
        # 15 points earned: one per 1.000d for a non-member (demo_data.toml [points])
        assert (result.status, result.balance, result.points, result.missing) == ("ok", 185000, 1265, 0)
        assert result.package.code == "D15"
        assert (result.package.expires, result.package.auto_renew, result.package.data_left_mb) == (in_days(3), True, 3072)
        account = await backend.account(ALICE)
        assert account.balance == 185000
        assert [p.code for p in account.packages] == ["MAX90", "D15"]

    async def test_insufficient_changes_nothing(self, backend: DemoBackend) -> None:
        """3,000đ cannot buy D15: status insufficient, 12,000đ missing, balance untouched."""
        result = await backend.purchase(POOR, "D15", "k1")
        assert (result.status, result.balance, result.missing, result.package) == ("insufficient", 3000, 12000, None)
        account = await backend.account(POOR)
        assert (account.balance, account.packages) == (3000, ())

    async def test_unknown_code(self, backend: DemoBackend) -> None:
        """A code not in the catalogue answers unknown and debits nothing."""
        result = await backend.purchase(ALICE, "NOPE", "k1")
        assert (result.status, result.balance) == ("unknown", 200000)

    async def test_code_is_case_insensitive(self, backend: DemoBackend) -> None:
        """`c90n` texted by a subscriber buys C90N."""
        result = await backend.purchase(NEWBIE, "c90n", "k1")
        assert (result.status, result.package.code, result.balance) == ("ok", "C90N", 10000)

    async def test_rebuying_an_active_package_extends_it(self, backend: DemoBackend) -> None:
        """MAX90 bought while active: expiry moves 30 days past the current end, data is added."""
        result = await backend.purchase(ALICE, "MAX90", "k1")
        assert result.package.expires == in_days(12 + 30)
        assert result.package.data_left_mb == 18432 + 30720
        account = await backend.account(ALICE)
        assert [p.code for p in account.packages] == ["MAX90"]
        assert account.balance == 110000

    async def test_rebuying_keeps_a_stopped_renewal_off(self, backend: DemoBackend) -> None:
        """Buying a package again extends it but never silently turns a stopped renewal back on."""
        await backend.cancel_renewal(ALICE, "MAX90")
        result = await backend.purchase(ALICE, "MAX90", "k1")
        assert result.package.auto_renew is False
        assert (await backend.account(ALICE)).packages[0].auto_renew is False

    async def test_same_key_twice_debits_once(self, backend: DemoBackend) -> None:
        """A retried hop (same idempotency key) gets the first result and pays nothing more."""
        first = await backend.purchase(ALICE, "D15", "hop-1")
        second = await backend.purchase(ALICE, "D15", "hop-1")
        assert second == first
        assert (await backend.account(ALICE)).balance == 185000

    async def test_different_keys_debit_each_time(self, backend: DemoBackend) -> None:
        """Two hops are two purchases."""
        await backend.purchase(ALICE, "D15", "hop-1")
        await backend.purchase(ALICE, "D15", "hop-2")
        assert (await backend.account(ALICE)).balance == 170000

    async def test_replayed_insufficient_stays_insufficient(self, backend: DemoBackend) -> None:
        """A replayed hop gets its first answer even after a top-up; a new hop buys."""
        first = await backend.purchase(GOLD, "21G", "hop-1")
        assert (first.status, first.missing) == ("insufficient", 60000)
        await backend.redeem(GOLD, "R-50K", "r1")
        await backend.redeem(GOLD, "R-50K", "r2")
        assert await backend.purchase(GOLD, "21G", "hop-1") == first
        assert (await backend.purchase(GOLD, "21G", "hop-2")).status == "ok"

    async def test_keys_are_per_subscriber(self, backend: DemoBackend) -> None:
        """Two subscribers using the same key string each get their own purchase."""
        await backend.purchase(ALICE, "D15", "same")
        await backend.purchase(NEWBIE, "D15", "same")
        assert (await backend.account(NEWBIE)).balance == 85000

    async def test_empty_key_is_refused(self, backend: DemoBackend) -> None:
        """An empty key would turn every later purchase into a replay: refused loudly."""
        with pytest.raises(ValueError, match="idempotency_key"):
            await backend.purchase(ALICE, "D15", "")


class TestConcurrency:
    async def test_twenty_concurrent_same_key_debit_once(self, backend: DemoBackend) -> None:
        """20 concurrent purchases with one key: one debit, 20 identical results."""
        results = await asyncio.gather(*(backend.purchase(ALICE, "D30", "dup") for _ in range(20)))
        assert all(r == results[0] for r in results)
        assert results[0].status == "ok"
        account = await backend.account(ALICE)
        assert account.balance == 200000 - 30000
        assert [p.code for p in account.packages] == ["MAX90", "D30"]

    async def test_twenty_concurrent_keys_never_overdraw(self, backend: DemoBackend) -> None:
        """20 concurrent D15 purchases on 100,000đ: exactly 6 succeed, the balance is 10,000đ."""
        results = await asyncio.gather(*(backend.purchase(NEWBIE, "D15", f"k{i}") for i in range(20)))
        succeeded = [r for r in results if r.status == "ok"]
        assert len(succeeded) == 6
        assert all(r.status == "insufficient" for r in results if r.status != "ok")
        assert min(r.balance for r in results) >= 0
        assert (await backend.account(NEWBIE)).balance == 100000 - 6 * 15000

    async def test_concurrent_redemptions_never_overspend_points(self, backend: DemoBackend) -> None:
        """20 concurrent R-10K (1,000 points each) on 1,250 points after joining: one succeeds."""
        await backend.kndl_join(ALICE)
        results = await asyncio.gather(*(backend.redeem(ALICE, "R-10K", f"r{i}") for i in range(20)))
        assert sum(r.status == "ok" for r in results) == 1
        account = await backend.account(ALICE)
        assert (account.points, account.balance) == (250, 210000)


class TestBundle:
    async def test_prices_the_sum_and_activates(self, backend: DemoBackend) -> None:
        """1GB + 20 SMS + 100 min for a week costs 15,000 + 5,000 + 30,000 = 50,000đ."""
        choice = BundleChoice(data=1, sms=1, voice=2, cycle="week", name="Goi cua Lan")
        result = await backend.buy_bundle(ALICE, choice, "b1")
        assert (result.status, result.balance) == ("ok", 150000)
        package = result.package
        assert package.kind == "bundle" and package.code.startswith("M090") and package.name == "Goi cua Lan"
        assert (package.expires, package.data_left_mb, package.sms_left, package.voice_left_min) == (in_days(7), 1024, 20, 100)
        assert (await backend.account(ALICE)).packages[-1] == package

    async def test_nothing_chosen_is_unknown(self, backend: DemoBackend) -> None:
        """All three levels `Khong` is not a bundle."""
        result = await backend.buy_bundle(ALICE, BundleChoice(0, 0, 0, "day", "x"), "b1")
        assert (result.status, result.balance) == ("unknown", 200000)

    @pytest.mark.parametrize("choice", [BundleChoice(9, 0, 0, "day", "x"), BundleChoice(-1, 0, 0, "day", "x"), BundleChoice(1, 0, 0, "year", "x")])  # type: ignore[arg-type]
    async def test_levels_or_cycle_out_of_range_are_unknown(self, backend: DemoBackend, choice: BundleChoice) -> None:
        """A level index outside the table (negative included) or an unknown cycle is unknown."""
        assert (await backend.buy_bundle(ALICE, choice, "b1")).status == "unknown"

    async def test_insufficient(self, backend: DemoBackend) -> None:
        """15GB for a month (120,000đ) on 3,000đ: 117,000đ missing, nothing bought."""
        result = await backend.buy_bundle(POOR, BundleChoice(3, 0, 0, "month", "x"), "b1")
        assert (result.status, result.missing, result.balance) == ("insufficient", 117000, 3000)

    async def test_two_bundles_get_distinct_codes_and_replay_keeps_the_code(self, backend: DemoBackend) -> None:
        """Each bundle gets its own M090 code; a replayed hop returns the same bundle."""
        choice = BundleChoice(1, 0, 0, "day", "A")
        first = await backend.buy_bundle(NEWBIE, choice, "b1")
        second = await backend.buy_bundle(NEWBIE, choice, "b2")
        assert first.package.code != second.package.code
        assert await backend.buy_bundle(NEWBIE, choice, "b1") == first
        assert (await backend.account(NEWBIE)).balance == 100000 - 2 * 5000


class TestRedeem:
    async def test_credit_reward(self, backend: DemoBackend) -> None:
        """Gold member redeems R-10K: 1,000 points off, 10,000đ onto the main balance."""
        result = await backend.redeem(GOLD, "R-10K", "r1")
        assert (result.status, result.points, result.balance) == ("ok", 51000, 160000)

    async def test_package_reward(self, backend: DemoBackend) -> None:
        """R-D15 grants D15 for 1,500 points without touching the balance."""
        result = await backend.redeem(GOLD, "R-D15", "r1")
        assert (result.status, result.points, result.balance, result.package.code) == ("ok", 50500, 150000, "D15")
        assert "D15" in [p.code for p in (await backend.account(GOLD)).packages]

    async def test_non_member_is_unknown(self, backend: DemoBackend) -> None:
        """84901234567 has points but is not a KNDL member: no reward for them."""
        result = await backend.redeem(ALICE, "R-10K", "r1")
        assert (result.status, result.points) == ("unknown", 1250)

    async def test_unknown_reward(self, backend: DemoBackend) -> None:
        """A reward code not on offer is unknown."""
        assert (await backend.redeem(GOLD, "R-NOPE", "r1")).status == "unknown"

    async def test_not_enough_points(self, backend: DemoBackend) -> None:
        """1,250 points cannot buy R-50K (5,000): 3,750 points missing."""
        await backend.kndl_join(ALICE)
        result = await backend.redeem(ALICE, "R-50K", "r1")
        assert (result.status, result.missing, result.points, result.balance) == ("insufficient", 3750, 1250, 200000)

    async def test_same_key_redeems_once(self, backend: DemoBackend) -> None:
        """A replayed redemption deducts points once."""
        await backend.redeem(GOLD, "R-50K", "r1")
        await backend.redeem(GOLD, "R-50K", "r1")
        assert (await backend.account(GOLD)).points == 47000


class TestCancellation:
    async def test_cancel_renewal(self, backend: DemoBackend) -> None:
        """`max90` stops MAX90's renewal; the package stays until it expires."""
        result = await backend.cancel_renewal(ALICE, "max90")
        assert result.status == "ok"
        assert result.account.packages[0].auto_renew is False
        assert (await backend.account(ALICE)).packages[0].auto_renew is False

    async def test_cancel_renewal_twice_is_ok(self, backend: DemoBackend) -> None:
        """Cancelling an already cancelled renewal is idempotent by nature."""
        await backend.cancel_renewal(ALICE, "MAX90")
        assert (await backend.cancel_renewal(ALICE, "MAX90")).status == "ok"

    async def test_cancel_renewal_of_nothing(self, backend: DemoBackend) -> None:
        """A package the subscriber does not have is not_found."""
        result = await backend.cancel_renewal(ALICE, "C120")
        assert (result.status, result.account.packages[0].auto_renew) == ("not_found", True)

    async def test_cancel_vas(self, backend: DemoBackend) -> None:
        """Cancelling FUNRING leaves MCLIP; doing it again is not_found."""
        result = await backend.cancel_vas(ALICE, "funring")
        assert (result.status, [v.code for v in result.account.vas]) == ("ok", ["MCLIP"])
        assert [v.code for v in (await backend.account(ALICE)).vas] == ["MCLIP"]
        assert (await backend.cancel_vas(ALICE, "FUNRING")).status == "not_found"


class TestKndl:
    async def test_join(self, backend: DemoBackend) -> None:
        """A non-member joins as `Than thiet` from today."""
        result = await backend.kndl_join(ALICE)
        assert result.status == "ok"
        assert result.account.kndl == Kndl(tier="Than thiet", since=date.today().isoformat())
        assert (await backend.account(ALICE)).kndl == result.account.kndl

    async def test_join_when_member_is_already(self, backend: DemoBackend) -> None:
        """A Gold member asking to join again stays Gold."""
        result = await backend.kndl_join(GOLD)
        assert (result.status, result.account.kndl.tier) == ("already", "Vang")

    async def test_leave_keeps_points(self, backend: DemoBackend) -> None:
        """Leaving ends the membership; the points stay the subscriber's."""
        result = await backend.kndl_leave(GOLD)
        assert (result.status, result.account.kndl, result.account.points) == ("ok", None, 52000)
        assert (await backend.account(GOLD)).kndl is None

    async def test_leave_when_not_member(self, backend: DemoBackend) -> None:
        """A non-member leaving is not_found."""
        assert (await backend.kndl_leave(ALICE)).status == "not_found"


class TestFeedback:
    async def test_newest_first_with_timestamp(self, backend: DemoBackend) -> None:
        """Feedback is listed newest first, stamped with an ISO UTC time, MSISDN normalised."""
        for i in range(3):
            await backend.add_feedback(Feedback(msisdn="0901234567", topic="network", message=f"m{i}"))
        listed = await backend.list_feedback()
        assert [f.message for f in listed] == ["m2", "m1", "m0"]
        assert listed[0].msisdn == ALICE
        assert datetime.fromisoformat(listed[0].at).utcoffset() == timedelta(0)

    async def test_limit(self, backend: DemoBackend) -> None:
        """`limit` caps the list to the most recent entries."""
        for i in range(5):
            await backend.add_feedback(Feedback(msisdn=ALICE, topic="other", message=f"m{i}"))
        assert [f.message for f in await backend.list_feedback(limit=2)] == ["m4", "m3"]
        assert await backend.list_feedback(limit=0) == []


class TestRedisLayout:
    async def test_account_key_is_hash_tagged_json(self, redis_url: str, redis: aioredis.Redis) -> None:
        """One JSON value per subscriber at `ussd:{msisdn}:acct`, money as integers."""
        demo = DemoBackend.on_redis(redis_url, DATA)
        try:
            await demo.purchase(ALICE, "D15", "k1")
        finally:
            await demo.close()
        stored = orjson.loads(await redis.get("ussd:{84901234567}:acct"))
        assert stored["balance"] == 185000 and type(stored["balance"]) is int
        assert [p["code"] for p in stored["packages"]] == ["MAX90", "D15"]

    async def test_idempotency_record_expires_in_24h(self, redis_url: str, redis: aioredis.Redis) -> None:
        """The result of a keyed call is kept at `ussd:{msisdn}:idem:<key>` for 24 hours."""
        demo = DemoBackend.on_redis(redis_url, DATA)
        try:
            await demo.purchase(ALICE, "D15", "hop-7")
        finally:
            await demo.close()
        assert 86000 < await redis.ttl("ussd:{84901234567}:idem:hop-7") <= 86400

    async def test_feedback_list_and_prefix(self, redis_url: str, redis: aioredis.Redis) -> None:
        """Feedback goes to the `<prefix>:feedback` list; a custom prefix moves every key."""
        demo = DemoBackend.on_redis(redis_url, DATA, prefix="t1")
        try:
            await demo.add_feedback(Feedback(msisdn=ALICE, topic="cskh", message="hi"))
            await demo.account(ALICE)
        finally:
            await demo.close()
        assert await redis.llen("t1:feedback") == 1
        assert await redis.exists("t1:{84901234567}:acct") == 1
        assert await redis.exists("ussd:{84901234567}:acct") == 0

    async def test_given_client_is_left_open(self, redis: aioredis.Redis) -> None:
        """A backend built on the caller's client does not close it."""
        demo = DemoBackend.on_redis(redis, DATA)
        await demo.account(ALICE)
        await demo.close()
        assert await redis.ping()

    async def test_two_processes_share_state(self, redis_url: str) -> None:
        """What one gateway process buys, another sees; a key replayed on the other is a replay."""
        one, two = DemoBackend.on_redis(redis_url, DATA), DemoBackend.on_redis(redis_url, DATA)
        try:
            first = await one.purchase(ALICE, "D15", "hop-1")
            assert await two.purchase(ALICE, "D15", "hop-1") == first
            assert (await two.account(ALICE)).balance == 185000
        finally:
            await one.close()
            await two.close()

    async def test_racing_first_contact_creates_the_account_once(self, redis_url: str) -> None:
        """Lookups racing a purchase on a fresh subscriber never overwrite it with the seed."""
        one, two = DemoBackend.on_redis(redis_url, DATA), DemoBackend.on_redis(redis_url, DATA)
        try:
            lookups = [two.account(NEWBIE) for _ in range(10)]
            buys = [one.purchase(NEWBIE, "D15", f"k{i}") for i in range(3)]
            await asyncio.gather(*lookups, *buys, *[one.account(NEWBIE) for _ in range(10)])
            assert (await two.account(NEWBIE)).balance == 100000 - 3 * 15000
        finally:
            await one.close()
            await two.close()


class TestRedisDown:
    async def test_down_then_back(self, own_redis: RedisServer) -> None:
        """Redis killed: DependencyDown, quickly; Redis back: the backend works again by itself."""
        demo = DemoBackend.on_redis(own_redis.url, DATA)
        try:
            assert (await demo.account(ALICE)).balance == 200000
            own_redis.stop()
            started = time.monotonic()
            with pytest.raises(DependencyDown, match="Redis"):
                await demo.account(ALICE)
            with pytest.raises(DependencyDown):
                await demo.purchase(ALICE, "D15", "k1")
            with pytest.raises(DependencyDown):
                await demo.add_feedback(Feedback(msisdn=ALICE, topic="t", message="m"))
            assert time.monotonic() - started < 3
            own_redis.start()
            result = await demo.purchase(ALICE, "D15", "k1")
            assert (result.status, result.balance) == ("ok", 185000)
        finally:
            await demo.close()


class TestBuildBackend:
    async def test_kinds(self, redis: aioredis.Redis) -> None:
        """`memory`, `redis` and `demo` build a DemoBackend; `http` an HttpBackend."""
        from ussd_gateway.backend import HttpBackend

        assert isinstance(build_backend("memory"), DemoBackend)
        on_redis = build_backend("demo", redis_client=redis)
        await on_redis.purchase(ALICE, "D15", "k1")
        assert await redis.exists("ussd:{84901234567}:acct") == 1
        http = build_backend("http", http_url="http://127.0.0.1:9")
        assert isinstance(http, HttpBackend)
        await http.close()

    def test_missing_arguments_say_what_to_do(self) -> None:
        """Unknown kinds and missing arguments fail with a message naming the fix."""
        with pytest.raises(ValueError, match="choose one of"):
            build_backend("oracle")
        with pytest.raises(ValueError, match="redis_client"):
            build_backend("redis")
        with pytest.raises(ValueError, match="http_url"):
            build_backend("http")

    def test_demo_data_path(self, tmp_path: Path) -> None:
        """A custom seed file is used when given."""
        text = DEFAULT_DATA_PATH.read_text().replace("balance = 100000", "balance = 5000", 1)
        custom = tmp_path / "seed.toml"
        custom.write_text(text)
        backend = build_backend("memory", demo_data_path=custom)
        assert isinstance(backend, DemoBackend) and isinstance(backend.data, DemoData)
        assert backend.data.default_balance == 5000
