"""Sums over a page of events, written as one upsert per key: what the report rollups share.

A report rollup's row is a key (a store, a day, ...) and sums that only ever grow by what an
event adds. Each event adds to the page's row of its key; the page then adds each row to the
table (``INSERT ... ON CONFLICT DO UPDATE SET s = s + excluded.s``). Sums commute, so the rows
are the same however the log was cut into pages: built incrementally or rebuilt from zero.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from operator import add
from typing import Any

from hub.core.db import Tx


class PageSums:
    """Rows of ``table`` being summed over one page."""

    def __init__(self, table: str, keys: tuple[str, ...], sums: tuple[str, ...]) -> None:
        columns = (*keys, *sums)
        self.width = len(sums)
        self.sql = (f"INSERT INTO {table}({', '.join(columns)})"
                    f" VALUES ({', '.join('?' * len(columns))})"
                    f" ON CONFLICT({', '.join(keys)}) DO UPDATE SET "
                    + ", ".join(f"{s} = {table}.{s} + excluded.{s}" for s in sums))
        self.rows: dict[tuple[Hashable, ...], list[int]] = {}

    def row(self, *key: Hashable) -> list[int]:
        """The sums of ``key`` in this page, to add to (in the order of ``sums``)."""
        found = self.rows.get(key)
        if found is None:
            found = self.rows[key] = [0] * self.width
        return found

    def fold(self, source: PageSums,
             key: Callable[[tuple[Hashable, ...]], tuple[Hashable, ...]]) -> None:
        """Add every row of ``source`` (same sums) under ``key`` of its key: a coarser rollup
        (a month, the chain) summed from the page's finer rows instead of event by event,
        which visits each of the page's keys once instead of each line again."""
        rows = self.rows
        for k, v in source.rows.items():
            to = key(k)
            found = rows.get(to)
            rows[to] = list(v) if found is None else list(map(add, found, v))

    def write(self, tx: Tx) -> None:
        if self.rows:
            rows: list[tuple[Any, ...]] = [(*k, *v) for k, v in self.rows.items()]
            tx.executemany(self.sql, rows)
