"""Who may talk to the server, how fast, and what it never shows: tried as an attacker
on the same network would, over real sockets."""

from __future__ import annotations

import asyncio
import io
import socket
import time

import pytest
import structlog
from helpers import Phone, make_settings

from ussd_gateway.app.config import ConfigError
from ussd_gateway.app.server import create_app
from ussd_gateway.channels.http.guard import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature_of
from ussd_gateway.core.logs import configure_logging
from ussd_gateway.core.secrets import mask_url
from ussd_gateway.testkit.http_fuzz import RunningServer

TOKEN = "gw-token-0123456789"
HOP = {"session_id": "s1", "msisdn": "84905550001", "service_code": "*101#", "event": "begin"}
SMS = {"msisdn": "84905550001", "short_code": "999", "text": "D15"}


class TestTokens:
    async def test_money_routes_want_a_bearer_token(self, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        client = await aiohttp_client(create_app(make_settings(http={"tokens": (TOKEN,)})))
        for method, path, kwargs in [("post", "/ussd", {"json": HOP}), ("post", "/sms", {"json": SMS}),
                                     ("get", "/sms/outbound?to=84905550001", {}),
                                     ("post", "/ussd/africastalking", {"data": {"sessionId": "a", "serviceCode": "*101#", "phoneNumber": "84905550001"}})]:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                response = await getattr(client, method)(path, headers=headers, **kwargs)
                body = await response.text()
                assert response.status == 401, (path, headers)
                assert body.count("\n") <= 1 and TOKEN not in body
        response = await client.post("/ussd", json=HOP, headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status == 200
        assert (await client.get("/healthz")).status == 200

    async def test_someone_else_cannot_spend_a_balance(self, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        """Eight D15 purchases without the token leave the balance as it was."""
        client = await aiohttp_client(create_app(make_settings(http={"tokens": (TOKEN,)})))
        for _ in range(8):
            assert (await client.post("/sms", json=SMS)).status == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        response = await client.post("/ussd", json=HOP, headers=auth)
        assert "100.000" in (await response.json())["text"]


class TestAllowList:
    async def test_other_peers_get_403(self, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        client = await aiohttp_client(create_app(make_settings(http={"allow_from": ("10.0.0.0/8",)})))
        assert (await client.post("/ussd", json=HOP)).status == 403

    async def test_forwarded_for_is_believed_from_a_trusted_proxy_only(self, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        trusting = await aiohttp_client(create_app(make_settings(http={"allow_from": ("10.1.2.3",), "trusted_proxies": ("127.0.0.1",)})))
        assert (await trusting.post("/ussd", json=HOP, headers={"X-Forwarded-For": "10.1.2.3"})).status == 200
        assert (await trusting.post("/ussd", json=HOP, headers={"X-Forwarded-For": "10.9.9.9"})).status == 403
        wary = await aiohttp_client(create_app(make_settings(http={"allow_from": ("10.1.2.3",)})))
        assert (await wary.post("/ussd", json=HOP, headers={"X-Forwarded-For": "10.1.2.3"})).status == 403


class TestSignatures:
    async def test_signed_requests_pass_once_stale_or_replayed_ones_do_not(self, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        secret = "sign-secret-abcdef"
        client = await aiohttp_client(create_app(make_settings(http={"signing_secrets": (secret,)})))
        body = b'{"session_id": "s1", "msisdn": "84905550001", "service_code": "*101#", "event": "begin"}'
        now = str(int(time.time()))

        def headers(ts: str, sig: str) -> dict[str, str]:
            return {"Content-Type": "application/json", TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sig}

        good = headers(now, "sha256=" + signature_of(secret, now, body))
        assert (await client.post("/ussd", data=body, headers=good)).status == 200
        assert (await client.post("/ussd", data=body, headers=good)).status == 401  # replayed
        old = str(int(time.time()) - 3600)
        assert (await client.post("/ussd", data=body, headers=headers(old, signature_of(secret, old, body)))).status == 401
        assert (await client.post("/ussd", data=body + b" ", headers=headers(now, signature_of(secret, now, body)))).status == 401
        assert (await client.post("/ussd", data=body)).status == 401


class TestExposure:
    def test_a_public_bind_without_protection_refuses_to_start(self) -> None:
        with pytest.raises(ConfigError, match="tokens, allow_from or signing_secrets"):
            create_app(make_settings(http={"host": "0.0.0.0"}))
        create_app(make_settings(http={"host": "0.0.0.0", "allow_unauthenticated": True}))
        create_app(make_settings(http={"host": "0.0.0.0", "tokens": (TOKEN,)}))

    def test_a_public_admin_listener_wants_a_token(self) -> None:
        with pytest.raises(ConfigError, match="admin"):
            create_app(make_settings(http={"tokens": (TOKEN,)}, admin={"host": "0.0.0.0", "port": 9090}))

    def test_cli_refuses_too(self, capsys) -> None:  # type: ignore[no-untyped-def]
        from ussd_gateway.cli import main

        assert main(["serve", "--host", "0.0.0.0", "--port", "1"]) == 2
        assert "allow_unauthenticated" in capsys.readouterr().err

    async def test_admin_routes_are_off_on_a_public_main_listener(self, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        client = await aiohttp_client(create_app(make_settings(http={"host": "0.0.0.0", "tokens": (TOKEN,)})))
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for path in ("/sim", "/metrics", "/menus/graph?format=mermaid", "/sms/outbound?to=84901234567", "/static/sim.js"):
            assert (await client.get(path, headers=auth)).status == 404, path
        assert (await client.get("/readyz")).status == 200

    def test_admin_listener_serves_them_behind_its_token(self) -> None:
        settings = make_settings(http={"tokens": (TOKEN,)}, admin={"port": 0, "token": "admin-secret-xyz"})
        settings = settings.replace("admin", port=_free_port())
        with RunningServer(settings) as server:
            import http.client

            def get(port: int, path: str, headers: dict[str, str]) -> int:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", path, headers=headers)
                status = connection.getresponse().status
                connection.close()
                return status

            admin_port = settings.admin.port
            assert get(admin_port, "/metrics", {}) == 401
            assert get(admin_port, "/metrics", {"Authorization": "Bearer admin-secret-xyz"}) == 200
            assert get(server.port, "/metrics", {"Authorization": "Bearer admin-secret-xyz"}) == 404


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestLimits:
    async def test_one_number_hammering_gets_a_polite_end(self, gateway_client) -> None:  # type: ignore[no-untyped-def]
        """Beyond the per-MSISDN rate a hop is an END in the subscriber's language."""
        gateway_client.server.app  # noqa: B018
        phone = Phone(gateway_client, "json", msisdn="84905550002", language="en")
        screens = [await phone.dial("*101#") for _ in range(70)]
        assert "Too many requests" in screens[-1].text and screens[-1].end
        assert "Too many requests" not in screens[0].text
        metrics = await (await gateway_client.get("/metrics")).text()
        assert 'ussd_limited_total{limit="session"}' in metrics and "84905550002" not in metrics

    async def test_mo_sms_over_the_rate_gets_no_reply(self, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        client = await aiohttp_client(create_app(make_settings(limits={"msisdn_sms_per_minute": 3})))
        replies = [(await (await client.post("/sms", json={**SMS, "text": "KT"})).json())["reply"] for _ in range(5)]
        assert replies[0] and replies[3] is None and replies[4] is None

    @pytest.mark.parametrize("sender", ["9237", "999", "MobiFone"])
    async def test_short_codes_and_alphanumeric_senders_get_no_reply(self, aiohttp_client, sender: str) -> None:  # type: ignore[no-untyped-def]
        client = await aiohttp_client(create_app(make_settings()))
        response = await client.post("/sms", json={**SMS, "msisdn": sender, "text": "KT"})
        assert response.status == 400

    async def test_per_caller_rate_is_429_with_retry_after(self, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        client = await aiohttp_client(create_app(make_settings(limits={"peer_requests_per_second": 5})))
        statuses = [(await client.post("/ussd", json=HOP)) for _ in range(12)]
        refused = [r for r in statuses if r.status == 429]
        assert refused and refused[0].headers["Retry-After"].isdigit()

    async def test_per_caller_rate_holds_across_instances(self, redis_url: str, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        """Two instances on one Redis share a caller's budget: what one served counts
        against the other once they have synced (every 100 ms)."""
        settings = make_settings(redis_url, limits={"peer_requests_per_second": 10})
        first = await aiohttp_client(create_app(settings))
        second = await aiohttp_client(create_app(settings))
        await asyncio.sleep(1.02 - time.time() % 1)  # the start of a one-second window
        def ask(client):  # type: ignore[no-untyped-def]
            return client.get("/sms/outbound", params={"to": "0901234567"})

        served_first = [(await ask(first)).status for _ in range(8)]
        assert (await ask(second)).status == 200  # 9 of 10
        await asyncio.sleep(0.25)  # both have added their counts and read the total back
        served_second = [(await ask(second)).status for _ in range(8)]
        assert served_first.count(429) == 0
        assert served_second.count(429) == 7, served_second  # 17 asked, 10 allowed in all


class TestSecrets:
    def test_mask_url(self) -> None:
        assert mask_url("redis://:hunter22@10.0.0.5:6379/0") == "redis://:***@10.0.0.5:6379/0"
        assert "pw9999" not in mask_url("rediss://user:pw9999@h/0?password=pw9999")

    async def test_secrets_never_reach_logs_or_readyz(self, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        stream = io.StringIO()
        configure_logging(level="debug", fmt="json", stream=stream)
        try:
            redis_url = "redis://:redispass77@127.0.0.1:1/0"
            settings = make_settings(redis_url, http={"tokens": (TOKEN,), "signing_secrets": ("hmac-secret-42",)},
                                     backend={"http_token": "billing-token-9"}, sessions={"redis_timeout_ms": 50})
            client = await aiohttp_client(create_app(settings))
            ready = await client.get("/readyz")
            assert "redispass77" not in await ready.text() and "***" in await ready.text()
            structlog.get_logger("t").warning("echo", url=redis_url, token=TOKEN, error=f"bad hmac-secret-42 billing-token-9")
            await client.post("/ussd", json=HOP, headers={"Authorization": f"Bearer {TOKEN}"})
        finally:
            structlog.reset_defaults()
        logged = stream.getvalue()
        assert logged
        for secret in ("redispass77", TOKEN, "hmac-secret-42", "billing-token-9"):
            assert secret not in logged

    def test_banner_masks_the_redis_password(self, capfd) -> None:  # type: ignore[no-untyped-def]
        import subprocess
        import sys

        port = _free_port()
        process = subprocess.Popen([sys.executable, "-m", "ussd_gateway.cli", "serve", "--port", str(port),
                                    "--redis-url", "redis://:bannerpw55@127.0.0.1:1/0"],
                                   stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        try:
            line = process.stderr.readline() if process.stderr else ""
        finally:
            process.terminate()
            process.communicate(timeout=20)
        assert "listening" in line and "bannerpw55" not in line and "***" in line


class TestConnections:
    def test_deflate_body_in_a_second_segment_is_answered(self) -> None:
        """`Content-Encoding: deflate`, `Content-Length: 2`, `{}` sent apart: answered."""
        with RunningServer(make_settings()) as server:
            with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
                sock.sendall(b"POST /ussd HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Encoding: deflate\r\nContent-Length: 2\r\n\r\n")
                time.sleep(0.05)
                sock.sendall(b"{}")
                answer = sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 400"), answer[:80]

    def test_trickling_connections_are_capped_and_closed_and_healthz_answers(self) -> None:
        settings = make_settings(http={"max_connections_per_peer": 20, "header_timeout_s": 0.5})
        with RunningServer(settings) as server:
            held = []
            for _ in range(40):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                sock.sendall(b"POST /ussd HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
                held.append(sock)
            closed = 0
            for sock in held:
                try:
                    closed += sock.recv(10) == b""
                except (ConnectionResetError, TimeoutError):
                    closed += 1
                sock.close()
            assert closed == 40  # 20 refused at once, 20 closed at the head deadline
            assert server.request("GET", "/healthz") == 200
