"""The uplink queue: events written in the same transaction as the change they record.

``seq`` is gap-free within an epoch because it is taken from ``meta`` inside the caller's
transaction: a rolled-back checkout takes its sequence numbers with it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from edge.context import StoreContext
from protocol.codec import encode
from protocol.events import Event, EventBody
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


def pending(conn: sqlite3.Connection, epoch: int, after_seq: int, limit: int) -> list[bytes]:
    rows = conn.execute(
        "SELECT payload FROM outbox WHERE epoch = ? AND seq > ? ORDER BY seq LIMIT ?",
        (epoch, after_seq, limit),
    ).fetchall()
    return [bytes(r[0]) for r in rows]


def prune(conn: sqlite3.Connection, epoch: int, acked_seq: int) -> int:
    """Drop what the hub acknowledged; only ever called with the hub's cumulative ack."""
    cur = conn.execute("DELETE FROM outbox WHERE epoch = ? AND seq <= ?", (epoch, acked_seq))
    return cur.rowcount
