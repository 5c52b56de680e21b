"""Handsets for the transcript runner: one dialogue at a time over one channel.

Africa's Talking and the JSON dialect talk to the server's own HTTP endpoints; `smpp`
dials through the SMSC simulator's control API, so the hops cross a real SMPP bind.
Every channel shows the same screens, which is what lets one transcript pass on all.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import aiohttp

DEFAULT_STEP_TIMEOUT_S = 10.0
_LANGUAGE_OPTION = {"vi": "1", "vi_dau": "2", "en": "3"}
"""Where each language sits in `*090#` → 7 (menus/definitions/language.toml), for channels
that cannot carry the handset language on the wire."""
_LANGUAGE_MENU_KEY = "7"


class ChannelError(RuntimeError):
    """The channel could not deliver a hop (server down, refused, timed out)."""


@dataclass(frozen=True, slots=True)
class Screen:
    """What the handset shows after a hop."""

    text: str
    end: bool


@dataclass(frozen=True, slots=True)
class Sms:
    """An SMS delivered to the subscriber."""

    sender: str
    text: str


@runtime_checkable
class Channel(Protocol):
    """One handset on one channel: one dialogue at a time (`send` answers the last
    `dial`). Make one channel per transcript run that happens at the same time."""

    name: str

    async def dial(self, msisdn: str, code: str, language: str | None = None) -> Screen: ...
    async def send(self, text: str) -> Screen: ...
    async def hangup(self) -> None: ...
    async def sms(self, msisdn: str, short_code: str, text: str) -> str | None: ...
    async def outbound_sms(self, msisdn: str) -> list[str]: ...
    async def outbound_messages(self, msisdn: str, timeout: float = 0.0) -> list[Sms]: ...
    async def close(self) -> None: ...


async def _read_json(response: aiohttp.ClientResponse, what: str) -> Any:
    body = await response.text()
    if response.status != 200:
        raise ChannelError(f"{what}: HTTP {response.status}: {body.strip()[:300]}")
    try:
        return json.loads(body)
    except ValueError:
        raise ChannelError(f"{what}: the answer is not JSON: {body[:200]!r}") from None


async def _choose_language(menu: Awaitable[Screen], send: Callable[[str], Awaitable[Screen]], language: str) -> None:
    """Choose `language` through `*090#` → 7 as a subscriber would: `menu` dials `*090#`,
    `send` answers it. For channels that cannot carry the handset language on the wire."""
    screen = await menu
    for answer in (_LANGUAGE_MENU_KEY, _LANGUAGE_OPTION[language]):
        if screen.end:
            break
        screen = await send(answer)
    if not screen.end:
        raise ChannelError(f"could not set the language {language} through *090# → 7: the menu answered {screen.text!r}")


class _Handset:
    """What every channel does alike: the texts of the SMS it finds, and closing the
    HTTP session it opened itself (one passed in belongs to the caller)."""

    _own_http: bool
    _http: aiohttp.ClientSession | None

    async def outbound_messages(self, msisdn: str, timeout: float = 0.0) -> list[Sms]:
        raise NotImplementedError

    async def outbound_sms(self, msisdn: str) -> list[str]:
        return [sms.text for sms in await self.outbound_messages(msisdn)]

    async def close(self) -> None:
        if self._own_http and self._http is not None:
            await self._http.close()
            self._http = None


class _HttpBase(_Handset):
    """Shared by both HTTP dialects: the SMS endpoints, the client session, and the
    menu-driven language choice for a dialect that cannot carry the language."""

    name = "http"
    native_language = False

    def __init__(self, url: str, *, http: aiohttp.ClientSession | None = None, timeout_s: float = DEFAULT_STEP_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self._own_http = http is None
        self._http = http
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._seen: dict[str, int] = {}
        self._languages: dict[str, str] = {}
        self.msisdn = ""
        self.code = ""

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=self._timeout)
        return self._http

    async def _post(self, path: str, what: str, **kwargs: Any) -> aiohttp.ClientResponse:
        try:
            return await self.http.post(self.url + path, **kwargs)
        except aiohttp.ClientError as error:
            raise ChannelError(f"{what}: cannot reach {self.url}: {error}") from None

    async def _ensure_language(self, msisdn: str, language: str | None) -> None:
        """Choose the language through `*090#` → 7 once, as a subscriber would."""
        if not language or self.native_language or self._languages.get(msisdn) == language:
            return
        await _choose_language(self._begin(msisdn, "*090#", None), self.send, language)
        self._languages[msisdn] = language

    async def dial(self, msisdn: str, code: str, language: str | None = None) -> Screen:
        await self._ensure_language(msisdn, language)
        return await self._begin(msisdn, code, language)

    async def _begin(self, msisdn: str, code: str, language: str | None) -> Screen:
        raise NotImplementedError

    async def send(self, text: str) -> Screen:
        raise NotImplementedError

    async def hangup(self) -> None:
        """Most gateways do not call back on release: the dialogue just stops."""

    async def sms(self, msisdn: str, short_code: str, text: str) -> str | None:
        response = await self._post("/sms", "SMS", json={"msisdn": msisdn, "short_code": short_code, "text": text})
        async with response:
            return (await _read_json(response, "POST /sms")).get("reply")

    async def _queued(self, msisdn: str) -> list[Sms]:
        try:
            response = await self.http.get(self.url + "/sms/outbound", params={"to": msisdn})
        except aiohttp.ClientError as error:
            raise ChannelError(f"GET /sms/outbound: cannot reach {self.url}: {error}") from None
        async with response:
            items = await _read_json(response, "GET /sms/outbound")
        return [Sms(str(item.get("from", "")), str(item.get("text", ""))) for item in items]

    async def outbound_messages(self, msisdn: str, timeout: float = 0.0) -> list[Sms]:
        """SMS queued for `msisdn` that this channel has not returned before (the
        server's queue is a list the HTTP endpoint only reads); waits up to `timeout`
        for at least one."""
        deadline = time.monotonic() + timeout
        while True:
            queued = await self._queued(msisdn)
            seen = self._seen.get(msisdn, 0)
            if len(queued) < seen:  # the queue was drained or trimmed: start over
                seen = 0
            new = queued[seen:]
            self._seen[msisdn] = len(queued)
            if new or time.monotonic() >= deadline:
                return new
            await asyncio.sleep(0.05)


class AfricasTalkingChannel(_HttpBase):
    """POST /ussd/africastalking: the form dialect, the whole `*`-joined history each hop."""

    name = "africastalking"

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.session_id = ""
        self.history: list[str] = []

    async def _hop(self) -> Screen:
        form = {"sessionId": self.session_id, "serviceCode": self.code, "phoneNumber": self.msisdn, "text": "*".join(self.history)}
        response = await self._post("/ussd/africastalking", "USSD hop", data=form)
        async with response:
            body = await response.text()
            if response.status != 200:
                raise ChannelError(f"POST /ussd/africastalking: HTTP {response.status}: {body.strip()[:300]}")
        if body[:4] not in ("CON ", "END "):
            raise ChannelError(f"POST /ussd/africastalking: the answer starts with neither CON nor END: {body[:80]!r}")
        return Screen(body[4:], body.startswith("END "))

    async def _begin(self, msisdn: str, code: str, language: str | None) -> Screen:
        self.msisdn, self.code = msisdn, code
        self.session_id = "replay-" + uuid.uuid4().hex[:16]
        self.history = []
        return await self._hop()

    async def send(self, text: str) -> Screen:
        self.history.append(text)
        return await self._hop()


class JsonChannel(_HttpBase):
    """POST /ussd: the JSON dialect, one input per hop with `seq`, and the language."""

    name = "json"
    native_language = True

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.session_id = ""
        self.seq = 0
        self.language: str | None = None

    async def _hop(self, event: str, text: str | None = None) -> Screen:
        body: dict[str, Any] = {"session_id": self.session_id, "msisdn": self.msisdn, "service_code": self.code, "event": event, "seq": self.seq}
        if text is not None:
            body["input"] = text
        if self.language:
            body["language"] = self.language
        response = await self._post("/ussd", "USSD hop", json=body)
        async with response:
            data = await _read_json(response, "POST /ussd")
        return Screen(str(data.get("text", "")), bool(data.get("end", True)))

    async def _begin(self, msisdn: str, code: str, language: str | None) -> Screen:
        self.msisdn, self.code, self.language = msisdn, code, language
        self.session_id = "replay-" + uuid.uuid4().hex[:16]
        self.seq = 0
        return await self._hop("begin")

    async def send(self, text: str) -> Screen:
        self.seq += 1
        return await self._hop("continue", text)

    async def hangup(self) -> None:
        if self.session_id:
            self.seq += 1
            await self._hop("abort")


class SmppChannel(_Handset):
    """USSD and SMS through `ussd-gateway smsc`'s control API: the simulator plays the
    operator's SMSC, the server under test is bound to it as an ESME."""

    name = "smpp"

    def __init__(self, control: str, *, http: aiohttp.ClientSession | None = None, timeout_s: float = DEFAULT_STEP_TIMEOUT_S) -> None:
        self.url = (control if control.startswith("http") else f"http://{control}").rstrip("/")
        self._own_http = http is None
        self._http = http
        self._timeout_s = timeout_s
        self.dialogue: int | None = None
        self.ended = True
        self._languages: dict[str, str] = {}

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout_s + 5))
        return self._http

    async def _call(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        try:
            response = await self.http.request(method, self.url + path, **kwargs)
        except aiohttp.ClientError as error:
            raise ChannelError(f"{what}: cannot reach the SMSC simulator at {self.url}: {error}") from None
        async with response:
            if response.status == 504:
                raise ChannelError(f"{what}: no screen from the gateway in time (is it bound to the simulator?)")
            return await _read_json(response, what)

    def _screen(self, answer: Mapping[str, Any]) -> Screen:
        self.dialogue = int(answer["dialogue_id"])
        screen = answer["screen"]
        self.ended = bool(screen["end"])
        return Screen(str(screen["text"]), self.ended)

    async def _begin(self, msisdn: str, code: str) -> Screen:
        answer = await self._call("POST", "/ussd/start", "USSD dial", json={"msisdn": msisdn, "code": code, "timeout": self._timeout_s})
        return self._screen(answer)

    async def dial(self, msisdn: str, code: str, language: str | None = None) -> Screen:
        if language and self._languages.get(msisdn) != language:
            await _choose_language(self._begin(msisdn, "*090#"), self.send, language)
            self._languages[msisdn] = language
        return await self._begin(msisdn, code)

    async def send(self, text: str) -> Screen:
        if self.dialogue is None:
            raise ChannelError("send before dial: there is no dialogue to answer")
        answer = await self._call("POST", f"/ussd/{self.dialogue}/answer", "USSD hop", json={"text": text, "timeout": self._timeout_s})
        return self._screen(answer)

    async def hangup(self) -> None:
        if self.dialogue is not None and not self.ended:
            await self._call("POST", f"/ussd/{self.dialogue}/abort", "USSD abort")
            self.ended = True

    async def sms(self, msisdn: str, short_code: str, text: str) -> str | None:
        answer = await self._call(
            "POST", "/mo", "MO SMS",
            json={"msisdn": msisdn, "short_code": short_code, "text": text, "timeout": min(self._timeout_s, 10.0), "reply_from": short_code},
        )  # fmt: skip
        return answer.get("reply")

    async def outbound_messages(self, msisdn: str, timeout: float = 0.0) -> list[Sms]:
        """MT SMS the gateway sent to `msisdn` through the bind (taken from the
        simulator); waits up to `timeout` for at least one."""
        answer = await self._call("GET", "/mt", "GET /mt", params={"msisdn": msisdn, "timeout": f"{max(timeout, 0.0):.3f}"})
        return [Sms(str(item.get("from", "")), str(item.get("text", ""))) for item in answer.get("sms", [])]


CHANNELS = ("africastalking", "json", "smpp")


def make_channel(
    kind: str,
    *,
    url: str | None = None,
    smpp: str | None = None,
    http: aiohttp.ClientSession | None = None,
    timeout_s: float = DEFAULT_STEP_TIMEOUT_S,
) -> Channel:
    """A handset on `kind`: "africastalking" or "json" (the server at `url`) or "smpp"
    (the SMSC simulator's control API at `smpp`, HOST:PORT). Pass `http` to share one
    connection pool between many channels (the load tool does); the caller closes it."""
    if kind in ("africastalking", "json"):
        if not url:
            raise ValueError(f"the {kind} channel needs the server's url (e.g. http://127.0.0.1:8080)")
        cls = AfricasTalkingChannel if kind == "africastalking" else JsonChannel
        return cls(url, http=http, timeout_s=timeout_s)
    if kind == "smpp":
        if not smpp:
            raise ValueError("the smpp channel needs the SMSC simulator's control API, HOST:PORT (e.g. 127.0.0.1:2776)")
        return SmppChannel(smpp, http=http, timeout_s=timeout_s)
    raise ValueError(f"unknown channel {kind!r}: use one of {', '.join(CHANNELS)}")
