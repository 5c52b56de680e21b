"""Draining (SIGTERM): a keep-alive connection is kept until the worker drains, then
the next response on it closes it. The hook costs nothing before (it is installed
when draining starts), so this checks both sides over a real socket."""

from __future__ import annotations

import asyncio

from ussd_gateway.app import graceful
from ussd_gateway.app.config import Settings
from ussd_gateway.app.server import create_app
from ussd_gateway.app.serving import start_serving

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


async def _response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    return head, await asyncio.wait_for(reader.readexactly(length), 5)


async def test_connections_stay_open_until_draining_then_close_after_their_response() -> None:
    settings = Settings().replace("http", host="127.0.0.1", port=0)
    app = create_app(settings)
    serving = await start_serving(app, settings)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", serving.port)
        for _ in range(3):  # keep-alive: three answers on one connection
            writer.write(REQUEST)
            head, body = await _response(reader)
            assert head.startswith(b"HTTP/1.1 200") and b'"ok"' in body
        graceful.start_draining(app)
        graceful.start_draining(app)  # twice (a second signal): one hook
        assert len(app.on_response_prepare) == 1
        writer.write(REQUEST)
        head, body = await _response(reader)
        assert head.startswith(b"HTTP/1.1 200") and b'"ok"' in body
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed after its answer
        writer.close()
    finally:
        await serving.stop(1.0)
