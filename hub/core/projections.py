"""Projections: read models built from the event log by consumers with their own checkpoint.

A projection reads the log in the order it was committed (``events.pos``), applies what it
reads to its own tables, and keeps how far it has read in ``projection_checkpoints``: a page
of events and the checkpoint after it are one writer transaction, so a projection killed at
any moment resumes exactly where its rows end. It runs after the batches it reads were
committed and acknowledged (the hub wakes the runner once a group's acks are out), never on
the ack path; its lag is how many logged events it has not read yet and for how long.

Built incrementally or rebuilt from zero, a projection ends with the same rows: its rows are
a function of the log (and of the member each id now is, which only log events change), not
of how the log was cut into pages. ``tests/hub/test_projections.py`` compares the two.

Pages are small (``PAGE_EVENTS``) because they run on the hub's one writer: a batch waiting
to be applied waits for at most one page.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, NamedTuple, Protocol

import msgspec

from hub.core.clock import now_ms
from hub.core.db import HubDatabase, Tx
from protocol import fastcodec
from protocol.codec import decode as decode_message
from protocol.events import Event

log = logging.getLogger("membergate.hub.projections")

PAGE_EVENTS = 2_000  # events a projection reads per writer transaction


class Logged(NamedTuple):
    """One event of the log as a projection gets it, decoded."""

    pos: int
    store_id: str
    hlc: int
    type: str
    event: Any  # ``protocol.events.Event``, or its compiled msgspec struct (same attributes)


class Projection(Protocol):
    name: str
    tables: tuple[str, ...]  # what a rebuild empties
    types: frozenset[str]  # the event types it reads
    # Projections whose rows this one reads while applying (``sales_facts`` for the lines a
    # refund names): they are applied first, in the same transaction, and never fall behind.
    after: tuple[str, ...]

    def apply(self, tx: Tx, events: Sequence[Logged]) -> None:
        """Apply ``events`` (in log order, each once) to the projection's tables."""


class Step(NamedTuple):
    """What one page did: the position every projection run reached, the log's head."""

    pos: int
    head: int
    events: int  # events read (of the types the projections run want)

    @property
    def done(self) -> bool:
        return self.pos >= self.head


# The log's payloads were validated when they were applied; this decodes them into the same
# compiled structs at msgspec speed. A payload only pydantic accepts (protocol.fastcodec is
# stricter in places) is decoded by pydantic, whose models answer to the same attribute names.
_decode_fast = msgspec.msgpack.Decoder(fastcodec.EventStruct).decode


def decode_event(payload: bytes) -> Any:
    try:
        return _decode_fast(payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return decode_message(payload, Event)


class ProjectionRunner:
    """Catches projections up with the log, a page a writer transaction."""

    def __init__(self, db: HubDatabase, projections: Iterable[Projection], *,
                 page: int = PAGE_EVENTS, clock: Callable[[], int] = now_ms) -> None:
        self.db = db
        self.projections = {p.name: p for p in projections}
        self.page = page
        self.clock = clock

    @property
    def names(self) -> list[str]:
        return list(self.projections)

    def _order(self, names: Iterable[str]) -> list[Projection]:
        """``names`` and what they read, each after what it reads."""
        out: list[Projection] = []

        def visit(name: str) -> None:
            p = self.projections[name]
            if p in out:
                return
            for dep in p.after:
                visit(dep)
            out.append(p)

        for name in names:
            visit(name)
        return out

    def step(self, tx: Tx, names: Sequence[str] | None = None) -> Step:
        """One page for ``names`` (default: all), from the lowest of their checkpoints."""
        run = self._order(self.names if names is None else names)
        keys = [p.name for p in run]
        # The checkpoints are written first: on SQLite that takes the write lock before
        # anything is read, on PostgreSQL it locks their rows, so a rebuild from the command
        # line and the running hub never read the same page from the same checkpoint.
        tx.executemany("INSERT INTO projection_checkpoints(name) VALUES (?)"
                       " ON CONFLICT(name) DO NOTHING", [(k,) for k in keys])
        marks = ", ".join("?" * len(keys))
        at = {str(r[0]): int(r[1]) for r in tx.all(
            f"UPDATE projection_checkpoints SET pos = pos WHERE name IN ({marks})"
            " RETURNING name, pos", keys)}
        started = self.clock()  # every event committed before now is visible below
        head = int(tx.scalar("SELECT max(pos) FROM events", default=0))
        low = min(at.values())
        if low >= head:
            self._checkpoint(tx, {k: at[k] for k in keys}, started)
            return Step(low, head, 0)
        types = sorted(set().union(*(p.types for p in run)))
        rows = tx.all(
            f"SELECT pos, store_id, hlc, type, payload FROM events WHERE pos > ? AND pos <= ?"
            f" AND type IN ({', '.join('?' * len(types))}) ORDER BY pos LIMIT ?",
            (low, head, *types, self.page))
        end = int(rows[-1][0]) if len(rows) == self.page else head
        logged = [Logged(int(pos), store, int(hlc), kind, decode_event(bytes(payload)))
                  for pos, store, hlc, kind, payload in rows]
        # Most projections read the same few types from the same position: each such cut of
        # the page is made once and shared (eleven filters of 2,000 events were 5 % of a page).
        cuts: dict[tuple[frozenset[str], int], list[Logged]] = {}
        for p in run:
            since = at[p.name]
            mine = cuts.get((p.types, since))
            if mine is None:
                mine = cuts[(p.types, since)] = [
                    e for e in logged if e.type in p.types and e.pos > since]
            if mine:
                p.apply(tx, mine)
        self._checkpoint(tx, {k: max(at[k], end) for k in keys},
                         started if end >= head else None)
        return Step(end, head, len(logged))

    @staticmethod
    def _checkpoint(tx: Tx, positions: dict[str, int], synced_ms: int | None) -> None:
        if synced_ms is None:
            tx.executemany("UPDATE projection_checkpoints SET pos = ? WHERE name = ?",
                           [(pos, name) for name, pos in positions.items()])
        else:  # at the head: every event committed before ``synced_ms`` is in the rows
            tx.executemany("UPDATE projection_checkpoints SET pos = ?, synced_ms = ?"
                           " WHERE name = ?",
                           [(pos, synced_ms, name) for name, pos in positions.items()])

    async def catch_up(self, names: Sequence[str] | None = None,
                       progress: Callable[[Step], None] | None = None,
                       before_page: Callable[[], Awaitable[None]] | None = None) -> int:
        """Pages until ``names`` (default: all) reach the head; returns the events read.
        Other writes (the batches being applied) take turns with the pages; ``before_page``
        may hold each page back while ingest has work waiting."""
        if names is not None:
            self._order(names)  # unknown names fail here, before a transaction
        total = 0
        while True:
            if before_page is not None:
                await before_page()
            step = await self.db.transaction(lambda tx: self.step(tx, names))
            total += step.events
            if progress is not None:
                progress(step)
            if step.done:
                return total

    def readers_of(self, name: str) -> list[str]:
        """``name`` and every projection that reads it, directly or not."""
        if name not in self.projections:
            raise KeyError(name)
        out = [name]
        for p in self.projections.values():
            if name in p.after:
                out += [r for r in self.readers_of(p.name) if r not in out]
        return out

    def reset(self, tx: Tx, name: str) -> None:
        """``name``'s rows and checkpoint gone: the next catch-up starts from zero. What
        reads it (``after``) starts over too, so it never runs ahead of what it reads."""
        for reset in self.readers_of(name):
            for table in self.projections[reset].tables:
                tx.execute(f"DELETE FROM {table}")
            tx.execute("DELETE FROM projection_checkpoints WHERE name = ?", (reset,))

    async def rebuild(self, name: str, progress: Callable[[Step], None] | None = None) -> int:
        """``name`` (and what reads it) from zero: emptied and caught up again."""
        names = self.readers_of(name)  # an unknown name fails here, before anything changes
        await self.db.transaction(lambda tx: self.reset(tx, name))
        return await self.catch_up(names, progress)

    async def status(self) -> list[dict[str, Any]]:
        return await self.db.read(lambda tx: lag(tx, self.names, self.clock()))


def lag(tx: Tx, names: Sequence[str], now: int) -> list[dict[str, Any]]:
    """Per projection: its position, the log's head, the events it has yet to read and for
    how long at most (seconds since it last stood at the head; 0 when it is there, None when
    it never was)."""
    head = int(tx.scalar("SELECT max(pos) FROM events", default=0))
    kept = {str(r[0]): (int(r[1]), int(r[2])) for r in tx.all(
        "SELECT name, pos, synced_ms FROM projection_checkpoints")}
    out = []
    for name in names:
        pos, synced = kept.get(name, (0, 0))
        behind = int(tx.scalar("SELECT count(*) FROM events WHERE pos > ?", (pos,), default=0))
        lag_s = 0.0 if behind == 0 else (
            round(max(0, now - synced) / 1000, 1) if synced else None)
        out.append({"name": name, "pos": pos, "head": head, "lag_events": behind,
                    "lag_s": lag_s, "synced_ms": synced or None})
    return out
