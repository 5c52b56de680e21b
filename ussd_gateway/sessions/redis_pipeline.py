"""redis-py's path for the hop scripts (and every other command): commands packed by
hiredis, and the commands of one event-loop turn sent as one pipeline.

The store uses `AutoPipeline` where the lean client (`resp.py`) cannot serve: Sentinel,
Cluster, TLS, and when tracing instruments redis-py's client.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import ResponseError

from ussd_gateway.sessions.redis_clients import connection_pool_of

try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis comes with redis[hiredis]
    _hiredis_pack = None

_C_PACKABLE = (str, bytes, int)  # what hiredis packs exactly as redis-py's Encoder does


class _HiredisPacking:
    """Mixin for redis-py's asyncio connection classes: pack commands with hiredis (C).

    Speed: redis-py's sync client packs with hiredis, but its asyncio connections pack
    in Python, argument by argument (about 6 µs for a hop's EVALSHA carrying a 1 KB
    record, 11% of a hop's CPU under load); hiredis writes the same bytes in about 1 µs.
    Commands with arguments hiredis could render differently (floats, bools,
    memoryviews) or names to split ("CONFIG GET") keep redis-py's own packer.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        if type(args[0]) is str and " " not in args[0]:
            for arg in args:
                if type(arg) not in _C_PACKABLE:
                    break
            else:
                return [_hiredis_pack(args)]
        return super().pack_command(*args)  # type: ignore[misc]


def use_hiredis_packing(client: Any) -> None:
    """Give the client's pool (whatever its URL scheme chose: TCP, TLS, Unix socket) a
    connection class that packs with hiredis. Connections made from now on use it."""
    pool = connection_pool_of(client)
    base = getattr(pool, "connection_class", None)
    if _hiredis_pack is None or base is None or issubclass(base, _HiredisPacking):
        return
    pool.connection_class = type(f"Hiredis{base.__name__}", (_HiredisPacking, base), {})


class AutoPipeline:
    """Sends the commands issued during one turn of the event loop as one redis-py
    pipeline: one write and one read for all of them instead of a round trip each.

    Speed: under load, the hops of many subscribers reach the store in the same loop
    turn (a burst of requests, then a burst of Redis replies that all resume their
    hops at once), so the per-command cost of redis-py (pool checkout, packing, a send
    and a read, about 25 µs) is paid once per batch. Every command is still its own
    round trip for its hop and keeps its own result and error (`raise_on_error=False`);
    no transaction spans hops. A batch of one is a plain command. The commands of a
    batch share a connection from the pool, so concurrency stays safe (unlike one
    shared `single_connection_client`).
    """

    def __init__(self, client: Any, timeout_s: float | None) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._queue: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, *command: Any) -> asyncio.Future[Any]:
        """Queue a command for the end of this loop turn; the future gets its reply
        (or its error, e.g. NoScriptError)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._queue:
            loop.call_soon(self._flush)
        self._queue.append((command, future))
        return future

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)  # the loop keeps only a weak reference to tasks
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        results: list[Any]
        try:
            # A hung Redis must not hold the batch (and a pooled connection) forever;
            # redis-py drops a connection whose read was cancelled.
            async with asyncio.timeout(self._timeout_s):
                if len(batch) == 1:
                    try:
                        results = [await self._client.execute_command(*batch[0][0])]
                    except ResponseError as exc:  # that command's own error (NoScriptError…)
                        results = [exc]
                else:
                    pipe = self._client.pipeline(transaction=False)
                    for command, _ in batch:
                        pipe.execute_command(*command)
                    results = await pipe.execute(raise_on_error=False)
        except BaseException as exc:
            # The whole batch failed (Redis down or silent, or the loop shutting down):
            # every waiting hop gets the error, none is left hanging.
            error = exc if isinstance(exc, Exception) else ConnectionError("the session store is closing")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results):
            if future.done():
                continue  # its hop gave up (deadline) or was cancelled
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def drain(self) -> None:
        """Wait for the batches in flight (before closing the client)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
