"""``membergate-edge backup`` / ``restore``: the store's database copied while it sells, and put
back on a box that lost it.

A restored box must never reuse the sequence numbers it handed out after the backup: the hub
keeps ``(store, epoch, seq)`` as each event's key and would drop the new events as duplicates
(shared/NOTES.md). So a restore starts a new epoch: the Unix time of the restore, and at least
one more than the backup's. Two restores of one backup therefore never share an epoch either
(a counter kept in the backup would give both the same one).

What the backup held but the hub had not acknowledged stays in the outbox under its old epoch
and goes up first (``edge.sync``): the hub takes it once, whatever it already had. What the lost
box sold after the backup reached the hub (or nobody): the hub holds it, and the restored box
learns its effect on balances through ``edge.recovery``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.outbox import meta_get, meta_set
from edge.schema import LATEST_VERSION
from protocol import sqlite_backup
from protocol.sqlite_backup import BackupError, check, online_copy

RESTORED_KEY = "restored_from"  # meta: JSON {epoch, seq, at, backup} of the last restore


def describe(path: Path) -> dict[str, Any]:
    """What a backup (or a database) holds: its store, epoch and last sequence number."""
    conn = check(path)
    try:
        try:
            store = meta_get(conn, "store_id")
            epoch = int(meta_get(conn, "epoch") or 0)
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.DatabaseError:
            store = None
        if store is None:
            raise BackupError(f"{path} is not a membergate store database")
        return {"store_id": store, "epoch": epoch, "schema": version,
                "last_seq": int(meta_get(conn, f"outbox_seq:{epoch}") or 0),
                "unsent_events": int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])}
    finally:
        conn.close()


def backup(db: Path, dest: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Copy the live database ``db`` to ``dest`` (the gateway may keep running)."""
    describe(db)  # a store's database, or say so before writing anything
    size = online_copy(db, dest, say=say)
    return {"backup": str(dest), "bytes": size, **describe(dest)}


def new_epoch(old: int, now_s: float | None = None) -> int:
    return max(old + 1, int(time.time() if now_s is None else now_s))


def restore(source: Path, db: Path, store_id: str, say: Callable[[str], None]) -> dict[str, Any]:
    """Put the backup ``source`` in place of ``db`` (stopped) under a new epoch."""
    held = describe(source)
    if held["store_id"] != store_id:
        raise BackupError(f"{source} is store {held['store_id']}'s backup; this box is"
                          f" configured as {store_id}: refusing to mix two stores' ledgers")
    if held["schema"] > LATEST_VERSION:
        raise BackupError(f"{source} has schema {held['schema']}, newer than this build knows"
                          f" ({LATEST_VERSION}): restore it with the release that made it")
    epoch = new_epoch(held["epoch"])
    record = {"epoch": held["epoch"], "seq": held["last_seq"],
              "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "backup": source.name}

    def start_epoch(conn: sqlite3.Connection) -> None:
        meta_set(conn, "epoch", epoch)
        meta_set(conn, RESTORED_KEY, json.dumps(record))

    moved = sqlite_backup.restore(source, db, say=say, prepare=start_epoch)
    say(f"restored {db} from {source}: epoch {held['epoch']} -> {epoch}")
    return {"restored": str(db), "from": str(source), "store_id": store_id,
            "old_epoch": held["epoch"], "epoch": epoch, "backup_seq": held["last_seq"],
            "unsent_events": held["unsent_events"], "moved_aside": moved}
