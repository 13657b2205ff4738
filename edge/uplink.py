"""Outbox rows as uplink batches: consecutive, bounded by count and bytes, one store and epoch.

Rows are stored already msgpack-encoded, so a batch is assembled from the stored bytes without
decoding and re-validating each event: a map header, the envelope fields, and an array of the
stored event payloads spliced in as they are.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import msgpack

from protocol.codec import DEFAULT_MAX_BYTES


@dataclass(frozen=True)
class Batch:
    payload: bytes
    first_seq: int
    last_seq: int
    count: int


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 2**16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def build(conn: sqlite3.Connection, store_id: str, epoch: int, after_seq: int, *,
          max_events: int = 500, max_bytes: int = DEFAULT_MAX_BYTES // 2) -> Batch | None:
    """The next batch after ``after_seq``, or None when the outbox holds nothing newer."""
    rows = conn.execute(
        "SELECT seq, payload FROM outbox WHERE epoch = ? AND seq > ? ORDER BY seq LIMIT ?",
        (epoch, after_seq, max_events),
    ).fetchall()
    if not rows:
        return None
    parts: list[bytes] = []
    size = 0
    last = after_seq
    for seq, payload in rows:
        if seq != last + 1 and parts:
            break  # never send across a hole (there is none, but a batch must be consecutive)
        blob = bytes(payload)
        if parts and size + len(blob) > max_bytes:
            break
        parts.append(blob)
        size += len(blob)
        last = seq
    head: bytes = msgpack.packb({"v": 1, "store_id": store_id, "epoch": epoch},
                                use_bin_type=True)
    # Turn the 3-entry map into a 4-entry one and append the "events" key and array.
    assert head[0] == 0x83
    payload_bytes = (bytes([0x84]) + head[1:] + msgpack.packb("events")
                     + _array_header(len(parts)) + b"".join(parts))
    return Batch(payload_bytes, rows[0][0], last, len(parts))
