"""Campaigns and coupons over a period, across the chain (HQ.md, principles 5, 6 and 9).

One row per campaign: the promotions HQ pushes to the tills in bundles, the journeys HQ runs
(their coupons name the journey as their campaign), and any other campaign id the log names (a
campaign no longer in a held bundle); coupons that name no campaign make one row of their own
(``campaign_id`` null). How each figure is counted, in the words a marketer reads:

* **Issued**: coupons issued in the period, on the calendar of the stream that issued them (a
  store's own zone, else the chain's). A store's coupons count at that store; the coupons HQ
  or the online channel issued (virtual streams) count, below the whole chain, at the member's
  home store: under a region or store filter those are the coupons *for* its members.
* **Redeemed**: redemptions that stand (the first of a coupon, by HLC) made in the period at
  the covered stores, on the redeeming store's calendar, whenever the coupon was issued. A
  later redemption of the same coupon elsewhere is a **conflict**, counted apart.
* **Redemption rate**: redeemed / issued of the same period and stores. Both are what happened
  in the period, not a cohort: a coupon issued before the period and redeemed in it counts in
  ``redeemed`` only, and in a store's view coupons issued elsewhere and redeemed there can take
  the rate above 1.
* **Discount cost**: what the sales of the period at the covered stores took off for the
  campaign, on their store-local day: its promotion rows (a discount naming the campaign) and
  its coupons' rows (a discount, or a coupon tender, naming a coupon it issued). A conflicting
  redemption's discount was given too and counts. Refunds are not taken off: a refund does not
  say whose promotion it gives back.
* **Sales** and **net**: the sales carrying one of those rows, and what they came to after
  every discount (the sale's total), before refunds. A sale carrying two campaigns counts in
  both rows, so sales are not summed in the totals.
* **Effect** (uplift in spend per member, ROI) is not computed here: each campaign's effect
  reads its whole audience over its own window (``hub.reports.campaign_effect``,
  ``hub.reports.journey_effect``), too much to run for every row of a report and not over this
  report's period. ``has_effect`` says a holdout exists to measure against, and ``effect``
  links the endpoint that does.

A pushed campaign in force in the period at a covered store is listed even when nothing was
issued, redeemed or discounted for it (a campaign that did nothing is a finding); anything else
is listed when it has a figure.

Scope: every figure is bound to the covered stores (``Selection.where``). The coupon conflicts
list each redemption of a coupon redeemed more than once when one of them is in the period at
a covered store; a redemption at another store shows its store only (not its sale or amount).
Coupons are named by their codes only: nothing here names or reaches a member.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from hub.auth.scope import Scope
from hub.campaigns.bundles import held_manifests
from hub.core.db import Tx, in_chunks, marks
from hub.reports.period import ReportQuery, Selection, completeness, select_stores
from hub.reports.shape import Kind, Table, ratio, report
from protocol.campaigns import Campaign, CampaignBundle
from protocol.codec import decode
from protocol.hlc import COUNTER_BITS, wall_ms
from protocol.sync import CampaignManifest

RANK = {"fleet": 0, "region": 1, "store": 2}  # a narrower scope's definition wins at the till

COLUMNS: list[tuple[str, Kind]] = [
    ("campaign_id", "text"), ("name", "text"), ("source", "text"), ("issued", "int"),
    ("redeemed", "int"), ("redemption_rate", "ratio"), ("conflicts", "int"),
    ("promotion_discount", "money"), ("coupon_discount", "money"), ("discount_cost", "money"),
    ("sales", "int"), ("net", "money"), ("holdout_percent", "int"), ("has_effect", "int"),
    ("effect", "text")]
CONFLICT_COLUMNS: list[tuple[str, Kind]] = [
    ("coupon_code", "text"), ("campaign_id", "text"), ("redemption", "text"),
    ("store_id", "text"), ("sale_id", "text"), ("amount", "money"), ("at", "text")]

NOTES = [
    "issued: coupons issued in the period on the issuing stream's calendar; below the whole"
    " chain, coupons HQ or the online channel issued count at the member's home store",
    "redeemed: redemptions that stand, made in the period at the covered stores, whenever the"
    " coupon was issued; a later redemption of the same coupon is a conflict, counted apart",
    "redemption rate: redeemed / issued of the same period and stores (activity, not a cohort:"
    " in one store's view it can pass 1)",
    "discount cost: the promotion and coupon discounts (and coupon tenders) of the period's"
    " sales at the covered stores naming the campaign or a coupon it issued, conflicting"
    " redemptions included; refunds are not taken off",
    "net: the totals of the sales carrying the campaign, after every discount, before refunds;"
    " a sale carrying two campaigns counts in both rows",
    "uplift and ROI are not computed here: has_effect marks a campaign or journey with a"
    " holdout, and effect links the report that measures it over the campaign's own window",
]


@dataclass
class _Figures:
    issued: int = 0
    redeemed: int = 0
    conflicts: int = 0
    promotion: int = 0
    coupon: int = 0
    sales: int = 0
    net: int = 0


@dataclass(frozen=True)
class _Known:
    """What the hub knows of a campaign id besides the log: its name, where it came from, its
    holdout and the endpoint that measures its effect."""

    name: str | None
    source: str  # "campaign" (pushed in a bundle) or "journey"
    holdout_percent: int | None
    has_effect: bool
    effect: str | None


def campaigns(tx: Tx, scope: Scope, q: ReportQuery, *, now_ms: int,
              chain_zone: str) -> dict[str, Any]:
    """The campaigns and coupons report over ``q`` inside ``scope`` (see the module's text)."""
    selection = select_stores(tx, scope, q)
    zones = {str(s): str(z or chain_zone) for s, z in tx.all(
        "SELECT store_id, timezone FROM stores")}
    bounds = _bounds(q, {chain_zone, *zones.values()})
    figures: dict[str | None, _Figures] = {}

    def row(campaign_id: Any) -> _Figures:
        key = None if campaign_id is None else str(campaign_id)
        return figures.setdefault(key, _Figures())

    for cid, n in _issued(tx, selection, bounds, chain_zone):
        row(cid).issued += n
    for cid, n in _redemptions(tx, "coupon_redemptions", selection, bounds, chain_zone):
        row(cid).redeemed += n
    for cid, n in _redemptions(tx, "coupon_conflicts", selection, bounds, chain_zone):
        row(cid).conflicts += n
    for cid, sales, promotion, coupon, net in _discounts(tx, selection, q):
        f = row(cid)
        f.sales, f.promotion, f.coupon, f.net = sales, promotion, coupon, net

    pushed = _pushed(tx, chain_zone)
    for cid in _running(tx, pushed, selection, q):
        row(cid)
    known = _known(tx, pushed, [c for c in figures if c is not None])

    table = Table("campaigns", COLUMNS)
    for cid, f in sorted(figures.items(), key=lambda kv: (
            kv[0] is None, -kv[1].redeemed, -(kv[1].promotion + kv[1].coupon), kv[0] or "")):
        k = known.get(cid) if cid is not None else None
        table.rows.append([
            cid, k.name if k else None, k.source if k else None, f.issued, f.redeemed,
            ratio(f.redeemed, f.issued), f.conflicts, f.promotion, f.coupon,
            f.promotion + f.coupon, f.sales, f.net, k.holdout_percent if k else None,
            1 if k and k.has_effect else 0, k.effect if k else None])
    every = list(figures.values())
    issued, redeemed = sum(f.issued for f in every), sum(f.redeemed for f in every)
    promotion, coupon = sum(f.promotion for f in every), sum(f.coupon for f in every)
    totals = {"issued": issued, "redeemed": redeemed, "redemption_rate": ratio(redeemed, issued),
              "conflicts": sum(f.conflicts for f in every), "promotion_discount": promotion,
              "coupon_discount": coupon, "discount_cost": promotion + coupon}
    conflicts = Table("coupon_conflicts", CONFLICT_COLUMNS,
                      _conflict_rows(tx, selection, q, zones, chain_zone))
    return report("campaigns", q, [table, conflicts],
                  completeness(tx, selection, q, now_ms, chain_zone), notes=NOTES,
                  totals=totals)


# -- the period on each calendar ------------------------------------------------------------


def _bounds(q: ReportQuery, zones: Iterable[str]) -> dict[str, tuple[int, int]]:
    """Per time zone, the HLC range [first, past the last) of the period's store-local days:
    coupons and redemptions carry an HLC only, no store-local date as the sales facts do."""
    out = {}
    for zone in sorted(zones):
        tz = ZoneInfo(zone)
        first = datetime.combine(q.start, time.min, tz)
        after = datetime.combine(q.end + timedelta(days=1), time.min, tz)
        out[zone] = (int(first.timestamp() * 1000) << COUNTER_BITS,
                     int(after.timestamp() * 1000) << COUNTER_BITS)
    return out


def _in_period(alias: str, bounds: dict[str, tuple[int, int]]) -> tuple[str, tuple[Any, ...]]:
    """The SQL condition that ``alias.hlc`` falls in the period on the calendar ``alias.zone``
    names (one term per zone in use: a handful)."""
    terms, params = [], []
    for zone, (low, high) in bounds.items():
        terms.append(f"({alias}.zone = ? AND {alias}.hlc >= ? AND {alias}.hlc < ?)")
        params += [zone, low, high]
    return "(" + " OR ".join(terms) + ")", tuple(params)


def _loosely(bounds: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """The HLC range covering every zone's period: a range of an index on ``hlc`` that the
    exact per-zone condition then narrows."""
    return (min(low for low, _high in bounds.values()),
            max(high for _low, high in bounds.values()))


# -- the figures ------------------------------------------------------------------------------


def _issued(tx: Tx, selection: Selection, bounds: dict[str, tuple[int, int]],
            chain_zone: str) -> list[tuple[Any, int]]:
    """(campaign, coupons issued) in the period at the covered stores (see the module's
    text: a virtual stream's coupon counts at its member's home store)."""
    period, times = _in_period("x", bounds)
    # Some stores: a range of ``coupons_for_store`` each (the store each coupon counts at,
    # written with it); the chain: a range of every coupon's HLC (``coupons_issued``). The
    # period is on the issuing stream's calendar.
    counted, cparams = ("1 = 1", ()) if selection.everything else (
        f"c.for_store IN ({marks(selection.ids)})", tuple(selection.ids))
    return [(cid, int(n)) for cid, n in tx.all(
        "SELECT x.campaign_id, count(*) FROM (SELECT c.campaign_id, c.hlc,"
        " COALESCE(s.timezone, ?) AS zone FROM coupons c"
        f" LEFT JOIN stores s ON s.store_id = c.store_id WHERE {counted}"
        " AND c.hlc >= ? AND c.hlc < ?) x"
        f" WHERE {period} GROUP BY x.campaign_id",
        (chain_zone, *cparams, *_loosely(bounds), *times))]


def _redemptions(tx: Tx, table: str, selection: Selection,
                 bounds: dict[str, tuple[int, int]], chain_zone: str) -> list[tuple[Any, int]]:
    """(campaign, redemptions) of ``table`` (those that stand, or the conflicting ones) made
    in the period at the covered stores; a coupon the hub never saw issued has no campaign."""
    where, params = selection.where("x")
    period, times = _in_period("x", bounds)
    return [(cid, int(n)) for cid, n in tx.all(
        "SELECT c.campaign_id, count(*) FROM (SELECT r.coupon_code, r.store_id, r.hlc,"
        f" COALESCE(s.timezone, ?) AS zone FROM {table} r LEFT JOIN stores s"
        " ON s.store_id = r.store_id WHERE r.hlc >= ? AND r.hlc < ?) x"
        " LEFT JOIN coupons c ON c.coupon_code = x.coupon_code"
        f" WHERE {where} AND {period} GROUP BY c.campaign_id",
        (chain_zone, *_loosely(bounds), *params, *times))]


# A sale's row that names a coupon: its coupon discount, or a coupon tender (no till writes one
# today; a channel paying with a coupon would).
_COUPON_ROW = "(f.kind = 'tender' OR f.code = 'coupon')"


def _discounts(tx: Tx, selection: Selection, q: ReportQuery
               ) -> list[tuple[Any, int, int, int, int]]:
    """(campaign, sales carrying it, promotion discount, coupon discount, the sales' totals)
    of the period's sales at the covered stores. Per sale first, so a sale with two rows of one
    campaign counts once and its total once; then the sale's own row, read by its key for its
    total (the same ``pos``: a sale id a store sent twice is kept twice; a sale's rows are
    written together). A join let PostgreSQL hash every sale of the table for the chain's
    month once it counted the discounts right: 930 ms at p95 against 780."""
    where, params = selection.where("f")
    return [(cid, int(n), int(promotion or 0), int(coupon or 0), int(net or 0))
            for cid, n, promotion, coupon, net in tx.all(
        "SELECT d.campaign_id, count(*), sum(d.promotion), sum(d.coupon), sum((SELECT s.amount"
        " FROM sales_facts s WHERE s.doc_id = d.doc_id AND s.kind = 'sale' AND s.n = 0"
        " AND s.pos = d.pos)) FROM (SELECT x.campaign_id, x.doc_id, x.pos,"
        " sum(x.promotion) AS promotion,"
        " sum(x.coupon) AS coupon FROM (SELECT"
        f" CASE WHEN {_COUPON_ROW} THEN c.campaign_id ELSE f.ref END AS campaign_id,"
        f" f.doc_id, f.pos, CASE WHEN {_COUPON_ROW} THEN 0 ELSE f.amount END AS promotion,"
        f" CASE WHEN {_COUPON_ROW} THEN f.amount ELSE 0 END AS coupon"
        f" FROM sales_facts f LEFT JOIN coupons c ON {_COUPON_ROW}"
        " AND c.coupon_code = f.ref"
        " WHERE f.ref IS NOT NULL AND (f.kind = 'discount' OR (f.kind = 'tender'"
        " AND f.code = 'coupon')) AND f.local_date >= ? AND f.local_date <= ?"
        f" AND {where}) x GROUP BY x.campaign_id, x.doc_id, x.pos) d GROUP BY d.campaign_id",
        (q.start.isoformat(), q.end.isoformat(), *params))]


# -- what the hub knows of each campaign --------------------------------------------------------


@dataclass(frozen=True)
class _Pushed:
    campaign: Campaign  # its latest definition
    bundles: list[CampaignBundle]  # every held bundle carrying it
    first_day: date  # the day (chain's calendar) it was first pushed


def _pushed(tx: Tx, chain_zone: str) -> dict[str, _Pushed]:
    """Every campaign in a held bundle, as last pushed (as ``campaign_effect.latest`` reads
    one campaign; here every manifest is decoded once for all of them)."""
    carrying: dict[str, list[tuple[CampaignBundle, Campaign]]] = {}
    for _topic, payload in held_manifests(tx):
        bundle = decode(payload, CampaignManifest).bundle
        for c in bundle.campaigns:
            carrying.setdefault(c.campaign_id, []).append((bundle, c))
    first = {str(c): int(ms) for c, ms in tx.all(
        "SELECT campaign_id, issued_ms FROM campaign_first_pushed")}
    tz = ZoneInfo(chain_zone)
    out = {}
    for cid, held in carrying.items():
        _bundle, campaign = max(held, key=lambda bc: (bc[0].issued_at, RANK[bc[0].scope]))
        issued = min(b.issued_at for b, _c in held).astimezone(tz)
        if cid in first:
            issued = min(issued, datetime.fromtimestamp(first[cid] / 1000, tz))
        out[cid] = _Pushed(campaign, [b for b, _c in held], issued.date())
    return out


def _running(tx: Tx, pushed: dict[str, _Pushed], selection: Selection,
             q: ReportQuery) -> list[str]:
    """The pushed campaigns in force on a day of the period at a covered store: from their
    ``starts_on`` (without one: the day first pushed) to their ``ends_on``."""
    regions: dict[str, set[str]] = {}
    for store, region in tx.all("SELECT store_id, region FROM stores WHERE region IS NOT NULL"):
        regions.setdefault(str(region), set()).add(str(store))
    covered = set(selection.ids)
    out = []
    for cid, p in pushed.items():
        c = p.campaign
        if (c.starts_on or p.first_day) > q.end or (c.ends_on is not None
                                                     and c.ends_on < q.start):
            continue
        stores: set[str] = set()
        for b in p.bundles:
            if b.scope == "fleet":
                stores |= covered
            elif b.scope == "region":
                stores |= regions.get(b.scope_id or "", set())
            elif b.scope_id:
                stores.add(b.scope_id)
        if stores & covered:
            out.append(cid)
    return out


def _known(tx: Tx, pushed: dict[str, _Pushed], ids: list[str]) -> dict[str, _Known]:
    """Name, source, holdout and effect link of ``ids`` the hub knows: held bundles first, then
    journeys, then campaigns pushed once and no longer held (no definition left to name)."""
    out: dict[str, _Known] = {}
    for cid in ids:
        p = pushed.get(cid)
        if p is not None:
            held = p.campaign.holdout_percent
            out[cid] = _Known(p.campaign.name, "campaign", held, held > 0,
                              f"/v1/campaigns/{quote(cid, safe='')}/effect" if held else None)
    rest = sorted(set(ids) - set(out))
    if rest:
        for jid, name, definition in tx.all(
                f"SELECT journey_id, name, definition FROM journeys WHERE journey_id IN"
                f" ({marks(rest)})", rest):
            held = int(json.loads(definition).get("holdout_percent", 0))
            # The chain's control group holds members out of every journey too (held_out 2):
            # a journey without its own share can still be measured against it.
            control = tx.scalar("SELECT 1 FROM journey_entries WHERE journey_id = ? AND"
                                " held_out > 0 LIMIT 1", (jid,)) is not None
            measurable = held > 0 or control
            out[str(jid)] = _Known(str(name), "journey", held, measurable,
                                   f"/v1/journeys/{quote(str(jid), safe='')}/effect"
                                   if measurable else None)
        rest = sorted(set(rest) - set(out))
    if rest:
        for (cid,) in tx.all("SELECT campaign_id FROM campaign_first_pushed WHERE campaign_id"
                             f" IN ({marks(rest)})", rest):
            out[str(cid)] = _Known(None, "campaign", None, False, None)
    return out


# -- coupons redeemed more than once ------------------------------------------------------------


def _conflict_rows(tx: Tx, selection: Selection, q: ReportQuery, zones: dict[str, str],
                   chain_zone: str) -> list[list[Any]]:
    """Each redemption (the one that stands first, then the conflicting ones in time) of every
    coupon redeemed more than once with a redemption in the period at a covered store. Read
    whole: conflicts are rare (one per coupon used twice while stores were offline)."""
    found: dict[str, list[tuple[str, str, str, int, int]]] = {}
    campaign: dict[str, str | None] = {}
    for code, cid, store, sale, hlc, amount in tx.all(
            "SELECT k.coupon_code, c.campaign_id, k.store_id, k.sale_id, k.hlc, k.amount"
            " FROM coupon_conflicts k LEFT JOIN coupons c ON c.coupon_code = k.coupon_code"
            " ORDER BY k.coupon_code, k.hlc, k.store_id"):
        found.setdefault(str(code), []).append(("conflict", str(store), str(sale), int(hlc),
                                                int(amount)))
        campaign[str(code)] = None if cid is None else str(cid)
    codes = sorted(found)
    for chunk, places in in_chunks(codes):
        for code, store, sale, hlc, amount in tx.all(
                "SELECT coupon_code, store_id, sale_id, hlc, amount FROM coupon_redemptions"
                f" WHERE coupon_code IN ({places})", chunk):
            # A coupon whose standing redemption was refunded (reopened) has none: its
            # conflicting redemptions are listed alone.
            found[str(code)].insert(0, ("kept", str(store), str(sale), int(hlc), int(amount)))

    def covered(store: str) -> bool:
        return selection.everything or store in selection.by_id

    def local(store: str, hlc: int) -> datetime:
        return datetime.fromtimestamp(wall_ms(hlc) / 1000,
                                      ZoneInfo(zones.get(store, chain_zone)))

    rows: list[list[Any]] = []
    for code in codes:
        each = found[code]
        if not any(covered(s) and q.start <= local(s, h).date() <= q.end
                   for _r, s, _sale, h, _a in each):
            continue
        for role, store, sale, hlc, amount in each:
            if covered(store):
                rows.append([code, campaign[code], role, store, sale, amount,
                             local(store, hlc).isoformat(timespec="seconds")])
            else:  # another store's sale: which store it was, nothing of the sale
                rows.append([code, campaign[code], role, store, None, None, None])
    return rows
