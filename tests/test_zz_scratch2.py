import asyncio
import pytest
from helpers import Phone, make_settings
from ussd_gateway.server import create_app

@pytest.fixture(params=["json", "africastalking"])
def dialect(request):
    return request.param

@pytest.fixture(params=["memory"])
def store_kind(request):
    return request.param

def p(s): print(repr(s.text), s.end)

async def test_paging(aiohttp_client, dialect):
    c = await aiohttp_client(create_app(make_settings(screen={"gsm7_limit": 90})))
    ph = Phone(c, dialect)
    p(await ph.dial()); p(await ph.send("98")); p(await ph.send("98")); p(await ph.send("0")); p(await ph.send("98"))
    p(await ph.send("2")); p(await ph.send("4")); p(await ph.send("98")); p(await ph.send("98"))

async def test_nav(phone):
    p(await phone.dial()); p(await phone.send("2")); p(await phone.send("1")); p(await phone.send("0")); p(await phone.send("0"))
    p(await phone.send("2")); p(await phone.send("1")); p(await phone.send("1")); p(await phone.send("00")); p(await phone.send("9"))

async def test_resume(phone):
    p(await phone.dial()); p(await phone.send("2")); p(await phone.send("1"))
    await phone.abort()
    p(await phone.dial()); p(await phone.send("1")); p(await phone.send("0")); p(await phone.send("0"))
    p(await phone.dial()); p(await phone.send("2"));

async def test_first(gateway_client):
    r = await gateway_client.post("/ussd/africastalking", data={"sessionId": "a1", "serviceCode": "*090#", "phoneNumber": "84901234567", "text": "2*1"})
    print(await r.text())
    r = await gateway_client.post("/ussd", json={"session_id": "j1", "msisdn": "84901234567", "service_code": "*090*2*1#", "event": "begin"})
    print(await r.text())
