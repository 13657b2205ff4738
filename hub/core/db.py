"""One code path over SQLite (the embedded default) and PostgreSQL (by URL).

SQL is written once with ``?`` placeholders and the portable subset both speak (``ON CONFLICT
... DO UPDATE``, ``RETURNING``); this module only swaps the placeholder style and a couple of
type names. Every write transaction runs whole on one worker thread (the writer), so the event
loop never waits on the database and a batch is one commit.

Reads for HQ (the API, reports, exports, the rebuild comparison, directory pages) run on a pool
of reader connections instead (``read``): on SQLite each is a WAL reader with its own snapshot,
on PostgreSQL a ``READ ONLY REPEATABLE READ`` transaction, so a long report neither waits
behind the batches being applied nor holds them up. Reader rows are read by name or position
(``row["points"]``, ``row[0]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from protocol.private_files import create_private
from protocol.redact import redact_url
from protocol.sqlite_backup import run_lock

T = TypeVar("T")

log = logging.getLogger("membergate.hub.db")

# The hub's SQLite connection holds the directory's and the ledgers' hot pages: members, cards,
# shares, grants of a large fleet; SQLite's 2 MB default made every batch re-read them.
CACHE_KIB = 64 * 1024
# WAL checkpoints run on a thread and connection of their own, not inside a commit: with
# SQLite's default, every ~1,000 pages a group's commit also copied the WAL into the database
# and fsynced it, on the thread every batch waits for. The writer's own automatic checkpoint
# stays as a safety net, at a size the background thread keeps the WAL well below.
CHECKPOINT_EVERY_S = 0.5
WRITER_AUTOCHECKPOINT_PAGES = 20_000


class Cursor(Protocol):
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    @property
    def rowcount(self) -> int: ...


class Tx:
    """The handle a transaction function gets: execute / executemany / one / all / scalar."""

    def __init__(self, conn: Any, dialect: str) -> None:
        self._conn = conn
        self.dialect = dialect

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgres" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        cur: Cursor = self._conn.execute(self._sql(sql), tuple(params))
        return cur

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if not rows:
            return
        if self.dialect == "postgres":
            with self._conn.cursor() as cur:
                cur.executemany(self._sql(sql), rows)
        else:
            self._conn.executemany(sql, rows)

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.execute(sql, params).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.execute(sql, params).fetchall()

    def scalar(self, sql: str, params: Sequence[Any] = (), default: Any = None) -> Any:
        row = self.one(sql, params)
        return default if row is None or row[0] is None else row[0]


IN_CHUNK = 500  # values per ``IN (...)``: well under SQLite's and PostgreSQL's parameter limits


def marks(values: Sequence[object]) -> str:
    """The placeholders of an ``IN (...)`` for ``values``: ``"?, ?, ?"``."""
    return ", ".join("?" * len(values))


def in_chunks(values: Sequence[str]) -> Iterator[tuple[list[str], str]]:
    """``values`` in slices of ``IN_CHUNK``, each with its placeholders (``"?, ?, ?"``): the
    set-based reads of a batch's members."""
    for i in range(0, len(values), IN_CHUNK):
        chunk = list(values[i:i + IN_CHUNK])
        yield chunk, marks(chunk)


def ddl(sql: str, dialect: str) -> str:
    """Schema text with the few types that differ spelled for ``dialect``."""
    if dialect == "postgres":
        return re.sub(r"\bBLOB\b", "BYTEA", sql)
    return sql


def _named_rows(cursor: Any) -> Callable[[Sequence[Any]], NamedRow]:
    """psycopg row factory: rows that answer by position and by column name, as
    ``sqlite3.Row`` does on the SQLite readers."""
    names = [d.name for d in cursor.description or ()]
    index = {n: i for i, n in enumerate(names)}
    return lambda values: NamedRow(values, index)


class NamedRow(tuple[Any, ...]):
    """A PostgreSQL reader's row: ``row[0]`` and ``row["name"]`` (``sqlite3.Row``'s face)."""

    _index: dict[str, int]

    def __new__(cls, values: Sequence[Any], index: dict[str, int]) -> NamedRow:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


READERS = 1  # reader connections: concurrent HQ reads beyond this wait for one
# Reader threads run at the lowest CPU priority: on a small box a burst of reports takes the
# cores ingest does not need, never the ones it does (``merge_under_reads_vs_quiet``).
READER_NICE = 19
READER_WORK_MEM_MB = 64  # PostgreSQL: what one sort or hash of a report may hold in memory


class DatabaseUnavailable(RuntimeError):
    """The configured database cannot be used: the reason in one line, no password."""


def _connect_postgres(url: str) -> Any:
    try:
        import psycopg
    except ImportError:
        raise DatabaseUnavailable(
            f"{redact_url(url)} needs psycopg, the [hub] extra: pip install -e '.[hub]'"
        ) from None
    try:
        return psycopg.connect(url, autocommit=True)
    except psycopg.OperationalError as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatabaseUnavailable(f"cannot connect to {redact_url(url)}: {why}") from None


# The PostgreSQL role HQ's reads run as (row-level security, hub schema 13), and the scope a
# read of the hub's own (a directory page, the status) runs with until an HQ user's narrows it.
READER_ROLE = "membergate_hq"
SYSTEM_SCOPE = {"membergate.scope": "all"}
_SCOPE_SETTINGS = ("membergate.scope", "membergate.stores", "membergate.regions",
                   "membergate.guide")


# The stores of a region scope, resolved once per read in the statement that sets the scope:
# the policies then compare a row's store with a list (schema 15) instead of looking the
# region's stores up again for every row they check.
_REGION_STORES = ("coalesce((SELECT string_agg(store_id, ',') FROM stores"
                  " WHERE region = ANY(string_to_array(?, ','))), '')")


def _set_scope(tx: Tx, settings: dict[str, str]) -> None:
    """The row-level security settings for the rest of this transaction, in one statement."""
    unknown = set(settings) - set(_SCOPE_SETTINGS)
    if unknown:
        raise ValueError(f"not a scope setting: {sorted(unknown)}")
    regions = settings.get("membergate.regions", "")
    sets, params = [], []
    for name in _SCOPE_SETTINGS:
        if name == "membergate.stores" and regions:
            sets.append(f"set_config(?, {_REGION_STORES}, true)")
            params += [name, regions]
        else:
            sets.append("set_config(?, ?, true)")
            params += [name, settings.get(name, "")]
    tx.execute("SELECT " + ", ".join(sets), params)


class HubDatabase:
    """``sqlite:///path`` (or a bare path) or ``postgresql://...``."""

    def __init__(self, url: str, *, readers: int = READERS) -> None:
        self.url = url
        self.dialect = "postgres" if url.startswith(("postgres://", "postgresql://")) else "sqlite"
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-db")
        self.readers = readers
        # Awaited before each HQ read (``read(..., give_way=True)``): the hub makes reads wait
        # a moment while ingest has batches queued (``IngestPipeline.give_way``).
        self.read_gate: Callable[[], Awaitable[None]] | None = None
        self._read_pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_conns: list[Any] = []
        self._reader_lock = threading.Lock()
        self._conn: Any = None
        self._commits = 0  # the checkpointer runs only after new ones
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        self.checkpoints = 0  # background checkpoints that moved frames (tests and status)
        # Held while open (SQLite): ``membergate-hub restore`` refuses while anything has it.
        self._lock = contextlib.ExitStack()

    def _open(self) -> None:
        if self.dialect == "postgres":
            self._conn = _connect_postgres(self.url)
            # No JIT on the writer either (readers below): an RFM run's statements over a
            # million members looked costly enough to compile, and compiling took 11.8 s of
            # its 24.6 s; the merge's statements are short and never gain by it.
            self._conn.execute("SET jit = off")
        else:
            path = self._path
            if path != ":memory:":
                self._lock.enter_context(run_lock(Path(path)))
                create_private(Path(path))  # members' personal data: 0600, -wal/-shm too
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: an acknowledged batch is on disk before its ack leaves the hub.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            conn.execute(f"PRAGMA wal_autocheckpoint={WRITER_AUTOCHECKPOINT_PAGES}")
            self._conn = conn
            if path != ":memory:":
                self._stop.clear()
                self._checkpointer = threading.Thread(
                    target=self._checkpoints, args=(path,), name="hub-db-checkpoint",
                    daemon=True)
                self._checkpointer.start()

    def _checkpoints(self, path: str) -> None:
        """PASSIVE checkpoints: they never wait for or block the writer or a reader."""
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        seen = 0
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            while not self._stop.wait(CHECKPOINT_EVERY_S):
                if self._commits == seen:
                    continue
                seen = self._commits
                try:
                    _busy, _frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)"
                                                        ).fetchone()
                except sqlite3.Error as exc:  # the next round tries again; the writer's own
                    log.warning("background checkpoint failed: %s", exc)  # limit still holds
                    continue
                if done > 0:
                    self.checkpoints += 1
        finally:
            conn.close()

    @property
    def _path(self) -> str:
        return self.url.removeprefix("sqlite:///").removeprefix("sqlite://")

    def _reader(self) -> Any:
        """This reader thread's connection, made on first use."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            with contextlib.suppress(OSError, AttributeError):  # Linux: per thread
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), READER_NICE)
            if self.dialect == "postgres":
                import psycopg

                conn = psycopg.connect(self.url, autocommit=True, row_factory=_named_rows)
                # No JIT: the row-level security policies make a scoped report's plan look
                # costly enough to compile (jit_above_cost), and compiling its expressions took
                # seconds where running them takes milliseconds (a store's member structure:
                # 1.8 s, 120 ms without).
                conn.execute("SET jit = off")
                # A chain's report groups a few hundred thousand rows (a year's cohort of new
                # members, each member's spend): with the default 4 MB each such sort spilled
                # to disk. Per sort or hash of a reader, of which there are a handful.
                conn.execute(f"SET work_mem = '{READER_WORK_MEM_MB}MB'")
                # Reads run as the role that owns nothing and that row-level security binds
                # (hub schema 13), once the schema has it.
                if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                (READER_ROLE,)).fetchone() is not None:
                    conn.execute(f"SET ROLE {READER_ROLE}")
            else:
                conn = sqlite3.connect(self._path, isolation_level=None,
                                       check_same_thread=False)
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA busy_timeout=5000")
                conn.execute("PRAGMA query_only=1")  # a reader that tries to write fails
            self._local.conn = conn
            with self._reader_lock:
                self._reader_conns.append(conn)
        return conn

    def _read_sync(self, fn: Callable[[Tx], T], row_scope: dict[str, str]) -> T:
        conn = self._reader()
        # One snapshot for the whole function: a report's figures agree with each other.
        conn.execute("BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ"
                     if self.dialect == "postgres" else "BEGIN")
        try:
            tx = Tx(conn, self.dialect)
            if self.dialect == "postgres":
                _set_scope(tx, row_scope)
            return fn(tx)
        finally:
            conn.execute("ROLLBACK")

    async def read(self, fn: Callable[[Tx], T], *, give_way: bool = True,
                   row_scope: dict[str, str] | None = None) -> T:
        """Run ``fn`` in a read-only transaction on a reader connection (never the writer).
        ``give_way``: wait at the ``read_gate`` first (HQ's reads; the store link's own reads,
        which stores wait for, pass straight on). ``row_scope``: on PostgreSQL, what
        row-level security lets the read see (``hub.auth.scope.Scope.row_security``); the
        hub's own reads see everything."""
        scope = row_scope if row_scope is not None else SYSTEM_SCOPE
        if give_way and self.read_gate is not None:
            await self.read_gate()
        if self.dialect == "sqlite" and self._path == ":memory:":
            raise RuntimeError("an in-memory database has no reader connections")
        if self._read_pool is None:
            self._read_pool = ThreadPoolExecutor(max_workers=self.readers,
                                                 thread_name_prefix="hub-read")
        return await asyncio.get_running_loop().run_in_executor(
            self._read_pool, lambda: self._read_sync(fn, scope))

    def _close_readers(self) -> None:
        if self._read_pool is not None:
            self._read_pool.shutdown(wait=True)
            self._read_pool = None
        with self._reader_lock:
            conns, self._reader_conns = self._reader_conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    def _close(self) -> None:
        if self._checkpointer is not None:
            self._stop.set()  # a checkpoint in flight finishes first
            self._checkpointer.join()
            self._checkpointer = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._lock.close()

    def open_sync(self) -> HubDatabase:
        """Open on the calling thread (tools that run transactions with ``run_sync``)."""
        self._open()
        return self

    def close_sync(self) -> None:
        self._close_readers()
        self._close()
        self._pool.shutdown(wait=True)

    async def open(self) -> HubDatabase:
        await self._run(self._open)
        return self

    async def close(self) -> None:
        await asyncio.to_thread(self._close_readers)  # waits for reads in flight
        await self._run(self._close)
        self._pool.shutdown(wait=True)

    async def __aenter__(self) -> HubDatabase:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def run_sync(self, fn: Callable[[Tx], T]) -> T:
        """One transaction, on the calling thread (use only from the db thread or tools)."""
        tx = Tx(self._conn, self.dialect)
        self._conn.execute("BEGIN")
        try:
            result = fn(tx)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        self._commits += 1
        return result

    async def transaction(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` as one transaction on the database thread; committed when this returns."""
        return await self._run(lambda: self.run_sync(fn))
