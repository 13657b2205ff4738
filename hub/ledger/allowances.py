"""Standing offline allowances: the hub grants each store an allowance per member, tops it up.

A store lets a member spend points and stored value offline only within what the hub has granted
that store for the member: an escrow, held back from every other store. Besides what a store
asks for online (``hub.ledger.authority.authorize``), the hub hands out standing allowances by
itself, so a store already holds what a member usually spends there before it is cut off:

- **which stores**: the member's home store and every store holding a share row for the member
  (a store where the member has had ledger activity) — the member's *active* stores; the hub's
  own streams (``HQ``, ``ONLINE``) hold shares but are no stores and never among them;
- **how much**: each active store's outstanding grant is topped up to the target
  ``t = min(cap, floor(fraction * balance / active stores))``, ``cap`` being ``max_points`` or
  ``max_stored_value``; the rest of the balance stays free for online authorisation;
- **out of what**: never more than is free, ``free = balance - sum over all stores of
  outstanding`` — the one rule online authorisation uses too (``Ledger.free``);
- **when**: for the members a batch touched, in the batch's transaction, from their books as
  its ledger effects leave them (``settle``); for every member at hub start and daily,
  a page a transaction (``refresh_page``, run by ``Hub.refresh_allowances``).

The books, per member, store and dimension (points; stored value = principal + bonus), in the
``grants`` table: ``granted`` is cumulative (standing and online grants; nothing is taken back),
``spent`` is that store's acknowledged spending (``escrow_used`` says what counts), and
``outstanding = max(0, granted - spent)`` is what the store may still spend of it. A merge
moves the merged id's rows onto the member it became, per store, granted and spent alike
(``hub.ledger.apply.merge_member``): spending a store still sends under the old id is counted
against the member it is now (the apply maps ids), so that escrow is used up, not held for ever, and
the store hears the combined grant with the member's directory entry.

**Guarantee.** Every grant is made out of ``free``: at grant time the sum of outstanding escrow
over all stores never exceeds the member's balance. If the sum was within the balance before a
grant it is within it after; if it was not (the member spent beyond escrow, e.g. under a store's
configured default before that store heard of any grant), nothing is granted. Spending within
escrow lowers the balance and the spending store's outstanding by the same amount, and earning
raises only the balance, so between grants the sum stays within the balance as well.
``tests/hub/test_allowances.py`` checks this over random sequences of earning, spending and
online authorisation.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field

from hub.core.db import Tx, in_chunks
from hub.core.schema import next_counter
from hub.stores.registry import VIRTUAL_STORES
from protocol.events import (
    MAX_POINTS,
    PointsAdjusted,
    PointsRedeemed,
    StoredValueRefunded,
    StoredValueSpent,
)
from protocol.money import MAX_AMOUNT

POINTS, STORED_VALUE = 0, 1


class AllowancePolicy(BaseModel):
    """``[allowance]`` in the hub config: how much of a member's balance stands at stores."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # At most this share of a member's balance is handed out as standing allowances; the rest
    # stays for online authorisation.
    fraction: float = Field(0.5, ge=0, le=1)
    max_points: int = Field(5_000, ge=0, le=MAX_POINTS)  # per member and store
    max_stored_value: int = Field(50_000, ge=0, le=MAX_AMOUNT)  # minor units

    def target(self, dimension: int, balance: int, stores: int) -> int:
        """What each of ``stores`` active stores should have outstanding."""
        if not self.enabled or balance <= 0 or stores <= 0:
            return 0
        num, den = _ratio(self.fraction)
        cap = self.max_points if dimension == POINTS else self.max_stored_value
        return min(cap, balance * num // (den * stores))


@lru_cache(maxsize=16)
def _ratio(fraction: float) -> tuple[int, int]:
    """``fraction`` as an exact ratio of its decimal digits: 0.1 is one tenth, not the binary
    float nearest to it, so shares are rounded down exactly as written."""
    exact = Fraction(str(fraction))
    return exact.numerator, exact.denominator


@dataclass(slots=True)
class Ledger:
    """One member's escrow books in one dimension (points, or stored value)."""

    balance: int = 0
    granted: dict[str, int] = field(default_factory=dict)  # store -> cumulative grant
    spent: dict[str, int] = field(default_factory=dict)  # store -> acknowledged spending

    def outstanding(self, store_id: str) -> int:
        return max(0, self.granted.get(store_id, 0) - self.spent.get(store_id, 0))

    def held(self) -> int:
        """Everything held back for stores: the sum of their outstanding grants."""
        spent = self.spent
        return sum(max(0, g - spent.get(s, 0)) for s, g in self.granted.items())

    def free(self) -> int:
        """What may still be granted to any store (negative: more is held than the balance)."""
        return self.balance - self.held()

    def hold_more(self, store_id: str, amount: int) -> int:
        """Make ``store_id``'s outstanding grant ``amount`` larger; returns what its cumulative
        grant grows by. Callers take ``amount`` out of ``free`` first.

        A store that spent more than it was granted (under its configured default, before it
        heard of any grant) is not held to that overdraft: the spending is already out of the
        balance. Its grant grows past what it spent first, so what it is granted now is what it
        can spend — whether it adds the grant to its limit (a store that predates standing
        allowances) or takes the hub's cumulative figure as its limit."""
        if amount <= 0:
            return 0
        granted, spent = self.granted.get(store_id, 0), self.spent.get(store_id, 0)
        grow = max(0, spent - granted) + amount
        self.granted[store_id] = granted + grow
        return grow


@dataclass(slots=True)
class MemberBooks:
    """A member's escrow books, and what else the batch apply reads of the member with them
    (``load``): whether it was merged, its tier, its spend in the tier window."""

    member_id: str
    home_store: str | None = None  # None: no such member, or merged into another
    share_stores: set[str] = field(default_factory=set)
    points: Ledger = field(default_factory=Ledger)
    stored_value: Ledger = field(default_factory=Ledger)
    merged_into: str | None = None
    tier: str | None = None  # None: no such member
    window_spend: int = 0  # spend in the months ``load`` was asked from (0 if not asked)

    def active_stores(self) -> list[str]:
        """Home store first, then the others by id: the order scarce balance is handed out.
        The hub's own streams (HQ, ONLINE) hold shares but are no stores: they get nothing."""
        if self.home_store is None:
            return []
        home = [] if self.home_store in VIRTUAL_STORES else [self.home_store]
        return [*home, *sorted(self.share_stores - {self.home_store} - VIRTUAL_STORES)]

    def ledger(self, dimension: int) -> Ledger:
        return self.points if dimension == POINTS else self.stored_value


# A member's row, shares and grants (and spend since a month) in one statement: the batch
# apply reads every member it names once, not once per table and purpose (one round trip on
# PostgreSQL). ``kind`` says which table a row comes from.
_MEMBER, _SHARE, _GRANT, _SPEND = 0, 1, 2, 3
_BOOKS = (
    "SELECT 0, member_id, home_store, merged_into, tier, 0, 0, 0, 0 FROM members"
    " WHERE member_id IN ({marks})"
    " UNION ALL SELECT 1, member_id, store_id, NULL, NULL, points, sv_principal + sv_bonus, 0, 0"
    " FROM shares WHERE member_id IN ({marks})"
    " UNION ALL SELECT 2, member_id, store_id, NULL, NULL, points_granted, points_spent,"
    " sv_granted, sv_spent FROM grants WHERE member_id IN ({marks})")
_SPEND_SINCE = (
    " UNION ALL SELECT 3, member_id, NULL, NULL, NULL, sum(amount), 0, 0, 0 FROM spend_months"
    " WHERE month >= ? AND member_id IN ({marks}) GROUP BY member_id")


def load(tx: Tx, member_ids: Collection[str], spend_since: str | None = None
         ) -> dict[str, MemberBooks]:
    """The books of ``member_ids`` (every id gets an entry): one query per 500. With
    ``spend_since`` (a month, ``YYYY-MM``) also each member's spend from that month on."""
    ids = sorted(set(member_ids))
    books = {m: MemberBooks(m) for m in ids}
    sql = _BOOKS + (_SPEND_SINCE if spend_since is not None else "")
    for chunk, marks in in_chunks(ids):
        params: list[str] = chunk * 3
        if spend_since is not None:
            params += [spend_since, *chunk]
        for kind, mid, store, merged_into, tier, a, b, c, d in tx.all(
                sql.format(marks=marks), params):
            m = books[mid]
            if kind == _MEMBER:
                m.merged_into, m.tier = merged_into, tier
                if merged_into is None:
                    m.home_store = store
            elif kind == _SHARE:
                m.share_stores.add(store)
                m.points.balance += int(a)
                m.stored_value.balance += int(b)
            elif kind == _GRANT:
                m.points.granted[store], m.points.spent[store] = int(a), int(b)
                m.stored_value.granted[store], m.stored_value.spent[store] = int(c), int(d)
            else:
                m.window_spend = int(a)
    return books


def top_up(policy: AllowancePolicy, books: MemberBooks) -> dict[str, tuple[int, int]]:
    """What to add to each active store's cumulative grant (points, stored value); updates
    ``books`` as it goes. Only ever out of ``free`` (see the module's guarantee).

    Runs for every member a batch touched, so it reads the ledgers' dicts directly (the
    arithmetic of ``Ledger.free`` / ``outstanding`` / ``hold_more``, inlined)."""
    if not policy.enabled or books.home_store is None:
        return {}
    stores: list[str] | None = None
    out: dict[str, list[int]] = {}
    for dim, ledger in ((POINTS, books.points), (STORED_VALUE, books.stored_value)):
        if ledger.balance <= 0:
            continue  # nothing to stand anywhere (target 0)
        if stores is None:
            stores = books.active_stores()
        target = policy.target(dim, ledger.balance, len(stores))
        if target <= 0:
            continue
        granted, spent = ledger.granted, ledger.spent
        free = ledger.balance - sum(
            max(0, g - spent.get(s, 0)) for s, g in granted.items())
        for store in stores:
            if free <= 0:
                break
            had, used = granted.get(store, 0), spent.get(store, 0)
            held = max(0, had - used)
            if held >= target:
                continue
            add = min(target - held, free)
            free -= add
            # A store that spent beyond its grant is not held to that overdraft
            # (``Ledger.hold_more``): its grant grows past what it spent first.
            grow = max(0, used - had) + add
            granted[store] = had + grow
            out.setdefault(store, [0, 0])[dim] += grow
    return {s: (p, sv) for s, (p, sv) in out.items()}


def add_grants(tx: Tx, rows: Iterable[tuple[str, str, int, int]]) -> None:
    """Add ``(member_id, store_id, points, stored_value)`` to the stores' cumulative grants."""
    tx.executemany(ADD_BOOKS, [(m, s, 0, 0, p, v) for m, s, p, v in rows])


def refresh(tx: Tx, policy: AllowancePolicy, member_ids: Collection[str]) -> set[str]:
    """Top up the standing allowances of ``member_ids``; returns the members whose grants
    changed (their directory entries must get a new change number so stores catch up).
    ``settle`` with no spending: one read and one ``executemany`` per 500 members."""
    return settle(tx, policy, {}, load(tx, member_ids))


def settle(tx: Tx, policy: AllowancePolicy | None,
           spent: Mapping[tuple[str, str], Sequence[int]], books: Mapping[str, MemberBooks]
           ) -> set[str]:
    """A batch's part in the books, one write per member and store: its acknowledged spending
    ``{(member_id, store_id): (points, stored value)}`` (sums of ``escrow_used``, recorded as
    ``record_spent`` does), then the top-up of the standing allowances of the members in
    ``books`` (``load``ed, with the batch's ledger effects already in their balances and share
    stores; the spending is added here). Returns the members whose grants changed.
    """
    if policy is None or not policy.enabled or not books:
        record_spent(tx, spent)
        return set()
    rows: dict[tuple[str, str], list[int]] = {}
    for (mid, store), (points, sv) in spent.items():
        if not points and not sv:
            continue
        rows[(mid, store)] = [int(points), int(sv), 0, 0]
        member = books.get(mid)
        if member is None:  # spending of a member this batch has no ledger event for
            continue
        for ledger, amount in ((member.points, points), (member.stored_value, sv)):
            if amount:
                ledger.spent[store] = ledger.spent.get(store, 0) + int(amount)
    changed: set[str] = set()
    for mid, member in books.items():
        for store, (points, sv) in top_up(policy, member).items():
            row = rows.setdefault((mid, store), [0, 0, 0, 0])
            row[2] += points
            row[3] += sv
            changed.add(mid)
    tx.executemany(ADD_BOOKS, [(m, s, *v) for (m, s), v in rows.items()])
    return changed


ADD_BOOKS = (
    "INSERT INTO grants(member_id, store_id, points_spent, sv_spent, points_granted, sv_granted)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(member_id, store_id) DO UPDATE SET"
    " points_spent = grants.points_spent + excluded.points_spent,"
    " sv_spent = grants.sv_spent + excluded.sv_spent,"
    " points_granted = grants.points_granted + excluded.points_granted,"
    " sv_granted = grants.sv_granted + excluded.sv_granted")


def refresh_page(tx: Tx, policy: AllowancePolicy, after: str = "", limit: int = 2_000
                 ) -> tuple[set[str], str | None]:
    """``refresh`` the next ``limit`` live members by id after ``after`` and give the changed
    ones a new change number; returns them and the last id of the page (None: no more). A page
    a transaction lets batches be applied in between (``Hub.refresh_allowances``)."""
    ids = [str(r[0]) for r in tx.all(
        "SELECT member_id FROM members WHERE merged_into IS NULL AND member_id > ?"
        " ORDER BY member_id LIMIT ?", (after, limit))]
    if not ids:
        return set(), None
    changed = refresh(tx, policy, ids)
    mark_changed(tx, changed)
    return changed, ids[-1]


def mark_changed(tx: Tx, member_ids: Collection[str]) -> None:
    """Give ``member_ids`` new directory change numbers (as ingest does for a batch)."""
    if not member_ids:
        return
    last = next_counter(tx, "member_change", len(member_ids))
    tx.executemany("UPDATE members SET change_no = ? WHERE member_id = ?",
                   [(last - i, m) for i, m in enumerate(sorted(member_ids))])


def escrow_used(body: object) -> tuple[int, int]:
    """What an event uses up of its store's escrow for its member, as (points, stored value);
    negative when a refund gives it back. Mirrors ``edge.allowance`` (``consume`` on a sale,
    ``give_back`` on a refund), so the hub's ``spent`` is the acknowledged part of the store's
    own ``used``."""
    if isinstance(body, PointsRedeemed):
        return body.points, 0
    if isinstance(body, StoredValueSpent):
        return 0, body.principal + body.bonus
    if isinstance(body, PointsAdjusted) and body.reason == "refund_return":
        return -body.delta, 0
    if isinstance(body, StoredValueRefunded):
        return 0, -(body.principal + body.bonus)
    return 0, 0


def record_spent(tx: Tx, spent: Mapping[tuple[str, str], Sequence[int]]) -> None:
    """Add a batch's acknowledged spending ``{(member_id, store_id): (points, stored value)}``
    (sums of ``escrow_used``) to the stores' books — also where the hub has granted nothing
    yet, so ``spent`` counts all the store's spending, as the store's ``used`` does."""
    tx.executemany(ADD_BOOKS, [(m, s, int(v[0]), int(v[1]), 0, 0)
                                for (m, s), v in spent.items() if v[0] or v[1]])
