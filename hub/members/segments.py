"""Segments: a named condition (``hub.members.conditions``) whose members are kept
(``segment_members``) and whose every version and evaluation is kept.

A segment is created ``active`` and ``due``: the keeper (``hub.members.segment_keeper``)
evaluates it whole, then member by member as merged data changes them. Changing its
definition makes a new version (the old ones stay in ``segment_versions``) and evaluates it
whole again; an archived segment keeps no members and cannot be used by another. A segment
with a ``tag`` is a **rule-based tag**: its members carry the tag (source ``rule``).
``for_tills`` marks the segments the stores need (they travel in the directory).

Saving checks the definition against what exists (fields, tags in the catalogue, segments)
and the graph of segments that use each other, directly or through a rule tag: a segment that
would contain itself is refused, naming the path.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import ValidationError

from hub.core.db import Tx
from hub.members import directory
from hub.members.conditions import (
    Condition,
    ConditionError,
    Context,
    compile_condition,
    describe,
)
from protocol.errors import ServiceError
from protocol.ids import uuid7

SAMPLE = 20


@dataclass(frozen=True)
class Segment:
    segment_id: str
    name: str
    condition: Condition
    version: int
    state: str
    for_tills: bool
    tag: str | None
    due: bool

    def uses(self, ctx: Context) -> set[str]:
        """The segments this one reads: named, or keeping a rule tag it names."""
        return self.condition.segments() | {ctx.rule_tags[t] for t in self.condition.tags()
                                            if t in ctx.rule_tags}


def parse(tree: Any) -> Condition:
    """A definition, or a 422 naming the part that is wrong."""
    try:
        return Condition.parse(tree)
    except ValidationError as exc:
        raise ServiceError("bad_condition", describe(exc), 422) from None


def context(tx: Tx, today: date, zone: str) -> Context:
    run = tx.scalar("SELECT run_id FROM rfm_runs ORDER BY created_ms DESC, run_id DESC LIMIT 1")
    return Context(
        today=today, zone=zone, dialect=tx.dialect, rfm_run=run,
        known_tags={str(t) for (t,) in tx.all("SELECT tag FROM tag_catalog")},
        rule_tags={str(t): str(s) for t, s in tx.all(
            "SELECT tag, segment_id FROM segments WHERE tag IS NOT NULL"
            " AND state = 'active'")},
        segments={str(s) for (s,) in tx.all(
            "SELECT segment_id FROM segments WHERE state = 'active'")})


@functools.lru_cache(maxsize=8192)
def _parsed(definition: str) -> Condition:
    """A stored definition, parsed once: every save checks the graph of all segments and
    every keeper pass evaluates them all (1,000 segments: 1,000 parses each time otherwise).
    Conditions are never changed once parsed."""
    return Condition.parse(json.loads(definition))


def _segment(row: Any) -> Segment:
    return Segment(str(row[0]), str(row[1]), _parsed(str(row[2])), int(row[3]),
                   str(row[4]), bool(row[5]), row[6], bool(row[7]))


_COLUMNS = "segment_id, name, definition, version, state, for_tills, tag, due"


def active(tx: Tx) -> list[Segment]:
    return [_segment(r) for r in tx.all(
        f"SELECT {_COLUMNS} FROM segments WHERE state = 'active' ORDER BY segment_id")]


def load(tx: Tx, segment_id: str) -> Segment:
    row = tx.one(f"SELECT {_COLUMNS} FROM segments WHERE segment_id = ?", (segment_id,))
    if row is None:
        raise ServiceError("segment_not_found", "no segment with this id", 404)
    return _segment(row)


def ordered(segments: list[Segment], ctx: Context) -> list[Segment]:
    """``segments`` with each after those it uses (a cycle raises ``ConditionError``)."""
    by_id = {s.segment_id: s for s in segments}
    out: list[Segment] = []
    state: dict[str, int] = {}  # 1: being visited, 2: done

    def visit(s: Segment, path: list[str]) -> None:
        mark = state.get(s.segment_id)
        if mark == 2:
            return
        if mark == 1:
            loop = [*path[path.index(s.name):], s.name]
            raise ConditionError(f"segments would contain themselves: {' -> '.join(loop)}")
        state[s.segment_id] = 1
        for used in sorted(s.uses(ctx)):
            if used in by_id:
                visit(by_id[used], [*path, s.name])
        state[s.segment_id] = 2
        out.append(s)

    for s in segments:
        visit(s, [])
    return out


def _check(tx: Tx, candidate: Segment, today: date, zone: str) -> Context:
    """``candidate`` compiles against what exists and closes no loop; the context it saw."""
    ctx = context(tx, today, zone)
    others = [s for s in active(tx) if s.segment_id != candidate.segment_id]
    if candidate.tag is not None:
        ctx.rule_tags[candidate.tag] = candidate.segment_id
    ctx.segments.add(candidate.segment_id)
    try:
        compile_condition(candidate.condition, ctx)
        ordered([candidate, *others], ctx)  # a loop is named from the candidate
    except ConditionError as exc:
        raise ServiceError("bad_condition", str(exc), 422) from None
    return ctx


def create(tx: Tx, *, name: str, definition: Any, for_tills: bool, tag: str | None, by: str,
           now_ms: int, today: date, zone: str) -> dict[str, Any]:
    cond = parse(definition)
    if tx.scalar("SELECT 1 FROM segments WHERE name = ?", (name,)) is not None:
        raise ServiceError("segment_exists", f"a segment is already named {name!r}", 409)
    if tag is not None:
        _check_rule_tag(tx, tag, None)
    seg = Segment(uuid7(), name, cond, 1, "active", for_tills, tag, True)
    _check(tx, seg, today, zone)
    text = json.dumps(cond.dump(), ensure_ascii=False, sort_keys=True)
    tx.execute("INSERT INTO segments(segment_id, name, definition, version, state, for_tills,"
               " tag, relative, needs, due, created_by, created_ms, updated_ms)"
               " VALUES (?, ?, ?, 1, 'active', ?, ?, ?, ?, 1, ?, ?, ?)",
               (seg.segment_id, name, text, int(for_tills), tag, int(cond.relative),
                json.dumps(sorted(cond.reads())), by, now_ms, now_ms))
    tx.execute("INSERT INTO segment_versions(segment_id, version, definition, created_by,"
               " created_ms) VALUES (?, 1, ?, ?, ?)", (seg.segment_id, text, by, now_ms))
    return get(tx, seg.segment_id)


def _check_rule_tag(tx: Tx, tag: str, segment_id: str | None) -> None:
    if tx.scalar("SELECT 1 FROM tag_catalog WHERE tag = ?", (tag,)) is None:
        raise ServiceError("unknown_tag", f"tag {tag!r} is not in the catalogue", 422)
    holder = tx.scalar("SELECT segment_id FROM segments WHERE tag = ? AND segment_id != ?",
                       (tag, segment_id or ""))
    if holder is not None:
        raise ServiceError("tag_has_rule", f"tag {tag!r} already has a rule", 409)
    if tx.scalar("SELECT 1 FROM hq_member_tags WHERE tag = ? LIMIT 1", (tag,)) is not None:
        raise ServiceError("tag_set_by_hand", f"tag {tag!r} is set by hand on members;"
                           " a rule would overrule them", 409)


def update(tx: Tx, segment_id: str, *, definition: Any | None, name: str | None,
           for_tills: bool | None, by: str, now_ms: int, today: date,
           zone: str) -> dict[str, Any]:
    """A new version (definition) or new settings; a new definition is evaluated whole."""
    seg = load(tx, segment_id)
    if seg.state != "active":
        raise ServiceError("segment_archived", "an archived segment cannot change", 409)
    if name is not None and name != seg.name:
        if tx.scalar("SELECT 1 FROM segments WHERE name = ?", (name,)) is not None:
            raise ServiceError("segment_exists", f"a segment is already named {name!r}", 409)
        tx.execute("UPDATE segments SET name = ?, updated_ms = ? WHERE segment_id = ?",
                   (name, now_ms, segment_id))
    if for_tills is not None:
        tx.execute("UPDATE segments SET for_tills = ?, updated_ms = ? WHERE segment_id = ?",
                   (int(for_tills), now_ms, segment_id))
    if (for_tills is not None and for_tills != seg.for_tills) or (
            seg.for_tills and name is not None and name != seg.name):
        _touch_members(tx, segment_id)  # the tills show it (or stop): its members go again
    if definition is not None:
        cond = parse(definition)
        text = json.dumps(cond.dump(), ensure_ascii=False, sort_keys=True)
        if text != json.dumps(seg.condition.dump(), ensure_ascii=False, sort_keys=True):
            _check(tx, Segment(segment_id, seg.name, cond, seg.version + 1, "active",
                               seg.for_tills, seg.tag, True), today, zone)
            version = seg.version + 1
            tx.execute("UPDATE segments SET definition = ?, version = ?, relative = ?,"
                       " needs = ?, due = 1, updated_ms = ? WHERE segment_id = ?",
                       (text, version, int(cond.relative), json.dumps(sorted(cond.reads())),
                        now_ms, segment_id))
            tx.execute("INSERT INTO segment_versions(segment_id, version, definition,"
                       " created_by, created_ms) VALUES (?, ?, ?, ?, ?)",
                       (segment_id, version, text, by, now_ms))
    return get(tx, segment_id)


def archive(tx: Tx, segment_id: str, *, now_ms: int, today: date, zone: str) -> dict[str, Any]:
    """No longer kept: its members are let go. Refused while an active segment uses it."""
    seg = load(tx, segment_id)
    ctx = context(tx, today, zone)
    users = sorted(s.name for s in active(tx) if segment_id in s.uses(ctx)
                   and s.segment_id != segment_id)
    if users:
        raise ServiceError("segment_in_use", f"segment {seg.name!r} is used by {users[0]!r}",
                           409)
    if tx.scalar("SELECT watched FROM segments WHERE segment_id = ?", (segment_id,)):
        raise ServiceError("segment_in_use", f"segment {seg.name!r} is used by a journey:"
                           " archive the journey first", 409)
    if seg.for_tills or seg.tag is not None:
        _touch_members(tx, segment_id)
    tx.execute("UPDATE segments SET state = 'archived', members = 0, tag = NULL,"
               " updated_ms = ? WHERE segment_id = ?", (now_ms, segment_id))
    tx.execute("DELETE FROM segment_members WHERE segment_id = ?", (segment_id,))
    return get(tx, segment_id)


def _touch_members(tx: Tx, segment_id: str) -> None:
    directory.touch(tx, [str(m) for (m,) in tx.all(
        "SELECT member_id FROM segment_members WHERE segment_id = ?", (segment_id,))])


def mark_due(tx: Tx, *, reads: Iterable[str] = (), relative: bool = False) -> int:
    """Segments to evaluate whole at the next pass: those reading any of ``reads`` (e.g. the
    RFM run that just finished), or the date-relative ones (at midnight)."""
    ids = set()
    for sid, needs, rel in tx.all(
            "SELECT segment_id, needs, relative FROM segments WHERE state = 'active'"):
        if (relative and rel) or set(json.loads(needs)) & set(reads):
            ids.add(str(sid))
    tx.executemany("UPDATE segments SET due = 1 WHERE segment_id = ?", [(s,) for s in ids])
    return len(ids)


_SHOWN = ("SELECT segment_id, name, definition, version, state, for_tills, tag, relative,"
          " members, evaluated_ms, due, created_by, created_ms, updated_ms FROM segments")


def _shown(row: Any) -> dict[str, Any]:
    return {"segment_id": row[0], "name": row[1], "definition": json.loads(row[2]),
            "version": int(row[3]), "state": row[4], "for_tills": bool(row[5]), "tag": row[6],
            "relative": bool(row[7]), "members": int(row[8]), "evaluated_ms": row[9],
            "due": bool(row[10]), "created_by": row[11], "created_ms": int(row[12]),
            "updated_ms": int(row[13])}


def get(tx: Tx, segment_id: str) -> dict[str, Any]:
    row = tx.one(f"{_SHOWN} WHERE segment_id = ?", (segment_id,))
    if row is None:
        raise ServiceError("segment_not_found", "no segment with this id", 404)
    return _shown(row)


def listing(tx: Tx, state: str | None = None) -> list[dict[str, Any]]:
    return [_shown(r) for r in tx.all(f"{_SHOWN} WHERE ? = '' OR state = ? ORDER BY name",
                                      (state or "", state or ""))]


def versions(tx: Tx, segment_id: str) -> list[dict[str, Any]]:
    load(tx, segment_id)
    return [{"version": int(r[0]), "definition": json.loads(r[1]), "created_by": r[2],
             "created_ms": int(r[3])} for r in tx.all(
        "SELECT version, definition, created_by, created_ms FROM segment_versions"
        " WHERE segment_id = ? ORDER BY version", (segment_id,))]


def evaluations(tx: Tx, segment_id: str, limit: int = 100) -> list[dict[str, Any]]:
    load(tx, segment_id)
    return [{"version": int(r[0]), "at_ms": int(r[1]), "kind": r[2], "members": int(r[3]),
             "added": int(r[4]), "removed": int(r[5]), "took_ms": int(r[6])} for r in tx.all(
        "SELECT version, at_ms, kind, members, added, removed, took_ms FROM"
        " segment_evaluations WHERE segment_id = ? ORDER BY at_ms DESC LIMIT ?",
        (segment_id, limit))]


def matching_sql(tx: Tx, cond: Condition, today: date, zone: str,
                 ctx: Context | None = None) -> tuple[str, list[Any]]:
    """SQL condition on ``members m`` for ``cond``, or a 422 for what it names wrongly."""
    try:
        return compile_condition(cond, ctx or context(tx, today, zone))
    except ConditionError as exc:
        raise ServiceError("bad_condition", str(exc), 422) from None


def preview(tx: Tx, cond: Condition, today: date, zone: str, scope_sql: str,
            scope_params: tuple[object, ...], sample: int = SAMPLE) -> dict[str, Any]:
    """How many members ``cond`` holds (in the scope) and the first few by id."""
    where, params = matching_sql(tx, cond, today, zone)
    full = f"{where} AND {scope_sql}"
    count = int(tx.scalar(f"SELECT count(*) FROM members m WHERE {full}",
                          (*params, *scope_params), default=0))
    ids = [str(r[0]) for r in tx.all(
        f"SELECT m.member_id FROM members m WHERE {full} ORDER BY m.member_id LIMIT ?",
        (*params, *scope_params, sample))] if sample else []
    return {"count": count, "sample": ids}
