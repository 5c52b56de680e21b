"""Redis that fails over (Sentinel) and Redis that shards (Cluster): the gateway's hop
path, demo purchases, limits, SMS queue, campaigns and menu announcements work on a
real three-master Redis Cluster (made by `redis-cli --cluster create`, each master
with a replica) and on a real master + replica watched by three Sentinels; money
writes can wait for a replica (`WAIT`). The failover under load is in
tests/test_redis_failover.py."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st
from helpers import Phone, make_settings
from structlog.testing import capture_logs
from test_campaigns import TEXTS, csv_of, make_rig
from test_money_integrity import sms_to
from test_transcripts import FOLDER as TRANSCRIPTS
from test_transcripts import serving

from ussd_gateway.app.config import ConfigError, validate
from ussd_gateway.app.server import GATEWAY, create_app
from ussd_gateway.app.menu_reload import MENU_RELOADER
from ussd_gateway.core.secrets import mask_url
from ussd_gateway.menus.compiler import DEFINITIONS_DIR
from ussd_gateway.sessions.redis_clients import is_cluster, make_client, parse_redis_url
from ussd_gateway.sessions.redis_store import SMS_QUEUE_KEY, RedisStore, sms_payload, subscriber_key
from ussd_gateway.sessions.store import OutboundSms
from ussd_gateway.testkit.redis_server import LocalCluster, LocalSentinels, RedisServer
from ussd_gateway.testkit.replay import format_failure, run_many
from ussd_gateway.testkit.transcripts import load_transcripts

PASSWORD = "ha-secret-77"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(masters=3, replicas=1) as servers:
        yield servers


@pytest.fixture(scope="module")
def sentinels() -> Iterator[LocalSentinels]:
    with LocalSentinels(replicas=1, password=PASSWORD) as servers:
        yield servers


@pytest.fixture(params=["cluster", "sentinel"])
async def ha(request: pytest.FixtureRequest) -> AsyncIterator[LocalCluster | LocalSentinels]:
    """Each test once on the cluster and once behind the Sentinels, emptied first."""
    servers = request.getfixturevalue("cluster" if request.param == "cluster" else "sentinels")
    client = make_client(servers.url, socket_timeout=10, socket_connect_timeout=10)
    try:
        await client.flushall()
    finally:
        await client.aclose()
    yield servers


def replica_holding(ha: LocalCluster | LocalSentinels, key: str) -> RedisServer:
    """A replica of the master that serves `key`."""
    if isinstance(ha, LocalCluster):
        return ha.replicas_of(ha.master_of(key))[0]
    return next(node for node in ha.data_nodes if node.port != ha.current_master_port())


async def read_on_replica(ha: LocalCluster | LocalSentinels, replica: RedisServer, key: str) -> bytes | None:
    """GET on the replica itself (a cluster replica answers reads after READONLY)."""
    password = None if isinstance(ha, LocalCluster) else PASSWORD
    client = aioredis.Redis(port=replica.port, password=password, single_connection_client=True)
    try:
        if isinstance(ha, LocalCluster):
            await client.execute_command("READONLY")
        return await client.get(key)
    finally:
        await client.aclose()


# ---- the URL forms -------------------------------------------------------------------------
class TestUrls:
    def test_sentinel_url_names_master_sentinels_and_passwords(self) -> None:
        target = parse_redis_url("redis+sentinel://:pw1@10.0.0.1:26379,10.0.0.2,[::1]:5000/mymaster/2?sentinel_password=pw2")
        assert target.kind == "sentinel" and target.master == "mymaster" and target.db == 2
        assert target.hosts == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 5000))
        assert target.password == "pw1" and target.options["sentinel_password"] == "pw2"
        masked = mask_url("redis+sentinel://:pw1@10.0.0.1:26379/mymaster?sentinel_password=pw2")
        assert "pw1" not in masked and "pw2" not in masked

    def test_cluster_url_and_the_cluster_switch(self) -> None:
        assert parse_redis_url("redis+cluster://u:p@h1:7000,h2:7001").hosts == (("h1", 7000), ("h2", 7001))
        assert parse_redis_url("redis://h1:7000", cluster=True).kind == "cluster"
        assert parse_redis_url("redis://h1:7000/3").kind == "single"

    @given(
        hosts=st.lists(st.tuples(st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True), st.integers(1, 65535)), min_size=1, max_size=4),
        master=st.from_regex(r"[a-z0-9_-]{1,20}", fullmatch=True),
        password=st.from_regex(r"Zq[A-Za-z0-9~!$*()_-]{4,20}", fullmatch=True),
        db=st.integers(0, 15),
    )
    def test_any_sentinel_url_parses_back_and_never_shows_its_password(
        self, hosts: list[tuple[str, int]], master: str, password: str, db: int
    ) -> None:
        url = f"redis+sentinel://:{password}@" + ",".join(f"{h}:{p}" for h, p in hosts) + f"/{master}/{db}"
        target = parse_redis_url(url)
        assert (target.hosts, target.master, target.password, target.db) == (tuple(hosts), master, password, db)
        assert password not in mask_url(url)

    @pytest.mark.parametrize("url", [
        "redis+sentinel://h1:26379",  # no master name
        "redis+cluster://h1:7000/2",  # a cluster has db 0 only
        "redis+cluster://",
        "memcached://h1",
    ])
    def test_a_malformed_url_is_refused_at_start_up_with_a_reason(self, url: str) -> None:
        with pytest.raises(ConfigError, match=r"\[sessions\]"):
            validate(make_settings(url))


# ---- every part of the gateway on both -----------------------------------------------------
async def test_a_purchase_debits_once_and_its_sms_is_queued_once(ha: Any, aiohttp_client: Any) -> None:
    client = await aiohttp_client(create_app(make_settings(ha.url)))
    store: RedisStore = client.server.app[GATEWAY].store
    assert is_cluster(store.client) == isinstance(ha, LocalCluster)
    phone = Phone(client, "json", msisdn="84905550011")
    await phone.dial()
    assert "85.000d" in (await phone.walk("2", "1", "1", "1")).text
    for _ in range(100):  # the outbox moves to the queue in the background
        if len(await sms_to(client, phone.msisdn)) == 1:
            break
        await asyncio.sleep(0.02)
    assert len(await sms_to(client, phone.msisdn)) == 1
    # A process that died after queueing but before emptying the outbox: the sweep
    # moves the outbox again and the SMS is still queued once (dedupe beside the queue).
    queued = await store.client.lrange(SMS_QUEUE_KEY, 0, -1)
    await store.client.rpush(subscriber_key("ussd", phone.msisdn, "outbox"), queued[-1])
    assert await store.sweep_outboxes() == 1
    assert await store.client.llen(SMS_QUEUE_KEY) == len(queued)
    assert await store.client.exists(subscriber_key("ussd", phone.msisdn, "outbox")) == 0


async def test_every_transcript_passes(ha: Any) -> None:
    """The menus' acceptance suite (sessions/transcripts, over the JSON dialect)."""
    transcripts = load_transcripts([TRANSCRIPTS])
    async with serving("json", redis_url=ha.url) as endpoint:
        results = await run_many(transcripts, lambda: endpoint.channel("json"), concurrency=16)
    failed = [format_failure(r, width=140) for r in results if not r.ok]
    assert len(results) >= 30 and not failed, "\n".join(failed[:3])


async def test_the_sms_queue_claims_acks_and_restores(ha: Any) -> None:
    """Also the `cluster = true` switch: a plain URL naming one node of the cluster."""
    url = ha.url.replace("redis+cluster://", "redis://").split(",")[0] if isinstance(ha, LocalCluster) else ha.url
    store = RedisStore.from_url(url, cluster=isinstance(ha, LocalCluster))
    assert is_cluster(store.client) == isinstance(ha, LocalCluster)
    try:
        for n in range(5):
            assert await store.enqueue_sms(OutboundSms(f"8490555{n:04d}", "9237", f"t{n}", dedupe_key="k"))
        assert not await store.enqueue_sms(OutboundSms("84905550000", "9237", "again", dedupe_key="k"))
        claimed = await store.claim_sms(3)
        assert [c.sms.text for c in claimed] == ["t0", "t1", "t2"]
        await store.ack_sms(claimed[0])
        await store.requeue_sms(claimed[1])
        assert await store.restore_inflight_sms() == 1
        assert [s.text for s in await store.outbound_sms()] == ["t2", "t1", "t3", "t4"]
    finally:
        await store.close()


async def test_hops_over_the_limit_get_the_limited_end(ha: Any, aiohttp_client: Any) -> None:
    client = await aiohttp_client(create_app(make_settings(ha.url, limits={"msisdn_hops_per_minute": 2})))
    phone = Phone(client, "africastalking", msisdn="84907770003")
    assert not (await phone.dial()).end
    assert not (await phone.send("2")).end
    third = await phone.send("1")
    assert third.end and "MobiFone" not in third.text


async def test_script_cache_lost_on_every_node_mid_dialogue(ha: Any, aiohttp_client: Any) -> None:
    """SCRIPT FLUSH on every master (a restart, a promoted replica): the next hop and
    purchase load their scripts again by themselves."""
    client = await aiohttp_client(create_app(make_settings(ha.url)))
    phone = Phone(client, "json", msisdn="84907770004")
    assert "MobiFone" in (await phone.dial()).text
    raw = make_client(ha.url)
    try:
        await raw.script_flush()
    finally:
        await raw.aclose()
    assert "85.000d" in (await phone.walk("2", "1", "1", "1")).text


async def test_a_campaign_and_the_send_api_reach_every_subscriber_once(ha: Any, aiohttp_client: Any) -> None:
    rig = await make_rig(aiohttp_client, ha.url)
    try:
        rig.smsc.auto_receipts = lambda to: "DELIVRD"
        made = await rig.create(name="Cluster care", texts=TEXTS, csv=csv_of(40))
        await rig.act(made["id"], "start")
        status = await rig.wait_for(made["id"], lambda s: s["delivered"] == 40)
        assert status["sent"] == 40
        body = {"messages": [{"to": "0901234567", "text": "Ma OTP 1234"}]}
        first = await rig.client.post("/sms/send", json=body, headers={"Idempotency-Key": "ha-1"})
        again = await rig.client.post("/sms/send", json=body, headers={"Idempotency-Key": "ha-1"})
        assert first.status == 202 and again.status == 200
        for _ in range(200):
            if "84901234567" in rig.mts():
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        mts = rig.mts()
        assert sorted(mts) == sorted([str(84970000000 + i) for i in range(40)] + ["84901234567"])
    finally:
        await rig.client.close()
        await rig.smsc.stop()


async def test_a_menu_reload_reaches_the_other_instance(ha: Any, aiohttp_client: Any, tmp_path: Path) -> None:
    definitions = tmp_path / "definitions"
    shutil.copytree(DEFINITIONS_DIR, definitions)
    settings = make_settings(ha.url, menus={"directory": str(definitions)}, admin={"token": "admin-secret"})
    first = await aiohttp_client(create_app(settings))
    second = await aiohttp_client(create_app(settings))
    for _ in range(100):  # both follow the channel
        if all(c.server.app[MENU_RELOADER].listening.is_set() for c in (first, second)):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    main = definitions / "main.toml"
    main.write_text(main.read_text(encoding="utf-8").replace('vi = "MobiFone *090#"', 'vi = "MobiFone *090# - moi"'), encoding="utf-8")
    response = await first.post("/admin/menus/reload", headers={"Authorization": "Bearer admin-secret"})
    assert response.status == 200, await response.text()
    for _ in range(100):
        screen = await Phone(second, "json", msisdn="84907770005").dial()
        if "- moi" in screen.text:
            break
        await asyncio.sleep(0.05)
    assert "MobiFone *090# - moi" in screen.text
    # The command-line tool reaches both instances through the same URL.
    rolled = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ussd_gateway.cli", "menus", "rollback", "--redis-url", ha.url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=tmp_path,
    )
    out, err = await asyncio.wait_for(rolled.communicate(), 60)
    assert rolled.returncode == 0 and b"announced" in out, err.decode()[-500:]
    assert PASSWORD.encode() not in out + err
    for _ in range(100):
        screen = await Phone(second, "json", msisdn="84907770006").dial()
        if "- moi" not in screen.text:
            break
        await asyncio.sleep(0.05)
    assert "MobiFone *090#" in screen.text and "- moi" not in screen.text


# ---- WAIT on money writes ------------------------------------------------------------------
async def test_money_writes_wait_for_a_replica(ha: Any, aiohttp_client: Any) -> None:
    """With `money_wait_replicas = 1` the replica holds the debit when the success
    screen shows; with the replica frozen, the screen still says success (the debit
    is on the master) and `money_write_unreplicated` is logged."""
    msisdn = "84905550061"
    account_key = subscriber_key("ussd", msisdn, "acct")
    settings = make_settings(ha.url, sessions={"money_wait_replicas": 1, "money_wait_timeout_ms": 300, "redis_timeout_ms": 1000,
                                               "hop_deadline_ms": 3000, "lock_ttl_ms": 4000})
    client = await aiohttp_client(create_app(settings))
    phone = Phone(client, "json", msisdn=msisdn)
    replica = replica_holding(ha, account_key)
    with capture_logs() as logs:
        await phone.dial()
        assert "85.000d" in (await phone.walk("2", "1", "1", "1")).text
    assert not [e for e in logs if e["event"] == "money_write_unreplicated"]
    # Read at once from the replica itself: the debit is there.
    held = await read_on_replica(ha, replica, account_key)
    assert held is not None and orjson.loads(held)["balance"] == 85_000
    replica.pause()
    try:
        with capture_logs() as logs:
            await phone.dial()
            assert "Dang ky thanh cong" in (await phone.walk("2", "1", "1", "1")).text
    finally:
        replica.resume()
    unreplicated = [e for e in logs if e["event"] == "money_write_unreplicated"]
    assert len(unreplicated) == 1 and unreplicated[0]["replicas"] == 0 and msisdn not in str(unreplicated[0])


async def test_money_without_wait_never_logs_a_missing_replica(ha: Any, aiohttp_client: Any) -> None:
    client = await aiohttp_client(create_app(make_settings(ha.url)))
    phone = Phone(client, "json", msisdn="84905550062")
    replica = replica_holding(ha, subscriber_key("ussd", phone.msisdn, "acct"))
    replica.pause()
    try:
        with capture_logs() as logs:
            await phone.dial()
            assert "85.000d" in (await phone.walk("2", "1", "1", "1")).text
    finally:
        replica.resume()
    assert not [e for e in logs if e["event"] == "money_write_unreplicated"]
