"""What ``GET /v1/status`` and ``membergate-edge status`` show: one function, from the database.

Both read the same rows, so the CLI on the box and the POS see the same figures. The hub link
is recorded in meta by the running edge's sync client (connect, disconnect, each ack that moved)
so a separate process can show it too: it is the link as the running edge last recorded it.
Only what lives in the serving process's memory alone (open baskets, event subscribers) is
added by that process, under ``live``; the CLI has no such process and shows ``null``.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from edge import outbox
from edge.backup import RESTORED_KEY
from edge.campaign_store import ActiveCampaigns
from edge.context import StoreContext

LINK_KEY = "hub_link"  # JSON: broker, connected, since (store-local ISO)
LAST_ACK_KEY = "hub_last_ack_at"  # store-local ISO of the last ack that moved
ACK_KEY = "acked_seq:{epoch}"


def record_link(conn: sqlite3.Connection, *, broker: str, connected: bool, since: str) -> None:
    outbox.meta_set(conn, LINK_KEY, json.dumps(
        {"broker": broker, "connected": connected, "since": since}))


def record_ack(conn: sqlite3.Connection, ctx: StoreContext, seq: int,
               epoch: int | None = None) -> None:
    """The hub's ack of ``epoch`` (default: the current one; an older one after a restore)."""
    outbox.meta_set(conn, ACK_KEY.format(epoch=ctx.epoch if epoch is None else epoch), seq)
    outbox.meta_set(conn, LAST_ACK_KEY, ctx.now().isoformat())


def hub_link(conn: sqlite3.Connection, epoch: int) -> dict[str, Any]:
    raw = outbox.meta_get(conn, LINK_KEY)
    link = json.loads(raw) if raw else {"broker": None, "connected": False, "since": None}
    link["acked_seq"] = int(outbox.meta_get(conn, ACK_KEY.format(epoch=epoch), "0") or 0)
    link["last_ack_at"] = outbox.meta_get(conn, LAST_ACK_KEY)
    return link


def campaign_versions(conn: sqlite3.Connection) -> dict[str, int]:
    """``scope`` or ``scope:scope_id`` -> version, as the store reports them to the hub."""
    return {f"{r[0]}:{r[1]}" if r[1] else r[0]: int(r[2]) for r in conn.execute(
        "SELECT scope, scope_id, version FROM campaign_bundles ORDER BY scope, scope_id")}


def read(conn: sqlite3.Connection, ctx: StoreContext,
         campaigns: ActiveCampaigns) -> dict[str, Any]:
    st = outbox.stats(conn, ctx.epoch)
    return {
        "store_id": ctx.store_id, "epoch": ctx.epoch,
        "members": conn.execute("SELECT count(*) FROM members").fetchone()[0],
        "outbox": {"depth": st.depth, "oldest_seq": st.oldest_seq, "newest_seq": st.newest_seq},
        "last_seq": int(outbox.meta_get(conn, f"outbox_seq:{ctx.epoch}", "0") or 0),
        "campaigns": [c.campaign_id for c in campaigns.current(conn)],
        "campaign_versions": campaign_versions(conn),
        "hub": hub_link(conn, ctx.epoch),
        # After a restore: the backup's epoch and last seq, and what of it is still unsent.
        "restored_from": json.loads(restored) if (restored := outbox.meta_get(
            conn, RESTORED_KEY)) else None,
        "older_epochs_unsent": conn.execute("SELECT count(*) FROM outbox WHERE epoch < ?",
                                            (ctx.epoch,)).fetchone()[0],
        "live": None,
    }
