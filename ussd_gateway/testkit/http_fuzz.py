"""Random requests against every HTTP endpoint of a gateway it starts on 127.0.0.1.

Used by the property tests (tests/test_http_input.py) and by `benchmarks/fuzz_http.py`
(many requests, counts per endpoint and status). A server error (5xx) or a request not
answered within `timeout_s` is a bug: bad input must be a 4xx with a reason.
"""

from __future__ import annotations

import asyncio
import http.client
import random
import threading
from collections import Counter
from typing import Any
from urllib.parse import urlencode

import orjson

from ussd_gateway.app.config import Settings

ENDPOINTS: tuple[tuple[str, str], ...] = (
    ("POST", "/ussd/africastalking"),
    ("POST", "/ussd"),
    ("POST", "/sms"),
    ("GET", "/sms/outbound"),
    ("GET", "/menus/graph"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/sim"),
    ("POST", "/admin/ussd/push"),
    ("GET", "/admin/ussd/push"),
)


class RunningServer:
    """The gateway (`create_app` + `start_serving`) in a thread of its own, on a free
    loopback port; `request` sends one request and returns its status (None: no answer
    within the bound)."""

    def __init__(self, settings: Settings, *, timeout_s: float = 5.0) -> None:
        self.settings = settings.replace("http", host="127.0.0.1", port=0)
        self.timeout_s = timeout_s
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fuzz-server", daemon=True)
        self._serving: Any = None

    def __enter__(self) -> "RunningServer":
        from ussd_gateway.app.server import create_app
        from ussd_gateway.app.serving import start_serving

        self._thread.start()

        async def start() -> Any:
            return await start_serving(create_app(self.settings), self.settings)

        self._serving = asyncio.run_coroutine_threadsafe(start(), self._loop).result(30)
        self.port = self._serving.port
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._serving.stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def request(self, method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None,
                query: dict[str, str] | None = None) -> int | None:
        target = path + ("?" + urlencode(query) if query else "")
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout_s)
        try:
            connection.request(method, target, body=body if method == "POST" else None, headers=headers or {})
            response = connection.getresponse()
            response.read()
            return response.status
        except TimeoutError:
            return None
        finally:
            connection.close()


_FORM_PIECES = ["sessionId=", "serviceCode=", "phoneNumber=", "text=", "&", "=", "%", "%2", "%ff", "%23", "*090%23", "*101%23",
                "84901234567", "0901234567", "*", "1", "2", "\u0663", "+", "%00", "%C3%A9", "%E2%82"]
_CONTENT_TYPES = ["application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=latin-1",
                  "application/x-www-form-urlencoded; charset=foo", "application/json", "application/json; charset=utf-16",
                  "multipart/form-data", "multipart/form-data; boundary=b", "text/plain", ""]
_ENCODINGS = ["", "", "", "gzip", "deflate", "br", "identity", "x-unknown"]
_FIELDS = ["session_id", "msisdn", "service_code", "event", "input", "seq", "language", "short_code", "text", "message_id"]
_VALUES: list[Any] = [None, True, 0, -1, 2**62, 1.5, "", "a", "begin", "continue", "abort", "*090#", "*101#", "*090*2*1#",
                      "84901234567", "0901111111", "9237", "KT", "DK", "vi", "en", "x" * 600, "\x00", "\u0663\u0664", [], {}]


def random_request(rng: random.Random, method: str) -> tuple[bytes, dict[str, str], dict[str, str]]:
    """A random (body, headers, query) for one endpoint: mostly almost-valid input."""
    kind = rng.random()
    if kind < 0.3:
        body = "".join(rng.choice(_FORM_PIECES) for _ in range(rng.randint(0, 16))).encode()
    elif kind < 0.7:
        body = orjson.dumps({rng.choice(_FIELDS): rng.choice(_VALUES) for _ in range(rng.randint(0, 8))})
    elif kind < 0.85:
        body = orjson.dumps({rng.choice(_FIELDS): rng.choice(_VALUES) for _ in range(6)})[: rng.randint(0, 60)]
    else:
        body = rng.randbytes(rng.randint(0, 200))
    headers = {}
    content_type = rng.choice(_CONTENT_TYPES)
    if content_type:
        headers["Content-Type"] = content_type
    encoding = rng.choice(_ENCODINGS)
    if encoding:
        headers["Content-Encoding"] = encoding
    query = {rng.choice(["to", "format", "x"]): str(rng.choice(_VALUES)) for _ in range(rng.randint(0, 2))}
    return (body if method == "POST" else b""), headers, query


def fuzz(server: RunningServer, per_endpoint: int, *, seed: int = 0) -> dict[str, Counter[str]]:
    """`per_endpoint` random requests to each endpoint; counts of status per endpoint
    (`timeout` for no answer within the bound)."""
    rng = random.Random(seed)
    counts: dict[str, Counter[str]] = {path: Counter() for _, path in ENDPOINTS}
    for _ in range(per_endpoint):
        for method, path in ENDPOINTS:
            body, headers, query = random_request(rng, method)
            status = server.request(method, path, body=body, headers=headers, query=query)
            counts[path]["timeout" if status is None else str(status)] += 1
    return counts
