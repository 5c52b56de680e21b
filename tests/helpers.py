"""Test helpers: a real gateway on a real TCP port, and a phone that dials it through
either HTTP dialect. Service tests are written once and run over every combination of
dialect (Africa's Talking, JSON) and store (memory, a real redis-server)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from aiohttp.test_utils import TestClient

from ussd_gateway.app.config import Settings

_session_numbers = itertools.count(1)


def make_settings(redis_url: str = "", **sections: dict[str, Any]) -> Settings:
    """Settings for a test gateway: the embedded defaults, a store, and overrides
    given per section (`sessions={"resume_window_s": 5}`)."""
    settings = Settings().replace("sessions", redis_url=redis_url)
    for section, changes in sections.items():
        settings = settings.replace(section, **changes)
    return settings


@dataclass
class Screen:
    """What the handset shows after a hop."""

    text: str
    end: bool
    status: int = 200

    def __contains__(self, fragment: str) -> bool:
        return fragment in self.text


@dataclass
class Phone:
    """One subscriber's handset, dialling through one HTTP dialect.

    `dial()` starts a dialogue, `send(x)` answers the current screen. The Africa's
    Talking dialect sends the cumulative `*`-joined history, the JSON one the single
    input with a `seq`, as real gateways do.
    """

    client: TestClient
    dialect: str
    msisdn: str = "84901234567"
    code: str = "*090#"
    language: str | None = None
    session_id: str = ""
    history: list[str] = field(default_factory=list)
    seq: int = 0

    async def dial(self, code: str | None = None, *, session_id: str | None = None) -> Screen:
        """Dial a code: a new dialogue with a new session id."""
        if code is not None:
            self.code = code
        self.session_id = session_id or f"sess-{next(_session_numbers)}"
        self.history = []
        self.seq = 0
        return await self._hop(event="begin")

    async def send(self, value: str) -> Screen:
        """Answer the current screen."""
        self.history.append(value)
        self.seq += 1
        return await self._hop(event="continue", value=value)

    async def repeat(self) -> Screen:
        """The gateway retries the last hop exactly as it sent it."""
        return await self._hop(event="continue" if self.seq else "begin", value=self.history[-1] if self.history else "", again=True)

    async def abort(self) -> Screen:
        """The network releases the dialogue (no END was sent)."""
        self.seq += 1
        if self.dialect == "json":
            return await self._post_json({"event": "abort", "seq": self.seq})
        return Screen("", True)  # Africa's Talking does not call back on release

    async def walk(self, *values: str) -> Screen:
        screen = Screen("", False)
        for value in values:
            screen = await self.send(value)
        return screen

    async def _hop(self, *, event: str, value: str = "", again: bool = False) -> Screen:
        if self.dialect == "africastalking":
            form = {
                "sessionId": self.session_id,
                "serviceCode": self.code,
                "phoneNumber": self.msisdn,
                "text": "*".join(self.history),
            }
            response = await self.client.post("/ussd/africastalking", data=form)
            body = await response.text()
            if response.status != 200:
                return Screen(body, True, response.status)
            assert body[:4] in ("CON ", "END "), body
            return Screen(body[4:], body.startswith("END "), response.status)
        payload: dict[str, Any] = {"event": event, "seq": self.seq}
        if event == "continue":
            payload["input"] = value
        return await self._post_json(payload)

    async def _post_json(self, payload: dict[str, Any]) -> Screen:
        body = {"session_id": self.session_id, "msisdn": self.msisdn, "service_code": self.code, **payload}
        if self.language:
            body["language"] = self.language
        response = await self.client.post("/ussd", json=body)
        data = await response.json(content_type=None)
        if response.status != 200:
            return Screen(data.get("error", ""), True, response.status)
        return Screen(data["text"], data["end"], response.status)
