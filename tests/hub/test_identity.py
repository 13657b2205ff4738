"""Who a member id is now, for one id and for many (``hub.members.identity``)."""

from __future__ import annotations

from typing import Any

import pytest

from hub.core.db import IN_CHUNK, HubDatabase, Tx
from hub.members.identity import canonical, canonical_all


async def test_many_ids_are_followed_as_each_alone_with_a_read_per_chunk(
        hub_db: HubDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    # a -> b -> c (merged twice), d -> c, e and f each other's (a loop a merge never makes,
    # which must still end), the rest live.
    merged = {"a": "b", "b": "c", "d": "c", "e": "f", "f": "e"}
    live = [f"m{i:04d}" for i in range(IN_CHUNK * 2)]

    def write(tx: Tx) -> None:
        tx.executemany("INSERT INTO members(member_id, member_code, home_store, registered_hlc,"
                       " merged_into, change_no) VALUES (?, ?, 'S001', 1, ?, 1)",
                       [(m, f"code-{m}", merged.get(m)) for m in [*merged, "c", *live]])

    await hub_db.transaction(write)
    asked = [*live, "a", "b", "c", "d", "e", "nobody", "a"]  # an unknown id, one twice
    said: list[str] = []
    execute = Tx.execute

    def counted(self: Tx, sql: str, params: Any = ()) -> Any:
        said.append(sql)
        return execute(self, sql, params)

    def both(tx: Tx) -> tuple[dict[str, str], dict[str, str]]:
        alone = {m: canonical(tx, m) for m in asked}
        monkeypatch.setattr(Tx, "execute", counted)
        try:
            return alone, canonical_all(tx, asked)
        finally:
            monkeypatch.setattr(Tx, "execute", execute)

    alone, many = await hub_db.read(both)
    assert many == alone
    assert many["a"] == many["b"] == many["d"] == "c" and many["nobody"] == "nobody"
    assert many["e"] == "f"  # a loop ends where it would turn back
    # One read per chunk of ids, then only the merged ones followed (a, b, d, e: 8 reads).
    chunks = -(-len(set(asked)) // IN_CHUNK)
    assert len(said) == chunks + sum(len(canonical_path(m)) for m in ("a", "b", "d", "e"))


def canonical_path(member_id: str) -> list[str]:
    """The reads ``canonical`` makes for the ids above: one per hop, and the last."""
    merged = {"a": "b", "b": "c", "d": "c", "e": "f", "f": "e"}
    path, seen = [member_id], {member_id}
    while member_id in merged and merged[member_id] not in seen:
        member_id = merged[member_id]
        seen.add(member_id)
        path.append(member_id)
    return path
