"""How a virtual subscriber reaches the server: one dialler per subscriber, per channel.

A dialler dials a code and answers screens over one keep-alive connection of the lean
HTTP client (`client`): the Africa's Talking form dialect, the JSON dialect, or SMPP
through the SMSC simulator's control API. A hop that fails raises `HopError`, whose
`kind` is what the report counts (`ERROR_KINDS`); `hop_failure` turns whatever a hop
raised into one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from ussd_gateway.testkit.load.client import HttpConnection
from ussd_gateway.testkit.load.options import LoadOptions, target_url

ERROR_KINDS = ("http_status", "timeout", "unexpected_screen", "connection")


class HopError(Exception):
    """One hop failed; `kind` is one of ERROR_KINDS."""

    def __init__(self, kind: str, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.status = status


@dataclass(frozen=True, slots=True)
class Screen:
    """What the subscriber sees after a hop."""

    text: str
    end: bool


class Dialler(Protocol):
    """One virtual subscriber's way to the server: one dialogue at a time."""

    async def begin(self, session_id: str, msisdn: str, code: str) -> Screen: ...
    async def answer(self, value: str) -> Screen: ...
    async def hang_up(self) -> None: ...
    def close(self) -> None: ...


def http_error(status: int, body: bytes) -> HopError:
    """The hop failure for an answer that was not HTTP 200, with the start of its body."""
    shown = body.decode("utf-8", "replace").strip().replace("\n", " ")[:80]
    return HopError("http_status", f"HTTP {status}: {shown}", status)


class AfricasTalkingDialler:
    """Form POSTs to /ussd/africastalking; `text` is the `*`-joined history."""

    def __init__(self, connection: HttpConnection) -> None:
        self.connection = connection
        self._fixed = b""
        self._history: list[str] = []

    async def begin(self, session_id: str, msisdn: str, code: str) -> Screen:
        self._fixed = f"sessionId={quote(session_id)}&serviceCode={quote(code)}&phoneNumber={msisdn}&text=".encode()
        self._history = []
        return await self._post()

    async def answer(self, value: str) -> Screen:
        self._history.append(value)
        return await self._post()

    async def hang_up(self) -> None:
        """Africa's Talking does not call back on release: nothing to send."""

    async def _post(self) -> Screen:
        body = self._fixed + quote("*".join(self._history), safe="").encode()
        status, reply = await self.connection.request("POST", "/ussd/africastalking", body, b"application/x-www-form-urlencoded")
        if status != 200:
            raise http_error(status, reply)
        text = reply.decode("utf-8", "replace")
        if text[:4] not in ("CON ", "END "):
            raise HopError("unexpected_screen", f"neither CON nor END: {text[:60]!r}")
        return Screen(text[4:], text.startswith("END "))

    def close(self) -> None:
        self.connection.close()


class JsonDialler:
    """The JSON dialect, one input a hop with its `seq`, and `abort` on hanging up."""

    def __init__(self, connection: HttpConnection) -> None:
        self.connection = connection
        self._base: dict[str, Any] = {}
        self._seq = 0

    async def begin(self, session_id: str, msisdn: str, code: str) -> Screen:
        self._base = {"session_id": session_id, "msisdn": msisdn, "service_code": code}
        self._seq = 0
        return await self._post({"event": "begin", "seq": 0})

    async def answer(self, value: str) -> Screen:
        self._seq += 1
        return await self._post({"event": "continue", "input": value, "seq": self._seq})

    async def hang_up(self) -> None:
        self._seq += 1
        await self._post({"event": "abort", "seq": self._seq}, screen=False)

    async def _post(self, fields: dict[str, Any], *, screen: bool = True) -> Screen:
        body = json.dumps({**self._base, **fields}).encode()
        status, reply = await self.connection.request("POST", "/ussd", body, b"application/json")
        if status != 200:
            raise http_error(status, reply)
        if not screen:
            return Screen("", True)
        try:
            data = json.loads(reply)
            return Screen(str(data["text"]), bool(data["end"]))
        except (ValueError, KeyError, TypeError):
            raise HopError("unexpected_screen", f"not a JSON screen: {reply[:60]!r}") from None

    def close(self) -> None:
        self.connection.close()


class SmppDialler:
    """Through `ussd-gateway smsc`'s control API: the simulator sends the deliver_sm a
    USSD gateway would and waits for the server's submit_sm (slower than HTTP)."""

    def __init__(self, connection: HttpConnection, timeout_s: float) -> None:
        self.connection = connection
        self.timeout_s = min(60.0, max(0.1, timeout_s))
        self._dialogue: int | None = None

    async def begin(self, session_id: str, msisdn: str, code: str) -> Screen:
        self._dialogue = None
        return await self._post("/ussd/start", {"msisdn": msisdn, "code": code, "timeout": self.timeout_s})

    async def answer(self, value: str) -> Screen:
        return await self._post(f"/ussd/{self._dialogue}/answer", {"text": value, "timeout": self.timeout_s})

    async def hang_up(self) -> None:
        if self._dialogue is not None:
            status, reply = await self.connection.request("POST", f"/ussd/{self._dialogue}/abort", b"{}", b"application/json")
            if status != 200:
                raise http_error(status, reply)

    async def _post(self, path: str, fields: dict[str, Any]) -> Screen:
        status, reply = await self.connection.request("POST", path, json.dumps(fields).encode(), b"application/json")
        if status == 504:
            raise HopError("timeout", "the SMSC simulator saw no screen from the gateway in time", status)
        if status != 200:
            raise http_error(status, reply)
        try:
            data = json.loads(reply)
            self._dialogue = int(data["dialogue_id"])
            return Screen(str(data["screen"]["text"]), bool(data["screen"]["end"]))
        except (ValueError, KeyError, TypeError):
            raise HopError("unexpected_screen", f"not a screen: {reply[:60]!r}") from None

    def close(self) -> None:
        self.connection.close()


def make_dialler(options: LoadOptions) -> Dialler:
    """A dialler on a new connection to the run's target, for the run's channel."""
    connection = HttpConnection(target_url(options))
    if options.smpp:
        return SmppDialler(connection, options.timeout_s)
    if options.channel == "json":
        return JsonDialler(connection)
    return AfricasTalkingDialler(connection)


def hop_failure(exc: BaseException) -> HopError:
    """What a hop raised, as the failure the report counts."""
    if isinstance(exc, HopError):
        return exc
    if isinstance(exc, TimeoutError):
        return HopError("timeout", "no answer in time")
    return HopError("connection", f"{exc.__class__.__name__}: {exc}".rstrip(": "))
