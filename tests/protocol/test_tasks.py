"""``protocol.tasks.stop``: a task that takes a cancel for another's still stops; the stopper's
own cancellation goes through; an error the task ended with is not lost."""

from __future__ import annotations

import asyncio

import pytest

from protocol.tasks import stop


async def test_a_task_that_swallows_a_cancel_is_stopped_all_the_same() -> None:
    """The shape of an MQTT client's loop: serve a connection, then cancel and await its
    helper, back off, serve again. A cancel that lands while it awaits the helper is
    swallowed; a second one, later, is not."""
    ending = asyncio.Event()
    swallowed = 0

    async def helper() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            ending.set()
            await asyncio.shield(asyncio.sleep(0.1))  # a helper slow to end

    async def serve_forever() -> None:
        nonlocal swallowed
        while True:
            running = asyncio.create_task(helper())
            try:
                await asyncio.sleep(0.2)  # the connection, lost after a while
            finally:
                running.cancel()
                try:
                    await running
                except asyncio.CancelledError:  # the helper's — or the stopper's
                    swallowed += 1
            await asyncio.sleep(0.05)  # backing off before the next connection

    task = asyncio.create_task(serve_forever())
    await ending.wait()  # the loop now awaits its helper: a cancel lands there
    await asyncio.wait_for(stop(task, again_after_s=0.05), 5)
    assert task.cancelled() and swallowed >= 1


async def test_the_stoppers_own_cancel_is_not_swallowed() -> None:
    async def slow_to_end() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.shield(asyncio.sleep(0.5))

    task = asyncio.create_task(slow_to_end())
    await asyncio.sleep(0.01)
    stopper = asyncio.create_task(stop(task))
    await asyncio.sleep(0.05)
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    await stop(task)


async def test_an_error_the_task_ended_with_is_raised() -> None:
    async def fails() -> None:
        raise RuntimeError("broken")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="broken"):
        await stop(task)
