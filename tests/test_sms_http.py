"""SMS over HTTP: keyword services answered in the response, and the outbound queue."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import Phone, make_settings

from ussd_gateway.app.server import create_app


async def mo(client: Any, text: str, short_code: str = "9237", msisdn: str = "0901234567", **extra: Any) -> Any:
    return await client.post("/sms", json={"msisdn": msisdn, "short_code": short_code, "text": text, **extra})


class TestSmsHttp:
    async def test_dk_xn_by_http(self, gateway_client: Any) -> None:
        """DK then XN to 9237 over HTTP: the replies come back in the responses."""
        first = await (await mo(gateway_client, "dk")).json()
        assert "Soan XN gui 9237" in first["reply"]
        second = await (await mo(gateway_client, "XN")).json()
        assert "hoi vien KNDL hang Than thiet" in second["reply"]

    async def test_retried_callback_with_message_id_buys_once(self, gateway_client: Any) -> None:
        """The same message_id twice: one purchase, the same reply."""
        one = await (await mo(gateway_client, "C90N", "999", message_id="m-1")).json()
        two = await (await mo(gateway_client, "C90N", "999", message_id="m-1")).json()
        assert one == two and "110.000d" in one["reply"]
        assert "110.000d" in (await Phone(gateway_client, "json").dial("*101#")).text

    async def test_unknown_short_code_has_no_reply(self, gateway_client: Any) -> None:
        """Nothing serves 1234: reply null."""
        assert (await (await mo(gateway_client, "DK", "1234")).json())["reply"] is None

    @pytest.mark.parametrize(
        ("body", "reason"),
        [
            ({"short_code": "9237", "text": "DK"}, "missing field 'msisdn'"),
            ({"msisdn": "0901234567", "short_code": "abc", "text": "DK"}, "is not a short code"),
            ({"msisdn": "0901234567", "short_code": "9237", "text": 5}, "must be a string"),
            ({"msisdn": "x", "short_code": "9237", "text": "DK"}, "is not an MSISDN"),
        ],
    )
    async def test_bad_requests(self, aiohttp_client: Any, body: dict[str, Any], reason: str) -> None:
        """Malformed MO SMS get 400 with the reason."""
        client = await aiohttp_client(create_app(make_settings()))
        response = await client.post("/sms", json=body)
        assert response.status == 400 and reason in (await response.json())["error"]

    async def test_outbound_queue_shows_the_purchase_confirmation(self, gateway_client: Any) -> None:
        """After a USSD purchase the confirmation SMS waits in the queue for the SMS channel."""
        phone = Phone(gateway_client, "json")
        await phone.dial()
        await phone.walk("2", "1", "1", "1")
        queued = await (await gateway_client.get("/sms/outbound", params={"to": "+84901234567"})).json()
        assert len(queued) == 1 and "D15" in queued[0]["text"] and queued[0]["from"] == "MobiFone"
        assert await (await gateway_client.get("/sms/outbound", params={"to": "84909999999"})).json() == []
