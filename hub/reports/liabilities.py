"""What the chain owes its members: points outstanding and stored value, and what its stores owe
each other for stored value spent away from where it was topped up.

* **Points** (``points``): outstanding is the sum of the live members' points balances, each
  store's share being what its own events added (earned, less redeemed and expired there; the
  running sum of its ``points_days``, which is its ``shares.points`` summed); the expiry
  schedule is what is left of the lots it issued by their expiry month; breakage is estimated
  from how the points that left their lots in the period left them. A tier or segment filter
  reads those members' ``shares`` and ``point_lots`` instead, within the caller's scope.
* **Stored value** (``stored_value``): what the members hold, principal and bonus, by the store
  that issued it and its legal entity, at each quarter end in the period and now.
* **Settlement** (``settlement``): per period, what each store topped up and sold against
  stored value, and what it is owed (positive) or owes (negative) once every spend is traced to
  the deposits it used (``hub.projections.stored_value`` says how).

Each read is a range of the covered stores' rows in a projection (``points_days``,
``points_expiry``, ``sv_days``, ``sv_flows``), a few hundred rows per store and year; none
reads per member, except a tier or segment filter on points.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from hub.auth.scope import Scope
from hub.core.db import Tx
from hub.reports.period import (
    ReportQuery,
    Selection,
    bucket,
    completeness,
    periods,
    select_stores,
)
from hub.reports.sales import unsupported
from hub.reports.shape import Table, ratio, report
from hub.stores.registry import VIRTUAL_STORES

POINTS_NOTES = [
    "points outstanding: the sum of the live members' points balances as now merged; a"
    " store's figure is its share, what its own events added (earned, less redeemed and"
    " expired there), so it is below zero where members redeemed points earned elsewhere",
    "expiry schedule: what is left of the points lots the covered stores issued, by the month"
    " they expire ('never': no expiry date); a past month holds points whose expiry has not"
    " been logged yet",
    "a store's figures are all its members' (its own books); with a tier or segment filter,"
    " those members' balances and lots among the members you can see",
    "breakage: of the points that left their lots in the period, by redemption (less what"
    " refunds gave back) or by expiry, the share that expired; the expected breakage is that"
    " share of the points outstanding. It reads the covered stores' history of all members,"
    " whatever the tier or segment filter",
]
STORED_VALUE_NOTES = [
    "stored value outstanding: what members hold, by the store that issued it (topped it up,"
    " or put it back by a refund) and that store's legal entity (the chain's when it has"
    " none); principal was paid, bonus was given",
    "a spend uses what the store it happens at issued to the member first, then what the"
    " other stores issued, pro rata; what a store spent ahead of a top-up not merged yet is"
    " below zero until the member's next top-up covers it",
    "as of: the end of each quarter inside the period (each store's own calendar day) and"
    " now (everything merged so far)",
]
SETTLEMENT_NOTES = [
    "topped up, spent: stored value (principal and bonus) topped up and spent at the store in"
    " the period",
    "whose deposit paid: a spend at a store uses what that store issued to the member first,"
    " then what the other stores issued, pro rata to what each holds of the member's balance"
    " (largest remainder); a spend ahead of its top-up (an offline store merging late) is"
    " covered, pro rata, by the member's next top-up or refund, on that day",
    "net position: what other stores' deposits paid for at this store (it is owed that) less"
    " what its own deposits paid for elsewhere (it owes that); above zero the store is owed",
    "owes / owed: per pair of stores, what the one's deposits paid for at the other, less the"
    " reverse, principal and bonus apart",
]


def chain_stores(tx: Tx, selection: Selection) -> list[str]:
    """The stores whose rows a read covers: the selection's, and for the whole chain every
    store and the hub's own streams (the online channel issues stored value too), listed so
    that tables keyed by store are searched store by store."""
    if not selection.everything:
        return selection.ids
    return sorted({str(r[0]) for r in tx.all("SELECT store_id FROM stores")} | VIRTUAL_STORES)


def in_list(column: str, ids: list[str]) -> tuple[str, tuple[Any, ...]]:
    if not ids:
        return "1 = 0", ()
    return f"{column} IN ({', '.join('?' * len(ids))})", tuple(ids)


def store_names(tx: Tx, ids: set[str]) -> dict[str, tuple[str, str | None]]:
    """(name, legal entity) of each store the hub has a row for."""
    return {str(r[0]): (str(r[1] or ""), r[2]) for r in tx.all(
        "SELECT store_id, name, legal_entity FROM stores") if str(r[0]) in ids}


def live_members(scope: Scope, q: ReportQuery, alias: str) -> tuple[str, tuple[Any, ...]]:
    """The live members (not merged into another) the scope sees, of ``q``'s tier and
    segment: the SQL condition on the ``members`` row ``alias``."""
    where, params = scope.member_filter(alias)
    parts, args = [f"{alias}.merged_into IS NULL", where], list(params)
    if q.tier is not None:
        parts.append(f"{alias}.tier = ?")
        args.append(q.tier)
    if q.segment_id is not None:
        parts.append(f"EXISTS (SELECT 1 FROM segment_members sm WHERE sm.segment_id = ?"
                     f" AND sm.member_id = {alias}.member_id)")
        args.append(q.segment_id)
    return " AND ".join(parts), tuple(args)


def every_member(scope: Scope, q: ReportQuery) -> bool:
    """No condition on members: the whole chain's, with no tier or segment."""
    return scope.role.scope == "all" and q.tier is None and q.segment_id is None


def seen_where_they_shop(scope: Scope, q: ReportQuery) -> bool:
    """A store's or region's scope with no tier or segment: every member with a row at one of
    its stores is one it sees (a member bought or brought something back there, which is what
    ``member_stores`` holds for the scope), so rows kept per store need no member looked up."""
    return scope.role.scope in ("stores", "regions") and q.tier is None and q.segment_id is None


def counted_at_stores(scope: Scope, q: ReportQuery, sel: Selection) -> bool:
    """Some stores (not the whole chain), for a scope that sees every member of a store it
    covers (HQ's, a store's or a region's; a guide sees only their own) with no segment: the
    stores' members are their rows in ``store_members``, which carry the tier."""
    return (not sel.everything and q.segment_id is None
            and scope.role.scope in ("all", "stores", "regions"))


def points(tx: Tx, scope: Scope, q: ReportQuery, *, now_ms: int,
           chain_zone: str) -> dict[str, Any]:
    unsupported(q, "category")
    sel = select_stores(tx, scope, q)
    ids = chain_stores(tx, sel)
    if q.tier is None and q.segment_id is None:
        # A store's figures, from its rollups: its share (the running sum of what its events
        # added) and what is left of the lots it issued.
        days_in, dparams = in_list("p.store_id", ids)
        shares = tx.all(
            "SELECT p.store_id, sum(p.earned - p.redeemed + p.returned - p.expired"
            f" + p.adjusted) FROM points_days p WHERE {days_in} GROUP BY p.store_id", dparams)
        expiry_in, eparams = in_list("e.store_id", ids)
        lots = tx.all(f"SELECT e.month, sum(e.points) FROM points_expiry e WHERE {expiry_in}"
                      " GROUP BY e.month", eparams)
    else:
        # Some members only: their balances' shares and their lots, as their scope sees them.
        members, mparams = live_members(scope, q, "m")
        shares_in, sparams = in_list("s.store_id", ids)
        lots_in, lparams = in_list("l.store_id", ids)
        shares = tx.all(
            f"SELECT s.store_id, sum(s.points) FROM shares s JOIN members m ON m.member_id ="
            f" s.member_id WHERE {shares_in} AND {members} GROUP BY s.store_id",
            (*sparams, *mparams))
        # A lot names the id its store wrote: the member it now is decides.
        lots = tx.all(
            "SELECT coalesce(substr(l.expires_on, 1, 7), 'never'), sum(l.remaining)"
            " FROM point_lots l JOIN members a ON a.member_id = l.member_id"
            " JOIN members m ON m.member_id = coalesce(a.merged_into, a.member_id)"
            f" WHERE l.remaining <> 0 AND {lots_in} AND {members} GROUP BY 1",
            (*lparams, *mparams))
    names = store_names(tx, {str(r[0]) for r in shares})
    by_store = Table("by_store", [("store_id", "text"), ("store_name", "text"),
                                  ("points_outstanding", "points")])
    for store, held in sorted((str(r[0]), int(r[1])) for r in shares):
        if held == 0:
            continue  # a share of stored value only
        by_store.rows.append([store, names.get(store, (store, None))[0] or store, held])
    outstanding = sum(r[2] for r in by_store.rows)
    expiry = Table("expiry", [("expires", "text"), ("expiring_points", "points")])
    expiry.rows = sorted(([str(r[0]), int(r[1])] for r in lots if int(r[1])),
                         key=lambda r: (r[0] == "never", r[0]))

    days_in, dparams = in_list("p.store_id", ids)
    row = tx.one(f"SELECT coalesce(sum(p.redeemed - p.returned), 0), coalesce(sum(p.expired), 0)"
                 f" FROM points_days p WHERE {days_in} AND p.day >= ? AND p.day <= ?",
                 (*dparams, q.start.isoformat(), q.end.isoformat()))
    redeemed, expired = int(row[0]), int(row[1])
    rate = ratio(expired, redeemed + expired)
    expected = round(outstanding * expired / (redeemed + expired)) \
        if redeemed + expired and outstanding > 0 else None
    breakage = Table("breakage", [("redeemed", "points"), ("expired", "points"),
                                  ("breakage_rate", "ratio"), ("breakage", "points")],
                     [[redeemed, expired, rate, expected]])
    return report("points", q, [by_store, expiry, breakage],
                  completeness(tx, sel, q, now_ms, chain_zone), notes=POINTS_NOTES,
                  totals={"points_outstanding": outstanding, "breakage_rate": rate,
                          "breakage": expected})


def quarter_ends(q: ReportQuery) -> list[date]:
    """The last days of the quarters that end inside the period."""
    out = []
    for year in range(q.start.year, q.end.year + 1):
        for month, day in ((3, 31), (6, 30), (9, 30), (12, 31)):
            end = date(year, month, day)
            if q.start <= end <= q.end:
                out.append(end)
    return out


def stored_value(tx: Tx, scope: Scope, q: ReportQuery, *, now_ms: int, chain_zone: str,
                 chain_entity: str) -> dict[str, Any]:
    unsupported(q, "category", "tier", "segment_id")
    sel = select_stores(tx, scope, q)
    ids = chain_stores(tx, sel)
    ends = [e.isoformat() for e in quarter_ends(q)]
    # One pass over the covered stores' days: what each held at every quarter end, and now.
    # ``held`` is the change in what the store holds, so its running sum is the balance.
    columns = [f"sum(CASE WHEN d.day <= ? THEN d.held_{kind} ELSE 0 END)"
               for _end in ends for kind in ("principal", "bonus")]
    columns += ["sum(d.held_principal)", "sum(d.held_bonus)"]
    where, params = in_list("d.store_id", ids)
    rows = tx.all(f"SELECT d.store_id, {', '.join(columns)} FROM sv_days d WHERE {where}"
                  " GROUP BY d.store_id ORDER BY d.store_id",
                  (*[e for e in ends for _kind in (0, 1)], *params))
    names = store_names(tx, {str(r[0]) for r in rows})
    cols: list[tuple[str, Any]] = [("as_of", "text"), ("store_id", "text"),
                                   ("store_name", "text"), ("legal_entity", "text"),
                                   ("principal", "money"), ("bonus", "money"),
                                   ("total", "money")]
    by_store = Table("by_store", cols)
    entities: dict[tuple[str, str], list[int]] = {}
    for i, as_of in enumerate([*ends, "now"]):
        for r in rows:
            store = str(r[0])
            name, entity = names.get(store, (store, None))
            entity = entity if entity is not None else chain_entity
            principal, bonus = int(r[1 + 2 * i] or 0), int(r[2 + 2 * i] or 0)
            by_store.rows.append([as_of, store, name or store, entity, principal, bonus,
                                  principal + bonus])
            held = entities.setdefault((as_of, entity), [0, 0])
            held[0] += principal
            held[1] += bonus
    by_entity = Table("by_entity", [("as_of", "text"), ("legal_entity", "text"),
                                    ("principal", "money"), ("bonus", "money"),
                                    ("total", "money")])
    by_entity.rows = [[as_of, entity, p, b, p + b] for (as_of, entity), (p, b)
                      in entities.items()]
    now = [r for r in by_store.rows if r[0] == "now"]
    principal, bonus = sum(r[4] for r in now), sum(r[5] for r in now)
    return report("stored_value", q, [by_store, by_entity],
                  completeness(tx, sel, q, now_ms, chain_zone), notes=STORED_VALUE_NOTES,
                  totals={"principal": principal, "bonus": bonus, "total": principal + bonus,
                          "quarter_ends": ends})


def settlement(tx: Tx, scope: Scope, q: ReportQuery, *, now_ms: int, chain_zone: str,
               grain: str = "month") -> dict[str, Any]:
    unsupported(q, "category", "tier", "segment_id")
    cuts = periods(q, grain)
    sel = select_stores(tx, scope, q)
    ids = chain_stores(tx, sel)
    period, pparams = bucket("d.day", cuts)
    where, params = in_list("d.store_id", ids)
    span = (q.start.isoformat(), q.end.isoformat())
    days = tx.all(
        f"SELECT {period}, d.store_id, sum(d.topped_up_principal + d.topped_up_bonus),"
        " sum(d.spent_principal + d.spent_bonus) FROM sv_days d"
        f" WHERE {where} AND d.day >= ? AND d.day <= ? GROUP BY 1, 2",
        (*pparams, *params, *span))
    # A flow concerns both its stores: read it from either side (two ranges of keys).
    fperiod, fparams = bucket("f.day", cuts)
    seller, sparams = in_list("f.store_id", ids)
    holder, hparams = in_list("f.from_store", ids)
    flows = tx.all(
        f"SELECT {fperiod}, f.from_store, f.store_id, sum(f.principal), sum(f.bonus)"
        f" FROM sv_flows f WHERE ({seller} OR {holder}) AND f.day >= ? AND f.day <= ?"
        " GROUP BY 1, 2, 3", (*fparams, *sparams, *hparams, *span))
    covered = set(ids)
    figures: dict[tuple[str, str], list[int]] = {}  # (period, store): topped up, spent, net
    for label, store, topped, spent in days:
        figures[(str(label), str(store))] = [int(topped or 0), int(spent or 0), 0]
    pairs: dict[tuple[str, str, str], list[int]] = {}  # (period, owes, owed): principal, bonus
    for label, owes, owed, principal, bonus in flows:
        label, owes, owed = str(label), str(owes), str(owed)
        amount = int(principal) + int(bonus)
        for store, sign in ((owed, 1), (owes, -1)):
            if store in covered:
                figures.setdefault((label, store), [0, 0, 0])[2] += sign * amount
        # Each pair once, in the direction of its net: the lower store id first as the key.
        a, b, sign = (owes, owed, 1) if owes < owed else (owed, owes, -1)
        pair = pairs.setdefault((label, a, b), [0, 0])
        pair[0] += sign * int(principal)
        pair[1] += sign * int(bonus)
    names = store_names(tx, {s for _p, s in figures} | {s for _p, a, b in pairs for s in (a, b)})
    order = {label: i for i, (label, _first, _last) in enumerate(cuts)}
    stores = Table("stores", [("period", "text"), ("store_id", "text"), ("store_name", "text"),
                              ("topped_up", "money"), ("spent", "money"),
                              ("net_position", "money")])
    for (label, store), (topped, spent, net) in sorted(figures.items(),
                                                      key=lambda kv: (order[kv[0][0]], kv[0][1])):
        if not (topped or spent or net):
            continue  # a day with only stored value put back by refunds
        stores.rows.append([label, store, names.get(store, (store, None))[0] or store, topped,
                            spent, net])
    owing = Table("pairs", [("period", "text"), ("owes", "text"), ("owed", "text"),
                            ("principal", "money"), ("bonus", "money"), ("total", "money")])
    for (label, a, b), (principal, bonus) in sorted(pairs.items(),
                                                    key=lambda kv: (order[kv[0][0]], kv[0][1:])):
        if principal + bonus == 0:
            continue
        owes, owed, sign = (a, b, 1) if principal + bonus > 0 else (b, a, -1)
        owing.rows.append([label, owes, owed, sign * principal, sign * bonus,
                           sign * (principal + bonus)])
    return report("settlement", q, [stores, owing], completeness(tx, sel, q, now_ms, chain_zone),
                  notes=SETTLEMENT_NOTES,
                  totals={"topped_up": sum(r[3] for r in stores.rows),
                          "spent": sum(r[4] for r in stores.rows)},
                  extra={"grain": grain})
