"""The shutdown that drops nothing a worker received.

`aiohttp.web.run_app` closes the listening socket and then the connections, so on
SIGTERM it reset requests that had reached this process but not yet a handler: the
connections waiting in the kernel's accept queue, and requests on keep-alive
connections between two hops. `app.serving` does this instead, on SIGTERM:

1. stop accepting: with listeners shared by several workers (`serve --workers N`),
   this worker just stops taking connections and the others serve what is queued;
   a lone worker closes its listening socket, keeping a duplicate just long enough
   to accept every connection already queued, which are served;
2. drain: every response from now on closes its connection (`Connection: close`, set
   by `start_draining`), so clients take their next request elsewhere; the worker
   waits until no connection is left, closing those that stay idle, for at most the
   shutdown timeout;
3. then aiohttp's own shutdown (SMPP unbinds, the stores close).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

from aiohttp import web

DRAIN_IDLE_S = 2.0
"""A keep-alive connection with no request for this long after SIGTERM is closed.
Long enough that a client using the connection gets its answer (with `Connection:
close`) rather than racing our close; short enough to exit well within the timeout."""

DRAINING = web.AppKey("draining", list)
"""One-element list: True once the worker drains (a list: the app is frozen by then)."""


async def _close_when_draining(request: web.Request, response: web.StreamResponse) -> None:
    if request.app[DRAINING][0]:
        response.force_close()


def install(app: web.Application) -> None:
    """Before the app starts: responses will close their connection once draining
    (`start_draining`). Until then no response-prepare hook runs: aiohttp skips an
    empty signal, and the hook's coroutine cost ~2 µs on every response."""
    app[DRAINING] = [False]
    if not hasattr(app, "_on_response_prepare"):  # an aiohttp without the slot: hook from the start
        app.on_response_prepare.append(_close_when_draining)


def start_draining(app: web.Application) -> None:
    """From now on every response closes its connection. The app's signals are frozen
    once it runs, so the hook arrives as a new frozen signal in place of the empty one."""
    app[DRAINING][0] = True
    if _close_when_draining in app.on_response_prepare:
        return
    signal = type(app.on_response_prepare)(app)  # aiohttp's Signal class
    signal.extend(app.on_response_prepare)
    signal.append(_close_when_draining)
    signal.freeze()
    app._on_response_prepare = signal  # type: ignore[attr-defined]


async def stop_accepting(site: web.SockSite, sock: socket.socket, protocol: Callable[[], asyncio.Protocol]) -> None:
    """Close the listener, then serve the connections it had already queued."""
    spare = sock.dup()  # keeps the listening socket open while the site closes its own
    spare.setblocking(False)
    await site.stop()
    loop = asyncio.get_running_loop()
    try:
        for _ in range(100_000):  # bounded: the queue holds at most the listen backlog
            try:
                conn, _addr = spare.accept()
            except (BlockingIOError, InterruptedError):
                break
            conn.setblocking(False)
            await loop.connect_accepted_socket(protocol, conn)
    finally:
        spare.close()


async def drain(runner: web.AppRunner, until: float) -> None:
    """Wait for the open connections to finish, closing idle ones, until `until`
    (a `time.monotonic()` value)."""
    server = runner.server
    if server is None:
        return
    idle_since: dict[object, float] = {}
    while time.monotonic() < until:
        connections = server.connections
        if not connections:
            return
        now = time.monotonic()
        for handler in connections:
            busy = getattr(handler, "_request_in_progress", True) or getattr(handler, "_messages", None)
            if busy:
                idle_since.pop(handler, None)
            elif now - idle_since.setdefault(handler, now) >= DRAIN_IDLE_S:
                handler.close()
        await asyncio.sleep(0.02)
