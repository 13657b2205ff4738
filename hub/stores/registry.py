"""The stores the hub knows: who each is (name, region, time zone, the legal entity that issues
its stored value), when it was last heard from and what it last reported.

A store the hub first hears of over MQTT gets a row with nothing but its id; HQ fills in the
rest from the provisioning fleet file (``membergate-hub stores load``) or the HQ API. A null
time zone or legal entity is the chain's (``[hub] timezone`` / ``legal_entity``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hub.core.db import Tx
from protocol.events import StoreId
from protocol.zones import Zone

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
    """The IANA time zone of ``store_id``'s calendar: its report days and hours, its months
    (the chain's ``chain_zone`` unless the store has its own)."""
    zone: str | None = tx.scalar("SELECT timezone FROM stores WHERE store_id = ?", (store_id,))
    return zone or chain_zone


def zones(tx: Tx) -> dict[str, str]:
    """Every store with a time zone of its own: the ingest pipeline's cache."""
    return {str(s): str(z) for s, z in tx.all(
        "SELECT store_id, timezone FROM stores WHERE timezone IS NOT NULL")}


REGION = r"^[A-Za-z0-9_-]{1,32}$"  # a topic level, as campaigns address regions


class StoreRecord(BaseModel):
    """What HQ says about a store (the fleet file's ``[[stores]]``, the HQ API's PUT)."""

    model_config = ConfigDict(extra="ignore")  # the fleet file has provisioning's keys too

    store_id: StoreId
    name: str = Field("", max_length=200)
    region: str | None = Field(None, pattern=REGION)
    timezone: Zone | None = None  # IANA; null: the chain's
    legal_entity: str | None = Field(None, max_length=200)  # null: the chain's

    @field_validator("store_id")
    @classmethod
    def _not_virtual(cls, value: str) -> str:
        if is_virtual(value):
            raise ValueError(f"{value} is one of the hub's own streams, not a store")
        return value


def upsert(tx: Tx, records: list[StoreRecord]) -> int:
    """Set each store's name, region, zone and legal entity (a new store gets a row)."""
    tx.executemany(
        "INSERT INTO stores(store_id, name, region, timezone, legal_entity) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT(store_id) DO UPDATE SET name = excluded.name, region = excluded.region,"
        " timezone = excluded.timezone, legal_entity = excluded.legal_entity",
        [(r.store_id, r.name, r.region, r.timezone, r.legal_entity) for r in records])
    return len(records)


_STORE = ("SELECT store_id, name, region, timezone, legal_entity, last_seen_ms FROM stores")


def listing(tx: Tx, chain_zone: str, chain_entity: str) -> list[dict[str, Any]]:
    """Every store, with its zone and legal entity as they apply (the chain's when unset)."""
    return [_view(r, chain_zone, chain_entity)
            for r in tx.all(f"{_STORE} ORDER BY store_id")]


def get(tx: Tx, store_id: str, chain_zone: str, chain_entity: str) -> dict[str, Any] | None:
    row = tx.one(f"{_STORE} WHERE store_id = ?", (store_id,))
    return _view(row, chain_zone, chain_entity) if row is not None else None


def _view(row: Any, chain_zone: str, chain_entity: str) -> dict[str, Any]:
    return {"store_id": row[0], "name": row[1], "region": row[2],
            "timezone": row[3] or chain_zone, "own_timezone": row[3] is not None,
            "legal_entity": row[4] if row[4] is not None else chain_entity,
            "seen": bool(row[5])}


def store_region(tx: Tx, store_id: str) -> str | None:
    """The region ``store_id`` belongs to (None until one is set)."""
    region: str | None = tx.scalar("SELECT region FROM stores WHERE store_id = ?", (store_id,))
    return region
