"""What a campaign did, measured against its holdout (HQ.md, principle 9: effect is measured,
not assumed).

A campaign with a ``holdout_percent`` holds back that share of the members it would reach: the
till refuses them the offer (``protocol.holdout.held_out``, one draw the hub makes alike).
Whatever the members who could have the offer (**treated**) did beyond what the **held-out**
members did is what the campaign made happen. This report reads it from what the hub holds:
the campaign as last pushed (``campaign_bundles``), the members as the hub sees them now, and
what they bought (``sales_facts``).

How each figure is counted, in the words a marketer reads:

* **The campaign** is its latest pushed definition: of the bundles the hub holds (the newest
  of each scope), the most recently issued one that carries it. It **applies at** the stores
  of every held bundle that carries it: the whole chain, a region's stores, or one store.
* **The window** is a range of store-local days, both ends included: ``start``/``end`` when
  asked for; else from the campaign's ``starts_on`` (without one: the day, on the chain's
  calendar, the first bundle carrying it was issued, kept in ``campaign_first_pushed`` though
  bundles replace each other) to its ``ends_on``, never later
  than yesterday (today is not over). A window that ends before it starts is refused.
* **The audience**: the live members (not merged into another, not erased) the campaign would
  reach: of its tiers, held by its audience exactly as the till decides (tags: the store's,
  HQ's and the rules'; the segments marked for the tills; the latest RFM run's group; the
  lifecycle stage), and who could be reached at its stores: for a chain-wide campaign every
  member; else a member whose home store is one of its stores or who bought at one of them
  on or before the window's last day. Each counts once, as the member they now are.
* The audience is evaluated **as of now**, not as it was in the window: the hub keeps no
  history of every tag, segment and RFM group. The split stays fair, because whether a member
  is held out depends only on their id and the campaign's, never on the audience, so any
  member the audience gained or lost since lands in either group alike. It is not fair when
  the audience follows what the campaign changes: a ``sleeping`` member the offer brought
  back is no longer ``sleeping`` and leaves the treated group, while the held-out member who
  did not come back stays (the same for RFM groups and segments on recent purchases); such an
  effect is understated, and ``notes`` says so. Tags and tiers rarely move with one campaign.
* **Treated** / **held out**: by ``protocol.holdout.held_out(campaign_id, member_id,
  holdout_percent)``. Without a holdout (0 %) nobody is held out: the treated figures are
  shown, and ``note`` says that the effect cannot be measured.
* **Visitors**: members with at least one purchase in the window at the campaign's stores
  (where the offer could reach them: a purchase elsewhere says nothing of it); **visit rate**:
  visitors / members. **Spend**: what they paid there in the window, less what was refunded
  there in it (a refund in the window counts even for a sale made before it); **spend per
  member**: spend / members, the average, not rounded. Purchases under an id since merged into
  the member count as the member's.
* **Discounts**: what the campaign took off its members' sales there in the window (the sale's
  discount rows naming the campaign, or a coupon it issued), and how many sales had one. The
  held-out group's should be 0; walk-in customers' and members' outside the audience are not
  counted.
* **Uplift**, its 95 % intervals, and **ROI** as the journey report computes them
  (``hub.reports.journey_effect``: Wald for the visit rate, Welch for spend per member; the
  incremental spend and margin rounded towards zero); the ROI's costs are the treated group's
  discounts.
* **Completeness**: per store of the campaign's, how far the hub has merged its log and how
  many events it has not yet; a store merged to before the window's end may still be missing
  purchases of it.

Scope: a caller sees the members they see (``Scope.member_filter``) and, below the chain, only
the purchases made in their stores (as PostgreSQL's row-level security has it): the campaign's
stores that they cover. A visit reaches a member for them only at such a store.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hub.auth.scope import Scope
from hub.campaigns.bundles import held_manifests
from hub.core.clock import now_ms as clock_ms
from hub.core.db import Tx, in_chunks
from hub.reports.journey_effect import roi, store_completeness, uplift
from hub.stores.registry import is_virtual
from protocol.campaigns import Campaign, CampaignBundle, Targeting
from protocol.codec import decode
from protocol.errors import ServiceError
from protocol.hlc import COUNTER_BITS
from protocol.holdout import held_out
from protocol.sync import CampaignManifest

DAY_MS = 86_400_000
RANK = {"fleet": 0, "region": 1, "store": 2}  # a narrower scope's definition wins at the till


@dataclass
class Member:
    """One member of the audience as they now are, and what they did in the window."""

    held: bool  # held out: the till refused them the offer
    visited: bool = False
    spend: int = 0
    discount: int = 0
    discounted: set[str] = field(default_factory=set)  # the sales the campaign discounted


@dataclass(frozen=True)
class Pushed:
    """The campaign as the hub last pushed it, and where it applies."""

    campaign: Campaign
    bundles: list[CampaignBundle]  # every held bundle that carries it
    stores: frozenset[str] | None  # None: the whole chain
    first_pushed_ms: int | None = None  # the first bundle that carried it, replaced since or not

    @property
    def first_issued(self) -> datetime:
        held = min(b.issued_at for b in self.bundles)
        if self.first_pushed_ms is None:
            return held
        return min(held, datetime.fromtimestamp(self.first_pushed_ms / 1000, held.tzinfo))


def effect(tx: Tx, scope: Scope, campaign_id: str, *, start: date | None, end: date | None,
           margin_percent: int, today: date, zone: str | None = None,
           now_ms: int | None = None) -> dict[str, Any]:
    """The campaign's effect as the caller may see it (404 for a campaign never pushed, 422
    for an empty window). ``zone``: the chain's calendar, for the day a bundle was issued
    (None: the offset it was issued with); ``now_ms``: for the stores' completeness."""
    scope.require("reports.read")
    if not 0 <= margin_percent <= 100:
        raise ServiceError("bad_margin", "margin_percent is 0 to 100", 422)
    pushed = latest(tx, campaign_id)
    if pushed is None:
        raise ServiceError("campaign_not_found", "no campaign with this id was pushed", 404)
    campaign = pushed.campaign
    start, end = window(pushed, start=start, end=end, today=today, zone=zone)

    # The stores whose sales count: the campaign's, those the caller covers, never the hub's
    # own streams (no till there applies a campaign).
    covered = scope.store_ids(tx)
    everywhere = pushed.stores is None

    def counted(store: str) -> bool:
        return (not is_virtual(store) and (everywhere or store in (pushed.stores or ()))
                and (covered is None or store in covered))

    known = sorted(str(s) for (s,) in tx.all("SELECT store_id FROM stores"))
    stores = [s for s in sorted(set(known) | set(pushed.stores or ())) if counted(s)]
    members = {m: Member(held_out(campaign_id, m, campaign.holdout_percent))
               for m in audience(tx, scope, pushed, stores, end)}
    _window_facts(tx, campaign_id, members, counted, start, end)

    treated = [members[m] for m in sorted(members) if not members[m].held]
    held = [members[m] for m in sorted(members) if members[m].held]
    compared = uplift(treated, held)
    cost = sum(x.discount for x in treated)
    priced = roi(treated, held, margin_percent=margin_percent, coupon_cost=cost, sent=[],
                 prices={})
    note = None
    if not campaign.holdout_percent:
        note = ("the campaign holds nobody out: its effect cannot be measured without a"
                " holdout (only the treated figures are shown)")
    if len(treated) < 2 or len(held) < 2:
        # The journey report's words speak of windows; here a group is simply too small.
        empty = [name for name, g in (("treated", treated), ("held-out", held)) if not g]
        compared["note"] = (f"no {empty[0]} member in the audience: nothing to compare"
                            if empty else "a group has fewer than 2 members: no confidence"
                            " interval")
        if empty:
            priced["note"] = "no incremental spend without members in both groups"
    notes = ["the audience is evaluated as of now, not as it was in the window",
             "visits, spend and discounts count at the campaign's stores the caller covers"]
    if campaign.audience is not None and any(v is not None for v in (
            campaign.audience.stages, campaign.audience.rfm_groups,
            campaign.audience.segments)):
        notes.append("the audience follows stages, RFM groups or segments, which the"
                     " campaign itself moves: members it brought back may have left the"
                     " treated group, so the effect may be understated")
    if end >= today:
        notes.append("the window runs into today or later: its last days are not over")
    facts = store_completeness(tx, scope, now_ms if now_ms is not None else clock_ms())
    return {
        "campaign_id": campaign_id,
        "name": campaign.name,
        "rule": campaign.rule.kind,
        "holdout_percent": campaign.holdout_percent,
        "pushed_in": [{"scope": b.scope, "scope_id": b.scope_id, "generation": b.generation,
                       "version": b.version, "issued_at": b.issued_at}
                      for b in sorted(pushed.bundles, key=lambda b: (RANK[b.scope],
                                                                     b.scope_id or ""))],
        "chain_wide": everywhere,
        "stores": stores,
        "window": {"start": start, "end": end, "days": (end - start).days + 1},
        "audience": len(members),
        "groups": {"treated": _group(treated), "held_out": _group(held)},
        "uplift": compared,
        "roi": {"margin_percent": priced["margin_percent"],
                "incremental_spend": priced["incremental_spend"],
                "incremental_margin": priced["incremental_margin"],
                "discount_cost": priced["coupon_cost"], "costs": priced["costs"],
                "roi": priced["roi"], "note": priced["note"]},
        "completeness": {
            "stores": [s for s in facts["stores"] if s["store_id"] in set(stores)],
            "sales_facts_behind": facts["sales_facts_behind"], "window_ends_on": end},
        "note": note,
        "notes": notes,
    }


def latest(tx: Tx, campaign_id: str) -> Pushed | None:
    """The campaign's latest pushed definition and the stores it applies at (None: never
    pushed, or no longer in any bundle the hub holds)."""
    carrying: list[tuple[CampaignBundle, Campaign]] = []
    for _topic, payload in held_manifests(tx):
        bundle = decode(payload, CampaignManifest).bundle
        carrying += [(bundle, c) for c in bundle.campaigns if c.campaign_id == campaign_id]
    if not carrying:
        return None
    # The most recently issued bundle's definition; on a tie, the narrower scope's, as the
    # till lets a store bundle's campaign override a same-id fleet one.
    _bundle, campaign = max(carrying, key=lambda bc: (bc[0].issued_at, RANK[bc[0].scope]))
    bundles = [b for b, _c in carrying]
    first = tx.scalar("SELECT issued_ms FROM campaign_first_pushed WHERE campaign_id = ?",
                      (campaign_id,))
    first_ms = None if first is None else int(first)
    if any(b.scope == "fleet" for b in bundles):
        return Pushed(campaign, bundles, None, first_ms)
    stores = {b.scope_id for b in bundles if b.scope == "store" and b.scope_id}
    regions = sorted({b.scope_id for b in bundles if b.scope == "region" and b.scope_id})
    for chunk, marks in in_chunks(regions):
        stores.update(str(s) for (s,) in tx.all(
            f"SELECT store_id FROM stores WHERE region IN ({marks})", chunk))
    return Pushed(campaign, bundles, frozenset(stores), first_ms)


def window(pushed: Pushed, *, start: date | None, end: date | None, today: date,
           zone: str | None) -> tuple[date, date]:
    """The days measured, both ends included (see the module's text); 422 when none."""
    c = pushed.campaign
    if start is None:
        issued = pushed.first_issued
        start = c.starts_on or (issued.astimezone(ZoneInfo(zone)) if zone else issued).date()
    if end is None:
        yesterday = today - timedelta(days=1)
        end = min(c.ends_on, yesterday) if c.ends_on is not None else yesterday
    if end < start:
        raise ServiceError("bad_window", f"the window ends ({end}) before it starts ({start}):"
                           " no day to measure", 422)
    return start, end


def audience(tx: Tx, scope: Scope, pushed: Pushed, stores: list[str], end: date) -> list[str]:
    """The live members in the caller's scope the campaign would reach (see the module's
    text), as they now are."""
    c = pushed.campaign
    where, params = scope.member_filter("m")
    sql = ("SELECT m.member_id, m.tier, m.tags, m.home_store FROM members m"
           f" WHERE m.merged_into IS NULL AND m.erased = 0 AND {where}")
    args: list[Any] = list(params)
    if c.tiers is not None:
        sql += f" AND m.tier IN ({', '.join('?' * len(c.tiers))})"
        args += c.tiers
    if pushed.stores is not None:
        # A candidate: home at one of its stores, or bought at one the caller covers (when is
        # checked below: on or before the window's last day).
        home = sorted(pushed.stores) or [""]
        sql += (f" AND (m.home_store IN ({', '.join('?' * len(home))}) OR EXISTS (SELECT 1"
                " FROM member_stores ms WHERE ms.member_id = m.member_id AND ms.purchases > 0"
                f" AND ms.store_id IN ({', '.join('?' * len(stores or ['']))})))")
        args += [*home, *(stores or [""])]
    rows = [(str(m), str(t), json.loads(tags), str(h)) for m, t, tags, h in tx.all(sql, args)]
    if pushed.stores is not None:
        away = [m for m, _t, _tags, h in rows if h not in pushed.stores]
        reached = _visited_by(tx, away, stores, end)
        rows = [r for r in rows if r[3] in pushed.stores or r[0] in reached]
    if c.audience is None:
        return sorted(m for m, *_rest in rows)
    who = _targeting(tx, c, {m: tags for m, _t, tags, _h in rows})
    return sorted(m for m in who if c.audience.holds(who[m]))


def _visited_by(tx: Tx, members: list[str], stores: list[str], end: date) -> set[str]:
    """Which of ``members`` bought at one of ``stores`` on or before ``end``."""
    wanted = set(stores)
    found: set[str] = set()
    later: list[str] = []
    for chunk, marks in in_chunks(members):
        last: dict[str, str] = {}
        for m, s, day in tx.all("SELECT member_id, store_id, last_date FROM member_stores"
                                f" WHERE member_id IN ({marks}) AND purchases > 0", chunk):
            if str(s) in wanted and day is not None:
                last[str(m)] = min(last.get(str(m), str(day)), str(day))
        # Their last purchase there is on or before the end: so was one, surely.
        found.update(m for m, day in last.items() if day <= end.isoformat())
        later += [m for m, day in last.items() if day > end.isoformat()]
    if later:
        owner = _aliases(tx, later)
        high = (_day_ms(end) + 2 * DAY_MS) << COUNTER_BITS  # past the end in any zone
        for chunk, marks in in_chunks(sorted(owner)):
            for m, s in tx.all(
                    "SELECT member_id, store_id FROM sales_facts WHERE member_id IN"
                    f" ({marks}) AND kind = 'sale' AND hlc < ? AND local_date <= ?",
                    (*chunk, high, end.isoformat())):
                if str(s) in wanted:
                    found.add(owner[str(m)])
    return found


def _targeting(tx: Tx, c: Campaign, store_tags: dict[str, list[str]]) -> dict[str, Targeting]:
    """What the till's ``Audience.holds`` looks at of each member, as the member directory
    brings it to the stores (``hub.members.directory``); only what the audience names is
    read."""
    wants = c.audience
    assert wants is not None
    members = sorted(store_tags)
    tags = {m: set(store_tags[m]) for m in members}
    segments: dict[str, set[str]] = {m: set() for m in members}
    rfm: dict[str, str] = {}
    stage: dict[str, str] = {}
    run = tx.scalar("SELECT run_id FROM rfm_runs ORDER BY created_ms DESC, run_id DESC LIMIT 1")
    for chunk, marks in in_chunks(members):
        if wants.tags is not None:
            for m, tag in tx.all(
                    f"SELECT member_id, tag FROM hq_member_tags WHERE member_id IN ({marks})"
                    " UNION SELECT g.member_id, s.tag FROM segment_members g JOIN segments s"
                    f" ON s.segment_id = g.segment_id WHERE g.member_id IN ({marks})"
                    " AND s.tag IS NOT NULL AND s.state = 'active'", [*chunk, *chunk]):
                tags[str(m)].add(str(tag))
        if wants.segments is not None:
            for m, sid in tx.all(
                    "SELECT g.member_id, s.segment_id FROM segment_members g JOIN segments s"
                    f" ON s.segment_id = g.segment_id WHERE g.member_id IN ({marks})"
                    " AND s.for_tills = 1 AND s.state = 'active'", chunk):
                segments[str(m)].add(str(sid))
        if wants.rfm_groups is not None and run is not None:
            rfm.update((str(m), str(g)) for m, g in tx.all(
                f"SELECT member_id, grp FROM rfm_scores WHERE run_id = ? AND member_id IN"
                f" ({marks})", [run, *chunk]))
        if wants.stages is not None:
            stage.update((str(m), str(s)) for m, s in tx.all(
                f"SELECT member_id, stage FROM member_lifecycle WHERE member_id IN ({marks})",
                chunk))
    return {m: Targeting(tags=frozenset(tags[m]), segments=frozenset(segments[m]),
                         rfm_group=rfm.get(m), stage=stage.get(m), member_id=m)
            for m in members}


def _aliases(tx: Tx, members: list[str]) -> dict[str, str]:
    """Every id that is now one of ``members`` (merges followed, each hop), and the member:
    the stores keep writing the id they knew."""
    owner = {m: m for m in members}
    todo = sorted(members)
    for _hop in range(8):  # merges are kept one step deep; a few hops at most
        found: dict[str, str] = {}
        for chunk, marks in in_chunks(todo):
            found.update({str(a): owner[str(b)] for a, b in tx.all(
                f"SELECT member_id, merged_into FROM members WHERE merged_into IN ({marks})",
                chunk) if str(a) not in owner})
        if not found:
            break
        owner.update(found)
        todo = sorted(found)
    return owner


def _window_facts(tx: Tx, campaign_id: str, members: dict[str, Member],
                  counted: Callable[[str], bool], start: date, end: date) -> None:
    """Each member's visits, spend and the campaign's discounts in the window, at the stores
    that count, over every id that is now them."""
    if not members:
        return
    # The campaign's own discount rows name it; a coupon's name the coupon, so the coupons it
    # issued (a birthday gift's, or HQ's for it) are looked up.
    codes = {str(c) for (c,) in tx.all("SELECT coupon_code FROM coupons WHERE campaign_id = ?",
                                       (campaign_id,))}
    owner = _aliases(tx, sorted(members))
    # HLC bounds a day wider than the window each side (any zone's day lies within them), so
    # the member index narrows the read; the store-local date decides.
    low = (_day_ms(start) - DAY_MS) << COUNTER_BITS
    high = (_day_ms(end) + 2 * DAY_MS) << COUNTER_BITS
    for chunk, marks in in_chunks(sorted(owner)):
        for member, kind, doc, store, amount, ref in tx.all(
                "SELECT member_id, kind, doc_id, store_id, amount, ref FROM sales_facts WHERE"
                f" member_id IN ({marks}) AND kind IN ('sale', 'refund', 'discount')"
                " AND hlc >= ? AND hlc < ? AND local_date >= ? AND local_date <= ?",
                (*chunk, low, high, start.isoformat(), end.isoformat())):
            if not counted(str(store)):
                continue
            unit = members[owner[str(member)]]
            if kind == "discount":
                if ref is not None and (str(ref) == campaign_id or str(ref) in codes):
                    unit.discount += int(amount)
                    unit.discounted.add(str(doc))
            else:
                unit.spend += int(amount)
                unit.visited = unit.visited or kind == "sale"


def _group(members: list[Member]) -> dict[str, Any]:
    n = len(members)
    visitors = sum(1 for x in members if x.visited)
    spend = sum(x.spend for x in members)
    return {"members": n, "visitors": visitors, "visit_rate": visitors / n if n else None,
            "spend": spend, "spend_per_member": spend / n if n else None,
            "discount": sum(x.discount for x in members),
            "discounted_sales": sum(len(x.discounted) for x in members)}


def _day_ms(day: date) -> int:
    """Midnight UTC of ``day``, in ms."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
