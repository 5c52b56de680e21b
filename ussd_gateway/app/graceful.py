"""Serving one worker until SIGTERM, then a shutdown that drops nothing it received.

`aiohttp.web.run_app` closes the listening socket and then the connections, so on
SIGTERM it reset requests that had reached this process but not yet a handler: the
connections waiting in the kernel's accept queue, and requests on keep-alive
connections between two hops. Here, on SIGTERM:

1. stop accepting: the server's listening socket closes, but a duplicate of it is kept
   just long enough to accept every connection already queued, which are served;
2. drain: every response from now on closes its connection (`Connection: close`), so
   clients take their next request elsewhere; the worker waits until no connection
   is left, closing those that stay idle, for at most `shutdown_timeout`;
3. then aiohttp's own shutdown (SMPP unbinds, the stores close).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time

from aiohttp import web

DRAIN_IDLE_S = 0.3
"""A keep-alive connection with no request for this long after SIGTERM is closed."""


def _listen(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def run(app: web.Application, *, host: str, port: int, reuse_port: bool, shutdown_timeout: float = 5.0) -> None:
    """Serve `app` on host:port until SIGTERM or SIGINT, then shut down as above."""
    asyncio.run(_serve(app, host, port, reuse_port, shutdown_timeout))


async def _serve(app: web.Application, host: str, port: int, reuse_port: bool, shutdown_timeout: float) -> None:
    draining = False

    async def close_when_draining(request: web.Request, response: web.StreamResponse) -> None:
        if draining:
            response.force_close()

    app.on_response_prepare.append(close_when_draining)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    sock = _listen(host, port, reuse_port)
    site = web.SockSite(runner, sock)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        started = time.monotonic()
        draining = True
        await _stop_accepting(site, sock, runner)
        await _drain(runner, started + shutdown_timeout)
    finally:
        await runner.cleanup()


async def _stop_accepting(site: web.SockSite, sock: socket.socket, runner: web.AppRunner) -> None:
    """Close the listener, then serve the connections it had already queued."""
    spare = sock.dup()  # keeps the listening socket open while the site closes its own
    spare.setblocking(False)
    await site.stop()
    loop = asyncio.get_running_loop()
    server = runner.server
    try:
        for _ in range(100_000):  # bounded: the queue holds at most the listen backlog
            try:
                conn, _addr = spare.accept()
            except (BlockingIOError, InterruptedError):
                break
            conn.setblocking(False)
            if server is not None:
                await loop.connect_accepted_socket(server, conn)
    finally:
        spare.close()


async def _drain(runner: web.AppRunner, until: float) -> None:
    """Wait for the open connections to finish, closing idle ones, until `until`."""
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
