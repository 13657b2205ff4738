"""Recurring jobs of the hub (tiers, allowances, projections, later segments and journeys).

A job is a name, a coroutine function and when it runs: every ``interval_s`` seconds, or at a
time of day in a time zone (store-local midnight). Each job runs in its own task; one that
fails is logged and runs again at its next time, so one broken job stops no other. Tests call
the jobs' functions directly or ``run_now``; nothing here sleeps for a day in a loop body that
cannot be seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from protocol import tasks

log = logging.getLogger("membergate.hub.scheduler")

JobFn = Callable[[], Awaitable[object]]


@dataclass
class Job:
    name: str
    fn: JobFn
    interval_s: float | None = None  # every N seconds, or
    daily_at: tuple[int, int] | None = None  # (hour, minute) in ``zone``
    zone: str = "UTC"
    at_start: bool = True  # run once right after the hub starts
    runs: int = 0
    failures: int = 0
    last_run_ms: int | None = None
    last_error: str | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def seconds_to_next(self, now: float) -> float:
        if self.interval_s is not None:
            return self.interval_s
        assert self.daily_at is not None
        local = datetime.fromtimestamp(now, ZoneInfo(self.zone))
        hour, minute = self.daily_at
        nxt = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if nxt <= local:
            # The next calendar day at that wall time (a DST change moves it, as it should).
            nxt = (nxt + timedelta(days=1)).replace(hour=hour, minute=minute)
        return max(0.0, nxt.timestamp() - now)


class Scheduler:
    """``async with Scheduler() as s``: runs every job added (before or after entering)."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._running = False

    def add(self, job: Job) -> Job:
        if job.interval_s is None and job.daily_at is None:
            raise ValueError(f"job {job.name}: give interval_s or daily_at")
        if job.name in self.jobs:
            raise ValueError(f"job {job.name} already scheduled")
        self.jobs[job.name] = job
        if self._running:
            self._start(job)
        return job

    def _start(self, job: Job) -> None:
        self._tasks[job.name] = asyncio.create_task(self._loop(job), name=f"job-{job.name}")

    async def run_now(self, name: str) -> None:
        """Run a job once, now, in the caller's task (a command, a test)."""
        await self._run(self.jobs[name])

    async def _run(self, job: Job) -> None:
        try:
            await job.fn()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # logged; the job runs again at its next time
            job.failures += 1
            job.last_error = repr(exc)[:300]
            log.exception("job %s failed", job.name)
        finally:
            job.runs += 1
            job.last_run_ms = int(time.time() * 1000)

    async def _loop(self, job: Job) -> None:
        if job.at_start:
            await self._run(job)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(job._wake.wait(), job.seconds_to_next(time.time()))
            job._wake.clear()
            await self._run(job)

    def wake(self, name: str) -> None:
        """Run a job soon, out of its schedule (new data for a projection, say)."""
        self.jobs[name]._wake.set()

    def status(self) -> dict[str, dict[str, object]]:
        return {j.name: {"runs": j.runs, "failures": j.failures, "last_run_ms": j.last_run_ms,
                         "last_error": j.last_error, "at_start": j.at_start}
                for j in self.jobs.values()}

    async def __aenter__(self) -> Scheduler:
        self._running = True
        for job in self.jobs.values():
            self._start(job)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._running = False
        running, self._tasks = list(self._tasks.values()), {}
        for task in running:
            task.cancel()
        for task in running:
            # Cancelled again until it ends: a cancel landing as the job's ``wait_for`` timed
            # out was swallowed once and the job went on waiting (a test's whole 300 s).
            await tasks.stop(task)
