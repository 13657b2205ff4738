"""Tags, kept apart by where they come from:

- ``store``: set at a till (the member's ``tags``, merged last-writer-wins like the profile);
- ``hq``: set by someone at HQ (``hq_member_tags``: who, when);
- ``rule``: a rule-based tag, the members of its segment (``hub.members.segments``), kept by the
  segment keeper on schedule and after merges.

The catalogue (``tag_catalog``) names the chain's tags in groups; HQ and rule tags, and tags
used in conditions, must be in it. A tag with a rule is never set by hand (and the reverse).
"""

from __future__ import annotations

import json
from typing import Any

from hub.core.db import Tx, in_chunks
from hub.members import directory
from hub.members.identity import canonical_all
from hub.members.segment_keeper import mark
from protocol.errors import ServiceError


def catalogue(tx: Tx) -> list[dict[str, Any]]:
    """Every catalogued tag with its group, description, rule segment and HQ-set count."""
    rules = {str(t): str(s) for t, s in tx.all(
        "SELECT tag, segment_id FROM segments WHERE tag IS NOT NULL AND state = 'active'")}
    counts = {str(t): int(n) for t, n in tx.all(
        "SELECT tag, count(*) FROM hq_member_tags GROUP BY tag")}
    return [{"tag": t, "group": g, "description": d, "created_by": by,
             "created_ms": int(ms), "rule_segment": rules.get(str(t)),
             "hq_members": counts.get(str(t), 0)} for t, g, d, by, ms in tx.all(
        "SELECT tag, grp, description, created_by, created_ms FROM tag_catalog"
        " ORDER BY grp, tag")]


def define(tx: Tx, tag: str, group: str, description: str, by: str, now_ms: int) -> None:
    tx.execute("INSERT INTO tag_catalog(tag, grp, description, created_by, created_ms)"
               " VALUES (?, ?, ?, ?, ?) ON CONFLICT(tag) DO UPDATE SET grp = excluded.grp,"
               " description = excluded.description", (tag, group, description, by, now_ms))


def drop(tx: Tx, tag: str, now_ms: int) -> None:
    """Out of the catalogue, off every member HQ set it on. Refused while a rule keeps it or a
    segment names it."""
    if tx.scalar("SELECT 1 FROM tag_catalog WHERE tag = ?", (tag,)) is None:
        raise ServiceError("unknown_tag", f"tag {tag!r} is not in the catalogue", 404)
    if tx.scalar("SELECT 1 FROM segments WHERE tag = ? AND state = 'active'", (tag,)):
        raise ServiceError("tag_has_rule", f"tag {tag!r} is kept by a rule: archive it first",
                           409)
    for (name, definition) in tx.all(
            "SELECT name, definition FROM segments WHERE state = 'active'"):
        if _names_tag(json.loads(definition), tag):
            raise ServiceError("tag_in_use", f"tag {tag!r} is used by segment {name!r}", 409)
    held = [str(m) for (m,) in tx.all("SELECT member_id FROM hq_member_tags WHERE tag = ?",
                                      (tag,))]
    tx.execute("DELETE FROM hq_member_tags WHERE tag = ?", (tag,))
    tx.execute("DELETE FROM tag_catalog WHERE tag = ?", (tag,))
    mark(tx, held)
    directory.touch(tx, held, segments_know=True)


def _names_tag(node: Any, tag: str) -> bool:
    if isinstance(node, dict):
        if node.get("field") == "tag":
            return tag in (node.get("any") or node.get("all") or [])
        return any(_names_tag(v, tag) for v in node.values())
    if isinstance(node, list):
        return any(_names_tag(v, tag) for v in node)
    return False


def set_hq(tx: Tx, member_ids: list[str], add: list[str], remove: list[str], by: str,
           now_ms: int) -> list[str]:
    """HQ's tags on members (as each member now is): ``add`` set, ``remove`` taken off.
    Returns the members changed."""
    for tag in [*add, *remove]:
        if tx.scalar("SELECT 1 FROM tag_catalog WHERE tag = ?", (tag,)) is None:
            raise ServiceError("unknown_tag", f"tag {tag!r} is not in the catalogue", 422)
        if tx.scalar("SELECT 1 FROM segments WHERE tag = ? AND state = 'active'", (tag,)):
            raise ServiceError("tag_has_rule", f"tag {tag!r} is kept by a rule", 409)
    members = sorted(set(canonical_all(tx, member_ids).values()))
    found: set[str] = set()
    for chunk, marks in in_chunks(members):
        found.update(str(r[0]) for r in tx.all(
            f"SELECT member_id FROM members WHERE member_id IN ({marks})"
            " AND merged_into IS NULL AND erased = 0", chunk))
    missing = sorted(set(members) - found)
    if missing:
        raise ServiceError("member_not_found", f"no member {missing[0]!r}", 404)
    tx.executemany("INSERT INTO hq_member_tags(member_id, tag, set_by, set_ms) VALUES"
                   " (?, ?, ?, ?) ON CONFLICT(member_id, tag) DO NOTHING",
                   [(m, t, by, now_ms) for m in members for t in add])
    for chunk, marks in in_chunks(members):
        for tag in remove:
            tx.execute(f"DELETE FROM hq_member_tags WHERE tag = ? AND member_id IN ({marks})",
                       (tag, *chunk))
    mark(tx, members)
    directory.touch(tx, members, segments_know=True)  # HQ's tags travel to the stores
    return members


def of_member(tx: Tx, member_id: str) -> list[dict[str, Any]]:
    """Every tag of the member with its source (and who set it, when, where known)."""
    row = tx.one("SELECT tags, home_store FROM members WHERE member_id = ?", (member_id,))
    out: list[dict[str, Any]] = []
    if row is not None:
        out += [{"tag": t, "source": "store", "set_by": None, "set_ms": None}
                for t in json.loads(row[0] or "[]")]
    out += [{"tag": t, "source": "hq", "set_by": by, "set_ms": int(ms)} for t, by, ms in tx.all(
        "SELECT tag, set_by, set_ms FROM hq_member_tags WHERE member_id = ? ORDER BY tag",
        (member_id,))]
    out += [{"tag": t, "source": "rule", "set_by": f"segment:{sid}", "set_ms": int(ms)}
            for t, sid, ms in tx.all(
        "SELECT s.tag, s.segment_id, g.since_ms FROM segment_members g JOIN segments s"
        " ON s.segment_id = g.segment_id WHERE g.member_id = ? AND s.tag IS NOT NULL"
        " ORDER BY s.tag", (member_id,))]
    return out
