"""Stopping background loops: a cancellation the loop swallows is sent again, within a bound."""

from __future__ import annotations

import asyncio

from ussd_gateway.core.tasks import cancel_and_wait


async def test_a_loop_that_swallows_one_cancellation_still_stops() -> None:
    """The first cancellation is lost (as Python 3.11's asyncio.timeout can lose one);
    the second ends the loop."""
    swallowed = 0

    async def loop() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1
                asyncio.current_task().uncancel()  # type: ignore[union-attr]

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    assert await cancel_and_wait(task, timeout_s=2.0)
    assert task.cancelled() and swallowed == 1


async def test_a_task_that_does_not_stop_is_given_up_on_in_time() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                asyncio.current_task().uncancel()  # type: ignore[union-attr]

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    assert not await cancel_and_wait(task, timeout_s=0.3)
    assert not task.done()
    release.set()
    assert await cancel_and_wait(task)


async def test_a_failure_of_a_stopped_task_is_retrieved_not_raised() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    assert await cancel_and_wait([task])
    assert isinstance(task.exception(), RuntimeError)
