"""USSD push: a dialogue the network begins (`POST /admin/ussd/push`), over the SMSC
simulator with a real Redis. The push goes out as submit_sm USSR (2) or USSN (3), the
subscriber's answer comes back as a continuation (18) and walks the offer to a
purchase, debited once; a push to a subscriber in a dialogue is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from independent_smsc import independent_smsc  # noqa: F401  (the fixture)
from test_smpp_e2e import ALICE, POOR, Rig, make_rig

from ussd_gateway.app.server import GATEWAY

from ussd_gateway.channels.smpp.presets import bind_settings
from ussd_gateway.testkit.smsc.push import confirm_notify

NEW_YEAR_UTC = 1767225600.0  # 2026-01-01 00:00 UTC
OFFER = {"entry": "offer:start", "vars": {"offer_code": "D15"}}


@pytest.fixture
async def rig(aiohttp_client: Any, redis_url: str) -> AsyncIterator[Rig]:
    made = await make_rig(aiohttp_client, redis_url)
    try:
        yield made
    finally:
        await made.client.close()
        await made.smsc.stop()


async def push(rig: Rig, msisdn: str = ALICE, **body: Any) -> tuple[int, dict[str, Any]]:
    response = await rig.client.post("/admin/ussd/push", json={"msisdn": msisdn, **OFFER, **body})
    return response.status, await response.json()


async def balance(rig: Rig, msisdn: str = ALICE) -> int:
    return (await rig.gateway.backend.account(msisdn)).balance


async def until(found: Any, timeout: float = 5.0) -> Any:
    async with asyncio.timeout(timeout):
        while (result := found()) is None:
            await asyncio.sleep(0.02)
        return result


def submits_to(rig: Rig, msisdn: str) -> list[Any]:
    return [p for p in rig.smsc.accepted_submits if p.fields.get("destination_addr") == msisdn and "ussd_service_op" in p.fields]


class TestPushOverSmpp:
    async def test_offer_pushed_answered_and_bought_once(self, rig: Rig) -> None:
        before = await balance(rig)
        status, body = await push(rig)
        assert status == 200, body
        assert body["bind"] == "smsc-test" and body["screen"] == "offer:show" and not body["end"]
        dialogue = await rig.smsc.next_push(ALICE, timeout=5)
        first = await dialogue.next_screen(timeout=5)
        assert first.text.startswith("Uu dai: goi D15") and "1. Dang ky" in first.text and "2. Bo qua" in first.text
        assert not first.end
        wire = first.pdu.fields
        assert wire["ussd_service_op"] == 2 and wire["service_type"] == "USSD"
        assert wire["source_addr"] == "*090" and wire["destination_addr"] == ALICE
        assert wire["its_session_info"] & 0xFF00 and not wire["its_session_info"] & 0x01
        await dialogue.answer("1")
        done = await dialogue.next_screen(timeout=5)
        assert done.end and "Dang ky thanh cong goi D15" in done.text
        assert done.pdu.fields["ussd_service_op"] == 17
        assert (done.pdu.fields["its_session_info"] & 0xFF00) == (wire["its_session_info"] & 0xFF00)
        assert await balance(rig) == before - 15000
        sms = await rig.smsc.next_mt(ALICE, timeout=5)
        assert "D15" in sms.text
        # The answer resent by the SMSC (same its_session_info, same text) changes nothing.
        await rig.smsc._send_ussd(dialogue, 18, "1")
        await asyncio.sleep(0.3)
        assert await balance(rig) == before - 15000

    async def test_declined_offer_changes_nothing(self, rig: Rig) -> None:
        before = await balance(rig)
        assert (await push(rig))[0] == 200
        dialogue = await rig.smsc.next_push(ALICE, timeout=5)
        await dialogue.next_screen(timeout=5)
        await dialogue.answer("2")
        end = await dialogue.next_screen(timeout=5)
        assert end.end and end.text.startswith("Cam on quy khach")
        assert await balance(rig) == before

    async def test_too_poor_is_offered_an_advance(self, rig: Rig) -> None:
        assert (await push(rig, POOR))[0] == 200
        dialogue = await rig.smsc.next_push(POOR, timeout=5)
        await dialogue.next_screen(timeout=5)
        await dialogue.answer("1")
        screen = await dialogue.next_screen(timeout=5)
        assert not screen.end and "ung" in screen.text.lower()  # the existing airtime-advance offer

    async def test_notify_only_push_ends_the_dialogue(self, rig: Rig) -> None:
        status, body = await push(rig, notify=True)
        assert status == 200 and body["end"]
        dialogue = await rig.smsc.next_push(ALICE, timeout=5)
        screen = await dialogue.next_screen(timeout=5)
        assert screen.end and screen.text.startswith("Uu dai: goi D15")
        assert screen.pdu.fields["ussd_service_op"] == 3 and screen.pdu.fields["its_session_info"] & 0x01
        assert "1. Dang ky" in screen.text  # the same screen, shown as a notice
        sequence = await confirm_notify(dialogue)  # USSN confirm (19): released, no screen follows
        response = await until(lambda: next((p for p in rig.smsc.pdus if p.command == "deliver_sm_resp" and p.sequence == sequence), None))
        assert response.status == 0
        await asyncio.sleep(0.3)
        assert len(submits_to(rig, ALICE)) == 1
        # Nothing is open: a second push goes at once.
        assert (await push(rig))[0] == 200

    async def test_refused_while_a_dialogue_is_open(self, rig: Rig) -> None:
        dialogue, _menu = await rig.dial()
        status, body = await push(rig)
        assert status == 409 and body["reason"] == "open_dialogue"
        assert not rig.smsc.pushes and len(submits_to(rig, ALICE)) == 1  # the menu only
        # The open dialogue is untouched: it walks on.
        screen = await rig.walk(dialogue, "1")
        assert not screen.end and "TKC" in screen.text
        await rig.walk(dialogue, "0")
        await dialogue.abort()

    async def test_after_the_dialogue_ends_the_push_goes(self, rig: Rig) -> None:
        _dialogue, screen = await rig.dial(code="*101#")
        assert screen.end
        assert (await push(rig))[0] == 200

    async def test_second_push_refused_until_the_first_is_answered(self, rig: Rig) -> None:
        assert (await push(rig))[0] == 200
        status, body = await push(rig)
        assert status == 409 and body["reason"] == "open_dialogue"
        dialogue = await rig.smsc.next_push(ALICE, timeout=5)
        await dialogue.next_screen(timeout=5)
        await dialogue.answer("2")
        assert (await dialogue.next_screen(timeout=5)).end
        assert (await push(rig))[0] == 200

    async def test_abort_releases_the_pushed_dialogue(self, rig: Rig) -> None:
        before = await balance(rig)
        assert (await push(rig))[0] == 200
        dialogue = await rig.smsc.next_push(ALICE, timeout=5)
        await dialogue.next_screen(timeout=5)
        await dialogue.abort()
        await asyncio.sleep(0.2)
        assert await balance(rig) == before
        assert len(submits_to(rig, ALICE)) == 1

    async def test_refused_by_the_smsc_frees_the_subscriber(self, rig: Rig) -> None:
        rig.smsc.throttle_next(1, status=0x45)  # ESME_RSUBMITFAIL for the push
        status, body = await push(rig)
        assert status == 409 and body["reason"] == "not_delivered"
        assert (await push(rig))[0] == 200

    @pytest.mark.parametrize(
        ("body", "fragment"),
        [
            ({"entry": "buy:purchase"}, "push entry"),
            ({"entry": "nowhere"}, "push entry"),
            ({"bind": "other"}, "no smpp bind named"),
            ({"msisdn": "12"}, "msisdn"),
            ({"vars": {"a b": "1"}}, "vars"),
            ({"lang": "fr"}, "lang"),
            ({"notify": "yes"}, "notify"),
        ],
    )
    async def test_bad_requests_are_400_with_a_reason(self, rig: Rig, body: dict[str, Any], fragment: str) -> None:
        status, answer = await push(rig, **body)
        assert status == 400 and fragment in answer["error"].lower()
        assert not submits_to(rig, ALICE)

    async def test_gone_offer_is_a_polite_end(self, rig: Rig) -> None:
        status, body = await push(rig, vars={"offer_code": "NOPE"})
        assert status == 200 and body["end"] and "da ket thuc" in body["text"]
        dialogue = await rig.smsc.next_push(ALICE, timeout=5)
        screen = await dialogue.next_screen(timeout=5)
        assert screen.end and screen.pdu.fields["ussd_service_op"] == 3


class TestCarePush:
    async def test_opted_out_subscriber_is_not_pushed(self, rig: Rig) -> None:
        rig.gateway.campaigns.clock = lambda: NEW_YEAR_UTC + 5 * 3600  # noon in Ho Chi Minh City
        await rig.smsc.send_mo(ALICE, "9090", "TC")
        await rig.smsc.next_mt(ALICE, timeout=5)
        status, body = await push(rig, care=True)
        assert status == 409 and body["reason"] == "opted_out"
        assert not submits_to(rig, ALICE)
        assert (await push(rig))[0] == 200  # not a care push: the opt-out is for campaigns

    async def test_quiet_hours_hold_a_care_push(self, rig: Rig) -> None:
        rig.gateway.campaigns.clock = lambda: NEW_YEAR_UTC + 15 * 3600  # 22:00 in Ho Chi Minh City
        status, body = await push(rig, care=True)
        assert status == 409 and body["reason"] == "quiet_hours"
        assert not submits_to(rig, ALICE)
        rig.gateway.campaigns.clock = lambda: NEW_YEAR_UTC + 5 * 3600
        assert (await push(rig, care=True))[0] == 200


class TestPresets:
    @pytest.mark.parametrize("preset", ["sixdee", "mica", "msisdn"])
    async def test_push_walks_on_every_preset(self, aiohttp_client: Any, redis_url: str, preset: str) -> None:
        from ussd_gateway.app.config import SmppSettings
        from ussd_gateway.app.server import create_app
        from ussd_gateway.testkit.smsc import SmscSimulator
        import dataclasses
        from helpers import make_settings

        smsc = SmscSimulator(port=0, preset=preset)
        await smsc.start()
        bind = bind_settings({"name": "b", "port": smsc.port, "password": "secret", "reconnect_min_s": 0.05, "ussd": {"preset": preset}}, "test")
        client = await aiohttp_client(create_app(dataclasses.replace(make_settings(redis_url), smpp=SmppSettings(binds=(bind,)))))
        try:
            await smsc.wait_bound(timeout=5)
            response = await client.post("/admin/ussd/push", json={"msisdn": ALICE, **OFFER})
            assert response.status == 200, await response.text()
            dialogue = await smsc.next_push(ALICE, timeout=5)
            first = await dialogue.next_screen(timeout=5)
            assert "Uu dai: goi D15" in first.text and first.pdu.fields["ussd_service_op"] == 2
            await dialogue.answer("2")
            end = await dialogue.next_screen(timeout=5)
            assert end.end and end.text.startswith("Cam on quy khach")
        finally:
            await client.close()
            await smsc.stop()


class TestIndependentSmsc:
    """The same push through an SMSC that is not ours (PyPI smpp34's server)."""

    @pytest.fixture
    async def bound(self, aiohttp_client: Any, redis_url: str, independent_smsc: Any) -> AsyncIterator[tuple[Any, Any]]:  # noqa: F811
        import dataclasses

        from helpers import make_settings

        from ussd_gateway.app.config import SmppSettings
        from ussd_gateway.app.server import create_app

        bind = bind_settings(
            {"name": "indep", "port": independent_smsc.port, "password": "pw", "response_timeout_s": 2.0, "reconnect_min_s": 0.05}, "test"
        )
        client = await aiohttp_client(create_app(dataclasses.replace(make_settings(redis_url), smpp=SmppSettings(binds=(bind,)))))
        await independent_smsc.wait_bound()
        yield client, independent_smsc
        await client.close()

    async def test_push_answered_and_bought_once(self, bound: tuple[Any, Any]) -> None:
        from independent_smsc import TLV_ITS_SESSION_INFO, TLV_USSD_SERVICE_OP

        client, smsc = bound
        gateway = client.server.app[GATEWAY]
        before = (await gateway.backend.account(ALICE)).balance
        response = await client.post("/admin/ussd/push", json={"msisdn": ALICE, **OFFER})
        assert response.status == 200, await response.text()
        (offer,) = await smsc.next_submits(1, ALICE)
        assert offer.tlvs[TLV_USSD_SERVICE_OP] == b"\x02" and offer.service_type == "USSD"
        assert offer.short_message.startswith(b"Uu dai: goi D15") and b"1. Dang ky" in offer.short_message
        session = offer.tlvs[TLV_ITS_SESSION_INFO]
        assert session[0] and not session[1] & 0x01
        answer = {TLV_USSD_SERVICE_OP: b"\x12", TLV_ITS_SESSION_INFO: bytes([session[0], 0x02])}
        assert await smsc.deliver(ALICE, "*090", b"1", service_type="USSD", data_coding=0x0F, tlvs=answer) == 0
        _offer, done = await smsc.next_submits(2, ALICE)
        assert done.tlvs[TLV_USSD_SERVICE_OP] == bytes([17]) and b"Dang ky thanh cong goi D15" in done.short_message
        assert done.tlvs[TLV_ITS_SESSION_INFO] == bytes([session[0], 0x03])
        assert (await gateway.backend.account(ALICE)).balance == before - 15000

    async def test_notify_then_confirm(self, bound: tuple[Any, Any]) -> None:
        from independent_smsc import TLV_ITS_SESSION_INFO, TLV_USSD_SERVICE_OP

        client, smsc = bound
        response = await client.post("/admin/ussd/push", json={"msisdn": ALICE, **OFFER, "notify": True})
        assert response.status == 200
        (notice,) = await smsc.next_submits(1, ALICE)
        assert notice.tlvs[TLV_USSD_SERVICE_OP] == b"\x03" and notice.tlvs[TLV_ITS_SESSION_INFO][1] & 0x01
        confirm = {TLV_USSD_SERVICE_OP: bytes([19]), TLV_ITS_SESSION_INFO: bytes([notice.tlvs[TLV_ITS_SESSION_INFO][0], 0x03])}
        assert await smsc.deliver(ALICE, "*090", b"", data_coding=0x0F, tlvs=confirm) == 0
        await asyncio.sleep(0.3)
        assert len([s for s in smsc.submits if s.destination_addr == ALICE]) == 1


class TestWho:
    """A push reaches a subscriber's phone and can lead to a debit: an admin route."""

    WEB_PUSH = {"msisdn": ALICE, **OFFER, "bind": "web"}

    async def test_off_on_a_public_main_listener_even_with_the_gateway_token(self, aiohttp_client: Any) -> None:
        from helpers import make_settings

        from ussd_gateway.app.server import create_app

        token = "gw-token-0123456789"
        client = await aiohttp_client(create_app(make_settings(http={"host": "0.0.0.0", "tokens": (token,)})))
        auth = {"Authorization": f"Bearer {token}"}
        assert (await client.post("/admin/ussd/push", json=self.WEB_PUSH, headers=auth)).status == 404
        assert (await client.get("/admin/ussd/push", params={"msisdn": ALICE}, headers=auth)).status == 404

    async def test_behind_the_admin_token(self, aiohttp_client: Any, redis_url: str) -> None:
        from helpers import make_settings

        from ussd_gateway.app.server import create_app

        client = await aiohttp_client(create_app(make_settings(redis_url, admin={"token": "admin-secret-xyz"})))
        assert (await client.post("/admin/ussd/push", json=self.WEB_PUSH)).status == 401
        wrong = {"Authorization": "Bearer admin-secret-xy"}
        assert (await client.post("/admin/ussd/push", json=self.WEB_PUSH, headers=wrong)).status == 401
        assert (await client.get("/admin/ussd/push", params={"msisdn": ALICE})).status == 401
        right = {"Authorization": "Bearer admin-secret-xyz"}
        response = await client.post("/admin/ussd/push", json=self.WEB_PUSH, headers=right)
        assert response.status == 200
        taken = await (await client.get("/admin/ussd/push", params={"msisdn": ALICE}, headers=right)).json()
        assert taken["push"]["text"].startswith("Uu dai: goi D15") and taken["push"]["service_code"] == "*090#"
        # Taken once: the next poll finds nothing.
        assert (await (await client.get("/admin/ussd/push", params={"msisdn": ALICE}, headers=right)).json())["push"] is None


class TestWebPhoneDelivery:
    async def test_the_answer_over_json_walks_the_pushed_offer(self, aiohttp_client: Any, redis_url: str) -> None:
        """What the web phone does, without the browser: take the push, answer over /ussd."""
        from helpers import make_settings

        from ussd_gateway.app.server import create_app

        client = await aiohttp_client(create_app(make_settings(redis_url)))
        gateway = client.server.app[GATEWAY]
        before = (await gateway.backend.account(ALICE)).balance
        assert (await client.post("/admin/ussd/push", json={"msisdn": ALICE, **OFFER, "bind": "web"})).status == 200
        push = (await (await client.get("/admin/ussd/push", params={"msisdn": ALICE})).json())["push"]
        hop = {"session_id": push["session_id"], "msisdn": ALICE, "service_code": push["service_code"], "event": "continue", "input": "1", "seq": 1}
        for _ in range(2):  # a retried hop is answered from the saved reply
            answer = await (await client.post("/ussd", json=hop)).json()
            assert answer["end"] and "Dang ky thanh cong goi D15" in answer["text"]
        assert (await gateway.backend.account(ALICE)).balance == before - 15000

    async def test_a_push_with_no_smpp_bind_needs_the_web_phone(self, aiohttp_client: Any) -> None:
        from helpers import make_settings

        from ussd_gateway.app.server import create_app

        client = await aiohttp_client(create_app(make_settings()))
        response = await client.post("/admin/ussd/push", json={"msisdn": ALICE, **OFFER})
        assert response.status == 400 and "bind" in (await response.json())["error"]


async def test_swap_on_redis_returns_what_the_key_held(redis_url: str) -> None:
    """The web phone's push slot (and the SMPP resend checks) read the value a key held
    when it is swapped: on Redis too, not a bool."""
    from ussd_gateway.sessions.redis_store import RedisStore

    store = RedisStore.from_url(redis_url)
    try:
        assert await store.swap("k", "first", 5) is None
        assert await store.swap("k", "second", 5) == "first"
        assert await store.swap("k", "", 0.001) == "second"
    finally:
        await store.close()


class TestTerminalPhone:
    async def test_sim_wait_push_rings_and_buys(self, aiohttp_client: Any, redis_url: str) -> None:
        """`ussd-gateway sim --smpp HOST:PORT --wait-push S` shows the push and answers it."""
        import dataclasses
        import io
        import socket

        from helpers import make_settings

        from ussd_gateway.app.config import SmppSettings
        from ussd_gateway.app.server import create_app
        from ussd_gateway.channels.smpp.config import BindSettings
        from ussd_gateway.testkit.sim import run_sim
        from ussd_gateway.testkit.smsc import SmscSimulator

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            control = sock.getsockname()[1]
        async with SmscSimulator(port=0, control_port=control) as smsc:
            bind = BindSettings(name="b", password="secret", port=smsc.port, reconnect_min_s=0.05)
            client = await aiohttp_client(create_app(dataclasses.replace(make_settings(redis_url), smpp=SmppSettings(binds=(bind,)))))
            await smsc.wait_bound(timeout=5)
            out = io.StringIO()
            phone = asyncio.create_task(
                asyncio.to_thread(run_sim, url="", msisdn="84901234567", code="", read=lambda _p: "1", out=out,
                                  smpp=f"127.0.0.1:{control}", wait_push=10)  # fmt: skip
            )
            await asyncio.sleep(0.3)  # the phone is waiting
            assert (await client.post("/admin/ussd/push", json={"msisdn": ALICE, **OFFER})).status == 200
            assert await asyncio.wait_for(phone, 15) == 0
            shown = out.getvalue()
            assert "Uu dai: goi D15" in shown and "Dang ky thanh cong goi D15" in shown and "[END" in shown
            assert (await client.server.app[GATEWAY].backend.account(ALICE)).balance == 200000 - 15000


from hypothesis import given, settings as hyp_settings, strategies as st  # noqa: E402


@pytest.mark.parametrize("preset", ["3gpp", "sixdee", "mica", "msisdn"])
@hyp_settings(max_examples=200, deadline=None)
@given(number=st.integers(0, 1 << 20), sequence=st.integers(0, 0xFF))
def test_the_answer_to_a_push_names_the_pushed_dialogue(preset: str, number: int, sequence: int) -> None:
    """Whatever number a push picks, the subscriber's answer (the naming field echoed,
    per-message bits changed, end bit clear) has the push's session id; the push's own
    submit_sm says USSR with the end bit clear, a notify USSN with it set."""
    from ussd_gateway.channels.smpp import ussd

    bind = bind_settings({"name": "b", "password": "pw", "ussd": {"preset": preset}}, "test")
    dialect = bind.ussd
    session_id, naming = ussd.push_address(bind, ALICE, number)
    answer = dict(naming)
    if "its_session_info" in naming:
        its = naming["its_session_info"]
        assert its & dialect.session_mask and not its & dialect.end_bit
        answer["its_session_info"] = its | ((sequence << 1) & dialect.per_message_bits)
    assert ussd.session_id(bind, answer, ALICE) == session_id
    assert ussd.op_kind(dialect, dialect.op_continue[0], answer.get("its_session_info")).value == "continue"
    request = ussd.push_submit(bind, ALICE, "*090", naming, "Uu dai", notify=False)
    notice = ussd.push_submit(bind, ALICE, "*090", naming, "Uu dai", notify=True)
    assert (request["ussd_service_op"], notice["ussd_service_op"]) == (2, 3)
    if "its_session_info" in naming:
        assert not request["its_session_info"] & dialect.end_bit and notice["its_session_info"] & dialect.end_bit


class TestPushCommand:
    async def test_ussd_gateway_push_with_the_admin_token(self, aiohttp_server: Any, redis_url: str, capsys: Any, monkeypatch: Any) -> None:
        from helpers import make_settings

        from ussd_gateway.app.server import create_app
        from ussd_gateway.cli import main

        server = await aiohttp_server(create_app(make_settings(redis_url, admin={"token": "admin-secret-xyz"})))
        url = str(server.make_url("/"))
        argv = ["push", "0901234567", "offer:start", "--var", "offer_code=D15", "--bind", "web", "--url", url]
        assert await asyncio.to_thread(main, argv) == 1
        assert "refused (401)" in capsys.readouterr().err
        monkeypatch.setenv("USSD_ADMIN_TOKEN", "admin-secret-xyz")
        assert await asyncio.to_thread(main, argv) == 0
        shown = capsys.readouterr().out
        assert "pushed request (USSR) via web" in shown and "Uu dai: goi D15" in shown and "1. Dang ky" in shown
        assert await asyncio.to_thread(main, argv) == 1  # the first one is still open on the phone
        assert '"reason": "open_dialogue"' in capsys.readouterr().err
        assert await asyncio.to_thread(main, ["push", ALICE, "--var", "broken", "--url", url]) == 2
