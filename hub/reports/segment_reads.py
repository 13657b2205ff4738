"""What HQ reads of segments, tags and lifecycle stages for members, inside the caller's scope
(``hub.members`` computes and keeps them; these only read)."""

from __future__ import annotations

from typing import Any

from hub.auth.scope import Scope, in_scope
from hub.core.db import Tx
from hub.members import lifecycle, segments, tags
from hub.members.identity import canonical


def members(tx: Tx, scope: Scope, segment_id: str, after: str,
            limit: int) -> list[dict[str, Any]]:
    """The segment's members the scope sees, by id from ``after``."""
    segments.load(tx, segment_id)  # 404 for no such segment
    where, params = scope.member_filter("m")
    return [{"member_id": r[0], "member_code": r[1], "since_ms": int(r[2])} for r in tx.all(
        "SELECT g.member_id, m.member_code, g.since_ms FROM segment_members g JOIN members m"
        f" ON m.member_id = g.member_id WHERE g.segment_id = ? AND g.member_id > ? AND {where}"
        " ORDER BY g.member_id LIMIT ?", (segment_id, after, *params, limit))]


def member_tags(tx: Tx, scope: Scope, member_id: str) -> list[dict[str, Any]]:
    mid = canonical(tx, member_id)
    in_scope(scope, tx, mid)
    return tags.of_member(tx, mid)


def member_lifecycle(tx: Tx, scope: Scope, member_id: str) -> dict[str, Any]:
    mid = canonical(tx, member_id)
    in_scope(scope, tx, mid)
    row = tx.one("SELECT stage, since FROM member_lifecycle WHERE member_id = ?", (mid,))
    return {"stage": row[0] if row else None, "since": row[1] if row else None,
            "changes": lifecycle.history(tx, mid)}
