"""The fleet as HQ sees it: per store, how far its log is merged, what it last reported, and
what the hub refused from it."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import msgpack

from hub.core.db import Tx
from hub.stores.registry import VIRTUAL_STORES
from protocol.sync import CAMPAIGN_REFUSALS


def fleet_status(tx: Tx, now_ms: int) -> list[dict[str, Any]]:
    refusals: dict[str, dict[str, int]] = defaultdict(dict)
    for store, reason, count in tx.all("SELECT store_id, reason, count FROM refusals"):
        refusals[store][reason] = int(count)
    out = []
    # Each store with its stream's position in one statement (every report's completeness
    # reads this: a statement per store was 10 ms of a store's report on PostgreSQL).
    for store, region, name, zone, last_seen, epoch, status, acked in tx.all(
            "SELECT s.store_id, s.region, s.name, s.timezone, s.last_seen_ms, s.epoch, s.status,"
            " coalesce(t.acked_seq, 0) FROM stores s LEFT JOIN store_streams t"
            " ON t.store_id = s.store_id AND t.epoch = s.epoch ORDER BY s.store_id"):
        reported: dict[str, Any] = {}
        if status is not None:
            reported = msgpack.unpackb(bytes(status), raw=False)
        last_seq = int(reported.get("last_seq", acked))
        out.append({
            "store_id": store, "name": name, "region": region, "timezone": zone,
            "epoch": int(epoch), "acked_seq": int(acked),
            "last_seen_s_ago": round((now_ms - int(last_seen)) / 1000, 1) if last_seen else None,
            "outbox_depth": reported.get("outbox_depth"), "lag_events": max(0, last_seq - acked),
            "campaign_versions": reported.get("campaign_versions", {}),
            "software": reported.get("software", ""), "devices": reported.get("devices", []),
            "refused_at_hub": refusals.get(store, {}),
            "refused_at_store": reported.get("refused", {}),
            "campaign_refusals": campaign_refusals(reported.get("refused", {})),
        })
    return out


def campaign_refusals(refused_at_store: dict[str, int]) -> int:
    """Campaign bundles a store turned down (a store refusing them all looks healthy else)."""
    return sum(int(refused_at_store.get(reason, 0)) for reason in CAMPAIGN_REFUSALS)


def hub_streams(tx: Tx) -> list[dict[str, Any]]:
    """The hub's own streams (HQ, ONLINE): how far each is written. No store, so no lag, no
    last-seen and no alarm: they are listed apart from the stores."""
    marks = ", ".join("?" * len(VIRTUAL_STORES))
    return [{"stream": s, "epoch": int(e), "seq": int(q)} for s, e, q in tx.all(
        f"SELECT store_id, epoch, acked_seq FROM store_streams WHERE store_id IN ({marks})"
        " ORDER BY store_id, epoch", sorted(VIRTUAL_STORES))]
