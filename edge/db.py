"""The edge's SQLite database: WAL, ``synchronous=FULL``, numbered migrations.

Domain operations are plain functions over a ``sqlite3.Connection``; ``Database.write`` runs one
as a single ``BEGIN IMMEDIATE … COMMIT`` on aiosqlite's worker thread. Running the whole
transaction in one hop (instead of one hop per statement) matters: a hop costs ~0.4 ms here
against ~12 µs for a statement (shared/NOTES.md), and a checkout is dozens of statements.
Reads go through a second connection, so a member lookup never queues behind a checkout's fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite

from edge.schema import LATEST_VERSION, MIGRATIONS
from protocol.private_files import create_private
from protocol.sqlite_backup import run_lock

T = TypeVar("T")
log = logging.getLogger("membergate.db")


class SchemaTooNew(RuntimeError):
    pass


async def _on_thread(conn: aiosqlite.Connection, fn: Callable[[], T]) -> T:
    """Run ``fn`` on ``conn``'s own worker thread, where its sqlite3 connection lives.

    aiosqlite offers one hop per statement publicly; ``_execute`` is the hop itself, which
    lets a whole transaction run in one. Pinned by the tests that exercise every write.
    """
    run = cast(Any, conn)._execute
    return cast(T, await run(fn))


def apply_pragmas(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a committed sale, points change or top-up survives power loss, not just a crash.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, target: int | None = None) -> int:
    """Bring ``conn`` forward to ``target`` (default: latest); one transaction per migration."""
    target = LATEST_VERSION if target is None else target
    current = schema_version(conn)
    if current > LATEST_VERSION:
        raise SchemaTooNew(
            f"database schema {current} is newer than this build knows ({LATEST_VERSION})"
        )
    for version, _title, sql in MIGRATIONS:
        if current < version <= target:
            # executescript commits first; wrap the script so the version moves with the DDL.
            try:
                conn.executescript(
                    f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version={version};\nCOMMIT;"
                )
            except sqlite3.Error:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            current = version
    return current


def connect_sync(path: Path | str, *, readonly: bool = False) -> sqlite3.Connection:
    if not readonly and str(path) != ":memory:":
        create_private(Path(path))  # personal data: 0600, its WAL and SHM too
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    apply_pragmas(conn)
    if readonly:
        conn.execute("PRAGMA query_only=ON")
    return conn


# Page cache per connection (negative: KiB). A 1,000,000-member store's hot index pages (cards,
# phones, members, lots) fit; SQLite's 2 MB default made a checkout re-read them from the OS.
WRITER_CACHE_KIB = 16 * 1024
READER_CACHE_KIB = 8 * 1024
# WAL checkpoints run beside the writer, not inside a commit: with SQLite's default a commit
# every ~1,000 pages also copied the WAL into the database and fsynced it, a pause of several
# milliseconds for whichever checkout happened to commit then. The writer's own automatic
# checkpoint stays as a safety net, at a size the background task keeps the WAL well below.
CHECKPOINT_EVERY_S = 0.5
WRITER_AUTOCHECKPOINT_PAGES = 20_000


class Database:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._writes = 0  # commits so far; the checkpointer runs only after new ones
        self.checkpoints = 0  # background checkpoints that moved frames (for tests and status)
        self.checkpointed_frames = 0
        # Held while open: ``membergate-edge restore`` refuses while anything has it open.
        self._lock = contextlib.ExitStack()

    async def open(self) -> Database:
        if str(self.path) != ":memory:":
            self._lock.enter_context(run_lock(self.path))
            create_private(self.path)  # members' personal data: 0600, -wal/-shm too
        self._writer = await aiosqlite.connect(self.path, isolation_level=None)
        self._writer.row_factory = sqlite3.Row
        await _on_thread(self._writer, self._setup_writer)
        self._reader = await aiosqlite.connect(self.path, isolation_level=None)
        self._reader.row_factory = sqlite3.Row
        await _on_thread(self._reader, self._setup_reader)
        if str(self.path) != ":memory:":
            self._stop = asyncio.Event()
            self._checkpointer = asyncio.create_task(self._checkpoints(),
                                                     name="sqlite-checkpoint")
        return self

    async def _checkpoints(self) -> None:
        """PASSIVE checkpoints on a connection of their own, on a worker thread: they never
        wait for or block the writer or a reader."""
        conn = await asyncio.to_thread(connect_sync, self.path)
        seen = 0
        try:
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), CHECKPOINT_EVERY_S)
                if self._writes == seen or self._stop.is_set():
                    continue
                seen = self._writes
                try:
                    _busy, _frames, done = await asyncio.to_thread(
                        lambda: conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())
                except sqlite3.Error as exc:  # the next round tries again; the writer's own
                    log.warning("background checkpoint failed: %s", exc)  # limit still holds
                    continue
                if done > 0:
                    self.checkpoints += 1
                    self.checkpointed_frames += done
        finally:
            await asyncio.to_thread(conn.close)

    def _setup_writer(self) -> None:
        assert self._writer is not None
        conn = self._writer._conn
        apply_pragmas(conn)
        conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
        conn.execute(f"PRAGMA wal_autocheckpoint={WRITER_AUTOCHECKPOINT_PAGES}")
        migrate(conn)

    def _setup_reader(self) -> None:
        assert self._reader is not None
        conn = self._reader._conn
        apply_pragmas(conn)
        conn.execute(f"PRAGMA cache_size=-{READER_CACHE_KIB}")
        conn.execute("PRAGMA query_only=ON")

    async def close(self) -> None:
        if self._checkpointer is not None:
            # Stopped, not cancelled: a checkpoint in flight on its thread finishes first.
            self._stop.set()
            await self._checkpointer
            self._checkpointer = None
        for c in (self._reader, self._writer):
            if c is not None:
                await c.close()
        self._reader = self._writer = None
        self._lock.close()

    async def __aenter__(self) -> Database:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def write(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Run ``fn`` as one immediate transaction; commit before returning, roll back on error.

        ``durable=False``: for what can be fetched again (a step of a directory page and its
        checkpoint, which move together): the commit does not wait for the disk
        (``synchronous=NORMAL``; the next durable commit writes it out with its own). Power lost
        before then loses the step and its checkpoint together, and the page is asked for
        again. The tills' writes keep ``FULL``, and no longer queue behind a disk flush each
        step took."""
        if self._writer is None:
            raise RuntimeError("database is not open")
        writer = self._writer

        def tx() -> T:
            conn = writer._conn
            if not durable:
                conn.execute("PRAGMA synchronous=NORMAL")
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            finally:
                if not durable:
                    conn.execute("PRAGMA synchronous=FULL")
            self._writes += 1
            return result

        return await _on_thread(writer, tx)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the read connection inside one snapshot (a deferred transaction)."""
        if self._reader is None:
            raise RuntimeError("database is not open")
        reader = self._reader

        def tx() -> T:
            conn = reader._conn
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")

        return await _on_thread(reader, tx)


def row_dict(row: sqlite3.Row | None) -> dict[str, Any] | None:
    return dict(row) if row is not None else None
