"""Who a member id is now: merges leave the old id as a pointer to the member it became."""

from __future__ import annotations

from collections.abc import Iterable

from hub.core.db import Tx, in_chunks


def canonical(tx: Tx, member_id: str) -> str:
    """Follow a merged member to the member it now is."""
    seen = {member_id}
    while True:
        row = tx.one("SELECT merged_into FROM members WHERE member_id = ?", (member_id,))
        if row is None or row[0] is None or row[0] in seen:
            return member_id
        member_id = row[0]
        seen.add(member_id)


def canonical_all(tx: Tx, member_ids: Iterable[str]) -> dict[str, str]:
    """Each of many ids and the member it now is (``canonical`` of each). One read per
    ``IN_CHUNK`` ids finds the merged ones, which are few, and only those are followed: a
    read per id took ~0.2 ms on PostgreSQL, 3.8 s of the segment keeper's 4.7 s pass over
    20,000 changed members, with the writer held."""
    ids = sorted(set(member_ids))
    out = {m: m for m in ids}
    for chunk, marks in in_chunks(ids):
        for (merged,) in tx.all("SELECT member_id FROM members WHERE merged_into IS NOT NULL"
                                f" AND member_id IN ({marks})", chunk):
            out[str(merged)] = canonical(tx, str(merged))
    return out
