"""The campaign bundles the hub holds, read back: each scope's signed manifest decoded into the
bundle its stores run, with the key that signed it and the topic it is retained on.

The table keeps the signed manifest only (``campaign_bundles.manifest``): what the stores got,
byte for byte. Reading it back rather than keeping a second copy means the listing can never
say something other than what was published.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hub.core.db import Tx
from protocol import topics
from protocol.campaigns import CampaignBundle
from protocol.codec import decode
from protocol.sync import CampaignManifest

# How the fleet's scope (whose scope_id is empty) is named in a URL: ``/v1/campaigns/fleet/-``.
# "-" alone is a valid region id too, but the scope before it says which is meant.
FLEET_ID = "-"


@dataclass(frozen=True)
class Held:
    scope: str
    scope_id: str | None
    generation: int
    version: int
    key_id: str
    topic: str
    bundle: CampaignBundle

    def view(self) -> dict[str, Any]:
        """As the HQ API answers it (the signature left out: it is the stores' to check)."""
        return {"scope": self.scope, "scope_id": self.scope_id, "generation": self.generation,
                "version": self.version, "issued_at": self.bundle.issued_at,
                "key_id": self.key_id, "topic": self.topic,
                "campaigns": [c.model_dump(mode="json") for c in self.bundle.campaigns]}


_SELECT = "SELECT scope, scope_id, generation, version, manifest FROM campaign_bundles"


def _held(row: Any) -> Held:
    scope, scope_id, generation, version, payload = row
    manifest = decode(bytes(payload), CampaignManifest)
    return Held(scope=str(scope), scope_id=str(scope_id) or None, generation=int(generation),
                version=int(version), key_id=manifest.key_id,
                topic=topics.campaign_topic(str(scope), str(scope_id) or None),
                bundle=manifest.bundle)


def listing(tx: Tx) -> list[Held]:
    """Every bundle held: the fleet's, then each region's, then each store's."""
    order = "CASE scope WHEN 'fleet' THEN 0 WHEN 'region' THEN 1 ELSE 2 END, scope_id"
    return [_held(r) for r in tx.all(f"{_SELECT} ORDER BY {order}")]


def one(tx: Tx, scope: str, scope_id: str | None) -> Held | None:
    row = tx.one(f"{_SELECT} WHERE scope = ? AND scope_id = ?", (scope, scope_id or ""))
    return _held(row) if row is not None else None


def for_store(tx: Tx, store_id: str, region: str | None) -> list[Held]:
    """The bundles a store of ``region`` runs: the fleet's, its region's, its own (each read by
    its key, not every bundle decoded)."""
    wanted = [("fleet", None), *([("region", region)] if region else []), ("store", store_id)]
    return [h for scope, scope_id in wanted if (h := one(tx, scope, scope_id)) is not None]
