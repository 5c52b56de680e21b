"""A campaign through an SMSC that is not ours (PyPI smpp34, independent_smsc.py): every
subscriber's SMS reaches it once, and its delivery receipts, sent by that stack (some
with the receipt TLVs, some with the text only), are matched: delivered and failed."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest
from helpers import make_settings
from independent_smsc import IndependentSmsc, independent_smsc  # noqa: F401  (the fixture)

from ussd_gateway.app.config import SmppSettings
from ussd_gateway.app.server import create_app
from ussd_gateway.campaigns.runner import campaign_sms_id
from ussd_gateway.channels.smpp.presets import bind_settings

TLV_RECEIPTED_MESSAGE_ID = 0x001E
TLV_MESSAGE_STATE = 0x0427
ESM_RECEIPT = 0x04
smpp34 = pytest.importorskip("smpp34")
NUMBERS = [f"8497720{i:04d}" for i in range(40)]


async def wait_status(client: Any, campaign: str, check: Any, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not check(status := await (await client.get(f"/campaigns/{campaign}")).json()):
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.05)
    return status


async def test_a_campaign_through_smpp34_with_its_receipts(aiohttp_client: Any, redis_url: str, independent_smsc: IndependentSmsc) -> None:  # noqa: F811
    smsc = independent_smsc
    bind = bind_settings(
        {"name": "indep", "port": smsc.port, "password": "pw", "short_codes": ["9090"], "response_timeout_s": 2.0,
         "reconnect_min_s": 0.05, "reconnect_max_s": 0.5, "max_tps": 200},
        "test",
    )
    settings = make_settings(redis_url, campaigns={"poll_s": 0.1, "quiet_start": "00:00", "quiet_end": "00:00"})
    client = await aiohttp_client(create_app(dataclasses.replace(settings, smpp=SmppSettings(binds=(bind,)))))
    try:
        esme = await smsc.wait_bound()
        csv = "msisdn,name\n" + "".join(f"{n},Khach {i}\n" for i, n in enumerate(NUMBERS))
        made = await (await client.post("/campaigns", json={"name": "Doc lap", "texts": {"vi": "Chao {name}, cam on quy khach."}, "csv": csv})).json()
        assert (await client.post(f"/campaigns/{made['id']}/start")).status == 200
        await wait_status(client, made["id"], lambda s: s["status"] == "done" and s["sent"] == len(NUMBERS))
        submits = list(smsc.submits)
        assert sorted(s.destination_addr for s in submits) == sorted(NUMBERS)
        assert {s.source_addr for s in submits} == {"9090"} and submits[0].short_message.startswith(b"Chao Khach ")
        failing = set(NUMBERS[::5])
        for index, submit in enumerate(submits):
            message_id = f"{index + 1:08X}"  # independent_smsc accepts the n-th submit_sm as %08X
            stat = "UNDELIV" if submit.destination_addr in failing else "DELIVRD"
            text = f"id:{message_id} sub:001 dlvrd:00{int(stat == 'DELIVRD')} submit date:2506021000 done date:2506021001 stat:{stat} err:000 text:"
            # Half carry the receipt TLVs, half the standard text alone: both are matched.
            tlvs = [smpp34.Tlv(TLV_RECEIPTED_MESSAGE_ID, message_id.encode() + b"\0"),
                    smpp34.Tlv(TLV_MESSAGE_STATE, bytes([2 if stat == "DELIVRD" else 5]))] if index % 2 else []
            response = await asyncio.wait_for(esme.deliver_sm(
                "9090", text.encode(), source_addr=submit.destination_addr, source_addr_ton=1, source_addr_npi=1,
                dest_addr_ton=0, dest_addr_npi=1, esm_class=ESM_RECEIPT, tlvs=tlvs), 10)
            assert int(response.command_status) == 0
        status = await wait_status(client, made["id"], lambda s: s["delivered"] + s["failed"] == len(NUMBERS))
        assert (status["delivered"], status["failed"]) == (len(NUMBERS) - len(failing), len(failing))
        one = await (await client.get(f"/sms/{campaign_sms_id(made['id'], sorted(failing)[0])}")).json()
        assert one["state"] == "failed" and one["receipt"] == "UNDELIV"
        other = await (await client.get(f"/sms/{campaign_sms_id(made['id'], NUMBERS[1])}")).json()
        assert other["state"] == "delivered" and other["receipt"] == "DELIVRD"
    finally:
        await client.close()

