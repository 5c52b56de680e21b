"""Bad input, retries, concurrency and failures: the subscriber always gets a clear
answer, nothing is charged twice, and the server recovers by itself."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
import structlog
from aiohttp.test_utils import TestClient
from helpers import Phone, make_settings

from ussd_gateway.testkit.redis_server import RedisServer, free_port
from ussd_gateway.app.server import GATEWAY, create_app

AT = "/ussd/africastalking"
BUSY = "He thong dang ban"


def at_form(text: str = "", session: str = "s-1", phone: str = "84901234567", code: str = "*090#") -> dict[str, str]:
    return {"sessionId": session, "serviceCode": code, "phoneNumber": phone, "text": text}


async def balance_of(client: TestClient, msisdn: str) -> str:
    phone = Phone(client, "json", msisdn=msisdn)
    return (await phone.dial("*101#")).text


class TestMalformedRequests:
    @pytest.mark.parametrize(
        ("form", "reason"),
        [
            ({"serviceCode": "*090#", "phoneNumber": "84901234567", "text": ""}, "missing form field(s): sessionId"),
            ({"sessionId": "a", "serviceCode": "*090#", "text": ""}, "phoneNumber"),
            (at_form(phone="hello"), "is not an MSISDN"),
            (at_form(phone="+84 12"), "is not an MSISDN"),
            (at_form(code="090"), "is not a USSD code"),
            (at_form(code="*090#; drop"), "is not a USSD code"),
            (at_form(session="has space"), "session id must be"),
            (at_form(session="x" * 129), "session id must be"),
            (at_form(text="1\x00"), "control characters"),
            (at_form(text="1" * 600), "longer than 512"),
        ],
    )
    async def test_africastalking_bad_form_is_400_with_the_reason(self, aiohttp_client, form, reason) -> None:  # type: ignore[no-untyped-def]
        """A malformed callback gets HTTP 400 and a one-line reason, no traceback."""
        client = await aiohttp_client(create_app(make_settings()))
        response = await client.post(AT, data=form)
        body = await response.text()
        assert response.status == 400
        assert reason in body
        assert "Traceback" not in body and body.count("\n") <= 1

    @pytest.mark.parametrize("field", ["sessionId", "text"])
    async def test_africastalking_file_part_is_400(self, aiohttp_client, field: str) -> None:  # type: ignore[no-untyped-def]
        """A multipart form whose field is a file part is refused by name."""
        client = await aiohttp_client(create_app(make_settings()))
        form = aiohttp.FormData()
        for name, value in at_form(text="1").items():
            if name == field:
                form.add_field(name, value.encode(), filename="x.bin", content_type="application/octet-stream")
            else:
                form.add_field(name, value)
        response = await client.post(AT, data=form)
        assert response.status == 400
        assert f"form field {field} must be text, not a file" in await response.text()

    async def test_africastalking_wants_a_form(self, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        """A JSON body on the form endpoint is refused with what was expected."""
        client = await aiohttp_client(create_app(make_settings()))
        response = await client.post(AT, json=at_form())
        assert response.status == 400
        assert "form post" in await response.text()

    @pytest.mark.parametrize(
        ("body", "reason"),
        [
            (b"{not json", "not valid JSON"),
            (b"[1, 2]", "must be a JSON object"),
            (b'{"session_id": "a", "msisdn": "84901234567", "service_code": "*090#", "event": "start"}', "event must be"),
            (b'{"session_id": "a", "msisdn": "84901234567", "event": "begin"}', "missing field 'service_code'"),
            (b'{"session_id": 7, "msisdn": "84901234567", "service_code": "*090#", "event": "begin"}', "must be a string"),
            (b'{"session_id": "a", "msisdn": "84901234567", "service_code": "*090#", "event": "continue"}', "missing field 'input'"),
            (b'{"session_id": "a", "msisdn": "84901234567", "service_code": "*090#", "event": "begin", "seq": -1}', "seq must be"),
            (b'{"session_id": "a", "msisdn": "84901234567", "service_code": "*090#", "event": "begin", "seq": true}', "seq must be"),
            (b'{"session_id": "a", "msisdn": "84901234567", "service_code": "*090#", "event": "begin", "language": "fr"}', "language must be"),
        ],
    )
    async def test_json_bad_body_is_400_with_the_reason(self, aiohttp_client, body, reason) -> None:  # type: ignore[no-untyped-def]
        """A malformed JSON hop gets HTTP 400 with {"error": reason}."""
        client = await aiohttp_client(create_app(make_settings()))
        response = await client.post("/ussd", data=body, headers={"Content-Type": "application/json"})
        assert response.status == 400
        assert reason in (await response.json())["error"]

    async def test_oversized_body_is_refused_and_the_server_goes_on(self, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        """A body over the limit is refused (413) and the next hop is served normally."""
        client = await aiohttp_client(create_app(make_settings()))
        response = await client.post("/ussd", data=b"x" * 20_000, headers={"Content-Type": "application/json"})
        assert response.status == 413
        screen = await Phone(client, "json").dial()
        assert "MobiFone *090#" in screen.text

    async def test_unknown_service_code_is_a_polite_end(self, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        """A code we do not serve gets an END pointing to *090#, not an error."""
        client = await aiohttp_client(create_app(make_settings()))
        response = await client.post(AT, data=at_form(code="*555#"))
        assert response.status == 200
        assert (await response.text()).startswith("END ") and "*090#" in await response.text()


class TestRetriesAndConcurrency:
    async def test_repeated_purchase_hop_charges_once(self, gateway_client, dialect) -> None:  # type: ignore[no-untyped-def]
        """The gateway retrying the purchase hop gets the same END; one debit only."""
        phone = Phone(gateway_client, dialect)
        await phone.dial()
        done = await phone.walk("2", "1", "1", "1")
        assert done.end and "185.000d" in done.text
        for _ in range(3):
            assert (await phone.repeat()).text == done.text
        assert "185.000d" in await balance_of(gateway_client, "84901234567")

    async def test_concurrent_identical_hops_answer_alike_and_charge_once(self, gateway_client) -> None:  # type: ignore[no-untyped-def]
        """Ten copies of the purchase hop at once (a retry storm) get one reply; one debit."""
        for text in ("", "2", "2*1", "2*1*1"):
            await gateway_client.post(AT, data=at_form(text, session="storm"))
        responses = await asyncio.gather(
            *(gateway_client.post(AT, data=at_form("2*1*1*1", session="storm")) for _ in range(10))
        )
        bodies = {await r.text() for r in responses}
        assert len(bodies) == 1
        assert "185.000d" in bodies.pop()
        assert "185.000d" in await balance_of(gateway_client, "84901234567")
        queued = await gateway_client.server.app[GATEWAY].store.outbound_sms()
        assert len(queued) == 1

    async def test_two_different_hops_of_one_session_run_one_after_the_other(self, gateway_client) -> None:  # type: ignore[no-untyped-def]
        """Two hops sent at once are taken in turn: the dialogue ends two screens on."""
        phone = Phone(gateway_client, "json")
        await phone.dial()
        body = {"session_id": phone.session_id, "msisdn": phone.msisdn, "service_code": "*090#", "event": "continue"}
        first, second = await asyncio.gather(
            gateway_client.post("/ussd", json={**body, "input": "2", "seq": 1}),
            gateway_client.post("/ussd", json={**body, "input": "1", "seq": 2}),
        )
        texts = sorted([(await first.json())["text"], (await second.json())["text"]])
        # One of them saw the buy menu, the other moved on from there to the data list.
        assert any("Mua goi cuoc" in t or "Goi Data:" in t for t in texts)
        phone.seq = 2
        screen = await phone.send("0")
        assert not screen.end

    async def test_a_busy_subscriber_does_not_hold_up_another(self, gateway_client) -> None:  # type: ignore[no-untyped-def]
        """While one subscriber's lock is held, another subscriber is served at once."""
        store = gateway_client.server.app[GATEWAY].store
        loaded = await store.begin_hop("84901111111", "held", "", "someone-else", want_lang=False)
        assert loaded.status.value == "ok"
        other = await Phone(gateway_client, "json", msisdn="84909999999").dial()
        assert "MobiFone *090#" in other.text and not other.end
        stuck = await Phone(gateway_client, "json", msisdn="84901111111").dial()
        assert stuck.end and BUSY in stuck.text
        await store.release("84901111111", "someone-else")
        assert "MobiFone *090#" in (await Phone(gateway_client, "json", msisdn="84901111111").dial()).text


class TestDependenciesDown:
    async def test_redis_killed_mid_session_gives_busy_then_recovers(self, own_redis: RedisServer, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        """Redis dies mid-dialogue: a busy END; when it is back, new dialogues work."""
        client = await aiohttp_client(create_app(make_settings(own_redis.url)))
        phone = Phone(client, "africastalking")
        assert "MobiFone" in (await phone.dial()).text
        own_redis.stop()
        screen = await phone.send("1")
        assert screen.end and BUSY in screen.text
        readiness = await client.get("/readyz")
        assert readiness.status == 503
        own_redis.start()
        assert (await client.get("/readyz")).status == 200
        screen = await phone.dial()
        assert not screen.end and "MobiFone" in screen.text
        assert "200.000d" in (await phone.send("1")).text

    async def test_hung_redis_still_answers_busy_before_the_gateway_gives_up(self, own_redis: RedisServer, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        """A frozen Redis (no answers at all) still yields the busy END, not a hang."""
        client = await aiohttp_client(create_app(make_settings(own_redis.url)))
        phone = Phone(client, "json")
        await phone.dial()
        own_redis.pause()
        try:
            async with asyncio.timeout(5):  # a hang would fail here, not pass slowly
                screen = await phone.send("1")
        finally:
            own_redis.resume()
        assert screen.end and BUSY in screen.text
        await asyncio.sleep(0.1)
        assert "MobiFone" in (await Phone(client, "json", msisdn="84909999999").dial()).text

    async def test_billing_api_down_gives_busy_end(self, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        """With the HTTP backend unreachable, screens that need it answer busy END."""
        settings = make_settings(backend={"kind": "http", "http_url": f"http://127.0.0.1:{free_port()}"})
        client = await aiohttp_client(create_app(settings))
        phone = Phone(client, "africastalking")
        assert "MobiFone" in (await phone.dial()).text  # the main menu needs no backend
        screen = await phone.send("1")
        assert screen.end and BUSY in screen.text


class TestOperations:
    async def test_health_readiness_and_metrics(self, gateway_client) -> None:  # type: ignore[no-untyped-def]
        """healthz and readyz answer; metrics count hops and sessions, with no MSISDN."""
        assert (await gateway_client.get("/healthz")).status == 200
        assert (await gateway_client.get("/readyz")).status == 200
        phone = Phone(gateway_client, "africastalking")
        await phone.dial()
        await phone.walk("1", "00", "1")
        await phone.dial("*101#")
        body = await (await gateway_client.get("/metrics")).text()
        assert 'ussd_hops_total{channel="africastalking",outcome="begin",screen="main:home"} 1.0' in body
        assert 'ussd_hops_total{channel="africastalking",outcome="begin",screen="balance:show"} 1.0' in body
        continued = [line for line in body.splitlines() if line.startswith('ussd_hops_total{channel="africastalking",outcome="continue"')]
        assert sum(float(line.rsplit(" ", 1)[1]) for line in continued) == 3
        assert 'ussd_sessions_started_total{channel="africastalking"} 2.0' in body
        assert 'ussd_sessions_ended_total{channel="africastalking",how="end"} 1.0' in body
        assert "ussd_hop_seconds_bucket" in body
        assert 'ussd_sessions_timed_out_total{channel="africastalking"} 1.0' in body  # the first, left without END
        for form in ("84901234567", "0901234567", "901234567"):
            assert form not in body

    async def test_one_log_line_per_hop_with_a_masked_number(self, gateway_client) -> None:  # type: ignore[no-untyped-def]
        """Each hop logs one line: session, masked MSISDN, screen, outcome, latency."""
        phone = Phone(gateway_client, "json")
        with structlog.testing.capture_logs() as logs:
            await phone.dial()
            await phone.send("1")
        hops = [entry for entry in logs if entry["event"] == "hop"]
        assert len(hops) == 2
        assert {h["msisdn"] for h in hops} == {"8490****567"}
        assert [h["screen"] for h in hops] == ["main:home", "account:show"]
        assert [h["outcome"] for h in hops] == ["begin", "continue"]
        assert all(h["session_id"] == phone.session_id and h["latency_ms"] >= 0 for h in hops)
        assert "84901234567" not in repr(logs)

    async def test_expired_or_unknown_session_gets_a_polite_end(self, gateway_client) -> None:  # type: ignore[no-untyped-def]
        """A JSON continue for a session we do not know ends politely."""
        response = await gateway_client.post(
            "/ussd",
            json={"session_id": "never-begun", "msisdn": "84901234567", "service_code": "*090#", "event": "continue", "input": "1"},
        )
        data = await response.json()
        assert data["end"] and "het han" in data["text"]
