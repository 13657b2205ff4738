"""Members' purchases by store and store-local day: per member (as the member now is), day and
store, purchases, ``kept`` (the purchases not fully refunded) and spend net of refunds (a
refund on its own day, at its own store).

What the member reports count: the chain's active members in a period and their repeat buyers
stream through the key in member order, one pass without a sort; a store's are a range of its
covering index ``member_store_days_store``. A purchase stops being kept when the refunds of it
merged so far reach its total (one of 0 is always kept); what each sale with a refund has had
refunded is kept in ``sale_refunds``, so a refund merged before its sale (another store's,
offline) is counted when the sale comes. Everything is read and changed in log order.

Rows are kept under the member each id now is; when a registration that merged ids is read,
the rows of the ids merged into its member are folded into the member's (a sum, as
``hub.projections.activity`` does), so a rebuild from zero ends with the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hub.core.db import Tx, in_chunks
from hub.core.projections import Logged
from hub.projections.activity import REGISTERED, members_now
from hub.projections.places import Places, local_time
from hub.projections.sales import REFUND, SALE

_UPSERT = (
    "INSERT INTO member_store_days(member_id, day, store_id, purchases, kept, spend)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(member_id, day, store_id) DO UPDATE SET"
    " purchases = member_store_days.purchases + excluded.purchases,"
    " kept = member_store_days.kept + excluded.kept,"
    " spend = member_store_days.spend + excluded.spend")
_SET_REFUNDED = (
    "INSERT INTO sale_refunds(sale_id, store_id, refunded) VALUES (?, ?, ?)"
    " ON CONFLICT(sale_id) DO UPDATE SET store_id = excluded.store_id,"
    " refunded = excluded.refunded")

Key = tuple[str, str, str]  # (member as now, day, store)
# A sale as its first fact row says: (pos, store, day, member as written, total).
Sale = tuple[int, str, str, str | None, int]


def _sales(tx: Tx, sale_ids: set[str]) -> dict[str, Sale]:
    """The first logged sale of each of ``sale_ids`` (``sales_facts``, applied before)."""
    found: dict[str, Sale] = {}
    for chunk, marks in in_chunks(sorted(sale_ids)):
        for doc, pos, store, day, member, total in tx.all(
                "SELECT doc_id, pos, store_id, local_date, member_id, amount FROM sales_facts"
                f" WHERE kind = 'sale' AND doc_id IN ({marks}) ORDER BY pos", chunk):
            found.setdefault(str(doc), (int(pos), str(store), str(day), member, int(total)))
    return found


def _refunded(tx: Tx, sale_ids: set[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for chunk, marks in in_chunks(sorted(sale_ids)):
        out.update((str(s), int(r)) for s, r in tx.all(
            f"SELECT sale_id, refunded FROM sale_refunds WHERE sale_id IN ({marks})", chunk))
    return out


def _fold(tx: Tx, members: set[str], rows: dict[Key, list[int]]) -> None:
    """The rows of ids since merged into ``members`` move onto them (through ``rows``)."""
    into: dict[str, str] = {}
    for chunk, marks in in_chunks(sorted(members)):
        into.update((str(a), str(s)) for a, s in tx.all(
            f"SELECT member_id, merged_into FROM members WHERE merged_into IN ({marks})",
            chunk))
    for chunk, marks in in_chunks(sorted(into)):
        for mid, day, store, purchases, kept, spend in tx.all(
                "SELECT member_id, day, store_id, purchases, kept, spend FROM member_store_days"
                f" WHERE member_id IN ({marks})", chunk):
            row = rows.setdefault((into[str(mid)], str(day), str(store)), [0, 0, 0])
            row[0] += int(purchases)
            row[1] += int(kept)
            row[2] += int(spend)
        tx.execute(f"DELETE FROM member_store_days WHERE member_id IN ({marks})", chunk)


class MemberStoreDays:
    name = "member_store_days"
    tables: tuple[str, ...] = ("member_store_days", "sale_refunds")
    types = frozenset({SALE, REFUND, REGISTERED})
    after: tuple[str, ...] = ("sales_facts",)  # a refund's sale: its store, day, member, total

    def __init__(self, chain_zone: str) -> None:
        self.chain_zone = chain_zone

    def apply(self, tx: Tx, events: Sequence[Logged]) -> None:
        places = Places(tx, self.chain_zone)
        refunds = {e.event.body.sale_id for e in events if e.type == REFUND}
        sales = _sales(tx, refunds)
        refunded = _refunded(tx, refunds | {e.event.body.sale_id for e in events
                                            if e.type == SALE})
        now_is = members_now(tx, {m for m in (
            *(e.event.body.member_id for e in events), *(s[3] for s in sales.values()))
            if m is not None})
        changed: dict[str, str] = {}  # sale -> the store that refunded it last
        rows: dict[Key, list[int]] = {}
        registered: set[str] = set()

        def add(member: str, day: str, store: str, purchases: int, kept: int,
                spend: int) -> None:
            row = rows.setdefault((now_is.get(member, member), day, store), [0, 0, 0])
            row[0] += purchases
            row[1] += kept
            row[2] += spend

        for e in events:
            b: Any = e.event.body
            if e.type == REGISTERED:
                registered.add(now_is.get(b.member_id, b.member_id))
                continue
            day = local_time(places.of(e.store_id)[1], e.hlc)[0]
            if e.type == SALE:
                if b.member_id is not None:
                    back = refunded.get(b.sale_id, 0)
                    add(b.member_id, day, e.store_id, 1, 0 if 0 < b.total <= back else 1,
                        b.total)
                continue
            before = refunded.get(b.sale_id, 0)
            after = refunded[b.sale_id] = before + b.amount
            changed[b.sale_id] = e.store_id
            sale = sales.get(b.sale_id)
            # The sale, if it was logged before this refund, stops counting when this refund
            # is the one that reaches its total.
            if sale is not None and sale[0] < e.pos and sale[3] is not None \
                    and before < sale[4] <= after:
                add(sale[3], sale[2], sale[1], 0, -1, 0)
            if b.member_id is not None:
                add(b.member_id, day, e.store_id, 0, 0, -b.amount)
        if registered:
            _fold(tx, registered, rows)
        tx.executemany(_UPSERT, [(*k, *v) for k, v in rows.items()])
        tx.executemany(_SET_REFUNDED, [(s, store, refunded[s]) for s, store in changed.items()])
