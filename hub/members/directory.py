"""The member directory stores catch up from, and a member's entry as the hub knows it.

Every member row carries the change number of its last change, so the log compacts itself: a
store asking "after N" gets each member changed since N once, in its latest state. Asking after
0 is the full snapshot a new store (or a restored one) starts from.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import msgpack

from hub.core.db import Tx, in_chunks
from hub.core.schema import counter, next_counter
from hub.stores.registry import VIRTUAL_STORES
from protocol.sync import DirectoryPage, MemberEntry

# The most messages an entry carries (``protocol.sync.MemberEntry.messages``): older first.
MAX_TILL_MESSAGES = 20


def head(tx: Tx) -> int:
    return counter(tx, "member_change")


def touch(tx: Tx, member_ids: list[str] | set[str], *, segments_know: bool = False) -> int:
    """``member_ids`` changed in a way their entries show (HQ tags, till segments, RFM group,
    stage): each takes a new change number, so stores catching up get them again.
    ``segments_know``: the segment keeper was told otherwise (the RFM segments made due, the
    members marked), so when it had seen every change before these, it need not look at
    these numbers again (after a monthly RFM run, a million of them)."""
    ids = sorted(set(member_ids))
    if not ids:
        return 0
    before = int(tx.scalar("SELECT max(change_no) FROM members", default=0) or 0)
    last = next_counter(tx, "member_change", len(ids))
    tx.executemany("UPDATE members SET change_no = ? WHERE member_id = ?",
                   [(last - len(ids) + i, m) for i, m in enumerate(ids, 1)])
    if segments_know:
        _segments_knew(tx, before, last)
    return len(ids)


def touch_selected(tx: Tx, select: str, params: tuple[Any, ...], *,
                   segments_know: bool = False) -> int:
    """``touch`` for the members a query selects (``select``: distinct ids of existing
    members), numbered in the database in member order as ``touch`` numbers them: a monthly
    RFM run moves a quarter of a million members, and sending each id through Python and back
    was a second of the run."""
    before = int(tx.scalar("SELECT max(change_no) FROM members", default=0) or 0)
    head_was = counter(tx, "member_change")
    moved = tx.execute(
        "UPDATE members SET change_no = ? + t.i FROM (SELECT member_id, ROW_NUMBER() OVER"
        f" (ORDER BY member_id) AS i FROM ({select}) AS s) AS t"
        " WHERE members.member_id = t.member_id", (head_was, *params)).rowcount
    if not moved:
        return 0
    last = next_counter(tx, "member_change", moved)
    if last != head_was + moved:  # the writer holds the counter: nothing else takes numbers
        raise RuntimeError("member change numbers were taken during a renumbering")
    if segments_know:
        _segments_knew(tx, before, last)
    return moved


def _segments_knew(tx: Tx, before: int, last: int) -> None:
    """The segment keeper, told of the changes numbered up to ``last`` otherwise, need not
    look at them, if it had seen every change before them (``before``)."""
    if counter(tx, "segments_change_no") == before:
        tx.execute("UPDATE counters SET value = ? WHERE name = 'segments_change_no'", (last,))


_COLUMNS = ("SELECT member_id, member_code, phone, name, birthday, tier, tags, home_store,"
            " merged_into, change_no, guide_id, pin_hash, pin_locked, pin_hlc,"
            " birthday_gift_year, erased FROM members")


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
    card_states: dict[str, list[dict[str, Any]]] = defaultdict(list)
    shares: dict[str, list[dict[str, Any]]] = defaultdict(list)
    aliases: dict[str, list[str]] = defaultdict(list)
    grants: dict[str, list[dict[str, Any]]] = defaultdict(list)
    coupons: dict[str, list[dict[str, Any]]] = defaultdict(list)
    hq_tags: dict[str, list[str]] = defaultdict(list)
    segments: dict[str, list[dict[str, str]]] = defaultdict(list)
    rfm_group: dict[str, str] = {}
    stage: dict[str, str] = {}
    messages: dict[str, list[dict[str, Any]]] = defaultdict(list)
    run = tx.scalar("SELECT run_id FROM rfm_runs ORDER BY created_ms DESC, run_id DESC LIMIT 1")
    issuers = sorted(VIRTUAL_STORES)
    for chunk, marks in in_chunks(ids):
        for uid, mid, state, reason, hlc in tx.all(
                f"SELECT card_uid, member_id, state, reason, stamp_hlc FROM cards"
                f" WHERE member_id IN ({marks}) ORDER BY card_uid", chunk):
            if state == "active":
                cards[mid].append(uid)
            card_states[mid].append({"card_uid": uid, "state": state, "reason": reason,
                                     "hlc": int(hlc)})
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
        # The member's open coupons the hub issued: any store redeems them offline.
        for mid, code, campaign, kind, value, min_spend, categories, expires in tx.all(
                f"SELECT member_id, coupon_code, campaign_id, kind, value, min_spend,"
                f" categories, expires_on FROM coupons WHERE member_id IN ({marks})"
                f" AND state = 'issued' AND store_id IN ({', '.join('?' * len(issuers))})"
                f" ORDER BY coupon_code", [*chunk, *issuers]):
            coupons[mid].append({"coupon_code": code, "campaign_id": campaign, "kind": kind,
                                 "value": int(value), "min_spend": int(min_spend),
                                 "categories": json.loads(categories), "expires_on": expires})
        # What promotions at the till may target: HQ's and the rules' tags, the segments
        # marked for the tills, the latest RFM group, the lifecycle stage.
        for mid, tag in tx.all(
                f"SELECT member_id, tag FROM hq_member_tags WHERE member_id IN ({marks})"
                " UNION SELECT g.member_id, s.tag FROM segment_members g JOIN segments s"
                f" ON s.segment_id = g.segment_id WHERE g.member_id IN ({marks})"
                " AND s.tag IS NOT NULL AND s.state = 'active' ORDER BY 1, 2", [*chunk, *chunk]):
            hq_tags[mid].append(tag)
        for mid, sid, name in tx.all(
                "SELECT g.member_id, s.segment_id, s.name FROM segment_members g JOIN segments s"
                f" ON s.segment_id = g.segment_id WHERE g.member_id IN ({marks})"
                " AND s.for_tills = 1 AND s.state = 'active' ORDER BY s.segment_id", chunk):
            segments[mid].append({"segment_id": sid, "name": name})
        if run is not None:
            rfm_group.update((str(m), str(g)) for m, g in tx.all(
                f"SELECT member_id, grp FROM rfm_scores WHERE run_id = ? AND member_id IN"
                f" ({marks})", [run, *chunk]))
        stage.update((str(m), str(g)) for m, g in tx.all(
            f"SELECT member_id, stage FROM member_lifecycle WHERE member_id IN ({marks})",
            chunk))
        # Messages HQ left at the tills (``hub.notify.channels.store``), oldest first.
        for mid, key, text, code in tx.all(
                f"SELECT member_id, key, text, coupon_code FROM till_messages WHERE member_id"
                f" IN ({marks}) ORDER BY created_ms, key", chunk):
            if len(messages[mid]) < MAX_TILL_MESSAGES:
                messages[mid].append({"key": key, "text": text, "coupon_code": code})
    return [
        {"member_id": r[0], "member_code": r[1], "phone": r[2], "name": r[3],
         "birthday": r[4], "tier": r[5], "tags": json.loads(r[6]), "cards": cards[r[0]],
         "home_store": r[7], "merged_into": r[8], "aliases": aliases[r[0]],
         "shares": shares[r[0]], "grants": grants[r[0]], "coupons": coupons[r[0]],
         "guide_id": r[10], "card_states": card_states[r[0]], "pin_hash": r[11],
         "pin_locked": bool(r[12]), "pin_hlc": int(r[13]), "birthday_gift_year": int(r[14]),
         "erased": bool(r[15]), "hq_tags": hq_tags[r[0]], "segments": segments[r[0]],
         "rfm_group": rfm_group.get(r[0]), "stage": stage.get(r[0]),
         "messages": messages[r[0]]}
        for r in rows
    ]
