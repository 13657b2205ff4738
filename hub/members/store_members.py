"""Each store's members (schema 28): a row per store and live member it counts — the member's
home store and every store they bought or brought something back at (``member_stores``) —
with what a store's member structure groups them by: tier, home store, registration,
lifecycle stage and the latest RFM run's group (``hub.reports.members``).

A store's figures are then one range of one table, where they were three lookups per member
(each, on PostgreSQL, through the member's row-level policy again). The rows follow what they
copy, each where it changes:
- the member-activity projection adds a member's rows when it reads their registration or
  their first purchase at a store (``add_new``), and, rebuilt from zero, adds them all again;
- a merge removes the merged id's rows (``forget``); the projection moves its stores onto the
  member it merged into, as it moves the rest of its rows;
- tier changes (the batch that changes them, and ``hub.members.tiers``), lifecycle stages
  (``hub.members.lifecycle``) and an RFM run (``groups_of_run``) set theirs.

``tests/hub/test_store_members.py`` holds the rows to what schema 28's fill makes of the same
members from scratch, after each of those paths; ``test_report_members`` holds a store's and
a region's structure from them to the figures written out from its plan.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from hub.core.db import Tx, in_chunks
from hub.core.schema import store_members_rows


def add_new(tx: Tx, registered: Iterable[str], visits: Iterable[tuple[str, str]]) -> None:
    """The rows of members just ``registered``, and of those with a (member, store) in
    ``visits`` the table does not hold yet: most purchases are at a store that counts the
    member already, and one read of the member index answers that where adding would look
    the member up in four tables."""
    wanted = set(registered)
    pairs = {(m, s) for m, s in visits if m not in wanted}
    held: set[tuple[str, str]] = set()
    for chunk, marks in in_chunks(sorted({m for m, _s in pairs})):
        held.update((str(m), str(s)) for m, s in tx.all(
            f"SELECT member_id, store_id FROM store_members WHERE member_id IN ({marks})",
            chunk))
    # The rows they lack: at their home store and at each store in ``member_stores`` (a
    # merged id has none).
    for chunk, marks in in_chunks(sorted(wanted | {m for m, s in pairs - held})):
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


def unstaged(tx: Tx, member_ids: Sequence[str]) -> None:
    """Of ``member_ids``, those whose lifecycle stage was taken away (an erased member keeps
    their rows, as they still count) lose it here too."""
    for chunk, marks in in_chunks(member_ids):
        tx.execute("UPDATE store_members SET stage = NULL WHERE stage IS NOT NULL"
                   f" AND member_id IN ({marks}) AND NOT EXISTS (SELECT 1 FROM member_lifecycle l"
                   " WHERE l.member_id = store_members.member_id)", chunk)


def groups_of_run(tx: Tx, run_id: str) -> int:
    """Run ``run_id`` is the latest: the members whose group it changed (from the run before,
    which the rows held) take theirs. Returns the rows set."""
    # A join (both databases hash or merge it), not a lookup per row: a first run sets every
    # member's group.
    return int(tx.execute(
        "UPDATE store_members SET grp = r.grp FROM rfm_scores r WHERE r.run_id = ?"
        " AND r.member_id = store_members.member_id AND (r.was_grp IS NULL"
        " OR r.was_grp <> r.grp)", (run_id,)).rowcount)
