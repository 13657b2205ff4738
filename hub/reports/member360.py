"""The member 360 card (会员接触卡片): everything about one member in one read, as the caller
may see it — the profile (masked below HQ admin, per ``hub.auth.member_view``), tier and the
spend still needed for the next, balances (per store only of the caller's stores), points lots
by expiry date, stored value principal and bonus, open and past coupons, tags with their
source, segments, RFM history, lifecycle stage and its changes, visits and stores, favourite
categories and products, recent sales and refunds, the assigned guide, the journeys they
entered and the messages sent to them (``hub.automation``, ``hub.notify``).
"""

from __future__ import annotations

from typing import Any

from hub.auth import member_view
from hub.auth.scope import Scope, per_store
from hub.core.db import Tx
from hub.members import lifecycle, tags, tiers
from hub.members.identity import canonical
from hub.notify import outbox
from hub.reports import rfm_members

RECENT = 20
FAVOURITES = 5


def _ids(tx: Tx, member_id: str) -> list[str]:
    """The member and every id merged into them: the ids stores wrote."""
    return [member_id, *(str(r[0]) for r in tx.all(
        "SELECT member_id FROM members WHERE merged_into = ? ORDER BY member_id",
        (member_id,)))]


def tier_path(tx: Tx, rules: tiers.TierRules, member_id: str, tier: str,
              now_ms: int, zone: str) -> dict[str, Any]:
    """Spend in the tier window, and what the next tier up needs (None at the top)."""
    since = tiers.window_start(now_ms, rules.window_months, zone)
    spend = int(tx.scalar("SELECT coalesce(sum(amount), 0) FROM spend_months WHERE member_id"
                          " = ? AND month >= ?", (member_id, since), default=0))
    above = sorted((need, name) for name, need in rules.thresholds.items() if need > spend)
    nxt = above[0] if above else None
    return {"tier": tier, "window_months": rules.window_months, "window_spend": spend,
            "next_tier": nxt[1] if nxt else None,
            "spend_needed": nxt[0] - spend if nxt else 0}


def card(tx: Tx, scope: Scope, member_id: str, *, rules: tiers.TierRules, now_ms: int,
         zone: str) -> dict[str, Any]:
    view = member_view.member(tx, scope, member_id)  # 404 outside the scope, masked
    mid = canonical(tx, member_id)
    ids = _ids(tx, mid)
    marks = ", ".join("?" * len(ids))
    lots = [{"expires_on": r[0], "points": int(r[1])} for r in tx.all(
        f"SELECT expires_on, sum(remaining) FROM point_lots WHERE member_id IN ({marks})"
        " AND remaining > 0 GROUP BY expires_on ORDER BY expires_on IS NULL, expires_on", ids)]
    sv = tx.one("SELECT coalesce(sum(sv_principal), 0), coalesce(sum(sv_bonus), 0) FROM shares"
                " WHERE member_id = ?", (mid,))
    coupons = [{"coupon_code": r[0], "store_id": r[1], "campaign_id": r[2], "kind": r[3],
                "value": int(r[4]), "min_spend": int(r[5]), "expires_on": r[6], "state": r[7]}
               for r in tx.all(
        "SELECT coupon_code, store_id, campaign_id, kind, value, min_spend, expires_on, state"
        f" FROM coupons WHERE member_id IN ({marks}) ORDER BY state = 'issued' DESC, hlc DESC"
        " LIMIT 100", ids)]
    segs = [{"segment_id": r[0], "name": r[1], "for_tills": bool(r[2]), "since_ms": int(r[3])}
            for r in tx.all(
        "SELECT s.segment_id, s.name, s.for_tills, g.since_ms FROM segment_members g JOIN"
        " segments s ON s.segment_id = g.segment_id WHERE g.member_id = ? ORDER BY s.name",
        (mid,))]
    stage = tx.one("SELECT stage, since FROM member_lifecycle WHERE member_id = ?", (mid,))
    act = tx.one("SELECT first_date, last_date, purchases, refunds, spend, items FROM"
                 " member_activity WHERE member_id = ?", (mid,))
    stores = per_store(scope, tx, [
        {"store_id": r[0], "purchases": int(r[1]), "spend": int(r[2]), "last_date": r[3]}
        for r in tx.all("SELECT store_id, purchases, spend, last_date FROM member_stores"
                        " WHERE member_id = ? ORDER BY purchases DESC, store_id", (mid,))])
    categories = [{"category": r[0], "spend": int(r[1]), "items": int(r[2])} for r in tx.all(
        "SELECT category, sum(spend), sum(items) FROM member_months WHERE member_id = ?"
        " GROUP BY category HAVING sum(items) > 0 ORDER BY sum(spend) DESC, category LIMIT ?",
        (mid, FAVOURITES))]
    products = [{"sku": r[0], "category": r[1], "qty": int(r[2]), "amount": int(r[3])}
                for r in tx.all(
        "SELECT sku, max(category), sum(qty), sum(amount) FROM sales_facts WHERE member_id IN"
        f" ({marks}) AND kind IN ('line', 'refund_line') GROUP BY sku HAVING sum(qty) > 0"
        " ORDER BY sum(qty) DESC, sku LIMIT ?", (*ids, FAVOURITES))]
    stores_seen = None if scope.role.scope == "all" else scope.store_ids(tx)
    recent = [{"doc_id": r[0], "kind": r[1], "store_id": r[2], "local_date": r[3],
               "amount": int(r[4]), "items": int(r[5]), "points": int(r[6])}
              for r in tx.all(
        "SELECT doc_id, kind, store_id, local_date, amount, qty, points FROM sales_facts"
        f" WHERE member_id IN ({marks}) AND kind IN ('sale', 'refund')"
        " ORDER BY hlc DESC, doc_id LIMIT ?", (*ids, RECENT))
              if stores_seen is None or r[2] in stores_seen]
    return {
        "member": view,
        "tier": tier_path(tx, rules, mid, str(view["tier"]), now_ms, zone),
        "points": {"balance": view["points"], "lots": lots},
        "stored_value": {"principal": int(sv[0]), "bonus": int(sv[1])},
        "coupons": coupons,
        "tags": tags.of_member(tx, mid),
        "segments": segs,
        "rfm": rfm_members.history(tx, scope, mid),
        "lifecycle": {"stage": stage[0] if stage else None, "since": stage[1] if stage else None,
                      "changes": lifecycle.history(tx, mid)},
        "visits": {"first_purchase": act[0] if act else None,
                   "last_purchase": act[1] if act else None,
                   "purchases": int(act[2]) if act else 0, "refunds": int(act[3]) if act else 0,
                   "spend": int(act[4]) if act else 0, "items": int(act[5]) if act else 0,
                   "stores": stores},
        "favourite_categories": categories,
        "favourite_products": products,
        "recent": recent,
        "guide_id": view.get("guide_id"),
        "journeys": [{"journey_id": j, "name": n, "occasion": o, "entered_ms": int(at),
                      "held_out": bool(h), "state": st} for j, n, o, at, h, st in tx.all(
            "SELECT e.journey_id, j.name, e.occasion, e.entered_ms, e.held_out, e.state FROM"
            f" journey_entries e JOIN journeys j ON j.journey_id = e.journey_id WHERE"
            f" e.member_id IN ({marks}) ORDER BY e.entered_ms DESC LIMIT ?", (*ids, RECENT))],
        # A message's text may name the member: below HQ admin it is left out.
        "messages": [{k: m[k] for k in ("channel", "purpose", "state", "reason", "created_ms",
                                        "sent_ms", "journey_id")}
                     | ({} if scope.role.masked else {"text": m["text"]})
                     for m in outbox.listing(tx, member_id=mid, limit=RECENT)],
    }
