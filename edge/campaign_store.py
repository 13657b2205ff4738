"""The campaign bundles this store runs: one per scope (fleet, region, store), newest version wins.

The active campaign list is held in memory and rebuilt only when the table's change counter
(``campaigns_rev`` in meta, moved by triggers on every change, whoever makes it) differs from
the one it was built at: pricing reads one meta row, not the bundles.
"""

from __future__ import annotations

import sqlite3
from typing import Literal

from edge.context import StoreContext
from edge.errors import conflict
from protocol.campaigns import Campaign, CampaignBundle, active_campaigns

REV_KEY = "campaigns_rev"
# applied: stored; held: this very bundle is what the store already runs (a retained bundle
# delivered again on reconnect); stale: older than what it runs, or another bundle under the
# version it runs.
Outcome = Literal["applied", "held", "stale"]


def stored_bundles(conn: sqlite3.Connection) -> list[CampaignBundle]:
    rows = conn.execute("SELECT bundle FROM campaign_bundles ORDER BY scope, scope_id").fetchall()
    return [CampaignBundle.model_validate_json(r[0]) for r in rows]


def applies_here(bundle: CampaignBundle, ctx: StoreContext) -> bool:
    if bundle.scope == "fleet":
        return True
    if bundle.scope == "region":
        return bundle.scope_id == ctx.config.store.region
    return bundle.scope_id == ctx.store_id


def apply_bundle(conn: sqlite3.Connection, ctx: StoreContext, bundle: CampaignBundle) -> Outcome:
    """Store ``bundle`` if it is for this store and newer than what we run."""
    if not applies_here(bundle, ctx):
        raise conflict("bundle_not_for_this_store",
                       f"bundle for {bundle.scope} {bundle.scope_id} does not apply here")
    scope_id = bundle.scope_id or ""
    row = conn.execute(
        "SELECT version, bundle FROM campaign_bundles WHERE scope = ? AND scope_id = ?",
        (bundle.scope, scope_id),
    ).fetchone()
    if row is not None:
        # Newer is by (generation, version): read from the bundle held (a rare path).
        ours = CampaignBundle.model_validate_json(row[1])
        if ours.order >= bundle.order:
            return "held" if ours.order == bundle.order and _same(row[1], bundle) else "stale"
    conn.execute(
        "INSERT INTO campaign_bundles(scope, scope_id, version, bundle, applied_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT(scope, scope_id) DO UPDATE SET"
        " version = excluded.version, bundle = excluded.bundle, applied_at = excluded.applied_at",
        (bundle.scope, scope_id, bundle.version, bundle.model_dump_json(), ctx.now().isoformat()),
    )
    return "applied"


def _same(stored: str, bundle: CampaignBundle) -> bool:
    # The signature is left out: a hub whose key was replaced signs the same bundle anew.
    return (CampaignBundle.model_validate_json(stored).model_dump(exclude={"signature"})
            == bundle.model_dump(exclude={"signature"}))


class ActiveCampaigns:
    """The campaigns pricing uses, rebuilt when ``campaigns_rev`` moved since the last build.

    ``current`` runs inside the caller's read or write transaction, so a quote or a sale is
    priced with the campaigns of the same snapshot it reads the member from. It is called on
    the reader's and the writer's threads: the state is one tuple, replaced whole.
    """

    def __init__(self) -> None:
        self._state: tuple[str | None, list[Campaign]] = (None, [])

    def current(self, conn: sqlite3.Connection) -> list[Campaign]:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (REV_KEY,)).fetchone()
        rev = row[0] if row is not None else None
        built_at, campaigns = self._state
        if rev != built_at or built_at is None:
            campaigns = active_campaigns(stored_bundles(conn))
            self._state = (rev, campaigns)
        return campaigns
