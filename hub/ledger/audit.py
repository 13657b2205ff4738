"""The check HQ runs on the hub's books: every balance recomputed from the event log alone and
compared with the shares the merge keeps (DESIGN guarantee 4). Runs on a reader connection."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from hub.core.db import Tx
from hub.members.identity import canonical
from protocol.codec import decode
from protocol.events import Event, points_delta, stored_value_delta


def balances(tx: Tx) -> dict[str, tuple[int, int, int]]:
    """Every member's (points, principal, bonus) from the shares the hub keeps."""
    out: dict[str, tuple[int, int, int]] = {}
    for mid, p, a, b in tx.all("SELECT member_id, sum(points), sum(sv_principal), sum(sv_bonus)"
                               " FROM shares GROUP BY member_id"):
        out[mid] = (int(p), int(a), int(b))
    return out


def rebuild(tx: Tx) -> dict[str, tuple[int, int, int]]:
    """Every member's balances recomputed from the event log alone."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    aliases = {mid: canonical(tx, mid) for (mid,) in tx.all(
        "SELECT member_id FROM members WHERE merged_into IS NOT NULL")}
    for (payload,) in tx.all("SELECT payload FROM events ORDER BY store_id, epoch, seq"):
        event = decode(bytes(payload), Event)
        member_id = getattr(event.body, "member_id", None)
        if member_id is None:
            continue
        points = points_delta(event.body)
        principal, bonus = stored_value_delta(event.body)
        if points or principal or bonus:
            t = totals[aliases.get(member_id, member_id)]
            t[0] += points
            t[1] += principal
            t[2] += bonus
    return {m: (t[0], t[1], t[2]) for m, t in totals.items()}


def compare(tx: Tx) -> dict[str, Any]:
    """Balances held vs. rebuilt from the log; ``mismatches`` lists every member that differs."""
    held = balances(tx)
    rebuilt = rebuild(tx)
    zero = (0, 0, 0)
    mismatches = [
        {"member_id": m, "held": held.get(m, zero), "rebuilt": rebuilt.get(m, zero)}
        for m in sorted(set(held) | set(rebuilt)) if held.get(m, zero) != rebuilt.get(m, zero)
    ]
    return {"members": len(set(held) | set(rebuilt)), "mismatches": mismatches,
            "events": int(tx.scalar("SELECT count(*) FROM events", default=0))}
