"""The uplink queue: events written in the same transaction as the change they record.

``seq`` is gap-free within an epoch because it is taken from ``meta`` inside the caller's
transaction: a rolled-back checkout takes its sequence numbers with it.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from edge.context import StoreContext
from protocol.codec import encode
from protocol.events import Event, EventBody
from protocol.hlc import pack
from protocol.ids import uuid7


def meta_get(conn: sqlite3.Connection, key: str, default: str | None = None) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row is not None else default


def meta_set(conn: sqlite3.Connection, key: str, value: str | int) -> None:
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, str(value)),
    )


def append(conn: sqlite3.Connection, ctx: StoreContext, body: EventBody) -> Event:
    """Record ``body`` for the hub; must run inside the transaction that makes the change."""
    # One statement takes the next number: read-and-bump inside the caller's transaction.
    (seq,) = conn.execute(
        "INSERT INTO meta(key, value) VALUES (?, '1') "
        "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1 RETURNING value",
        (f"outbox_seq:{ctx.epoch}",),
    ).fetchone()
    seq = int(seq)
    hlc = ctx.clock.now()
    meta_set(conn, "hlc_last", hlc)
    event = Event(
        event_id=uuid7(), store_id=ctx.store_id, epoch=ctx.epoch, seq=seq, hlc=hlc, body=body
    )
    conn.execute(
        "INSERT INTO outbox(epoch, seq, event_id, hlc, type, payload) VALUES (?, ?, ?, ?, ?, ?)",
        (ctx.epoch, seq, event.event_id, hlc, body.type, encode(event)),
    )
    return event


@dataclass(frozen=True)
class OutboxStats:
    depth: int
    oldest_seq: int | None
    newest_seq: int | None


def stats(conn: sqlite3.Connection, epoch: int) -> OutboxStats:
    row = conn.execute(
        "SELECT count(*), min(seq), max(seq) FROM outbox WHERE epoch = ?", (epoch,)
    ).fetchone()
    return OutboxStats(int(row[0]), row[1], row[2])


def oldest_epoch(conn: sqlite3.Connection, current: int) -> int:
    """The epoch to send first: an earlier one with events still unsent (a restored box's
    backup held them), else ``current``. Older events go up before newer ones."""
    row = conn.execute("SELECT min(epoch) FROM outbox WHERE epoch < ?", (current,)).fetchone()
    return int(row[0]) if row[0] is not None else current


def pending(conn: sqlite3.Connection, epoch: int, after_seq: int, limit: int) -> list[bytes]:
    rows = conn.execute(
        "SELECT payload FROM outbox WHERE epoch = ? AND seq > ? ORDER BY seq LIMIT ?",
        (epoch, after_seq, limit),
    ).fetchall()
    return [bytes(r[0]) for r in rows]


_COLUMNS = "epoch, seq, event_id, hlc, type, payload"


def prune(conn: sqlite3.Connection, epoch: int, acked_seq: int, *, keep: bool = False) -> int:
    """Take what the hub acknowledged out of the queue; only ever called with the hub's
    cumulative ack. ``keep``: into ``outbox_sent``, for a hub restored from a backup
    (``reopen``) until ``expire_sent`` drops it."""
    if keep:
        conn.execute(f"INSERT OR IGNORE INTO outbox_sent({_COLUMNS})"
                     f" SELECT {_COLUMNS} FROM outbox WHERE epoch = ? AND seq <= ?",
                     (epoch, acked_seq))
    cur = conn.execute("DELETE FROM outbox WHERE epoch = ? AND seq <= ?", (epoch, acked_seq))
    return cur.rowcount


def expire_sent(conn: sqlite3.Connection, keep_ms: int) -> int:
    """Drop kept events made more than ``keep_ms`` ago (by their HLC's wall clock)."""
    cutoff = pack(max(0, int(time.time() * 1000) - keep_ms), 0)
    return conn.execute("DELETE FROM outbox_sent WHERE hlc < ?", (cutoff,)).rowcount


def reopen(conn: sqlite3.Connection, epoch: int, after_seq: int, upto_seq: int) -> bool:
    """Put the acknowledged events ``after_seq < seq <= upto_seq`` back in the queue: the hub
    says it holds only up to ``after_seq`` (restored from a backup). False, and nothing
    changed, when some of them are no longer kept."""
    wanted = upto_seq - after_seq
    kept = conn.execute("SELECT count(*) FROM outbox_sent WHERE epoch = ? AND seq > ?"
                        " AND seq <= ?", (epoch, after_seq, upto_seq)).fetchone()[0]
    if kept != wanted:
        return False
    conn.execute(f"INSERT INTO outbox({_COLUMNS}) SELECT {_COLUMNS} FROM outbox_sent"
                 " WHERE epoch = ? AND seq > ? AND seq <= ?", (epoch, after_seq, upto_seq))
    conn.execute("DELETE FROM outbox_sent WHERE epoch = ? AND seq > ? AND seq <= ?",
                 (epoch, after_seq, upto_seq))
    return True
