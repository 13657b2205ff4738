"""Process-wide runtime settings shared by the edge and hub services (and their benches).

Python's cyclic garbage collector runs a young-generation pass every 700 net allocations of
container objects. Decoding one 500-event batch allocates tens of thousands (each event is a
pydantic model over dicts and lists), so the collector ran dozens of times per batch and kept
re-walking every object still alive: measured on this project's hub bench, validating a batch
cost ~3x what validating its events one by one did, all of it collector time. These services make
almost no reference cycles (rows, models and buffers are freed by reference counting), so a
larger young generation costs little memory and gives that time back. ``gc.freeze`` moves what
startup made (modules, schemas, configuration) out of the collector's sight for good.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

GEN0_THRESHOLD = 50_000
GEN1_THRESHOLD = 20
GEN2_THRESHOLD = 100


def tune_gc() -> tuple[int, int, int]:
    """Raise the collector's thresholds and freeze what exists now; returns the old thresholds.
    Call once, after imports and configuration, before serving."""
    old = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
    return old


@contextmanager
def tuned_gc() -> Iterator[None]:
    """``tune_gc`` for a while (a bench inside a test process), then back as it was."""
    old = tune_gc()
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop where it is installed (it is a dependency on Linux): its loop
    and socket handling are in C, which is most of a short request's time on the edge (a
    member lookup is ~15 us in SQLite and ~1.7 ms through the HTTP API on the stock loop)."""
    try:
        import uvloop
    except ImportError:  # another platform: the stock loop works the same, slower
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def add_log_level(parser: argparse.ArgumentParser, default: str) -> None:
    """``--log-level``, any case (``debug`` as well as ``DEBUG``); anything else is argparse's
    usage error, not a traceback from ``logging``."""
    parser.add_argument("--log-level", default=default, type=str.upper, choices=LOG_LEVELS,
                        metavar="{debug,info,warning,error,critical}")
