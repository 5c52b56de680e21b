"""HttpBackend against the billing server (the demo backend behind the documented
contract) on a real 127.0.0.1 port, and against servers that misbehave."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ussd_gateway.backend import (
    BundleChoice,
    DemoBackend,
    Feedback,
    HttpBackend,
    SubscriberBackend,
    load_demo_data,
)
from ussd_gateway.core.errors import DependencyDown
from ussd_gateway.testkit.billing_server import create_billing_app
from ussd_gateway.testkit.redis_server import RedisServer, free_port

DATA = load_demo_data()
ALICE = "84901234567"
POOR = "84901111111"
GOLD = "84909999999"
NEWBIE = "84907777777"

ServerFactory = Callable[..., Awaitable[TestServer]]
ClientFactory = Callable[..., Awaitable[TestClient]]

PURCHASE_OK = {
    "status": "ok", "balance": 185000, "points": 0, "missing": 0,
    "package": {"code": "D15", "name": "D15", "expires": "2030-01-04", "auto_renew": True, "data_left_mb": 3072},
}


def url_of(server: TestServer) -> str:
    return str(server.make_url(""))


@pytest.fixture
def demo() -> DemoBackend:
    """The demo backend, in memory, behind the billing server."""
    return DemoBackend.in_memory(DATA)


@pytest.fixture
async def billing(aiohttp_server: ServerFactory, demo: DemoBackend) -> AsyncIterator[HttpBackend]:
    """An HttpBackend talking to create_billing_app(demo) over a real TCP port."""
    server = await aiohttp_server(create_billing_app(demo))
    backend = HttpBackend(url_of(server))
    try:
        yield backend
    finally:
        await backend.close()


async def fake_server(aiohttp_server: ServerFactory, method: str, path: str, handler: Any) -> TestServer:
    """A one-route server that misbehaves on purpose."""
    app = web.Application()
    app.router.add_route(method, path, handler)
    return await aiohttp_server(app)


class TestContract:
    def test_is_a_subscriber_backend(self) -> None:
        """HttpBackend satisfies the port's runtime-checkable protocol."""
        assert isinstance(HttpBackend("http://127.0.0.1:9"), SubscriberBackend)

    async def test_catalogue_round_trips_and_is_cached(self, aiohttp_server: ServerFactory, demo: DemoBackend) -> None:
        """The catalogue arrives equal to the demo's, and is fetched once: it still answers with the server gone."""
        server = await aiohttp_server(create_billing_app(demo))
        backend = HttpBackend(url_of(server))
        try:
            assert await backend.catalogue() == DATA.catalogue
            await server.close()
            assert await backend.catalogue() == DATA.catalogue
            with pytest.raises(DependencyDown):
                await backend.account(ALICE)
        finally:
            await backend.close()

    async def test_account(self, billing: HttpBackend) -> None:
        """Account decodes to the same dataclasses, ints staying ints."""
        account = await billing.account("0901234567")
        assert account == await DemoBackend.in_memory(DATA).account(ALICE)
        assert type(account.balance) is int and account.balance == 200000
        assert [v.code for v in account.vas] == ["FUNRING", "MCLIP"]

    async def test_usage(self, billing: HttpBackend) -> None:
        """The usage profile comes through."""
        assert (await billing.usage_profile(GOLD)).monthly_spend == 320000

    async def test_purchase_ok_insufficient_unknown(self, billing: HttpBackend) -> None:
        """200, 402 and 404 become ok, insufficient (with missing) and unknown."""
        ok = await billing.purchase(ALICE, "D15", "k1")
        assert (ok.status, ok.balance, ok.package.code) == ("ok", 185000, "D15")
        poor = await billing.purchase(POOR, "D15", "k1")
        assert (poor.status, poor.missing, poor.balance) == ("insufficient", 12000, 3000)
        assert (await billing.purchase(ALICE, "NOPE", "k2")).status == "unknown"

    async def test_purchase_is_idempotent_over_http(self, billing: HttpBackend) -> None:
        """The same key twice, and 20 times at once, debits once."""
        first = await billing.purchase(ALICE, "D15", "k1")
        results = await asyncio.gather(*(billing.purchase(ALICE, "D15", "k1") for _ in range(20)))
        assert all(r == first for r in results)
        assert (await billing.account(ALICE)).balance == 185000

    async def test_bundle(self, billing: HttpBackend) -> None:
        """A self-built bundle is priced by the server and comes back as a bundle package."""
        result = await billing.buy_bundle(ALICE, BundleChoice(1, 1, 2, "week", "Goi cua Lan"), "b1")
        assert (result.status, result.balance, result.package.kind, result.package.name) == ("ok", 150000, "bundle", "Goi cua Lan")
        assert (await billing.buy_bundle(ALICE, BundleChoice(0, 0, 0, "day", "x"), "b2")).status == "unknown"

    async def test_redeem(self, billing: HttpBackend) -> None:
        """Redemption: ok for Gold, unknown for a non-member."""
        result = await billing.redeem(GOLD, "R-10K", "r1")
        assert (result.status, result.points, result.balance) == ("ok", 51000, 160000)
        assert (await billing.redeem(ALICE, "R-10K", "r1")).status == "unknown"

    async def test_cancellations(self, billing: HttpBackend) -> None:
        """cancel-renewal and VAS cancellation: 200 ok, then 404 not_found."""
        renewal = await billing.cancel_renewal(ALICE, "max90")
        assert (renewal.status, renewal.account.packages[0].auto_renew) == ("ok", False)
        assert (await billing.cancel_renewal(ALICE, "C120")).status == "not_found"
        vas = await billing.cancel_vas(ALICE, "FUNRING")
        assert (vas.status, [v.code for v in vas.account.vas]) == ("ok", ["MCLIP"])
        assert (await billing.cancel_vas(ALICE, "FUNRING")).status == "not_found"

    async def test_kndl(self, billing: HttpBackend) -> None:
        """Join: ok then 409 already; leave: ok then 404 not_found."""
        joined = await billing.kndl_join(ALICE)
        assert (joined.status, joined.account.kndl.tier) == ("ok", "Than thiet")
        assert (await billing.kndl_join(ALICE)).status == "already"
        assert (await billing.kndl_leave(ALICE)).status == "ok"
        assert (await billing.kndl_leave(ALICE)).status == "not_found"

    async def test_feedback(self, billing: HttpBackend) -> None:
        """Feedback posted is listed newest first with the server's timestamp."""
        await billing.add_feedback(Feedback(msisdn="0901234567", topic="network", message="mat song"))
        await billing.add_feedback(Feedback(msisdn=ALICE, topic="other", message="cam on"))
        listed = await billing.list_feedback(limit=10)
        assert [(f.msisdn, f.message) for f in listed] == [(ALICE, "cam on"), (ALICE, "mat song")]
        assert listed[0].at

    async def test_idempotency_key_in_header_and_body(self, aiohttp_server: ServerFactory) -> None:
        """The key travels both as the Idempotency-Key header and in the JSON body, with the bearer token."""
        seen: list[tuple[str | None, str | None, Any]] = []

        async def record(request: web.Request) -> web.Response:
            seen.append((request.headers.get("Idempotency-Key"), request.headers.get("Authorization"), await request.json()))
            return web.json_response(PURCHASE_OK)

        server = await fake_server(aiohttp_server, "POST", "/v1/subscribers/{msisdn}/purchases", record)
        backend = HttpBackend(url_of(server), token="s3cret")
        try:
            await backend.purchase(ALICE, "D15", "sess-1/3")
        finally:
            await backend.close()
        assert seen == [("sess-1/3", "Bearer s3cret", {"package_code": "D15", "idempotency_key": "sess-1/3"})]

    async def test_token_checked_by_the_server(self, aiohttp_server: ServerFactory, demo: DemoBackend) -> None:
        """With a token configured, the right one works and a wrong one is DependencyDown naming the token."""
        server = await aiohttp_server(create_billing_app(demo, token="s3cret"))
        good, bad = HttpBackend(url_of(server), token="s3cret"), HttpBackend(url_of(server), token="nope")
        try:
            assert (await good.account(ALICE)).balance == 200000
            with pytest.raises(DependencyDown, match="401.*token"):
                await bad.account(ALICE)
        finally:
            await good.close()
            await bad.close()

    async def test_shared_session_is_left_open(self, aiohttp_server: ServerFactory, demo: DemoBackend) -> None:
        """A session passed in belongs to the caller: close() leaves it open."""
        import aiohttp

        server = await aiohttp_server(create_billing_app(demo))
        async with aiohttp.ClientSession() as session:
            backend = HttpBackend(url_of(server), session=session)
            await backend.account(ALICE)
            await backend.close()
            assert not session.closed


class TestFailures:
    async def test_slow_server_times_out(self, aiohttp_server: ServerFactory) -> None:
        """A server that answers after the deadline is DependencyDown, raised at the deadline."""
        release = asyncio.Event()

        async def slow(request: web.Request) -> web.Response:
            await release.wait()
            return web.json_response({})

        server = await fake_server(aiohttp_server, "GET", "/v1/subscribers/{msisdn}", slow)
        backend = HttpBackend(url_of(server), timeout_s=0.2)
        try:
            started = time.monotonic()
            with pytest.raises(DependencyDown, match="within 0.2 s"):
                await backend.account(ALICE)
            assert time.monotonic() - started < 1.0
        finally:
            release.set()
            await backend.close()

    async def test_server_error_is_dependency_down(self, aiohttp_server: ServerFactory) -> None:
        """A 500 is DependencyDown, not a result."""

        async def boom(request: web.Request) -> web.Response:
            return web.json_response({"error": "db down"}, status=500)

        server = await fake_server(aiohttp_server, "POST", "/v1/subscribers/{msisdn}/purchases", boom)
        backend = HttpBackend(url_of(server))
        try:
            with pytest.raises(DependencyDown, match="HTTP 500"):
                await backend.purchase(ALICE, "D15", "k1")
        finally:
            await backend.close()

    async def test_closed_port_is_dependency_down(self) -> None:
        """Nobody listening: DependencyDown saying the API is unreachable."""
        backend = HttpBackend(f"http://127.0.0.1:{free_port()}")
        try:
            with pytest.raises(DependencyDown, match="unreachable"):
                await backend.account(ALICE)
        finally:
            await backend.close()

    async def test_float_money_is_refused(self, aiohttp_server: ServerFactory) -> None:
        """A balance of 1.5 is not money: DependencyDown "non-integer amount"."""

        async def floaty(request: web.Request) -> web.Response:
            return web.json_response({"msisdn": ALICE, "balance": 1.5, "points": 0})

        server = await fake_server(aiohttp_server, "GET", "/v1/subscribers/{msisdn}", floaty)
        backend = HttpBackend(url_of(server))
        try:
            with pytest.raises(DependencyDown, match="non-integer amount at Account.balance"):
                await backend.account(ALICE)
        finally:
            await backend.close()

    @pytest.mark.parametrize(
        "body",
        [
            {"msisdn": ALICE, "balance": "1000", "points": 0},
            {"msisdn": ALICE, "balance": True, "points": 0},
            {"msisdn": ALICE, "points": 0},
            {"msisdn": ALICE, "balance": 1, "points": 0, "packages": [{"code": "X"}]},
            [1, 2],
        ],
    )
    async def test_malformed_answers_are_refused(self, aiohttp_server: ServerFactory, body: Any) -> None:
        """Strings, booleans or missing fields where the contract wants integers or objects are DependencyDown."""

        async def wrong(request: web.Request) -> web.Response:
            return web.json_response(body)

        server = await fake_server(aiohttp_server, "GET", "/v1/subscribers/{msisdn}", wrong)
        backend = HttpBackend(url_of(server))
        try:
            with pytest.raises(DependencyDown, match="billing API sent"):
                await backend.account(ALICE)
        finally:
            await backend.close()

    async def test_status_and_body_must_agree(self, aiohttp_server: ServerFactory) -> None:
        """A 200 carrying `insufficient`, or a 404 page from a wrong URL, is not a result."""

        async def contradict(request: web.Request) -> web.Response:
            return web.json_response({**PURCHASE_OK, "status": "insufficient"})

        server = await fake_server(aiohttp_server, "POST", "/v1/subscribers/{msisdn}/purchases", contradict)
        backend, wrong_url = HttpBackend(url_of(server)), HttpBackend(url_of(server) + "/nope")
        try:
            with pytest.raises(DependencyDown, match="HTTP 200"):
                await backend.purchase(ALICE, "D15", "k1")
            with pytest.raises(DependencyDown, match="HTTP 404.*base URL"):
                await wrong_url.purchase(ALICE, "D15", "k1")
        finally:
            await backend.close()
            await wrong_url.close()

    async def test_not_json_is_dependency_down(self, aiohttp_server: ServerFactory) -> None:
        """An HTML error page where JSON was due is DependencyDown."""

        async def html(request: web.Request) -> web.Response:
            return web.Response(text="<html>proxy error</html>", content_type="text/html")

        server = await fake_server(aiohttp_server, "GET", "/v1/catalogue", html)
        backend = HttpBackend(url_of(server))
        try:
            with pytest.raises(DependencyDown, match="not JSON"):
                await backend.catalogue()
        finally:
            await backend.close()

    async def test_redis_down_behind_the_billing_server(self, aiohttp_server: ServerFactory, own_redis: RedisServer) -> None:
        """Demo-on-Redis behind HTTP: Redis killed gives 503 then DependencyDown; Redis back, it works again."""
        demo = DemoBackend.on_redis(own_redis.url, DATA)
        server = await aiohttp_server(create_billing_app(demo))
        backend = HttpBackend(url_of(server), timeout_s=2.0)
        try:
            assert (await backend.account(ALICE)).balance == 200000
            own_redis.stop()
            with pytest.raises(DependencyDown, match="HTTP 503"):
                await backend.purchase(ALICE, "D15", "k1")
            own_redis.start()
            assert (await backend.purchase(ALICE, "D15", "k1")).balance == 185000
        finally:
            await backend.close()
            await demo.close()

    async def test_demo_on_redis_down_and_back(self, own_redis: RedisServer) -> None:
        """The demo backend itself raises DependencyDown with Redis stopped and recovers when it restarts."""
        demo = DemoBackend.on_redis(own_redis.url, DATA)
        try:
            await demo.account(ALICE)
            own_redis.stop()
            with pytest.raises(DependencyDown):
                await demo.kndl_join(ALICE)
            own_redis.start()
            assert (await demo.kndl_join(ALICE)).status == "ok"
        finally:
            await demo.close()


class TestBillingServerInput:
    @pytest.fixture
    async def client(self, aiohttp_client: ClientFactory, demo: DemoBackend) -> TestClient:
        """A raw HTTP client on the billing server, to send what HttpBackend never would."""
        return await aiohttp_client(create_billing_app(demo))

    @pytest.mark.parametrize(
        ("method", "path", "body", "reason"),
        [
            ("POST", f"/v1/subscribers/{ALICE}/purchases", b"{not json", "not valid JSON"),
            ("POST", f"/v1/subscribers/{ALICE}/purchases", b"[1]", "JSON object"),
            ("POST", f"/v1/subscribers/{ALICE}/purchases", b'{"idempotency_key": "k"}', "package_code"),
            ("POST", f"/v1/subscribers/{ALICE}/purchases", b'{"package_code": "D15"}', "idempotency_key"),
            ("POST", "/v1/subscribers/abc/purchases", b'{"package_code": "D15", "idempotency_key": "k"}', "not an MSISDN"),
            ("POST", f"/v1/subscribers/{ALICE}/bundles", b'{"data": 1, "sms": 0, "voice": 0, "cycle": "year", "name": "x", "idempotency_key": "k"}', "cycle"),
            ("POST", f"/v1/subscribers/{ALICE}/bundles", b'{"data": "1", "sms": 0, "voice": 0, "cycle": "day", "name": "x", "idempotency_key": "k"}', "data"),
            ("POST", f"/v1/subscribers/{ALICE}/bundles", b'{"data": 1, "sms": 0, "voice": 0, "cycle": "day", "name": "", "idempotency_key": "k"}', "name"),
            ("POST", "/v1/feedback", b'{"msisdn": "0901234567", "topic": "t"}', "message"),
            ("GET", "/v1/feedback?limit=abc", None, "limit"),
            ("GET", "/v1/feedback?limit=5000", None, "limit"),
        ],
    )
    async def test_malformed_requests_get_400_with_reason(
        self, client: TestClient, method: str, path: str, body: bytes | None, reason: str
    ) -> None:
        """Bad JSON, missing or mistyped fields and bad numbers get 400 {"error": reason}."""
        response = await client.request(method, path, data=body, headers={"Content-Type": "application/json"})
        assert response.status == 400
        assert reason in (await response.json())["error"]

    async def test_key_header_and_body_must_agree(self, client: TestClient) -> None:
        """Two different idempotency keys in one request are refused."""
        response = await client.post(
            f"/v1/subscribers/{ALICE}/purchases",
            data=orjson.dumps({"package_code": "D15", "idempotency_key": "a"}),
            headers={"Content-Type": "application/json", "Idempotency-Key": "b"},
        )
        assert response.status == 400 and "differ" in (await response.json())["error"]

    async def test_header_key_alone_is_enough(self, client: TestClient) -> None:
        """The Idempotency-Key header alone carries the key."""
        response = await client.post(
            f"/v1/subscribers/{ALICE}/purchases",
            data=orjson.dumps({"package_code": "D15"}),
            headers={"Content-Type": "application/json", "Idempotency-Key": "h1"},
        )
        assert response.status == 200 and (await response.json())["balance"] == 185000

    async def test_unknown_route_and_huge_body_answer_json(self, client: TestClient) -> None:
        """Routing errors and oversized bodies answer JSON errors too (404, 413)."""
        missing = await client.get("/v1/nothing")
        assert missing.status == 404 and "error" in await missing.json()
        huge = await client.post("/v1/feedback", data=b"x" * 100_000, headers={"Content-Type": "application/json"})
        assert huge.status == 413 and "error" in await huge.json()

    async def test_insufficient_is_402_with_a_result_body(self, client: TestClient) -> None:
        """The wire form of a business refusal: 402 and a PurchaseResult body."""
        response = await client.post(
            f"/v1/subscribers/{POOR}/purchases", json={"package_code": "D15", "idempotency_key": "k"}
        )
        assert response.status == 402
        assert await response.json() == {"status": "insufficient", "balance": 3000, "points": 0, "missing": 12000, "package": None}
