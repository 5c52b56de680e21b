"""Stopping a background task without hanging the process's stop.

Python 3.11's `asyncio.timeout` can swallow a cancellation that lands just as its own
deadline passes (fixed in 3.12): the task's loop then carries on as if never
cancelled, and a plain `task.cancel(); await task` waits forever. Every loop here
wraps its Redis calls in such a deadline, so their stops cancel again until the task
ends, within a bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

RECANCEL_S = 0.1
"""How long a cancellation is given before it is sent again."""


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]] | asyncio.Task[object], timeout_s: float = 2.0) -> bool:
    """Cancel the tasks and wait for them to end, cancelling again every `RECANCEL_S`,
    for at most `timeout_s`. True when they all ended."""
    every = {tasks} if isinstance(tasks, asyncio.Task) else set(tasks)
    pending = set(every)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while pending and (left := deadline - loop.time()) > 0:
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=min(RECANCEL_S, left))
    for task in every - pending:
        if not task.cancelled():
            task.exception()  # retrieved: a failure was the task's own to log
    return not pending
