"""A lean Redis client for the hop scripts on a single-node Redis (`redis://`, `unix://`).

It does what `redis_pipeline.AutoPipeline` does over redis-py (the commands a loop turn
issues leave in one write, each keeps its own reply or error) with one asyncio
protocol per connection: commands packed by hiredis as they are submitted, one
`transport.write` per loop turn, replies parsed by the hiredis reader straight into
the waiting futures (FIFO: Redis answers a connection's commands in order).

Speed (server CPU per hop, 3-hop Africa's Talking load at 50 connections): redis-py's
`Pipeline` path (pool checkout, `execute_command` objects, packing, a task per batch,
an `asyncio.timeout` per batch, `Retry`, response parsing through its parser
classes) cost ~29 µs a hop; this path ~12 µs.

Deadlines and failures, as the hop needs them:
- a command unanswered `timeout_s` after its write fails with `TimeoutError` and the
  connection is dropped (a late reply is never read as another command's); one
  watchdog timer per connection checks the oldest batch, not a timer per command;
- a lost connection fails what was in flight with `ConnectionError`; the next command
  reconnects (bounded by `connect_timeout_s`), sending AUTH and SELECT first;
- an error reply is that command's own exception, redis-py's classes
  (`NoScriptError` for NOSCRIPT, so the store reloads the script as before).

Sentinel, Cluster, TLS and URLs with connection options keep redis-py
(`lean_pipeline` answers None for them).
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis
from redis.exceptions import NoScriptError, ResponseError


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how to connect: a TCP host and port, or a Unix socket path."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None


def lean_target(url: str) -> Target | None:
    """The target of a plain single-node URL, or None when redis-py must serve it
    (TLS, Sentinel, Cluster, or options such as `?protocol=3` this client lacks)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "unix"):
        return None
    query = parse_qs(parts.query)
    if set(query) - {"db"}:
        return None
    try:
        db = int(query["db"][0]) if "db" in query else 0
        if parts.scheme == "redis" and parts.path not in ("", "/"):
            db = int(parts.path.lstrip("/"))
        port = parts.port if parts.scheme == "redis" else None
    except ValueError:
        return None
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if parts.scheme == "unix":
        if not parts.path:
            return None
        return Target(path=parts.path, db=db, username=username, password=password)
    return Target(host=parts.hostname or "localhost", port=port or 6379, db=db, username=username, password=password)


def _error(reply: ResponseError) -> ResponseError:
    """redis-py's class for an error reply (the store tells NOSCRIPT apart)."""
    message = str(reply)
    if message.startswith("NOSCRIPT "):
        return NoScriptError(message[9:])
    return reply


class _Connection(asyncio.Protocol):
    """One socket to Redis: futures wait in `pending` in the order their commands left."""

    def __init__(self, on_lost: Any) -> None:
        self.transport: asyncio.Transport | None = None
        self.pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.answered = 0
        """Replies read so far (the watchdog compares it with each batch's end)."""
        self._reader = hiredis.Reader(replyError=ResponseError)
        self._on_lost = on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        pending = self.pending
        reader.feed(data)
        try:
            while (reply := reader.gets()) is not False:
                self.answered += 1
                future = pending.popleft()
                if future.done():
                    continue  # its hop gave up (deadline) or was cancelled
                if isinstance(reply, ResponseError):
                    future.set_exception(_error(reply))
                else:
                    future.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # bytes that are not RESP, or a reply nobody asked for
            self.fail(ConnectionError(f"Redis protocol error: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ConnectionError(f"the connection to Redis was lost: {exc or 'closed by the server'}"))

    def fail(self, error: BaseException) -> None:
        """Every command in flight gets `error`; the socket is dropped."""
        pending, self.pending = self.pending, collections.deque()
        for future in pending:
            if not future.done():
                future.set_exception(error)
        if self.transport is not None:
            transport, self.transport = self.transport, None
            transport.abort()
            self._on_lost(self)


class LeanPipeline:
    """`submit(*command) -> Future` as `redis_pipeline.AutoPipeline`, on one connection."""

    def __init__(self, target: Target, *, timeout_s: float | None, connect_timeout_s: float | None) -> None:
        self._target = target
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._queue: list[tuple[bytes, asyncio.Future[Any]]] = []
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._batches: collections.deque[tuple[float, int]] = collections.deque()
        """(deadline, replies answered once this batch is) per write, oldest first."""
        self._sent = 0
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False

    def submit(self, *command: Any) -> asyncio.Future[Any]:
        """Queue a command for the end of this loop turn; the future gets its reply (or
        its error: NoScriptError, TimeoutError, ConnectionError)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        try:
            packed = hiredis.pack_command(command)
        except Exception as exc:  # an argument hiredis cannot pack is the caller's bug
            future.set_exception(exc)
            return future
        if not self._queue:
            loop.call_soon(self._flush)
        self._queue.append((packed, future))
        return future

    def _flush(self) -> None:
        if not self._queue:
            return
        conn = self._conn
        if conn is None or conn.transport is None:
            if self._closed:
                self._fail_queue(ConnectionError("the session store is closed"))
            elif self._connecting is None:
                self._connecting = asyncio.get_running_loop().create_task(self._connect())
            return  # sent once connected
        batch, self._queue = self._queue, []
        conn.transport.write(b"".join([packed for packed, _ in batch]))
        conn.pending.extend([future for _, future in batch])
        self._sent += len(batch)
        if self._timeout_s is not None:
            loop = asyncio.get_running_loop()
            self._batches.append((loop.time() + self._timeout_s, self._sent))
            if self._watchdog is None:
                self._watchdog = loop.call_at(self._batches[0][0], self._check)

    def _check(self) -> None:
        """The watchdog: drop the connection when its oldest unanswered write is older
        than the timeout, else sleep until that write's deadline."""
        self._watchdog = None
        conn = self._conn
        answered = conn.answered if conn is not None else self._sent
        batches = self._batches
        while batches and batches[0][1] <= answered:
            batches.popleft()
        if not batches:
            return
        loop = asyncio.get_running_loop()
        if batches[0][0] <= loop.time():
            batches.clear()
            if conn is not None:
                conn.fail(TimeoutError(f"Redis did not answer within {self._timeout_s:g} s"))
            return
        self._watchdog = loop.call_at(batches[0][0], self._check)

    def _lost(self, conn: _Connection) -> None:
        if self._conn is conn:
            self._conn = None
            self._batches.clear()
            self._sent = 0

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        target = self._target
        conn = _Connection(self._lost)
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                if target.path is not None:
                    await loop.create_unix_connection(lambda: conn, target.path)
                else:
                    await loop.create_connection(lambda: conn, target.host, target.port)
                await self._handshake(conn, loop)
                conn.answered = 0  # the watchdog counts replies to submitted commands only
        except BaseException as exc:
            self._connecting = None
            error = exc if isinstance(exc, OSError) else ConnectionError(f"cannot connect to Redis: {exc.__class__.__name__}: {exc}")
            conn.fail(error)  # a socket opened before the handshake timed out is closed
            self._fail_queue(error)
            if not isinstance(exc, Exception):
                raise
            return
        self._connecting = None
        if self._closed:
            conn.fail(ConnectionError("the session store is closed"))
            self._fail_queue(ConnectionError("the session store is closed"))
            return
        self._conn = conn
        self._flush()

    async def _handshake(self, conn: _Connection, loop: asyncio.AbstractEventLoop) -> None:
        target = self._target
        commands: list[tuple[Any, ...]] = []
        if target.password is not None:
            commands.append(("AUTH", target.username, target.password) if target.username else ("AUTH", target.password))
        if target.db:
            commands.append(("SELECT", target.db))
        if not commands or conn.transport is None:
            return
        futures = [loop.create_future() for _ in commands]
        conn.pending.extend(futures)
        conn.transport.write(b"".join(hiredis.pack_command(command) for command in commands))
        for future in futures:
            try:
                await future
            except ResponseError as exc:
                conn.fail(ConnectionError(f"Redis refused the connection: {exc}"))
                raise ConnectionError(f"Redis refused the connection: {exc}") from None

    def _fail_queue(self, error: BaseException) -> None:
        queue, self._queue = self._queue, []
        for _, future in queue:
            if not future.done():
                future.set_exception(error)

    async def drain(self) -> None:
        """Wait for the commands in flight (before closing)."""
        waiting = [future for _, future in self._queue]
        if self._conn is not None:
            waiting += list(self._conn.pending)
        if self._connecting is not None:
            waiting.append(self._connecting)  # type: ignore[arg-type]
        if waiting:
            await asyncio.gather(*waiting, return_exceptions=True)

    async def close(self) -> None:
        self._closed = True
        await self.drain()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            if conn.transport is not None:
                conn.transport.close()


def lean_pipeline(url: str, *, timeout_s: float | None, connect_timeout_s: float | None) -> LeanPipeline | None:
    """The lean client for a plain single-node URL, else None (keep redis-py's)."""
    target = lean_target(url)
    if target is None:
        return None
    return LeanPipeline(target, timeout_s=timeout_s, connect_timeout_s=connect_timeout_s)
