from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

# A test still running this many seconds before pytest-timeout stops it prints what each of its
# coroutines waits on: the timeout's own dump shows only the threads, and a hung test's event
# loop thread only waits in select (two rare hangs under load were found that way, one not).
HANG_REPORT_BEFORE_S = 20.0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped test is a failure: CI installs every peer the tests need."""
    if not os.environ.get("CI"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped:
        names = ", ".join(getattr(r, "nodeid", "?") for r in skipped[:10])
        print(f"\nCI: {len(skipped)} skipped test(s) count as failures: {names}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, under which a file made without a mode is world-readable."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Setup, call and teardown: pytest-timeout's limit covers the three."""
    limit = float(item.config.getini("timeout") or 0)
    timer = None
    if limit > HANG_REPORT_BEFORE_S:
        timer = threading.Timer(limit - HANG_REPORT_BEFORE_S, _report_tasks, (item.nodeid,))
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()


def _report_tasks(nodeid: str) -> None:
    """Every task of every running event loop, with the frames it is suspended in. Read from
    another thread (a diagnostic: the loop is stuck, its task set is not changing)."""
    loops: list[Any] = [o for o in gc.get_objects()
                        if isinstance(o, asyncio.AbstractEventLoop) and o.is_running()]
    print(f"\n--- {nodeid} is still running; its coroutines wait here:", file=sys.stderr)
    for loop in loops:
        for task in list(asyncio.all_tasks(loop)):
            print(f"{task!r}", file=sys.stderr)
            for line in _awaiting(task.get_coro()):
                print(line, file=sys.stderr)


def _awaiting(obj: Any) -> list[str]:
    """Where a coroutine is suspended, down the chain of what each awaits (a task's own
    ``print_stack`` shows a suspended coroutine's outermost frame only)."""
    lines: list[str] = []
    while obj is not None and len(lines) < 40:
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None) or getattr(
            obj, "ag_frame", None)
        if frame is not None:
            lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno}"
                         f" in {frame.f_code.co_name}")
        obj = (getattr(obj, "cr_await", None) or getattr(obj, "gi_yieldfrom", None)
               or getattr(obj, "ag_await", None))
    return lines
