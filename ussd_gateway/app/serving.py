"""Serving the app on its listeners, with the connection limits aiohttp lacks.

aiohttp bounds neither how long a request's head may take to arrive nor how many
connections one address may hold open, so a caller trickling bytes on thousands of
connections exhausts the process's descriptors (and `/healthz` fails with them). Each
connection here goes through `GuardedProtocol`: over `max_connections_per_peer` it is
closed at once; a connection that completes no request head within
`header_timeout_s` (from its opening or its previous request, unless that request is
still being answered) is closed. The body has its own deadline (`body.read_bytes`).

The main listener and, when `[admin] port` is set, the admin listener share one app;
the guard middleware tells them apart by local port.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ussd_gateway.app import graceful
from ussd_gateway.app.config import Settings
from ussd_gateway.channels.http.body import RAW_BODIES

KEEPALIVE_S = 15.0
SHUTDOWN_TIMEOUT_S = 5.0
"""On SIGTERM, in-flight hops and queued connections get this long to be answered."""


class ConnectionLimits:
    """Open connections per peer address, shared by every listener of the process."""

    def __init__(self, per_peer: int, header_timeout_s: float) -> None:
        self.per_peer = per_peer
        self.header_timeout_s = header_timeout_s
        self.open: Counter[str] = Counter()
        self.refused = 0
        self.expired = 0


class GuardedProtocol(asyncio.Protocol):
    """Forwards to aiohttp's RequestHandler; closes what the limits refuse."""

    def __init__(self, inner: Any, limits: ConnectionLimits) -> None:
        self._inner = inner
        self._limits = limits
        self._peer = ""
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._seen = 0
        self._admitted = False
        self._head_at_moved = False
        """A request head arrived (at `_moved_at`) since the timer was set."""
        self._moved_at = 0.0
        self._loop_time = asyncio.get_running_loop().time

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if isinstance(peer, tuple) and peer else "local"
        self._transport = transport  # type: ignore[assignment]
        if self._limits.open[self._peer] >= self._limits.per_peer:
            self._limits.refused += 1
            transport.abort()  # type: ignore[attr-defined]
            return
        self._limits.open[self._peer] += 1
        self._admitted = True
        self._arm()
        self._inner.connection_made(transport)

    def _arm(self, delay_s: float | None = None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self._limits.header_timeout_s if delay_s is None else delay_s, self._expire)

    def _requests(self) -> int:
        return int(getattr(self._inner, "_request_count", 0))  # aiohttp counts parsed request heads

    def _expire(self) -> None:
        self._timer = None
        if self._head_at_moved:
            # A head arrived since the timer was set: it runs on until header_timeout_s
            # after that head (kept rather than re-armed per request: ~2 µs a hop).
            self._head_at_moved = False
            self._arm(max(0.0, self._moved_at + self._limits.header_timeout_s - asyncio.get_running_loop().time()))
            return
        if self._requests() != self._seen or getattr(self._inner, "_current_request", None) is not None:
            self._seen = self._requests()
            self._arm()  # a head arrived, or a request is still being answered
            return
        self._limits.expired += 1
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        inner = self._inner
        inner.data_received(data)
        requests = getattr(inner, "_request_count", 0)  # `_requests()` inlined: on every read
        if requests != self._seen:
            self._seen = requests
            self._head_at_moved = True
            self._moved_at = self._loop_time()

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._admitted:
            return
        self._admitted = False
        self._limits.open[self._peer] -= 1
        if self._limits.open[self._peer] <= 0:
            del self._limits.open[self._peer]
        self._inner.connection_lost(exc)


class GuardedSite(web.SockSite):
    """A listening socket whose connections go through `GuardedProtocol`."""

    def __init__(self, runner: web.AppRunner, sock: socket.socket, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(runner, sock, **kwargs)
        self._limits = limits
        self.listening = sock

    def protocol(self) -> asyncio.Protocol:
        """A guarded protocol for one new connection."""
        server = self._runner.server
        assert server is not None
        return GuardedProtocol(server(), self._limits)

    async def start(self) -> None:
        await web.BaseSite.start(self)
        self._server = await asyncio.get_running_loop().create_server(self.protocol, sock=self._sock, backlog=self._backlog)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0: any free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host or "0.0.0.0", port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


@dataclass(slots=True)
class Serving:
    """A started server: its runner, ports and connection counters."""

    runner: web.AppRunner
    port: int
    admin_port: int | None
    limits: ConnectionLimits
    sites: list[GuardedSite] = field(default_factory=list)
    shared: bool = False
    """The listeners are shared with other workers, which serve what is queued on them."""

    async def stop(self, shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Stop accepting, answer what was received (queued connections included),
        then shut down (see `app.graceful`)."""
        until = time.monotonic() + shutdown_timeout_s
        try:
            graceful.start_draining(self.runner.app)
            for site in self.sites:
                if self.shared:
                    await site.stop()  # this worker's copy only: the others go on accepting
                else:
                    await graceful.stop_accepting(site, site.listening, site.protocol)
            await graceful.drain(self.runner, until)
        finally:
            await self.runner.cleanup()
            for site in self.sites:
                site.listening.close()


def bind_listeners(settings: Settings) -> list[socket.socket]:
    """The listening sockets of `settings`: the main one, then the admin one if set.
    `serve --workers N` binds them once in the supervisor and hands them to every
    worker, so a worker that stops (SIGTERM, a crash) leaves the connections queued
    on them to the others instead of resetting them (as a closing SO_REUSEPORT
    listener would), and the port stays open while a worker restarts."""
    sockets = [bind(settings.http.host, settings.http.port)]
    if settings.admin.port:
        sockets.append(bind(settings.admin.host, settings.admin.port))
    return sockets


async def start_serving(
    app: web.Application, settings: Settings, *, listeners: Sequence[socket.socket] | None = None
) -> Serving:
    """Serve `app` (built by `create_app` from these settings) on `listeners`, shared
    with other workers, or on listeners of its own bound here."""
    from ussd_gateway.app.server import GUARD

    http = settings.http
    limits = ConnectionLimits(http.max_connections_per_peer, http.header_timeout_s)
    app[RAW_BODIES] = True  # body.read_bytes inflates, bounded (see there)
    graceful.install(app)
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, auto_decompress=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        keepalive_timeout=min(KEEPALIVE_S, http.header_timeout_s),
    )
    await runner.setup()
    shared = listeners is not None
    sockets = list(listeners) if listeners is not None else bind_listeners(settings)
    admin_port = None
    if settings.admin.port:
        admin_port = sockets[1].getsockname()[1]
        app[GUARD].policy.admin_ports.add(admin_port)
    sites = [GuardedSite(runner, sock, limits) for sock in sockets]
    for site in sites:
        await site.start()
    return Serving(runner, sockets[0].getsockname()[1], admin_port, limits, sites, shared)


def _reload_menus(app: web.Application) -> None:
    """SIGHUP: reload this process's menus (`app.menu_reload`; refused ones are logged)."""
    from ussd_gateway.app.menu_reload import MENU_RELOADER, MenusRefused

    async def reload() -> None:
        try:
            await app[MENU_RELOADER].reload(publish=False)
        except MenusRefused:
            pass  # logged; the running version serves on

    task = asyncio.get_running_loop().create_task(reload())
    _RELOADS.add(task)
    task.add_done_callback(_RELOADS.discard)


_RELOADS: set[asyncio.Task[None]] = set()
_early_hangups: list[int] = []


def hold_hangups() -> None:
    """From the very start of a worker: a SIGHUP (a menu reload) that arrives before
    the worker serves is remembered and honoured once it does, instead of ending the
    process (the default) or being lost between the menus' compilation and `run`."""
    signal.signal(signal.SIGHUP, lambda *_: _early_hangups.append(1))


def run(app: web.Application, settings: Settings, *, listeners: Sequence[socket.socket] | None = None) -> None:
    """Serve until SIGTERM or SIGINT; then answer what was received (up to 5 s) and
    stop. SIGHUP reloads the menus."""

    async def main() -> None:
        serving = await start_serving(app, settings, listeners=listeners)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping.set)
        loop.add_signal_handler(signal.SIGHUP, _reload_menus, app)
        if _early_hangups:  # a SIGHUP came while the worker was starting: honour it now
            _reload_menus(app)
        try:
            await stopping.wait()
        finally:
            await serving.stop()

    asyncio.run(main())
