"""Backing up and restoring a live SQLite database: the edge's and the hub's (on SQLite).

A backup is SQLite's online backup taken in one step: one read transaction, so the copy is
the database as of one commit while the gateway keeps selling (WAL readers never block the
writer). Stepping it page by page would restart whenever another connection commits, which on
a busy till could be forever. The copy is checked (``PRAGMA integrity_check``), made 0600 (it
holds personal data) and fsynced before it takes its name, so a file by that name is whole.

A restore needs the database closed: every process that opens it holds a shared lock on
``<db>-lock`` (``run_lock``) and a restore takes it exclusively, refusing while anything has it
open. The database file and its ``-wal``/``-shm`` are moved aside, never deleted — a WAL left
beside a restored file would be replayed into it and corrupt it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from protocol.private_files import PRIVATE, create_private

SIDE_FILES = ("-wal", "-shm")


class BackupError(RuntimeError):
    """A backup or restore that cannot be done as asked; nothing was changed."""


def lock_path(db: Path) -> Path:
    return db.with_name(db.name + "-lock")


@contextlib.contextmanager
def run_lock(db: Path, *, exclusive: bool = False) -> Iterator[None]:
    """Hold ``db``'s lock while the block runs: shared for a process that uses the database,
    exclusive for a restore (``BackupError`` at once if anyone else holds it)."""
    path = lock_path(db)
    create_private(path)
    handle: IO[bytes] = open(path, "rb")  # noqa: SIM115 - held for the block, closed below
    try:
        try:
            fcntl.flock(handle, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(
                f"{db} is in use (the service or another command has it open): stop it first"
            ) from None
        yield
    finally:
        handle.close()  # closing the file releases the lock


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check(path: Path) -> sqlite3.Connection:
    """Open ``path`` and check it is a whole SQLite database; the caller closes it."""
    if not path.is_file():
        raise BackupError(f"{path}: no such file")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        result = conn.execute("PRAGMA integrity_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise BackupError(f"{path} is not a usable SQLite database: {exc}") from None
    if result != "ok":
        conn.close()
        raise BackupError(f"{path} failed its integrity check: {result}")
    return conn


def online_copy(source: Path, dest: Path, *, say: Callable[[str], None] = lambda _m: None,
                prepare: Callable[[sqlite3.Connection], None] | None = None) -> int:
    """Copy the live database ``source`` to the new file ``dest``; returns its size in bytes.
    ``prepare`` may change the copy (in one transaction) before it is checked and named."""
    if not source.is_file():
        raise BackupError(f"{source}: no such database")
    if dest.exists():
        raise BackupError(f"{dest} exists: a backup never overwrites a file")
    partial = dest.with_name(dest.name + ".partial")
    partial.unlink(missing_ok=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE))
    started = time.monotonic()
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, isolation_level=None)
        dst = sqlite3.connect(partial, isolation_level=None)
        try:
            src.execute("PRAGMA busy_timeout=5000")
            say(f"copying {source} ({source.stat().st_size:,} bytes)")
            src.backup(dst)  # one step: one read transaction, one consistent copy
            dst.execute("PRAGMA journal_mode=DELETE")  # a single file, no -wal beside it
            if prepare is not None:
                dst.execute("BEGIN IMMEDIATE")
                prepare(dst)
                dst.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"cannot copy {source}: {exc}") from None
        finally:
            src.close()
            dst.close()
        check(partial).close()
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        os.rename(partial, dest)
        _fsync_dir(dest.parent)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    size = dest.stat().st_size
    say(f"written {dest} ({size:,} bytes, {time.monotonic() - started:.1f} s), integrity ok")
    return size


def swap_in(copy: Path, db: Path) -> list[str]:
    """Put the checked file ``copy`` (same folder as ``db``) in ``db``'s place; what was there,
    with its ``-wal``/``-shm``, is moved aside. Returns the files moved aside. The caller holds
    ``run_lock(db, exclusive=True)``."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    moved: list[str] = []
    for suffix in ("", *SIDE_FILES):
        current = db.with_name(db.name + suffix)
        if current.exists():
            aside = db.with_name(f"{db.name}.before-restore-{stamp}{suffix}")
            os.rename(current, aside)
            moved.append(str(aside))
    os.rename(copy, db)
    _fsync_dir(db.parent)
    return moved


def restore(source: Path, db: Path, *, say: Callable[[str], None],
            prepare: Callable[[sqlite3.Connection], None] | None = None) -> list[str]:
    """Put a copy of the checked backup ``source`` (changed by ``prepare``) in ``db``'s place,
    refused while anything has ``db`` open; returns the files moved aside."""
    copy = db.with_name(db.name + ".restoring")
    copy.unlink(missing_ok=True)
    with run_lock(db, exclusive=True):
        online_copy(source, copy, say=say, prepare=prepare)
        return swap_in(copy, db)
