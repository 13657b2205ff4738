"""Stored value by store and day, and which store's deposits each spend used.

Per store and store-local day: what was topped up, spent and refunded there (``sv_days``), and
per member the top-ups (``sv_topups``, the id the store wrote). The ledger itself attributes
nothing: a store's share of a balance is the sum of the deltas it wrote, so a store where a
member spends what another store took goes negative. Settling between stores needs to know
whose deposit paid, so this projection traces every spend to the stores that hold the member's
balance (``sv_holdings``, per member as the member now is):

- a top-up or an ``sv.refunded`` at store A adds to what A holds (a refund puts value back on
  the member's card at A: A took the goods back, it now owes the value);
- a spend at store B draws first on what B itself holds of the member's balance, then on what
  the other stores hold, pro rata to their holdings (largest remainder, ties to the lower
  store id); what it draws from A is owed by A to B (``sv_flows``);
- a spend nothing covers (its top-up not merged yet: an offline store) leaves B holding less
  than nothing; the member's next top-up or refund anywhere first covers what B (and any other
  store) advanced that way, pro rata, and that is owed to B from then on.

Principal and bonus are traced apart, each drawing on its own kind. ``held`` in ``sv_days``
is the change in what each store holds, so its running sum is the stored value outstanding
issued by that store (at any day end), and over all stores it is the ledger's total.

The rows depend on the order of the log, not on how it was cut into pages: a member's
holdings are read, changed event by event in log order, and written back. Merges: every member
is the member their id now is, and the holdings kept under ids merged into a member are folded
into the member's before a page changes them. A merge joins a member whose history was all
under one of the two ids until then (a registration merged late names an id no event used
before it), so folding is a renaming and a rebuild from zero ends with the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hub.core.db import Tx, in_chunks
from hub.core.projections import Logged
from hub.projections.activity import REGISTERED, members_now
from hub.projections.places import Places, local_time
from protocol.money import allocate

TOPPED_UP, SPENT, REFUNDED = "sv.topped_up", "sv.spent", "sv.refunded"

_DAY_SUMS = ("topups", "topped_up_principal", "topped_up_bonus", "spent_principal",
             "spent_bonus", "refunded_principal", "refunded_bonus", "held_principal",
             "held_bonus")
_UPSERT_DAYS = (
    f"INSERT INTO sv_days(store_id, day, region, {', '.join(_DAY_SUMS)})"
    f" VALUES ({', '.join('?' * (3 + len(_DAY_SUMS)))})"
    " ON CONFLICT(store_id, day) DO UPDATE SET region = excluded.region, "
    + ", ".join(f"{c} = sv_days.{c} + excluded.{c}" for c in _DAY_SUMS))
_UPSERT_FLOWS = (
    "INSERT INTO sv_flows(store_id, day, from_store, principal, bonus) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT(store_id, day, from_store) DO UPDATE SET"
    " principal = sv_flows.principal + excluded.principal,"
    " bonus = sv_flows.bonus + excluded.bonus")
_UPSERT_TOPUPS = (
    "INSERT INTO sv_topups(store_id, day, member_id, topups, principal, bonus)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(store_id, day, member_id) DO UPDATE SET"
    " topups = sv_topups.topups + excluded.topups,"
    " principal = sv_topups.principal + excluded.principal,"
    " bonus = sv_topups.bonus + excluded.bonus")
_SET_HOLDING = (
    "INSERT INTO sv_holdings(member_id, store_id, principal, bonus) VALUES (?, ?, ?, ?)"
    " ON CONFLICT(member_id, store_id) DO UPDATE SET principal = excluded.principal,"
    " bonus = excluded.bonus")

# (store, day) -> the ``_DAY_SUMS``; per member, store -> [principal, bonus] held.
DayKey = tuple[str, str]
Pool = dict[str, list[int]]
PRINCIPAL, BONUS = 0, 1


def draw(pool: Pool, store: str, amount: int, kind: int) -> dict[str, int]:
    """Take ``amount`` of ``kind`` out of ``pool`` for a spend at ``store``: from what
    ``store`` holds first, then pro rata from the other stores' positive holdings, the rest
    (nothing left to draw on) from ``store``, below zero. Returns what each other store gave."""
    held = pool.setdefault(store, [0, 0])
    own = min(amount, max(0, held[kind]))
    held[kind] -= own
    left = amount - own
    given: dict[str, int] = {}
    others = sorted(s for s, h in pool.items() if s != store and h[kind] > 0)
    if left and others:
        cover = min(left, sum(pool[s][kind] for s in others))
        for s, part in zip(others, allocate(cover, [pool[s][kind] for s in others]),
                           strict=True):
            if part:
                pool[s][kind] -= part
                given[s] = part
        left -= cover
    held[kind] -= left
    return given


def put(pool: Pool, store: str, amount: int, kind: int) -> dict[str, int]:
    """Add ``amount`` of ``kind`` to what ``store`` holds, after covering what stores spent
    ahead of the member's balance (negative holdings): ``store``'s own first, then the others'
    pro rata. Returns what ``store`` covered for each other store (it owes them that)."""
    held = pool.setdefault(store, [0, 0])
    own = min(amount, max(0, -held[kind]))
    held[kind] += own
    left = amount - own
    covered: dict[str, int] = {}
    short = sorted(s for s, h in pool.items() if s != store and h[kind] < 0)
    if left and short:
        cover = min(left, -sum(pool[s][kind] for s in short))
        for s, part in zip(short, allocate(cover, [-pool[s][kind] for s in short]),
                           strict=True):
            if part:
                pool[s][kind] += part
                covered[s] = part
        left -= cover
    held[kind] += left
    return covered


class Page:
    """What a page adds to the day sums, flows and top-ups; written once each."""

    def __init__(self) -> None:
        self.days: dict[DayKey, list[int]] = {}
        self.regions: dict[str, str | None] = {}
        self.flows: dict[tuple[str, str, str], list[int]] = {}
        self.topups: dict[tuple[str, str, str], list[int]] = {}

    def day(self, store: str, day: str) -> list[int]:
        row = self.days.get((store, day))
        if row is None:
            row = self.days[(store, day)] = [0] * len(_DAY_SUMS)
        return row

    def flow(self, spent_at: str, day: str, holder: str, kind: int, amount: int) -> None:
        """``holder``'s deposit of ``amount`` paid for what ``spent_at`` sold."""
        row = self.flows.setdefault((spent_at, day, holder), [0, 0])
        row[kind] += amount
        self.day(holder, day)[7 + kind] -= amount  # the holder holds less ...
        self.day(spent_at, day)[7 + kind] += amount  # ... and the seller's advance is covered

    def write(self, tx: Tx) -> None:
        tx.executemany(_UPSERT_DAYS, [(s, d, self.regions.get(s), *v)
                                      for (s, d), v in self.days.items()])
        tx.executemany(_UPSERT_FLOWS, [(*k, *v) for k, v in self.flows.items()])
        tx.executemany(_UPSERT_TOPUPS, [(*k, *v) for k, v in self.topups.items()])


def load_pools(tx: Tx, members: set[str]) -> dict[str, Pool]:
    """The holdings of ``members`` (each as the member now is), with those kept under ids
    since merged into them folded in; the folded ids' rows are removed."""
    pools: dict[str, Pool] = {m: {} for m in members}
    into: dict[str, str] = {}
    for chunk, marks in in_chunks(sorted(members)):
        into.update((str(a), str(s)) for a, s in tx.all(
            f"SELECT member_id, merged_into FROM members WHERE merged_into IN ({marks})",
            chunk))
    for chunk, marks in in_chunks(sorted(members | into.keys())):
        for mid, store, principal, bonus in tx.all(
                "SELECT member_id, store_id, principal, bonus FROM sv_holdings"
                f" WHERE member_id IN ({marks})", chunk):
            held = pools[into.get(str(mid), str(mid))].setdefault(str(store), [0, 0])
            held[PRINCIPAL] += int(principal)
            held[BONUS] += int(bonus)
    for chunk, marks in in_chunks(sorted(into)):
        tx.execute(f"DELETE FROM sv_holdings WHERE member_id IN ({marks})", chunk)
    return pools


def save_pools(tx: Tx, pools: dict[str, Pool]) -> None:
    """Holdings back as they now are; a store holding nothing of a member keeps no row (so
    the rows are the same however the log was paged)."""
    tx.executemany(_SET_HOLDING, [(m, s, h[PRINCIPAL], h[BONUS])
                                  for m, pool in pools.items() for s, h in pool.items()
                                  if h[PRINCIPAL] or h[BONUS]])
    empty = [(m, s) for m, pool in pools.items() for s, h in pool.items()
             if not h[PRINCIPAL] and not h[BONUS]]
    tx.executemany("DELETE FROM sv_holdings WHERE member_id = ? AND store_id = ?", empty)


class StoredValueDays:
    name = "sv_days"
    tables: tuple[str, ...] = ("sv_days", "sv_flows", "sv_holdings", "sv_topups")
    # Registrations: a merge they made folds holdings before anything else reads them.
    types = frozenset({TOPPED_UP, SPENT, REFUNDED, REGISTERED})
    after: tuple[str, ...] = ()

    def __init__(self, chain_zone: str) -> None:
        self.chain_zone = chain_zone

    def apply(self, tx: Tx, events: Sequence[Logged]) -> None:
        places = Places(tx, self.chain_zone)
        now_is = members_now(tx, {e.event.body.member_id for e in events})
        pools = load_pools(tx, {now_is.get(e.event.body.member_id, e.event.body.member_id)
                                for e in events})
        page = Page()
        for e in events:
            if e.type == REGISTERED:
                continue
            b: Any = e.event.body
            region, zone = places.of(e.store_id)
            page.regions[e.store_id] = region
            day = local_time(zone, e.hlc)[0]
            pool = pools[now_is.get(b.member_id, b.member_id)]
            sums = page.day(e.store_id, day)
            if e.type == SPENT:
                sums[3] += b.principal
                sums[4] += b.bonus
                sums[7] -= b.principal
                sums[8] -= b.bonus
                for kind, amount in ((PRINCIPAL, b.principal), (BONUS, b.bonus)):
                    for holder, part in draw(pool, e.store_id, amount, kind).items():
                        page.flow(e.store_id, day, holder, kind, part)
            else:
                if e.type == TOPPED_UP:
                    sums[0] += 1
                    sums[1] += b.principal
                    sums[2] += b.bonus
                    top = page.topups.setdefault((e.store_id, day, b.member_id), [0, 0, 0])
                    top[0] += 1
                    top[1] += b.principal
                    top[2] += b.bonus
                else:
                    sums[5] += b.principal
                    sums[6] += b.bonus
                sums[7] += b.principal
                sums[8] += b.bonus
                for kind, amount in ((PRINCIPAL, b.principal), (BONUS, b.bonus)):
                    for seller, part in put(pool, e.store_id, amount, kind).items():
                        page.flow(seller, day, e.store_id, kind, part)
        for (store, _day) in page.days:
            if store not in page.regions:  # a holder that only gave to a spend elsewhere
                page.regions[store] = places.of(store)[0]
        page.write(tx)
        save_pools(tx, pools)
