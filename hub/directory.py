"""The member directory stores catch up from, and the checks HQ runs on the hub's books.

Every member row carries the change number of its last change, so the log compacts itself: a
store asking "after N" gets each member changed since N once, in its latest state. Asking after
0 is the full snapshot a new store (or a restored one) starts from.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import msgpack

from hub.db import Tx, in_chunks
from hub.ingest import canonical
from hub.schema import counter
from protocol.codec import decode
from protocol.events import Event, points_delta, stored_value_delta
from protocol.sync import CAMPAIGN_REFUSALS, DirectoryPage, MemberEntry


def head(tx: Tx) -> int:
    return counter(tx, "member_change")


_COLUMNS = ("SELECT member_id, member_code, phone, name, birthday, tier, tags, home_store,"
            " merged_into, change_no FROM members")


def page(tx: Tx, request_id: str, after: int, limit: int) -> DirectoryPage:
    """The page as validated models (tools, tests); stores are sent ``page_payload``."""
    return DirectoryPage.model_validate(_page(tx, request_id, after, limit))


def page_payload(tx: Tx, request_id: str, after: int, limit: int) -> bytes:
    """The page as a store receives it: the bytes ``encode(page(...))`` would make, built from
    plain data. A store catching up pulls every member that changed, often while it uploads
    the changes itself; building and dumping a model per member was a fifth of the hub's time
    in a drain. ``tests/hub/test_directory.py`` checks the bytes are the models' bytes."""
    packed: bytes = msgpack.packb(_page(tx, request_id, after, limit), use_bin_type=True)
    return packed


def _page(tx: Tx, request_id: str, after: int, limit: int) -> dict[str, Any]:
    rows = tx.all(f"{_COLUMNS} WHERE change_no > ? ORDER BY change_no LIMIT ?", (after, limit))
    top = head(tx)
    if not rows:
        return _page_dict(request_id, after, max(after, top), after == 0, False, [])
    upto = int(rows[-1][9])
    return _page_dict(request_id, after, upto, after == 0, len(rows) == limit and upto < top,
                      _entry_dicts(tx, rows))


def _page_dict(request_id: str, after: int, upto: int, snapshot: bool, more: bool,
               members: list[dict[str, Any]]) -> dict[str, Any]:
    # ``DirectoryPage``'s fields, in its order (``model_dump(mode="json")``).
    return {"v": 1, "request_id": request_id, "after": after, "upto": upto,
            "snapshot": snapshot, "more": more, "members": members}


def entry(tx: Tx, member_id: str) -> MemberEntry | None:
    rows = tx.all(f"{_COLUMNS} WHERE member_id = ?", (member_id,))
    return MemberEntry.model_validate(_entry_dicts(tx, rows)[0]) if rows else None


def _entry_dicts(tx: Tx, rows: list[Any]) -> list[dict[str, Any]]:
    """``MemberEntry`` as ``model_dump(mode="json")`` gives it (same keys, same order)."""
    ids = [r[0] for r in rows]
    cards: dict[str, list[str]] = defaultdict(list)
    shares: dict[str, list[dict[str, Any]]] = defaultdict(list)
    aliases: dict[str, list[str]] = defaultdict(list)
    grants: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for chunk, marks in in_chunks(ids):
        for uid, mid in tx.all(f"SELECT card_uid, member_id FROM cards WHERE member_id IN"
                               f" ({marks}) ORDER BY card_uid", chunk):
            cards[mid].append(uid)
        for mid, store, p, a, b in tx.all(
                f"SELECT member_id, store_id, points, sv_principal, sv_bonus FROM shares"
                f" WHERE member_id IN ({marks}) ORDER BY store_id", chunk):
            shares[mid].append({"store_id": store, "points": int(p), "sv_principal": int(a),
                                "sv_bonus": int(b)})
        for alias, mid in tx.all(f"SELECT member_id, merged_into FROM members WHERE merged_into"
                                 f" IN ({marks}) ORDER BY member_id", chunk):
            aliases[mid].append(alias)
        # Cumulative offline allowances (standing and online); each store uses its own.
        for mid, store, p, v in tx.all(
                f"SELECT member_id, store_id, points_granted, sv_granted FROM grants"
                f" WHERE member_id IN ({marks}) AND (points_granted > 0 OR sv_granted > 0)"
                f" ORDER BY store_id", chunk):
            grants[mid].append({"store_id": store, "points_granted": int(p),
                                "sv_granted": int(v)})
    return [
        {"member_id": r[0], "member_code": r[1], "phone": r[2], "name": r[3],
         "birthday": r[4], "tier": r[5], "tags": json.loads(r[6]), "cards": cards[r[0]],
         "home_store": r[7], "merged_into": r[8], "aliases": aliases[r[0]],
         "shares": shares[r[0]], "grants": grants[r[0]]}
        for r in rows
    ]


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


def fleet_status(tx: Tx, now_ms: int) -> list[dict[str, Any]]:
    refusals: dict[str, dict[str, int]] = defaultdict(dict)
    for store, reason, count in tx.all("SELECT store_id, reason, count FROM refusals"):
        refusals[store][reason] = int(count)
    out = []
    for store, region, last_seen, epoch, status in tx.all(
            "SELECT store_id, region, last_seen_ms, epoch, status FROM stores ORDER BY store_id"):
        acked = tx.scalar("SELECT acked_seq FROM store_streams WHERE store_id = ? AND epoch = ?",
                          (store, epoch), default=0)
        reported: dict[str, Any] = {}
        if status is not None:
            import msgpack

            reported = msgpack.unpackb(bytes(status), raw=False)
        last_seq = int(reported.get("last_seq", acked))
        out.append({
            "store_id": store, "region": region, "epoch": int(epoch), "acked_seq": int(acked),
            "last_seen_s_ago": round((now_ms - int(last_seen)) / 1000, 1) if last_seen else None,
            "outbox_depth": reported.get("outbox_depth"), "lag_events": max(0, last_seq - acked),
            "campaign_versions": reported.get("campaign_versions", {}),
            "software": reported.get("software", ""), "devices": reported.get("devices", []),
            "refused_at_hub": refusals.get(store, {}),
            "refused_at_store": reported.get("refused", {}),
            "campaign_refusals": campaign_refusals(reported.get("refused", {})),
        })
    return out


def campaign_refusals(refused_at_store: dict[str, int]) -> int:
    """Campaign bundles a store turned down (a store refusing them all looks healthy else)."""
    return sum(int(refused_at_store.get(reason, 0)) for reason in CAMPAIGN_REFUSALS)
