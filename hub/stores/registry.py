"""The stores the hub knows: when each was last heard from and what it last reported."""

from __future__ import annotations

from hub.core.db import Tx


def record_status(tx: Tx, store_id: str, epoch: int, payload: bytes, now_ms: int) -> None:
    """A store's periodic status (its raw payload is kept for the fleet view)."""
    tx.execute(
        "INSERT INTO stores(store_id, last_seen_ms, epoch, status) VALUES (?, ?, ?, ?)"
        " ON CONFLICT(store_id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms,"
        " status = excluded.status, epoch = CASE WHEN excluded.epoch > stores.epoch"
        " THEN excluded.epoch ELSE stores.epoch END",
        (store_id, now_ms, epoch, payload))
