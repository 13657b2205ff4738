"""Member tiers that rise and fall with spend over a rolling window.

Spend is kept per member and calendar month (sales minus refunds, in the month the event
happened by its HLC, on the calendar of the store where it happened), so a tier can fall as old
months leave the window without any event: the hub recomputes every member's tier daily, and
the members whose spend just changed at once. A changed tier is a directory change: it reaches
every store.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

import msgpack
from pydantic import BaseModel, ConfigDict, Field

from hub.core.db import Tx, in_chunks
from hub.core.schema import next_counter
from hub.members import store_members
from protocol.hlc import unpack


class TierRules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: str = "standard"
    # Tier → minimum spend (minor units) over the window; the highest reached applies.
    thresholds: dict[str, int] = Field(default_factory=lambda: {"silver": 100_000,
                                                                "gold": 500_000})
    window_months: int = Field(12, ge=1, le=60)

    def tier_for(self, spend: int) -> str:
        reached = [(need, name) for name, need in self.thresholds.items() if spend >= need]
        return max(reached)[1] if reached else self.base


# The chain's zone when a caller names none (``[hub] timezone``'s default): a month is always
# some calendar's month, never UTC's by accident (HQ.md principle 4).
DEFAULT_ZONE = "Asia/Shanghai"
QUARTER_HOUR_MS = 900_000  # every zone's offset from UTC is a whole number of quarter hours


def month_of_hlc(hlc: int, zone: str = DEFAULT_ZONE) -> str:
    """The calendar month (``YYYY-MM``) in ``zone`` of the wall time an HLC carries."""
    wall_ms, _counter = unpack(hlc)
    return _month_of_quarter(wall_ms // QUARTER_HOUR_MS, zone)


@lru_cache(maxsize=8192)
def _month_of_quarter(quarter: int, zone: str) -> str:
    # Every sale asks; a batch spans a few hours at most, so a formatted month is cached per
    # quarter hour and zone (a local month always starts on a quarter hour of UTC).
    return datetime.fromtimestamp(quarter * 900, _zone(zone)).strftime("%Y-%m")


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def window_start(now_ms: int, months: int, zone: str = DEFAULT_ZONE) -> str:
    """The first month of the tier window ending with this month in ``zone``."""
    now = datetime.fromtimestamp(now_ms / 1000, _zone(zone))
    index = now.year * 12 + now.month - 1 - (months - 1)
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


# Adds to a member's spend in a month; rows (member_id, month, amount).
ADD_SPEND = ("INSERT INTO spend_months(member_id, month, amount) VALUES (?, ?, ?)"
             " ON CONFLICT(member_id, month) DO UPDATE SET amount = spend_months.amount"
             " + excluded.amount")


def recompute(tx: Tx, rules: TierRules, now_ms: int, member_ids: list[str] | None = None,
              zone: str = DEFAULT_ZONE) -> list[str]:
    """Set each member's tier from their spend in the window; returns the members whose tier
    changed (the caller moves them in the directory)."""
    changed = tier_changes(tx, rules, now_ms, member_ids, zone)
    old: dict[str, str] = {}
    for chunk, marks in in_chunks([m for _t, m in changed]):
        old.update((str(m), str(t)) for m, t in tx.all(
            f"SELECT member_id, tier FROM members WHERE member_id IN ({marks})", chunk))
    tx.executemany("UPDATE members SET tier = ? WHERE member_id = ?", changed)
    store_members.set_tiers(tx, changed)
    record(tx, rules, [(m, old[m], t) for t, m in changed], now_ms)
    return [m for _t, m in changed]


def rank(rules: TierRules, tier: str) -> int:
    """0 for the base tier, then 1, 2, ... by the spend each needs; -1 for a tier the rules no
    longer name (one kept from older rules)."""
    order = [rules.base, *(name for _need, name in sorted(
        (need, name) for name, need in rules.thresholds.items()))]
    return order.index(tier) if tier in order else -1


def record(tx: Tx, rules: TierRules, changes: list[tuple[str, str, str]], now_ms: int) -> None:
    """Keep each (member, from, to) change of tier, in order, with its direction (up or down
    by ``rank``): journeys that wait on a tier change follow them."""
    if not changes:
        return
    last = next_counter(tx, "tier_change_seq", len(changes))
    tx.executemany(
        "INSERT INTO tier_changes(seq, member_id, from_tier, to_tier, direction, at_ms)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [(last - len(changes) + i, m, old, new,
          "up" if rank(rules, new) > rank(rules, old) else "down", now_ms)
         for i, (m, old, new) in enumerate(changes, 1)])


def tier_changes(tx: Tx, rules: TierRules, now_ms: int, member_ids: list[str] | None = None,
                 zone: str = DEFAULT_ZONE) -> list[tuple[str, str]]:
    """``(new tier, member_id)`` for each member whose spend in the window now puts them in
    another tier; writes nothing. The daily recompute; the batch path works the same rule out
    from what it read of its members (``hub.ledger.allowances.load`` with ``spend_since``) plus
    the batch's spend, and ``tests/hub/test_ingest.py`` checks the two agree."""
    since = window_start(now_ms, rules.window_months, zone)
    if member_ids is None:
        member_ids = [r[0] for r in tx.all("SELECT member_id FROM members"
                                           " WHERE merged_into IS NULL")]
    changed: list[tuple[str, str]] = []
    # Set-based, a chunk of members a statement: the daily run covers every member.
    for chunk, marks in in_chunks(member_ids):
        rows = tx.all(
            "SELECT m.member_id, m.tier, coalesce(sum(s.amount), 0) FROM members m"
            " LEFT JOIN spend_months s ON s.member_id = m.member_id AND s.month >= ?"
            f" WHERE m.member_id IN ({marks})"
            " GROUP BY m.member_id, m.tier", [since, *chunk])
        for member_id, old, spend in rows:
            tier = rules.tier_for(int(spend))
            if tier != old:
                changed.append((tier, member_id))
    return changed


# Live members a transaction in the daily run. The hub runs it a page a transaction, so that
# a batch or a sign-in waits for one page, not for every member (at 1M on PostgreSQL the
# whole run held the writer 8-16 s). A page reads and writes its members in one transaction, as
# a batch does, so neither overwrites the other's newer tier.
TIER_PAGE = 20_000


def recompute_page(tx: Tx, rules: TierRules, now_ms: int, zone: str = DEFAULT_ZONE,
                   after: str = "", limit: int = TIER_PAGE) -> tuple[list[str], str | None]:
    """One page of the daily run: the next ``limit`` live members by id after ``after``, each
    member's tier, and a new directory change number for each whose tier changed (so the
    stores hear of it). Returns those members and the id to go on after (None: the last
    page). ``zone``: the chain's calendar, whose current month ends the window."""
    ids = [str(r[0]) for r in tx.all(
        "SELECT member_id FROM members WHERE merged_into IS NULL AND member_id > ?"
        " ORDER BY member_id LIMIT ?", (after, limit))]
    changed = recompute(tx, rules, now_ms, ids, zone) if ids else []
    if changed:
        last = next_counter(tx, "member_change", len(changed))
        tx.executemany("UPDATE members SET change_no = ? WHERE member_id = ?",
                       [(last - i, m) for i, m in enumerate(changed)])
    return changed, (ids[-1] if len(ids) == limit else None)


def recompute_all(tx: Tx, rules: TierRules, now_ms: int, zone: str = DEFAULT_ZONE) -> int:
    """The daily run in one transaction (every page of ``recompute_page``); returns how many
    members' tiers changed."""
    count = 0
    after: str | None = ""
    while after is not None:
        changed, after = recompute_page(tx, rules, now_ms, zone, after)
        count += len(changed)
    return count


RECOUNT_FLAG = "spend_months_recount"


def recount_spend(tx: Tx, zone_of: Callable[[str], str]) -> int | None:
    """When a migration asked for it (``RECOUNT_FLAG``): every member's spend months counted
    again from the event log, each sale and refund in the month of its store's calendar
    (``zone_of``), under the member each id now is. Returns the rows written, or None when
    nothing was asked. One transaction: the hub takes no batch before it is done."""
    if not tx.scalar("SELECT value FROM counters WHERE name = ?", (RECOUNT_FLAG,), default=0):
        return None
    alias = {str(a): str(m) for a, m in tx.all(
        "SELECT member_id, merged_into FROM members WHERE merged_into IS NOT NULL")}
    sums: dict[tuple[str, str], int] = {}
    for store_id, hlc, kind, member_id, payload in tx.all(
            "SELECT store_id, hlc, type, member_id, payload FROM events WHERE member_id IS NOT"
            " NULL AND type IN ('sale.finalized', 'refund.completed')"):
        body = msgpack.unpackb(bytes(payload), raw=False)["body"]
        amount = int(body["total"]) if kind == "sale.finalized" else -int(body["amount"])
        key = (alias.get(member_id, member_id), month_of_hlc(int(hlc), zone_of(store_id)))
        sums[key] = sums.get(key, 0) + amount
    tx.execute("DELETE FROM spend_months")
    rows = [(m, month, v) for (m, month), v in sorted(sums.items()) if v]
    tx.executemany(ADD_SPEND, rows)
    tx.execute("UPDATE counters SET value = 0 WHERE name = ?", (RECOUNT_FLAG,))
    return len(rows)
