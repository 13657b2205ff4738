"""Member tiers that rise and fall with spend over a rolling window.

Spend is kept per member and calendar month (sales minus refunds, in the month the event
happened, by its HLC), so a tier can fall as old months leave the window without any event: the
hub recomputes every member's tier daily, and the members whose spend just changed at once. A
changed tier is a directory change: it reaches every store.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field

from hub.core.db import Tx, in_chunks
from hub.core.schema import next_counter
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


def month_of_hlc(hlc: int) -> str:
    wall_ms, _counter = unpack(hlc)
    return _month_of_day(wall_ms // 86_400_000)


@lru_cache(maxsize=4096)
def _month_of_day(day: int) -> str:
    # Every sale asks; a batch spans a few days at most, so a formatted month is cached per day.
    return datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y-%m")


def window_start(now_ms: int, months: int) -> str:
    now = datetime.fromtimestamp(now_ms / 1000, UTC)
    index = now.year * 12 + now.month - 1 - (months - 1)
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


# Adds to a member's spend in a month; rows (member_id, month, amount).
ADD_SPEND = ("INSERT INTO spend_months(member_id, month, amount) VALUES (?, ?, ?)"
             " ON CONFLICT(member_id, month) DO UPDATE SET amount = spend_months.amount"
             " + excluded.amount")


def recompute(tx: Tx, rules: TierRules, now_ms: int, member_ids: list[str] | None = None
              ) -> list[str]:
    """Set each member's tier from their spend in the window; returns the members whose tier
    changed (the caller moves them in the directory)."""
    changed = tier_changes(tx, rules, now_ms, member_ids)
    tx.executemany("UPDATE members SET tier = ? WHERE member_id = ?", changed)
    return [m for _t, m in changed]


def tier_changes(tx: Tx, rules: TierRules, now_ms: int, member_ids: list[str] | None = None
                 ) -> list[tuple[str, str]]:
    """``(new tier, member_id)`` for each member whose spend in the window now puts them in
    another tier; writes nothing. The daily recompute; the batch path works the same rule out
    from what it read of its members (``hub.ledger.allowances.load`` with ``spend_since``) plus the
    batch's spend, and ``tests/hub/test_ingest.py`` checks the two agree."""
    since = window_start(now_ms, rules.window_months)
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


def recompute_all(tx: Tx, rules: TierRules, now_ms: int) -> int:
    """The daily run: every member's tier, and a new directory change number for each member
    whose tier changed (so the stores hear of it); returns how many changed."""
    changed = recompute(tx, rules, now_ms)
    if changed:
        last = next_counter(tx, "member_change", len(changed))
        tx.executemany("UPDATE members SET change_no = ? WHERE member_id = ?",
                       [(last - i, m) for i, m in enumerate(changed)])
    return len(changed)
