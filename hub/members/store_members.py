"""Each store's members (schema 28): a row per store and live member it counts — the member's
home store and every store they bought or brought something back at (``member_stores``) —
with what a store's member structure groups them by: tier, home store, registration,
lifecycle stage and the latest RFM run's group (``hub.reports.members``).

A store's figures are then one range of one table, where they were three lookups per member
(each, on PostgreSQL, through the member's row-level policy again). The rows follow what they
copy, each where it changes:
- the member-activity projection adds a member's rows when it reads their registration or
  their first purchase at a store (``add``), and, rebuilt from zero, adds them all again;
- a merge removes the merged id's rows (``forget``); the projection moves its stores onto the
  member it merged into, as it moves the rest of its rows;
- tier changes (the batch that changes them, and ``hub.members.tiers``), lifecycle stages
  (``hub.members.lifecycle``) and an RFM run (``groups_of_run``) set theirs.

``test_report_members`` holds a store's structure from these rows to the same figures from
the members' own rows, after registrations, sales, merges, tier changes, lifecycle passes and
RFM runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from hub.core.db import Tx, in_chunks
from hub.core.schema import store_members_rows


def add(tx: Tx, member_ids: Iterable[str]) -> None:
    """The rows ``member_ids`` lack: at their home store and at each store in
    ``member_stores`` (a merged id has none)."""
    for chunk, marks in in_chunks(sorted(set(member_ids))):
        tx.execute(store_members_rows(f"member_id IN ({marks})"), (*chunk, *chunk))


def forget(tx: Tx, member_id: str) -> None:
    """``member_id`` was merged into another member: it counts at no store."""
    tx.execute("DELETE FROM store_members WHERE member_id = ?", (member_id,))


def set_tiers(tx: Tx, changed: Sequence[tuple[str, str]]) -> None:
    """Rows (tier, member_id): each member's new tier."""
    tx.executemany("UPDATE store_members SET tier = ? WHERE member_id = ?", changed)


def set_stages(tx: Tx, changed: Sequence[tuple[str | None, str]]) -> None:
    """Rows (stage or None, member_id): each member's lifecycle stage now."""
    tx.executemany("UPDATE store_members SET stage = ? WHERE member_id = ?", changed)


def groups_of_run(tx: Tx, run_id: str) -> int:
    """Run ``run_id`` is the latest: the members whose group it changed (from the run before,
    which the rows held) take theirs. Returns the rows set."""
    # A join (both databases hash or merge it), not a lookup per row: a first run sets every
    # member's group.
    return int(tx.execute(
        "UPDATE store_members SET grp = r.grp FROM rfm_scores r WHERE r.run_id = ?"
        " AND r.member_id = store_members.member_id AND (r.was_grp IS NULL"
        " OR r.was_grp <> r.grp)", (run_id,)).rowcount)
