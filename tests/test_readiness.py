"""/readyz with SMPP binds: a load balancer takes an instance out of rotation when its
store is down, and, with `[smpp] readiness = "required"`, when a bind is down too."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from helpers import make_settings

from ussd_gateway.app.config import ConfigError, SmppSettings, load_settings
from ussd_gateway.app.server import create_app
from ussd_gateway.channels.smpp.config import BindSettings
from ussd_gateway.testkit.smsc import SmscSimulator


async def readyz_until(client, status: int, binds: str, seconds: float = 10.0) -> dict:  # type: ignore[no-untyped-def,type-arg]
    """GET /readyz until it answers `status` with the bind `binds` (bounded); the body."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        response = await client.get("/readyz")
        body = await response.json()
        if (response.status == status and body.get("smpp") == {"smsc1": binds}) or loop.time() > deadline:
            assert response.status == status, body
            return body  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("readiness, when_down", [("degraded", 200), ("required", 503)])
async def test_readyz_follows_the_binds(readiness: str, when_down: int, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    smsc = SmscSimulator(port=0)
    await smsc.start()
    bind = BindSettings(name="smsc1", password="secret", port=smsc.port, reconnect_min_s=0.05, reconnect_max_s=0.2)
    settings = dataclasses.replace(make_settings(), smpp=SmppSettings(binds=(bind,), readiness=readiness))
    client = await aiohttp_client(create_app(settings))
    try:
        await smsc.wait_bound(timeout=10)
        body = await readyz_until(client, 200, "up")
        assert body["smpp"] == {"smsc1": "up"} and body["status"] == "ready"

        await smsc.stop(unbind=False)  # the SMSC goes away
        body = await readyz_until(client, when_down, "down")
        assert body["smpp"] == {"smsc1": "down"}
        if readiness == "required":
            assert "smpp bind down: smsc1" in body["status"]
        else:
            assert body["status"] == "ready"
        assert (await client.get("/healthz")).status == 200  # alive all the same
    finally:
        await smsc.stop(unbind=False)


def test_readiness_must_be_a_known_policy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "config.toml"
    config.write_text('[smpp]\nreadiness = "sometimes"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="readiness must be 'degraded' or 'required'"):
        load_settings(config, environ={})
    config.write_text('[smpp]\nreadiness = "required"\n', encoding="utf-8")
    assert load_settings(config, environ={}).smpp.readiness == "required"
