"""Member activity: per member, first and last purchase, purchases, refunds, spend and items
(net of refunds), the two earliest store-local days with a purchase as day numbers (days
since 1970-01-01; two on one day: that day twice; the funnel's "second purchase within 90
days"); spend and items per store-local month and category; purchases, spend and items per
store-local day (what a segment's "in the last N days" sums); the stores visited.

Rows are kept under the member each id now is (``hub.members.identity``). A merge is always
made by a registration: the one that names a phone another live member already holds. When
this projection reads that registration, every id merged into the member it now is has its
rows folded into the member's (sums add up, the earlier first purchase and the later last
one stay) and removed. Read from zero instead, the same events go to that member directly:
folding is a sum, so both ways end with the same rows. A refund is counted in the month of
the refund, under the category of the sale line it returns ('' when that sale is unknown).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

from hub.core.db import Tx, in_chunks
from hub.core.projections import Logged
from hub.members import store_members
from hub.members.identity import canonical
from hub.projections.places import Places, local_time
from hub.projections.sales import REFUND, SALE, refund_lines

REGISTERED = "member.registered"
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()  # day number 0

# [first_hlc, first_store, first_date, last_hlc, last_store, last_date, purchases, refunds,
#  spend, items, purchase_day_1, purchase_day_2]
Activity = list[Any]
_DAY_1 = 10  # where the two earliest purchase days start


# SQL: the new row's first purchase, by (hlc, store), comes before the one kept (or none is
# kept); its last purchase comes after the one kept. A row with no purchase (a refund) has none.
_FIRST = ("(excluded.first_hlc IS NOT NULL AND (member_activity.first_hlc IS NULL"
          " OR excluded.first_hlc < member_activity.first_hlc"
          " OR (excluded.first_hlc = member_activity.first_hlc"
          " AND excluded.first_store < member_activity.first_store)))")
_LAST = ("(excluded.last_hlc IS NOT NULL AND (member_activity.last_hlc IS NULL"
         " OR member_activity.last_hlc < excluded.last_hlc"
         " OR (member_activity.last_hlc = excluded.last_hlc"
         " AND member_activity.last_store < excluded.last_store)))")
# SQL: the two earliest purchase days of the kept pair and the new pair, each pair in order
# (a second day only after a first). The smaller first day stays first; the second is the
# smaller of the other pair's first day and its own pair's second.
_KEPT1, _KEPT2 = "member_activity.purchase_day_1", "member_activity.purchase_day_2"
_NEW1, _NEW2 = "excluded.purchase_day_1", "excluded.purchase_day_2"
_EARLIEST_TWO = (
    f"purchase_day_1 = CASE WHEN {_NEW1} IS NULL OR ({_KEPT1} IS NOT NULL AND"
    f" {_KEPT1} <= {_NEW1}) THEN {_KEPT1} ELSE {_NEW1} END,"
    f" purchase_day_2 = CASE WHEN {_NEW1} IS NULL THEN {_KEPT2}"
    f" WHEN {_KEPT1} IS NULL THEN {_NEW2}"
    f" WHEN {_KEPT1} <= {_NEW1} THEN CASE WHEN {_KEPT2} IS NOT NULL AND {_KEPT2} <= {_NEW1}"
    f" THEN {_KEPT2} ELSE {_NEW1} END"
    f" ELSE CASE WHEN {_NEW2} IS NOT NULL AND {_NEW2} <= {_KEPT1} THEN {_NEW2}"
    f" ELSE {_KEPT1} END END")
_UPSERT_ACTIVITY = (
    "INSERT INTO member_activity(member_id, first_hlc, first_store, first_date, last_hlc,"
    " last_store, last_date, purchases, refunds, spend, items, purchase_day_1,"
    " purchase_day_2) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT(member_id) DO UPDATE SET "
    + ", ".join(f"{c} = CASE WHEN {_FIRST} THEN excluded.{c} ELSE member_activity.{c} END"
                for c in ("first_hlc", "first_store", "first_date"))
    + ", "
    + ", ".join(f"{c} = CASE WHEN {_LAST} THEN excluded.{c} ELSE member_activity.{c} END"
                for c in ("last_hlc", "last_store", "last_date"))
    + ", "
    + ", ".join(f"{c} = member_activity.{c} + excluded.{c}"
                for c in ("purchases", "refunds", "spend", "items"))
    + ", " + _EARLIEST_TWO)
_UPSERT_MONTHS = (
    "INSERT INTO member_months(member_id, month, category, spend, items) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT(member_id, month, category) DO UPDATE SET"
    " spend = member_months.spend + excluded.spend, items = member_months.items + excluded.items")
_UPSERT_DAYS = (
    "INSERT INTO member_days(member_id, day, purchases, spend, items) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT(member_id, day) DO UPDATE SET"
    " purchases = member_days.purchases + excluded.purchases,"
    " spend = member_days.spend + excluded.spend, items = member_days.items + excluded.items")
_UPSERT_STORES = (
    "INSERT INTO member_stores(member_id, store_id, purchases, spend, last_hlc, last_date)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(member_id, store_id) DO UPDATE SET"
    " purchases = member_stores.purchases + excluded.purchases,"
    " spend = member_stores.spend + excluded.spend,"
    " last_date = CASE WHEN member_stores.last_hlc IS NULL OR excluded.last_hlc"
    " > member_stores.last_hlc THEN excluded.last_date ELSE member_stores.last_date END,"
    " last_hlc = CASE WHEN member_stores.last_hlc IS NULL OR excluded.last_hlc"
    " > member_stores.last_hlc THEN excluded.last_hlc ELSE member_stores.last_hlc END")


def earliest_two(a: Sequence[Any], b: Sequence[Any]) -> tuple[Any, Any]:
    """The two earliest days of pairs ``a`` and ``b`` (each (earliest, second) or None where
    there is none), as ``_EARLIEST_TWO`` merges them in SQL."""
    days = sorted(d for d in (*a, *b) if d is not None)
    return (days[0] if days else None, days[1] if len(days) > 1 else None)


def _before(a: tuple[Any, Any], b: tuple[Any, Any]) -> bool:
    """(hlc, store) ``a`` comes before ``b``; an unknown ``a`` (None) never does, and
    anything known comes before an unknown ``b``."""
    return a[0] is not None and (b[0] is None or a < b)


class Deltas:
    """What a page adds, per member, month and category, and store; written once each."""

    def __init__(self) -> None:
        self.activity: dict[str, Activity] = {}
        self.months: dict[tuple[str, str, str], list[int]] = {}
        self.days: dict[tuple[str, str], list[int]] = {}
        self.stores: dict[tuple[str, str], list[Any]] = {}

    def add_activity(self, member: str, row: Sequence[Any]) -> None:
        held = self.activity.get(member)
        if held is None:
            self.activity[member] = list(row)
            return
        if _before((row[0], row[1]), (held[0], held[1])):
            held[0:3] = row[0:3]
        if row[3] is not None and (held[3] is None or (held[3], held[4]) < (row[3], row[4])):
            held[3:6] = row[3:6]
        for i in range(6, 10):
            held[i] += row[i]
        held[_DAY_1:] = earliest_two(held[_DAY_1:], row[_DAY_1:])

    def add_month(self, member: str, month: str, category: str, spend: int, items: int) -> None:
        held = self.months.get((member, month, category))
        if held is None:
            self.months[(member, month, category)] = [spend, items]
        else:
            held[0] += spend
            held[1] += items

    def add_day(self, member: str, day: str, purchases: int, spend: int, items: int) -> None:
        held = self.days.get((member, day))
        if held is None:
            self.days[(member, day)] = [purchases, spend, items]
        else:
            held[0] += purchases
            held[1] += spend
            held[2] += items

    def add_store(self, member: str, store: str, purchases: int, spend: int,
                  last_hlc: int | None, last_date: str | None) -> None:
        held = self.stores.get((member, store))
        if held is None:
            self.stores[(member, store)] = [purchases, spend, last_hlc, last_date]
            return
        held[0] += purchases
        held[1] += spend
        if last_hlc is not None and (held[2] is None or last_hlc > held[2]):
            held[2:4] = [last_hlc, last_date]

    def write(self, tx: Tx) -> None:
        tx.executemany(_UPSERT_ACTIVITY, [(m, *a) for m, a in self.activity.items()])
        tx.executemany(_UPSERT_MONTHS, [(*k, *v) for k, v in self.months.items()])
        tx.executemany(_UPSERT_DAYS, [(*k, *v) for k, v in self.days.items()])
        tx.executemany(_UPSERT_STORES, [(*k, *v) for k, v in self.stores.items()])


def members_now(tx: Tx, member_ids: Iterable[str]) -> dict[str, str]:
    """The merged ones among ``member_ids``, each with the member it now is."""
    merged: dict[str, str] = {}
    for chunk, marks in in_chunks(sorted(set(member_ids))):
        for mid, into in tx.all("SELECT member_id, merged_into FROM members"
                                f" WHERE merged_into IS NOT NULL AND member_id IN ({marks})",
                                chunk):
            merged[str(mid)] = canonical(tx, str(into))
    return merged


class MemberActivity:
    name = "member_activity"
    tables: tuple[str, ...] = ("member_activity", "member_months", "member_days",
                               "member_stores", "store_members")
    types = frozenset({SALE, REFUND, REGISTERED})
    after: tuple[str, ...] = ("sales_facts",)  # a refund line's category is its sale line's

    def __init__(self, chain_zone: str) -> None:
        self.chain_zone = chain_zone

    def apply(self, tx: Tx, events: Sequence[Logged]) -> None:
        places = Places(tx, self.chain_zone)
        now_is = members_now(tx, {e.event.body.member_id for e in events
                                  if e.event.body.member_id is not None})
        lines = refund_lines(tx, events)
        d = Deltas()
        registered: set[str] = set()
        numbers: dict[str, int] = {}  # a day's number, worked out once a page
        for e in events:
            b = e.event.body
            if b.member_id is None:
                continue  # an anonymous sale or its refund
            member = now_is.get(b.member_id, b.member_id)
            if e.type == REGISTERED:
                registered.add(member)
                continue
            _region, zone = places.of(e.store_id)
            day = local_time(zone, e.hlc)[0]
            month = day[:7]
            if e.type == SALE:
                items = 0
                for ln in b.lines:
                    items += ln.qty
                    d.add_month(member, month, ln.category, ln.net, ln.qty)
                number = numbers.get(day)
                if number is None:
                    number = numbers[day] = date.fromisoformat(day).toordinal() - EPOCH_ORDINAL
                d.add_activity(member, (e.hlc, e.store_id, day, e.hlc, e.store_id, day, 1, 0,
                                        b.total, items, number, None))
                d.add_store(member, e.store_id, 1, b.total, e.hlc, day)
                d.add_day(member, day, 1, b.total, items)
            else:
                items = 0
                for ln in b.lines:
                    items += ln.qty
                    category = lines.get((b.sale_id, ln.line_no), (None, None))[1] or ""
                    d.add_month(member, month, category, -ln.amount, -ln.qty)
                d.add_activity(member, (None, None, None, None, None, None, 0, 1, -b.amount,
                                        -items, None, None))
                d.add_store(member, e.store_id, 0, -b.amount, None, None)
                d.add_day(member, day, 0, -b.amount, -items)
        if registered:
            fold_merged(tx, registered, d)
        d.write(tx)
        # Each store's members: a member registered, or at a store for the first time.
        store_members.add_new(tx, registered, d.stores)


def fold_merged(tx: Tx, members: set[str], d: Deltas) -> None:
    """Rows kept under ids since merged into ``members`` move onto them (through ``d``)."""
    into: dict[str, str] = {}
    for chunk, marks in in_chunks(sorted(members)):
        for alias, survivor in tx.all(
                f"SELECT member_id, merged_into FROM members WHERE merged_into IN ({marks})",
                chunk):
            into[str(alias)] = canonical(tx, str(survivor))
    if not into:
        return
    for chunk, marks in in_chunks(sorted(into)):
        for r in tx.all(
                "SELECT member_id, first_hlc, first_store, first_date, last_hlc, last_store,"
                " last_date, purchases, refunds, spend, items, purchase_day_1, purchase_day_2"
                f" FROM member_activity WHERE member_id IN ({marks})", chunk):
            d.add_activity(into[str(r[0])], [r[i] for i in range(1, 13)])
        for mid, month, category, spend, items in tx.all(
                "SELECT member_id, month, category, spend, items FROM member_months"
                f" WHERE member_id IN ({marks})", chunk):
            d.add_month(into[str(mid)], month, category, int(spend), int(items))
        for mid, day, purchases, spend, items in tx.all(
                "SELECT member_id, day, purchases, spend, items FROM member_days"
                f" WHERE member_id IN ({marks})", chunk):
            d.add_day(into[str(mid)], day, int(purchases), int(spend), int(items))
        for mid, store, purchases, spend, last_hlc, last_date in tx.all(
                "SELECT member_id, store_id, purchases, spend, last_hlc, last_date"
                f" FROM member_stores WHERE member_id IN ({marks})", chunk):
            d.add_store(into[str(mid)], store, int(purchases), int(spend), last_hlc, last_date)
        for table in MemberActivity.tables:
            tx.execute(f"DELETE FROM {table} WHERE member_id IN ({marks})", chunk)
