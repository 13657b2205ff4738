"""The daily tier run a page of members a transaction (``tiers.recompute_page``): the same
tiers, changes and change numbers as one pass over every member, merged ids skipped."""

from __future__ import annotations

from datetime import UTC, datetime

from hub.core.db import HubDatabase, Tx
from hub.members import tiers

NOW = int(datetime(2026, 6, 15, 4, tzinfo=UTC).timestamp() * 1000)
# member -> spend this month: silver at 100,000 and gold at 500,000 (the default rules)
SPEND = {"m1": 0, "m2": 150_000, "m3": 600_000, "m4": 99_999, "m5": 100_000, "m6": 0,
         "m7": 700_000}
WAS = {"m6": "gold", "m7": "silver"}  # m6 falls, m7 rises; m8 is merged into m3


async def _chain(db: HubDatabase) -> None:
    def write(tx: Tx) -> None:
        tx.executemany("INSERT INTO members(member_id, member_code, home_store, registered_hlc,"
                       " tier, merged_into, change_no) VALUES (?, ?, 'S001', 1, ?, ?, 0)",
                       [(m, f"c-{m}", WAS.get(m, "standard"), None) for m in SPEND]
                       + [("m8", "c-m8", "standard", "m3")])
        tx.executemany("INSERT INTO spend_months(member_id, month, amount) VALUES (?, ?, ?)",
                       [(m, "2026-06", n) for m, n in SPEND.items() if n]
                       + [("m8", "2026-06", 900_000)])

    await db.transaction(write)


def _state(tx: Tx) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]], int]:
    members = [(str(m), str(t)) for m, t in tx.all(
        "SELECT member_id, tier FROM members ORDER BY member_id")]
    changes = [(str(m), str(a), str(b)) for m, a, b in tx.all(
        "SELECT member_id, from_tier, to_tier FROM tier_changes ORDER BY member_id")]
    moved = int(tx.scalar("SELECT count(*) FROM members WHERE change_no > 0"))
    return members, changes, moved


async def test_the_daily_run_in_pages_is_the_run_in_one(hub_db: HubDatabase) -> None:
    await _chain(hub_db)
    rules = tiers.TierRules()
    expected = await hub_db.read(lambda tx: sorted(
        (m, t) for t, m in tiers.tier_changes(tx, rules, NOW, None, "Asia/Shanghai")))
    assert [m for m, _t in expected] == ["m2", "m3", "m5", "m6", "m7"]
    walked: list[str | None] = []
    changed: list[str] = []
    after: str | None = ""
    while after is not None:
        page, after = await hub_db.transaction(
            lambda tx, a=after: tiers.recompute_page(tx, rules, NOW, "Asia/Shanghai", a, 2))
        changed += page
        walked.append(after)
    # Seven live members two a page: four pages, the last short; m8 (merged) never read.
    assert walked == ["m2", "m4", "m6", None]
    assert sorted(changed) == [m for m, _t in expected]
    members, changes, moved = await hub_db.read(_state)
    assert dict(members) == {"m1": "standard", "m2": "silver", "m3": "gold", "m4": "standard",
                             "m5": "silver", "m6": "standard", "m7": "gold", "m8": "standard"}
    assert changes == [("m2", "standard", "silver"), ("m3", "standard", "gold"),
                       ("m5", "standard", "silver"), ("m6", "gold", "standard"),
                       ("m7", "silver", "gold")]
    assert moved == len(expected)  # each changed member once, for the stores
    # Again: nothing left to change, in pages or in one.
    assert await hub_db.transaction(
        lambda tx: tiers.recompute_all(tx, rules, NOW, "Asia/Shanghai")) == 0
