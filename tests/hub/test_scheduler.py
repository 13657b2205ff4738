"""The hub's job scheduler stops its jobs for good, even a job that took the stop's cancel for
its own (as ``asyncio.wait_for`` on Python 3.11 can, when what it waits for ends just then):
one such swallowed cancel held a hub's shutdown for a test's whole 300 s."""

from __future__ import annotations

import asyncio

import pytest

from hub.core.scheduler import Job, Scheduler
from protocol import tasks


async def test_a_job_that_swallows_the_stopping_cancel_is_stopped_all_the_same(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks.stop, "__kwdefaults__", {"again_after_s": 0.05})
    started = asyncio.Event()
    swallowed = 0

    async def job() -> None:
        nonlocal swallowed
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed += 1  # taken for its own: the job returns, its loop waits again

    scheduler = Scheduler()
    scheduler.add(Job("swallowing", job, interval_s=3600))
    await scheduler.__aenter__()
    await started.wait()
    running = scheduler._tasks["swallowing"]
    exiting = asyncio.create_task(scheduler.__aexit__(None, None, None))
    # Waited for without cancelling it (a cancel from here would reach the job too).
    done, _ = await asyncio.wait({exiting}, timeout=5)
    if not done:  # leave nothing running for the next test
        running.cancel()
        await asyncio.wait({exiting}, timeout=1)
    assert done, "the scheduler's stop waited on a job that had swallowed its cancel"
    assert running.done() and swallowed == 1 and scheduler.jobs["swallowing"].runs == 1


async def test_the_status_says_which_jobs_run_at_start_and_whether_they_have() -> None:
    ran = asyncio.Event()

    async def job() -> None:
        ran.set()

    scheduler = Scheduler()
    scheduler.add(Job("now", job, interval_s=3600))
    scheduler.add(Job("later", job, interval_s=3600, at_start=False))
    async with scheduler:
        await asyncio.wait_for(ran.wait(), 5)
        await asyncio.sleep(0)  # the run's count is kept after the job returns
        status = scheduler.status()
    assert {name: (s["at_start"], s["runs"]) for name, s in status.items()} == {
        "now": (True, 1), "later": (False, 0)}
