"""Who a member id is now: merges leave the old id as a pointer to the member it became."""

from __future__ import annotations

from hub.core.db import Tx


def canonical(tx: Tx, member_id: str) -> str:
    """Follow a merged member to the member it now is."""
    seen = {member_id}
    while True:
        row = tx.one("SELECT merged_into FROM members WHERE member_id = ?", (member_id,))
        if row is None or row[0] is None or row[0] in seen:
            return member_id
        member_id = row[0]
        seen.add(member_id)
