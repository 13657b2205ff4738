"""The stores the hub knows: when each was last heard from and what it last reported."""

from __future__ import annotations

from hub.core.db import Tx

# The hub's own event streams, written as if by stores of these ids (``hub.ledger.hq_events``):
# HQ's changes, and later the online channel's. They are no stores: no box sends on their
# topics (the link refuses it), they hold no offline allowance and fleet status does not list
# them among the stores.
HQ = "HQ"
ONLINE = "ONLINE"
VIRTUAL_STORES = frozenset({HQ, ONLINE})


def is_virtual(store_id: str) -> bool:
    return store_id in VIRTUAL_STORES


def record_status(tx: Tx, store_id: str, epoch: int, payload: bytes, now_ms: int) -> None:
    """A store's periodic status (its raw payload is kept for the fleet view)."""
    tx.execute(
        "INSERT INTO stores(store_id, last_seen_ms, epoch, status) VALUES (?, ?, ?, ?)"
        " ON CONFLICT(store_id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms,"
        " status = excluded.status, epoch = CASE WHEN excluded.epoch > stores.epoch"
        " THEN excluded.epoch ELSE stores.epoch END",
        (store_id, now_ms, epoch, payload))


def store_zone(tx: Tx, store_id: str, chain_zone: str) -> str:
    """The IANA time zone of ``store_id``'s calendar: its report days and hours, its months.

    Every store keeps the chain's zone (``[hub] timezone``) until stores have zones of their
    own; this is the one place that answers, so it can then read them. ``tx`` is for that."""
    return chain_zone


def store_region(tx: Tx, store_id: str) -> str | None:
    """The region ``store_id`` belongs to (None until one is set)."""
    region: str | None = tx.scalar("SELECT region FROM stores WHERE store_id = ?", (store_id,))
    return region
