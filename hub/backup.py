"""``membergate-hub backup`` / ``restore`` for a hub on SQLite (PostgreSQL: ``pg_dump``, README).

A restored hub has lost what it applied after the backup, and the stores pruned those events
once it acknowledged them. They are not gone: each store keeps what the hub acknowledged for
``[sync] keep_acked_days`` (``edge.outbox``). The restored hub's stream positions are behind
the stores' acks, so its first answer to each store is a resend from its own position, and the
store sends the events again from what it kept — applied once, in order, as the first time.
A restore therefore loses nothing as long as the backup is younger than the stores' retention.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hub.core.schema import LATEST
from protocol import sqlite_backup
from protocol.sqlite_backup import BackupError, check, online_copy


def sqlite_path(url: str) -> Path:
    if "://" in url and not url.startswith("sqlite:"):
        raise BackupError("the hub's database is PostgreSQL: back it up with pg_dump or"
                          " pg_basebackup and restore it with pg_restore (README, Backups)")
    return Path(url.removeprefix("sqlite:///").removeprefix("sqlite://"))


def describe(path: Path) -> dict[str, Any]:
    """A hub database's schema and how far it holds each store's stream."""
    conn = check(path)
    try:
        try:
            version = int(conn.execute("SELECT max(version) FROM schema_version").fetchone()[0])
            streams = {f"{s}/{e}": int(q) for s, e, q in conn.execute(
                "SELECT store_id, epoch, acked_seq FROM store_streams ORDER BY store_id, epoch")}
            events = int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
        except sqlite3.DatabaseError:
            raise BackupError(f"{path} is not a membergate hub database") from None
        return {"schema": version, "events": events, "streams": streams}
    finally:
        conn.close()


def backup(url: str, dest: Path, say: Callable[[str], None]) -> dict[str, Any]:
    db = sqlite_path(url)
    describe(db)
    size = online_copy(db, dest, say=say)
    return {"backup": str(dest), "bytes": size, **describe(dest)}


def restore(url: str, source: Path, say: Callable[[str], None]) -> dict[str, Any]:
    db = sqlite_path(url)
    held = describe(source)
    if held["schema"] > LATEST:
        raise BackupError(f"{source} has hub schema {held['schema']}, newer than this build"
                          f" ({LATEST}): restore it with the release that made it")
    moved = sqlite_backup.restore(source, db, say=say)
    say(f"restored {db} from {source}; stores resend what it lacks when they reconnect")
    return {"restored": str(db), "from": str(source), **held, "moved_aside": moved}
