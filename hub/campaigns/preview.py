"""What a campaign bundle would do, told before it is signed: which stores it reaches, which
campaigns it adds, removes or changes against the bundle held for its scope, and what a sample
basket would cost at one of those stores — priced by ``protocol.pricing`` with the campaigns
that store's till would run (``protocol.campaigns.active_campaigns``), so the answer is the
till's. Nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from hub.campaigns import held
from hub.core.db import Tx
from hub.stores import registry
from protocol import pricing
from protocol.campaigns import CampaignBundle, active_campaigns
from protocol.errors import ServiceError
from protocol.pricing import BasketLine, MemberContext


def reach(tx: Tx, scope: str, scope_id: str | None) -> list[str]:
    """The stores a bundle of this scope reaches (ids, sorted); a region with no store or a
    store the hub does not know is 422, naming ``scope_id``."""
    if scope == "fleet":
        return [str(s) for (s,) in tx.all("SELECT store_id FROM stores ORDER BY store_id")
                if not registry.is_virtual(str(s))]
    if scope == "region":
        found = [str(s) for (s,) in tx.all(
            "SELECT store_id FROM stores WHERE region = ? ORDER BY store_id", (scope_id,))]
        if not found:
            raise ServiceError("unknown_region", f"no store is in region {scope_id!r}", 422,
                               part="scope_id")
        return found
    if scope_id is None or registry.is_virtual(scope_id) or tx.scalar(
            "SELECT 1 FROM stores WHERE store_id = ?", (scope_id,)) is None:
        raise ServiceError("unknown_store", f"no store {scope_id!r}", 422, part="scope_id")
    return [scope_id]


def changes(before: CampaignBundle | None, after: CampaignBundle) -> dict[str, list[str]]:
    """Campaign ids added, removed, changed (any field) and unchanged against ``before``."""
    old = {c.campaign_id: c.model_dump(mode="json") for c in (before.campaigns if before
                                                               else [])}
    new = {c.campaign_id: c.model_dump(mode="json") for c in after.campaigns}
    both = new.keys() & old.keys()
    return {"added": sorted(new.keys() - old.keys()), "removed": sorted(old.keys() - new.keys()),
            "changed": sorted(k for k in both if new[k] != old[k]),
            "unchanged": sorted(k for k in both if new[k] == old[k])}


@dataclass(frozen=True)
class Sample:
    """A basket to price: at ``store_id`` (None: the first store reached), on ``day`` (None:
    today by the store's calendar), for a member of ``tier`` (None: a walk-in customer)."""

    lines: list[BasketLine]
    store_id: str | None = None
    day: date | None = None
    tier: str | None = None
    birthday: date | None = None


def price(tx: Tx, bundle: CampaignBundle, sample: Sample, reached: list[str], *,
          now_ms: int, chain_zone: str) -> dict[str, Any]:
    """``sample`` priced at its store with the bundles that store runs, ``bundle`` in place of
    the one held for its scope."""
    store = sample.store_id or (reached[0] if reached else None)
    if store is None:
        raise ServiceError("basket_no_store", "the bundle reaches no store to price the"
                           " basket at", 422, part="basket.store_id")
    if store not in reached:
        raise ServiceError("basket_store_not_reached", f"the bundle does not reach store"
                           f" {store}", 422, part="basket.store_id")
    running = [h.bundle for h in held.for_store(tx, store, registry.store_region(tx, store))
               if (h.scope, h.scope_id) != (bundle.scope, bundle.scope_id)]
    campaigns = active_campaigns([*running, bundle])
    zone = registry.store_zone(tx, store, chain_zone)
    day = sample.day or datetime.fromtimestamp(now_ms / 1000, ZoneInfo(zone)).date()
    member = (MemberContext(tier=sample.tier, birthday=sample.birthday)
              if sample.tier is not None else None)
    try:
        quote = pricing.evaluate(sample.lines, campaigns, member, day)
    except ValueError as exc:
        raise ServiceError("bad_basket", str(exc), 422, part="basket") from None
    return {"store_id": store, "day": day, "subtotal": quote.subtotal,
            "discount_total": quote.discount_total, "total": quote.total,
            "points_earned": quote.points_earned,
            "discounts": [{"kind": d.kind, "label": d.label, "amount": d.amount,
                           "campaign_id": d.campaign_id} for d in quote.discounts],
            "campaigns": [c.campaign_id for c in campaigns]}
