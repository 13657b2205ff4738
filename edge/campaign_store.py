"""The campaign bundles this store runs: one per scope (fleet, region, store), newest version wins.

The active campaign list is held in memory and rebuilt only when a bundle is applied, so
pricing a basket never reads campaigns from disk.
"""

from __future__ import annotations

import sqlite3

from edge.context import StoreContext
from edge.errors import conflict
from protocol.campaigns import Campaign, CampaignBundle


def stored_bundles(conn: sqlite3.Connection) -> list[CampaignBundle]:
    rows = conn.execute("SELECT bundle FROM campaign_bundles ORDER BY scope, scope_id").fetchall()
    return [CampaignBundle.model_validate_json(r[0]) for r in rows]


def applies_here(bundle: CampaignBundle, ctx: StoreContext) -> bool:
    if bundle.scope == "fleet":
        return True
    if bundle.scope == "region":
        return bundle.scope_id == ctx.config.store.region
    return bundle.scope_id == ctx.store_id


def apply_bundle(conn: sqlite3.Connection, ctx: StoreContext, bundle: CampaignBundle) -> bool:
    """Store ``bundle`` if it is for this store and newer than what we run; False if stale."""
    if not applies_here(bundle, ctx):
        raise conflict("bundle_not_for_this_store",
                       f"bundle for {bundle.scope} {bundle.scope_id} does not apply here")
    scope_id = bundle.scope_id or ""
    row = conn.execute(
        "SELECT version FROM campaign_bundles WHERE scope = ? AND scope_id = ?",
        (bundle.scope, scope_id),
    ).fetchone()
    if row is not None and int(row[0]) >= bundle.version:
        return False
    conn.execute(
        "INSERT INTO campaign_bundles(scope, scope_id, version, bundle, applied_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT(scope, scope_id) DO UPDATE SET"
        " version = excluded.version, bundle = excluded.bundle, applied_at = excluded.applied_at",
        (bundle.scope, scope_id, bundle.version, bundle.model_dump_json(), ctx.now().isoformat()),
    )
    return True


def active_campaigns(bundles: list[CampaignBundle]) -> list[Campaign]:
    """All campaigns of all scopes; a store bundle's campaign overrides a same-id fleet one."""
    rank = {"fleet": 0, "region": 1, "store": 2}
    by_id: dict[str, Campaign] = {}
    for bundle in sorted(bundles, key=lambda b: rank[b.scope]):
        for c in bundle.campaigns:
            by_id[c.campaign_id] = c
    return sorted(by_id.values(), key=lambda c: c.campaign_id)
