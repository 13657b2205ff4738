"""Sales across the chain over a period (HQ.md, principles 4, 5 and 6): the trend against last
year, categories, the hour and weekday profile, products, and the home page's dashboard.

How each figure is counted, in the words a store or region manager reads:

* **Sales**: sales finalised in the period; **items**, **gross**, **discount** and
  **amount**: their lines' quantities, list prices, discounts and what was paid (net of
  discounts). **Refunds**, **refund items** and **refund amount**: refunds made in the period
  (whenever the sale was), booked on their own day at their own store. **Net** = amount −
  refund amount. Money is in minor units (fen); a day is the store's own calendar day.
* **Members' net**: the amount members' sales came to less members' refunds; **members'
  share** = members' net ÷ net. **Average basket** = net ÷ sales, rounded half up to a fen.
* **Last year**: the same dates a year earlier (29 February counts as the 28th); **growth**
  = (net − net last year) ÷ net last year, none when last year's net was not above zero.
* **Category filter**: a sale counts when it has a line in the category, and only those lines'
  items and amounts (and the refunds of those lines) count.

Where each figure is read: never from per-line facts. Sale counts and baskets from
``store_days``, the profile from ``store_hours`` (a sale counts once, on its day, in its hour);
a category's figures from ``daily_rollups`` and ``member_refund_days``; products from
``sku_months`` and ``sku_days`` (``month_plan``), or for the whole chain ``sku_chain_months``
and ``sku_chain_days``. Each read is a range of the covered stores' rows (``Selection.where``;
PostgreSQL's row-level security binds the same stores).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hub.auth.scope import Scope
from hub.core.db import Tx
from hub.reports.period import (
    MAX_DAYS,
    ReportQuery,
    Selection,
    bucket,
    completeness,
    periods,
    select_stores,
)
from hub.reports.shape import Kind, Table, ratio, report
from protocol.errors import ServiceError

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MAX_LIMIT = 1_000

NOTES = [
    "net: what was paid for sales in the period less what refunds in the period gave back;"
    " a refund counts on its own day, at its own store",
    "members' share: members' net (their sales less their refunds) / net;"
    " average basket: net / sales, rounded half up",
    "last year: the same dates a year earlier; growth: (net - net last year) / net last"
    " year, none when last year's net was not above zero",
]
CATEGORY_NOTE = ("category filter: a sale counts when it has a line in the category; items,"
                 " amounts and refunds are that category's lines only")


def store_where(selection: Selection, alias: str) -> tuple[str, tuple[Any, ...]]:
    """``Selection.where`` for a table keyed by (store_id, day, ...). The whole chain is
    written as every store in ``stores`` (the same rows: every store that logged anything has
    a row there) so that the key is searched store by store rather than the table scanned."""
    if selection.everything:
        return f"{alias}.store_id IN (SELECT store_id FROM stores)", ()
    return selection.where(alias)


def unsupported(q: ReportQuery, *filters: str) -> None:
    """A filter this report cannot apply is refused, never silently ignored."""
    for name in filters:
        if getattr(q, name) is not None:
            part = {"store_id": "store", "segment_id": "segment"}.get(name, name)
            raise ServiceError("filter_not_supported", f"this report cannot be filtered by"
                               f" {part}", 422, part=part)


def half_up(part: int, whole: int) -> int | None:
    """``part / whole`` to the nearest whole minor unit, halves up; None with no whole."""
    if whole <= 0:
        return None
    return (2 * part + whole) // (2 * whole)


def growth(now: int, before: int) -> float | None:
    return ratio(now - before, before) if before > 0 else None


@dataclass(slots=True)
class Sums:
    """What a set of store-days sold and gave back."""

    sales: int = 0
    items: int = 0
    gross: int = 0
    discount: int = 0
    amount: int = 0
    member_amount: int = 0
    refunds: int = 0
    refund_items: int = 0
    refund_amount: int = 0
    member_refund_amount: int = 0

    def add(self, other: Sums) -> Sums:
        # Field by field, not through getattr and setattr: a year's trend adds 1,500 of
        # these (10 ms of a store's 18 that way).
        self.sales += other.sales
        self.items += other.items
        self.gross += other.gross
        self.discount += other.discount
        self.amount += other.amount
        self.member_amount += other.member_amount
        self.refunds += other.refunds
        self.refund_items += other.refund_items
        self.refund_amount += other.refund_amount
        self.member_refund_amount += other.member_refund_amount
        return self

    @property
    def net(self) -> int:
        return self.amount - self.refund_amount

    @property
    def member_net(self) -> int:
        return self.member_amount - self.member_refund_amount

    def figures(self) -> list[Any]:
        """In the order of ``FIGURES``."""
        net = self.net
        return [self.sales, self.items, self.gross, self.discount, self.amount, self.refunds,
                self.refund_items, self.refund_amount, net, self.member_net,
                ratio(self.member_net, net) if net > 0 else None, half_up(net, self.sales)]


FIGURES: list[tuple[str, Kind]] = [
    ("sales", "int"), ("items", "int"), ("gross", "money"), ("discount", "money"),
    ("amount", "money"), ("refunds", "int"), ("refund_items", "int"),
    ("refund_amount", "money"), ("net", "money"), ("member_net", "money"),
    ("member_share", "ratio"), ("basket", "money")]
LAST_YEAR: list[tuple[str, Kind]] = [
    ("sales_last_year", "int"), ("net_last_year", "money"), ("growth", "ratio")]


def _total(rows: Iterable[Sums]) -> Sums:
    out = Sums()
    for s in rows:
        out.add(s)
    return out


def totals(now: Sums, before: Sums | None = None) -> dict[str, Any]:
    out = dict(zip([c for c, _ in FIGURES], now.figures(), strict=True))
    if before is not None:
        out.update(sales_last_year=before.sales, net_last_year=before.net,
                   growth=growth(now.net, before.net))
    return out


def sums_by(tx: Tx, selection: Selection, start: date, end: date, category: str | None,
            key: str | list[tuple[str, date, date]]) -> dict[str, Sums]:
    """Per ``key`` (``day``, ``store_id``, or the cuts of ``periods``: each cut's label) of the
    covered stores' days from ``start`` to ``end``, what they sold and gave back (of
    ``category`` alone when one is given). Summed by the database: a year of the chain is a few
    hundred rows here, not a row a store-day; a year by month, twelve."""
    span = (start.isoformat(), end.isoformat())

    def by(alias: str) -> tuple[str, tuple[Any, ...]]:
        return (f"{alias}.{key}", ()) if isinstance(key, str) else bucket(f"{alias}.day", key)

    if category is None:
        where, params = store_where(selection, "d")
        group, gparams = by("d")
        return {str(r[0]): Sums(*(int(v) for v in r[1:])) for r in tx.all(
            f"SELECT {group}, sum(d.sales), sum(d.items), sum(d.gross), sum(d.discount),"
            " sum(d.amount), sum(d.member_amount), sum(d.refunds), sum(d.refund_items),"
            " sum(d.refund_amount), sum(d.member_refund_amount) FROM store_days d"
            f" WHERE {where} AND d.day >= ? AND d.day <= ? GROUP BY 1",
            (*gparams, *params, *span))}
    where, params = store_where(selection, "r")
    group, gparams = by("r")
    out = {str(r[0]): Sums(*(int(v) for v in r[1:])) for r in tx.all(
        f"SELECT {group}, sum(r.sales), sum(r.items), sum(r.gross), sum(r.discount),"
        " sum(r.amount), sum(r.member_amount), sum(r.refunds), sum(r.refund_items),"
        f" sum(r.refund_amount) FROM daily_rollups r WHERE {where} AND r.category = ?"
        " AND r.day >= ? AND r.day <= ? GROUP BY 1", (*gparams, *params, category, *span))}
    where, params = store_where(selection, "m")
    group, gparams = by("m")
    for k, amount in tx.all(
            f"SELECT {group}, sum(m.refund_amount) FROM member_refund_days m WHERE {where}"
            " AND m.category = ? AND m.day >= ? AND m.day <= ? GROUP BY 1",
            (*gparams, *params, category, *span)):
        out.setdefault(str(k), Sums()).member_refund_amount += int(amount)
    return out


def region_of(selection: Selection, store_id: str) -> str | None:
    """A store's region as it is now (the hub's own streams, ONLINE, have none)."""
    store = selection.by_id.get(store_id)
    return store.region if store is not None else None


def name_of(selection: Selection, store_id: str) -> str:
    store = selection.by_id.get(store_id)
    return store.name if store is not None else ""


def _days(first: date, last: date) -> list[str]:
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def places_tables(selection: Selection, now: dict[str, Sums], before: dict[str, Sums],
                  ) -> list[Table]:
    """The same figures per region and per store (every covered store, also one that sold
    nothing), with last year's: the chain → region → store drill-down. Ranked by net."""
    ids = sorted(set(selection.ids) | set(now) | set(before))
    regions: dict[str | None, tuple[list[str], Sums, Sums]] = {}
    for store_id in ids:
        kept = regions.setdefault(region_of(selection, store_id), ([], Sums(), Sums()))
        kept[0].append(store_id)
        kept[1].add(now.get(store_id, Sums()))
        kept[2].add(before.get(store_id, Sums()))
    region_rows = [[region, len(stores), *s.figures(), b.sales, b.net, growth(s.net, b.net)]
                   for region, (stores, s, b) in regions.items()]
    region_rows.sort(key=lambda r: (-r[10], r[0] or ""))
    store_rows = []
    for store_id in ids:
        s, b = now.get(store_id, Sums()), before.get(store_id, Sums())
        store_rows.append([store_id, name_of(selection, store_id),
                           region_of(selection, store_id), *s.figures(), b.sales, b.net,
                           growth(s.net, b.net)])
    store_rows.sort(key=lambda r: (-r[11], r[0]))
    return [Table("regions", [("region", "text"), ("stores", "int"), *FIGURES, *LAST_YEAR],
                  region_rows),
            Table("stores", [("store_id", "text"), ("store_name", "text"), ("region", "text"),
                             *FIGURES, *LAST_YEAR], store_rows)]


def trend(tx: Tx, scope: Scope, q: ReportQuery, *, now_ms: int, chain_zone: str,
          grain: str = "day") -> dict[str, Any]:
    """Per day, ISO week or month of the period: sales to net, members' share and basket, with
    the same dates last year; then the period per region and per store."""
    cuts = periods(q, grain)
    selection = select_stores(tx, scope, q)
    unsupported(q, "tier", "segment_id")
    ly = q.last_year()
    backs = [(label, *ReportQuery(first, last).last_year().span) for label, first, last in cuts]
    if grain == "day":
        now = sums_by(tx, selection, q.start, q.end, q.category, "day")
        before = sums_by(tx, selection, ly.start, ly.end, q.category, "day")
        # 29 February's day last year is the 28th, and so is the 28th's.
        pairs = [(now.get(label, Sums()), before.get(back.isoformat(), Sums()))
                 for label, back, _last in backs]
    else:
        # Each day summed into its week or month by the database: a year by month is 12 rows
        # of each year, where adding 730 days up here was 3 ms of a store's 4.4 on SQLite. A
        # week's last year starting on a 29 February's 28th: that day in the week before.
        now = sums_by(tx, selection, q.start, q.end, q.category, cuts)
        before = sums_by(tx, selection, ly.start, ly.end, q.category, backs)
        pairs = [(now.get(label, Sums()), before.get(label, Sums())) for label, _f, _l in cuts]
    rows = [[label, first.isoformat(), last.isoformat(), *s.figures(), b.sales, b.net,
             growth(s.net, b.net)] for (label, first, last), (s, b) in zip(cuts, pairs,
                                                                          strict=True)]
    table = Table("trend", [("period", "text"), ("first", "date"), ("last", "date"), *FIGURES,
                            *LAST_YEAR], rows)
    return report("sales_trend", q, [table, *places_tables(
        selection, sums_by(tx, selection, q.start, q.end, q.category, "store_id"),
        sums_by(tx, selection, ly.start, ly.end, q.category, "store_id"))],
        completeness(tx, selection, q, now_ms, chain_zone),
        notes=NOTES + ([CATEGORY_NOTE] if q.category else []),
        totals=totals(_total(now.values()), _total(before.values())),
        extra={"grain": grain})


def categories(tx: Tx, scope: Scope, q: ReportQuery, *, now_ms: int,
               chain_zone: str) -> dict[str, Any]:
    """Each category's share of the period's net and of the items kept, ranked by net."""
    selection = select_stores(tx, scope, q)
    unsupported(q, "tier", "segment_id")
    where, params = store_where(selection, "r")
    span = (q.start.isoformat(), q.end.isoformat())
    also = (q.category,) if q.category else ()
    found = {str(r[0]): [int(v) for v in r[1:]] + [0] for r in tx.all(
        "SELECT r.category, sum(r.sales), sum(r.items), sum(r.refund_items), sum(r.amount),"
        f" sum(r.refund_amount), sum(r.member_amount) FROM daily_rollups r WHERE {where}"
        f" AND r.day >= ? AND r.day <= ? {'AND r.category = ?' if also else ''}"
        " GROUP BY r.category", (*params, *span, *also))}
    where, params = store_where(selection, "m")
    for category, amount in tx.all(
            f"SELECT m.category, sum(m.refund_amount) FROM member_refund_days m WHERE {where}"
            f" AND m.day >= ? AND m.day <= ? {'AND m.category = ?' if also else ''}"
            " GROUP BY m.category", (*params, *span, *also)):
        found.setdefault(str(category), [0] * 7)[6] += int(amount)
    total_net = sum(f[3] - f[4] for f in found.values())
    total_items = sum(f[1] - f[2] for f in found.values())
    rows: list[list[Any]] = []
    for category, (sales, items, back, amount, refunded, member, member_back) in found.items():
        net, kept, member_net = amount - refunded, items - back, member - member_back
        rows.append([category, sales, items, back, kept, amount, refunded, net, member_net,
                     ratio(net, total_net) if total_net > 0 else None,
                     ratio(kept, total_items) if total_items > 0 else None,
                     ratio(member_net, net) if net > 0 else None])
    rows.sort(key=lambda r: (-r[7], r[0]))
    table = Table("categories", [
        ("rank", "int"), ("category", "text"), ("sales", "int"), ("items", "int"),
        ("refund_items", "int"), ("net_items", "int"), ("amount", "money"),
        ("refund_amount", "money"), ("net", "money"), ("member_net", "money"),
        ("share", "ratio"), ("items_share", "ratio"), ("member_share", "ratio")],
        [[i, *r] for i, r in enumerate(rows, 1)])
    return report("categories", q, [table], completeness(tx, selection, q, now_ms, chain_zone),
                  notes=[
                      "net: amount less refunds, a refund under the category of the line it"
                      " returns ('' when the hub does not know the sale)",
                      "share: of the period's net; items_share: of the items kept (sold less"
                      " returned)",
                      "sales: sales with a line in the category; a sale with lines in two"
                      " categories counts in both, so sales do not add up to the sales made"],
                  totals={"net": total_net, "net_items": total_items,
                          "amount": sum(f[3] for f in found.values()),
                          "refund_amount": sum(f[4] for f in found.values())})


# The weekday of a store-local day's text, Sunday 0 to Saturday 6, in each database's words.
SUNDAY_0 = {"sqlite": "CAST(strftime('%w', h.day) AS INTEGER)",
            "postgres": "CAST(extract(dow FROM CAST(h.day AS DATE)) AS INTEGER)"}


def profile(tx: Tx, scope: Scope, q: ReportQuery, *, now_ms: int,
            chain_zone: str) -> dict[str, Any]:
    """When the period's sales happen: per hour of the day (0-23) and per weekday (Mon-Sun),
    sales and net, each with its share of net and, per weekday, the average of one such day."""
    selection = select_stores(tx, scope, q)
    unsupported(q, "category", "tier", "segment_id")
    where, params = store_where(selection, "h")
    hours = [[0, 0, 0] for _ in range(24)]  # sales, refunds, net
    weekdays = [[0, 0, 0] for _ in range(7)]
    # Grouped by hour and weekday in the database (168 rows at most): by day and hour, a
    # year of a store was 5,000 rows to carry into Python and sum there (15 ms of 20).
    for sunday_0, hour, sales, refunds, net in tx.all(
            f"SELECT {SUNDAY_0[tx.dialect]}, h.hour, sum(h.sales), sum(h.refunds),"
            f" sum(h.amount) - sum(h.refund_amount) FROM store_hours h WHERE {where}"
            " AND h.day >= ? AND h.day <= ? GROUP BY 1, 2",
            (*params, q.start.isoformat(), q.end.isoformat())):
        for row in (hours[int(hour)], weekdays[(int(sunday_0) + 6) % 7]):  # Monday 0
            row[0] += int(sales)
            row[1] += int(refunds)
            row[2] += int(net)
    total = sum(h[2] for h in hours)

    def share(net: int) -> float | None:
        return ratio(net, total) if total > 0 else None

    occurs = [0] * 7  # how many of each weekday the period has
    for d in _days(q.start, q.end):
        occurs[date.fromisoformat(d).weekday()] += 1
    hour_rows = [[h, *v, share(v[2])] for h, v in enumerate(hours)]
    weekday_rows = [[WEEKDAYS[w], occurs[w], *v, share(v[2]), half_up(v[0], occurs[w]),
                     half_up(v[2], occurs[w])] for w, v in enumerate(weekdays)]
    counts: list[tuple[str, Kind]] = [("sales", "int"), ("refunds", "int"), ("net", "money"),
                                      ("share", "ratio")]
    tables = [Table("hours", [("hour", "int"), *counts], hour_rows),
              Table("weekdays", [("weekday", "text"), ("days", "int"), *counts,
                                 ("sales_per_day", "int"), ("net_per_day", "money")],
                    weekday_rows)]
    return report("profile", q, tables, completeness(tx, selection, q, now_ms, chain_zone),
                  notes=["hour and weekday: of the store's own calendar; a refund counts in"
                         " the hour it was made",
                         "per day: the weekday's figure / how many of that weekday the period"
                         " has, rounded half up"],
                  totals={"sales": sum(h[0] for h in hours),
                          "refunds": sum(h[1] for h in hours), "net": total})


Range = tuple[int, str, date, date]  # (+1 add / -1 take away, "month" | "day", first, last)


def month_plan(start: date, end: date) -> list[Range]:
    """How [start, end] is read from a rollup kept both a month and a day: ranges of rows to
    add or take away. A month wholly inside is its monthly row; a month the period covers
    more than half of, its monthly row less its days outside the period; any other month, its
    days inside. Sums add, so either way the figures are the same; this reads the fewest rows
    (a month's row stands for up to 31 days')."""
    out: list[Range] = []
    day = start
    while day <= end:
        first = day.replace(day=1)
        last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
        a, b = max(first, start), min(last, end)
        if 2 * ((b - a).days + 1) > (last - first).days + 1:
            out.append((1, "month", first, last))
            if a > first:
                out.append((-1, "day", first, a - timedelta(days=1)))
            if b < last:
                out.append((-1, "day", b + timedelta(days=1), last))
        else:
            out.append((1, "day", a, b))
        day = last + timedelta(days=1)
    merged: list[Range] = []
    for r in sorted(out, key=lambda r: (r[0], r[1], r[2])):
        if merged and merged[-1][:2] == r[:2] and merged[-1][3] + timedelta(days=1) == r[2]:
            merged[-1] = (r[0], r[1], merged[-1][2], r[3])
        else:
            merged.append(r)
    return merged


def by_months(prefix: str, keys: tuple[str, ...], sums: tuple[str, ...], where: str,
              params: tuple[Any, ...], start: date, end: date, also: str = "",
              also_params: tuple[Any, ...] = ()) -> tuple[str, list[Any]]:
    """The query summing ``sums`` per ``keys`` over [start, end] of a rollup kept both a month
    and a day (``{prefix}_months``, ``{prefix}_days``; table alias ``k``) as ``month_plan``
    reads it, and its parameters. ``where`` and ``also``: conditions on ``k``. A key that only
    had rows taken away comes back with sums of zero."""
    parts, values = [], []
    for sign, kind, first, last in month_plan(start, end):
        columns = [f"k.{c}" for c in keys] + [f"{'-' if sign < 0 else ''}k.{c} AS {c}"
                                               for c in sums]
        bounds = (first.strftime("%Y-%m"), last.strftime("%Y-%m")) if kind == "month" else (
            first.isoformat(), last.isoformat())
        parts.append(f"SELECT {', '.join(columns)} FROM {prefix}_{kind}s k WHERE {where}"
                     f" AND k.{kind} >= ? AND k.{kind} <= ? {also}")
        values += [*params, *bounds, *also_params]
    return (f"SELECT {', '.join(keys)}, {', '.join(f'sum({c})' for c in sums)}"
            f" FROM ({' UNION ALL '.join(parts)}) u GROUP BY {', '.join(keys)}", values)


def products(tx: Tx, scope: Scope, q: ReportQuery, *, now_ms: int, chain_zone: str,
             limit: int = 20) -> dict[str, Any]:
    """Products (skus) over the period: the top movers by net and the slow movers (the lowest
    net among the skus sold in the period), each with quantity kept, net and share of net."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ServiceError("invalid_limit", f"limit is 1 to {MAX_LIMIT}", 422, part="limit")
    selection = select_stores(tx, scope, q)
    unsupported(q, "tier", "segment_id")
    # The whole chain reads the chain's own rows (a sku's a day, not a sku's a store-day).
    prefix, (where, params) = (("sku_chain", ("1 = 1", ())) if selection.everything
                               else ("sku", store_where(selection, "k")))
    found = tx.all(*by_months(
        prefix, ("sku", "category"), ("qty", "amount", "refund_qty", "refund_amount"), where,
        params, q.start, q.end, *(("AND k.category = ?", (q.category,)) if q.category else ())))
    skus = [(str(sku), str(cat), int(qty), int(amount) - int(back_amount), int(back_qty))
            for sku, cat, qty, amount, back_qty, back_amount in found]
    total = sum(s[3] for s in skus)
    ranked = [s for s in skus if s[0] and s[2] > 0]  # sold in the period, sku known

    def rows(chosen: list[tuple[str, str, int, int, int]]) -> list[list[Any]]:
        return [[i, sku, cat, qty - back, back, net, ratio(net, total) if total > 0 else None]
                for i, (sku, cat, qty, net, back) in enumerate(chosen, 1)]

    top = sorted(ranked, key=lambda s: (-s[3], -s[2], s[0], s[1]))[:limit]
    slow = sorted(ranked, key=lambda s: (s[3], s[2], s[0], s[1]))[:limit]
    columns: list[tuple[str, Kind]] = [
        ("rank", "int"), ("sku", "text"), ("category", "text"), ("qty", "int"),
        ("returned", "int"), ("net", "money"), ("share", "ratio")]
    return report("products", q, [Table("top", columns, rows(top)),
                                  Table("slow", columns, rows(slow))],
                  completeness(tx, selection, q, now_ms, chain_zone),
                  notes=["qty: sold less returned in the period; net: amount less refunds;"
                         " share: of the net of every sku",
                         "slow movers: the lowest net among the skus sold in the period (a sku"
                         " that only came back is not ranked)",
                         "refunds of sales the hub does not know have no sku: in the total,"
                         " not ranked"],
                  totals={"net": total, "skus_sold": len(ranked)},
                  extra={"limit": limit})


def local_today(now_ms: int, zone: str) -> date:
    return datetime.fromtimestamp(now_ms / 1000, ZoneInfo(zone)).date()


def dashboard(tx: Tx, scope: Scope, q: ReportQuery, *, now_ms: int,
              chain_zone: str) -> dict[str, Any]:
    """The home page: today (the chain's calendar day at ``now_ms``) against the same weekday
    last week; the period's daily trend with last year's (the console asks for the last 30
    days); per region and per store, today's net, last week's and the period's."""
    selection = select_stores(tx, scope, q)
    unsupported(q, "tier", "segment_id")
    today = local_today(now_ms, chain_zone)
    week_ago = today - timedelta(days=7)
    ly = q.last_year()
    per_store = {"today": sums_by(tx, selection, today, today, q.category, "store_id"),
                 "week_ago": sums_by(tx, selection, week_ago, week_ago, q.category,
                                     "store_id"),
                 "period": sums_by(tx, selection, q.start, q.end, q.category, "store_id")}
    by_day = sums_by(tx, selection, q.start, q.end, q.category, "day")
    before = sums_by(tx, selection, ly.start, ly.end, q.category, "day")
    t, w = _total(per_store["today"].values()), _total(per_store["week_ago"].values())
    compare = Table("today", [("label", "text"), ("day", "date"), *FIGURES], [
        ["today", today.isoformat(), *t.figures()],
        ["same_day_last_week", week_ago.isoformat(), *w.figures()]])
    rows = []
    for d in _days(q.start, q.end):
        s = by_day.get(d, Sums())
        b = before.get(ReportQuery(date.fromisoformat(d), date.fromisoformat(d))
                       .last_year().start.isoformat(), Sums())
        rows.append([d, s.sales, s.net, ratio(s.member_net, s.net) if s.net > 0 else None,
                     half_up(s.net, s.sales), b.net, growth(s.net, b.net)])
    daily = Table("trend", [("day", "date"), ("sales", "int"), ("net", "money"),
                            ("member_share", "ratio"), ("basket", "money"),
                            ("net_last_year", "money"), ("growth", "ratio")], rows)
    tables = [compare, daily, *_dashboard_places(selection, per_store)]
    span = replace(q, start=min(q.start, week_ago), end=max(q.end, today))
    return report("dashboard", q, tables,
                  completeness(tx, selection, span if span.days <= MAX_DAYS else q, now_ms,
                               chain_zone),
                  notes=NOTES[:2] + ["today: the chain's calendar day; compared with the same"
                                     " weekday a week earlier"]
                  + ([CATEGORY_NOTE] if q.category else []),
                  totals={"today": today.isoformat(), "today_sales": t.sales,
                          "today_net": t.net, "last_week_net": w.net,
                          "change": growth(t.net, w.net),
                          **totals(_total(per_store["period"].values()))})


def _dashboard_places(selection: Selection, per_store: dict[str, dict[str, Sums]]
                      ) -> list[Table]:
    """Per region and per store: today's sales and net, the same weekday last week's net, the
    change, and the period's net."""
    ids = sorted(set(selection.ids).union(*per_store.values()))
    figures: list[tuple[str, Kind]] = [
        ("today_sales", "int"), ("today_net", "money"), ("last_week_net", "money"),
        ("change", "ratio"), ("net", "money")]

    def values(stores: list[str]) -> list[Any]:
        t, w, p = (_total(per_store[k].get(s, Sums()) for s in stores)
                   for k in ("today", "week_ago", "period"))
        return [t.sales, t.net, w.net, growth(t.net, w.net), p.net]

    regions: dict[str | None, list[str]] = {}
    for store_id in ids:
        regions.setdefault(region_of(selection, store_id), []).append(store_id)
    region_rows = sorted(([r, len(s), *values(s)] for r, s in regions.items()),
                         key=lambda r: (-r[3], r[0] or ""))
    store_rows = sorted(([s, name_of(selection, s), region_of(selection, s), *values([s])]
                         for s in ids), key=lambda r: (-r[4], r[0]))
    return [Table("regions", [("region", "text"), ("stores", "int"), *figures], region_rows),
            Table("stores", [("store_id", "text"), ("store_name", "text"), ("region", "text"),
                             *figures], store_rows)]
