"""Staff over a period (HQ.md, principles 4, 5 and 6): cashiers and shopping guides (导购),
ranked by net, and the members each guide signed up.

How each figure is counted:

* A row is a staff member at a store: tills number their own staff, so the same id at two
  stores is two rows.
* **Cashier**: the sales they rang up in the period; their **net** is what those came to less
  the refunds they paid out in the period (the till's view).
* **Guide**: the sales that count for them (the sale names the guide); their **net** is what
  those came to less the refunds in the period of sales that counted for them (what their
  customers kept), booked at the refund's store on its day.
* **Member sales** and **member net**: the same, of sales and refunds with a member.
* **Registrations**: members who have the guide as their guide now (``members.guide_id``) and
  registered in the period, on their home store's calendar, at a covered store; a member
  merged into another is counted once, as the member they now are.

Read from ``staff_months`` and ``staff_days`` (``hub.projections.staff``; a month as
``hub.reports.sales.month_plan`` reads it) and, for registrations, from the ``members_guided``
index: never from per-sale facts.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hub.auth.scope import Scope
from hub.core.db import Tx, in_chunks
from hub.projections.staff import CASHIER, GUIDE, SUMS
from hub.reports.period import ReportQuery, Selection, completeness, select_stores
from hub.reports.sales import by_months, name_of, store_where, unsupported
from hub.reports.shape import Kind, Table, ratio, report
from protocol.hlc import pack

Key = tuple[str, str, str]  # (store, role, staff id)


def _staff_sums(tx: Tx, selection: Selection, q: ReportQuery) -> dict[Key, list[int]]:
    where, params = store_where(selection, "k")
    found = tx.all(*by_months("staff", ("store_id", "role", "staff_id"), SUMS, where, params,
                              q.start, q.end))
    # A month read as its row less the days outside the period leaves the staff who worked
    # only on those days with nothing: not listed.
    return {(str(r[0]), str(r[1]), str(r[2])): [int(v) for v in r[3:]] for r in found
            if any(r[3:])}


def _midnight_ms(day: date, zone: str) -> int:
    return int(datetime.combine(day, time.min, ZoneInfo(zone)).timestamp() * 1000)


def registrations(tx: Tx, selection: Selection, q: ReportQuery,
                  chain_zone: str) -> dict[tuple[str, str], int]:
    """(home store, guide) -> members registered in the period who have that guide now."""
    if selection.everything:  # every store, the hub's own streams too (as the sales read)
        zones = {str(s): z for s, z in tx.all("SELECT store_id, timezone FROM stores")}
    else:
        zones = {s.store_id: s.timezone for s in selection.stores}
    by_zone: dict[str, list[str]] = {}
    for store_id, zone in sorted(zones.items()):
        by_zone.setdefault(zone or chain_zone, []).append(store_id)
    out: dict[tuple[str, str], int] = {}
    for zone, stores in by_zone.items():
        # The period's first and last instants on the zone's calendar, as HLCs.
        span = (pack(_midnight_ms(q.start, zone), 0),
                pack(_midnight_ms(q.end + timedelta(days=1), zone), 0))
        for chunk, marks in in_chunks(stores):
            for store_id, guide, count in tx.all(
                    "SELECT m.home_store, m.guide_id, count(*) FROM members m"
                    " WHERE m.guide_id IS NOT NULL AND m.merged_into IS NULL"
                    f" AND m.home_store IN ({marks}) AND m.registered_hlc >= ?"
                    " AND m.registered_hlc < ? GROUP BY m.home_store, m.guide_id",
                    (*chunk, *span)):
                out[(str(store_id), str(guide))] = int(count)
    return out


def staff(tx: Tx, scope: Scope, q: ReportQuery, *, now_ms: int,
          chain_zone: str) -> dict[str, Any]:
    """Cashiers and guides over the period, each ranked by net: sales, net, member sales and
    member net; and for guides, the members they signed up."""
    selection = select_stores(tx, scope, q)
    unsupported(q, "category", "tier", "segment_id")
    sums = _staff_sums(tx, selection, q)
    signed = registrations(tx, selection, q, chain_zone)
    for store_id, guide in signed:
        sums.setdefault((store_id, GUIDE, guide), [0] * 8)

    tables = []
    for role, label in ((CASHIER, "cashiers"), (GUIDE, "guides")):
        rows: list[list[Any]] = []
        for (store_id, kind, staff_id), v in sums.items():
            if kind != role:
                continue
            net, member_net = v[1] - v[5], v[3] - v[7]
            row = [store_id, name_of(selection, store_id), staff_id, v[0], net, v[2], member_net,
                   ratio(member_net, net) if net > 0 else None, v[4], v[5]]
            if role == GUIDE:
                row.append(signed.get((store_id, staff_id), 0))
            rows.append(row)
        rows.sort(key=lambda r: (-r[4], -r[3], r[2], r[0]))
        columns: list[tuple[str, Kind]] = [
            ("rank", "int"), ("store_id", "text"), ("store_name", "text"),
            ("staff_id", "text"), ("sales", "int"), ("net", "money"), ("member_sales", "int"),
            ("member_net", "money"), ("member_share", "ratio"), ("refunds", "int"),
            ("refund_amount", "money")]
        if role == GUIDE:
            columns.append(("registrations", "int"))
        tables.append(Table(label, columns, [[i, *r] for i, r in enumerate(rows, 1)]))
    return report("staff", q, tables, completeness(tx, selection, q, now_ms, chain_zone),
                  notes=[
                      "a row is a staff member at a store; ranked by net",
                      "cashier: the sales they rang up, less the refunds they paid out",
                      "guide: the sales that counted for them, less the refunds of those"
                      " sales; refunds: those refunds",
                      "registrations: members who have the guide now and registered in the"
                      " period at a covered store (their home store's calendar)"],
                  totals={"cashier_sales": sum(v[0] for k, v in sums.items()
                                               if k[1] == CASHIER),
                          "guide_sales": sum(v[0] for k, v in sums.items() if k[1] == GUIDE),
                          "guide_net": sum(v[1] - v[5] for k, v in sums.items()
                                           if k[1] == GUIDE),
                          "registrations": sum(signed.values())})
