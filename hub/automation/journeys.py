"""Journeys as HQ keeps them: every version, a state (active, paused, archived), and where an
event-driven journey has read its source up to.

A journey starts from the head of its source: made today, a "2 hours after a purchase" journey
acts on today's purchases from now on, not on last year's. Pausing stops new entries (members
already on their way go on); archiving stops them too, and every entry still waiting exits.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from typing import Any

from pydantic import ValidationError

from hub.automation.definition import FOLLOWED, JourneyDefinition, SendMessage, SetTags
from hub.core.db import Tx
from hub.members import segments
from hub.members.conditions import describe
from protocol.errors import ServiceError
from protocol.ids import uuid7

# Checks a message's text for its channel (``hub.notify`` channels' ``check``): raises
# ValueError with the reason.
MessageCheck = Callable[[str, str, str], None]  # channel, purpose, text
STATES = ("active", "paused", "archived")


def parse(definition: Any) -> JourneyDefinition:
    try:
        return JourneyDefinition.model_validate(definition)
    except ValidationError as exc:
        raise ServiceError("bad_journey", describe(exc), 422) from None


def _check(tx: Tx, j: JourneyDefinition, check_message: MessageCheck, today: date,
           zone: str) -> None:
    """What the definition names exists, and each message fits its channel."""
    trigger = j.trigger
    if trigger.kind in ("segment", "scheduled"):
        seg = segments.load(tx, trigger.segment_id)
        if seg.state != "active":
            raise ServiceError("segment_archived", f"segment {seg.name!r} is archived", 422)
    cond = j.condition()
    if cond is not None:
        segments.matching_sql(tx, cond, today, zone)
    for i, action in enumerate(j.actions):
        if isinstance(action, SetTags):
            for tag in [*action.add, *action.remove]:
                if tx.scalar("SELECT 1 FROM tag_catalog WHERE tag = ?", (tag,)) is None:
                    raise ServiceError("unknown_tag", f"actions[{i}]: tag {tag!r} is not in"
                                       " the catalogue", 422)
                if tx.scalar("SELECT 1 FROM segments WHERE tag = ? AND state = 'active'",
                             (tag,)):
                    raise ServiceError("tag_has_rule", f"actions[{i}]: tag {tag!r} is kept by"
                                       " a rule, never set by hand", 422)
        if isinstance(action, SendMessage):
            try:
                check_message(action.channel, action.purpose, action.text)
            except ValueError as exc:
                raise ServiceError("bad_message", f"actions[{i}]: {exc}", 422) from None


def head(tx: Tx, source: str) -> int:
    """Where a journey following ``source`` starts: its current end."""
    sql = {"events": "SELECT max(pos) FROM events",
           "lifecycle": "SELECT max(seq) FROM lifecycle_changes",
           "segment": "SELECT max(seq) FROM segment_joins",
           "tier": "SELECT max(seq) FROM tier_changes"}[source]
    return int(tx.scalar(sql, default=0) or 0)


def _watch(tx: Tx) -> None:
    """Segments with a journey waiting on them record who enters (``segment_joins``)."""
    used = set()
    for (definition,) in tx.all("SELECT definition FROM journeys WHERE state != 'archived'"):
        trigger = json.loads(definition)["trigger"]
        if trigger["kind"] in ("segment", "scheduled"):
            used.add(trigger["segment_id"])
    tx.execute("UPDATE segments SET watched = 0 WHERE watched = 1")
    for segment_id in sorted(used):
        tx.execute("UPDATE segments SET watched = 1 WHERE segment_id = ?", (segment_id,))


def _validated(tx: Tx, definition: Any, journey_id: str | None, check_message: MessageCheck,
               today: date, zone: str) -> tuple[JourneyDefinition, dict[str, Any] | None]:
    """``definition`` checked as a new journey (``journey_id`` None) or a new version of one,
    with the journey's row: everything ``create`` and ``update`` refuse, and a preview too."""
    row = _row(tx, journey_id) if journey_id is not None else None
    if row is not None and row["state"] == "archived":
        raise ServiceError("journey_archived", "an archived journey cannot change", 409)
    j = parse(definition)
    if row is not None and j.trigger.kind != row["trigger"]:
        raise ServiceError("trigger_changed", "a journey's trigger kind stays: make a new"
                           " journey for another", 422)
    if (row is None or j.name != row["name"]) and tx.scalar(
            "SELECT 1 FROM journeys WHERE name = ?", (j.name,)) is not None:
        raise ServiceError("journey_exists", f"a journey is already named {j.name!r}", 409)
    _check(tx, j, check_message, today, zone)
    return j, row


def create(tx: Tx, definition: Any, *, by: str, now_ms: int, today: date, zone: str,
           check_message: MessageCheck) -> dict[str, Any]:
    j = _validated(tx, definition, None, check_message, today, zone)[0]
    journey_id = uuid7()
    text = _text(j)
    source = FOLLOWED.get(j.trigger.kind)
    tx.execute("INSERT INTO journeys(journey_id, name, definition, version, state, trigger,"
               " cursor, created_by, created_ms, updated_ms) VALUES (?, ?, ?, 1, 'active', ?,"
               " ?, ?, ?, ?)", (journey_id, j.name, text, j.trigger.kind,
                                head(tx, source) if source else 0, by, now_ms, now_ms))
    tx.execute("INSERT INTO journey_versions(journey_id, version, definition, created_by,"
               " created_ms) VALUES (?, 1, ?, ?, ?)", (journey_id, text, by, now_ms))
    _watch(tx)
    return get(tx, journey_id)


def update(tx: Tx, journey_id: str, definition: Any, *, by: str, now_ms: int, today: date,
           zone: str, check_message: MessageCheck) -> dict[str, Any]:
    """A new version: entries from now on take it; members on their way finish the version
    they entered with. The trigger's kind cannot change (its cursor means nothing to
    another): make a new journey."""
    j, row = _validated(tx, definition, journey_id, check_message, today, zone)
    assert row is not None  # _validated read it, or raised journey_not_found
    text = _text(j)
    if text == row["definition"]:
        return get(tx, journey_id)
    version = int(row["version"]) + 1
    tx.execute("UPDATE journeys SET name = ?, definition = ?, version = ?, updated_ms = ?"
               " WHERE journey_id = ?", (j.name, text, version, now_ms, journey_id))
    tx.execute("INSERT INTO journey_versions(journey_id, version, definition, created_by,"
               " created_ms) VALUES (?, ?, ?, ?, ?)", (journey_id, version, text, by, now_ms))
    _watch(tx)
    return get(tx, journey_id)


def preview(tx: Tx, definition: Any, journey_id: str | None, *, today: date, zone: str,
            check_message: MessageCheck,
            would_enter: Callable[[Tx, JourneyDefinition], int | None]) -> dict[str, Any]:
    """What saving ``definition`` (as a new journey, or a new version of ``journey_id``) would
    make, refused exactly as saving it would be, with nothing written: its trigger, steps,
    channels and holdout, how many members it would take if it ran now (``would_enter``:
    None where that is not known ahead) and, for a segment trigger, the segment's size today
    (it takes members as they enter from now on, not those already in it)."""
    j = _validated(tx, definition, journey_id, check_message, today, zone)[0]
    trigger = j.trigger
    size = None
    if trigger.kind in ("segment", "scheduled"):
        size = int(tx.scalar("SELECT count(*) FROM segment_members WHERE segment_id = ?",
                             (trigger.segment_id,), default=0))
    return {"name": j.name, "trigger": trigger.model_dump(mode="json"),
            "conditions": j.conditions is not None, "holdout_percent": j.holdout_percent,
            "steps": [a.model_dump(mode="json", exclude_none=True) for a in j.actions],
            "channels": sorted({a.channel for a in j.actions if isinstance(a, SendMessage)}),
            "would_enter": would_enter(tx, j), "segment_members": size}


def set_state(tx: Tx, journey_id: str, state: str, *, now_ms: int) -> dict[str, Any]:
    row = _row(tx, journey_id)
    if state not in STATES:
        raise ServiceError("bad_state", f"state is one of {', '.join(STATES)}", 422)
    if row["state"] == "archived" and state != "archived":
        raise ServiceError("journey_archived", "an archived journey stays archived", 409)
    if state == "active" and row["state"] == "paused":
        # What happened while it was paused is not acted on: it resumes from now.
        source = FOLLOWED.get(str(row["trigger"]))
        if source:
            tx.execute("UPDATE journeys SET cursor = ? WHERE journey_id = ?",
                       (head(tx, source), journey_id))
    tx.execute("UPDATE journeys SET state = ?, updated_ms = ? WHERE journey_id = ?",
               (state, now_ms, journey_id))
    if state == "archived":
        tx.execute("UPDATE journey_entries SET state = 'exited' WHERE journey_id = ?"
                   " AND state = 'active'", (journey_id,))
    _watch(tx)
    return get(tx, journey_id)


def _text(j: JourneyDefinition) -> str:
    return json.dumps(j.model_dump(mode="json", exclude_none=True), ensure_ascii=False,
                      sort_keys=True)


_COLUMNS = ("journey_id", "name", "definition", "version", "state", "trigger", "cursor",
            "scanned", "created_by", "created_ms", "updated_ms")


def _row(tx: Tx, journey_id: str) -> dict[str, Any]:
    row = tx.one(f"SELECT {', '.join(_COLUMNS)} FROM journeys WHERE journey_id = ?",
                 (journey_id,))
    if row is None:
        raise ServiceError("journey_not_found", "no journey with this id", 404)
    return dict(zip(_COLUMNS, row, strict=True))


def get(tx: Tx, journey_id: str) -> dict[str, Any]:
    row = _row(tx, journey_id)
    counts = {str(s): int(n) for s, n in tx.all(
        "SELECT CASE WHEN held_out > 0 THEN 'held_out' ELSE state END, count(*)"
        " FROM journey_entries WHERE journey_id = ? GROUP BY 1", (journey_id,))}
    return {"journey_id": row["journey_id"], "name": row["name"],
            "definition": json.loads(row["definition"]), "version": int(row["version"]),
            "state": row["state"], "created_by": row["created_by"],
            "created_ms": int(row["created_ms"]), "updated_ms": int(row["updated_ms"]),
            "entries": counts}


def listing(tx: Tx) -> list[dict[str, Any]]:
    return [get(tx, str(j)) for (j,) in tx.all(
        "SELECT journey_id FROM journeys ORDER BY created_ms DESC, journey_id")]


def versions(tx: Tx, journey_id: str) -> list[dict[str, Any]]:
    _row(tx, journey_id)
    return [{"version": int(v), "definition": json.loads(d), "created_by": by,
             "created_ms": int(ms)} for v, d, by, ms in tx.all(
        "SELECT version, definition, created_by, created_ms FROM journey_versions"
        " WHERE journey_id = ? ORDER BY version", (journey_id,))]


def of_member(tx: Tx, member_id: str) -> list[dict[str, Any]]:
    """Every journey the member entered, with each action taken (the 360 card)."""
    actions: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for j, occ, step, kind, at, outcome in tx.all(
            "SELECT journey_id, occasion, step, kind, at_ms, outcome FROM journey_actions"
            " WHERE member_id = ? ORDER BY at_ms, step", (member_id,)):
        actions.setdefault((str(j), str(occ)), []).append(
            {"step": int(step), "kind": kind, "at_ms": int(at), **json.loads(outcome)})
    return [{"journey_id": j, "name": name, "occasion": occ, "version": int(v),
             "entered_ms": int(at), "held_out": bool(h), "state": state,
             "actions": actions.get((str(j), str(occ)), [])}
            for j, name, occ, v, at, h, state in tx.all(
                "SELECT e.journey_id, j.name, e.occasion, e.version, e.entered_ms, e.held_out,"
                " e.state FROM journey_entries e JOIN journeys j ON j.journey_id ="
                " e.journey_id WHERE e.member_id = ? ORDER BY e.entered_ms DESC", (member_id,))]
