"""Lifecycle stages: new, active, sleeping (silent for now), lost (gone), reactivated.

Each member's stage follows from their registration and purchases (the activity projection)
on the chain's calendar, and from the stage they held (reactivation is a return from sleeping
or lost). The rule, in ``stage_of``:

- never bought: ``new`` for ``new_days`` after registering, then ``sleeping`` until
  ``lost_days`` after registering, then ``lost``;
- silent (days since the last purchase) beyond ``lost_days``: ``lost``; beyond the sleeping
  threshold: ``sleeping``. The threshold is ``active_days``, or with ``rhythm`` above 0 and two
  or more purchases, ``rhythm`` times the member's average gap between purchases (a weekly
  buyer silent for a month is asleep; a yearly one is not), never beyond ``lost_days``. The
  average, not the median: it follows exactly from the projection's first and last purchase
  and count, with no read of the member's sales; one-time buyers use the fixed days;
- buying again after ``sleeping`` or ``lost``: ``reactivated``, for ``reactivated_days`` from
  the return; otherwise ``new`` within ``new_days`` of registering, else ``active``.

A change of stage is kept with its date (``lifecycle_changes``), so reactivations can be
counted and targeted. Stages are computed every night for every member (time alone moves a
member to sleeping) and, for the members whose purchases were merged, with the segments'
passes (``hub.members.segment_keeper``), so a return shows within a minute.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hub.core.db import Tx, in_chunks
from hub.core.schema import next_counter
from hub.members import store_members
from protocol.hlc import wall_ms

STAGES = ("new", "active", "sleeping", "lost", "reactivated")
PAGE = 20_000


class LifecycleRules(BaseModel):
    """``[lifecycle]``: thresholds in days, and the optional buying rhythm."""

    model_config = ConfigDict(extra="forbid")

    new_days: int = Field(30, ge=1, le=3660)
    active_days: int = Field(90, ge=1, le=3660)
    lost_days: int = Field(365, ge=2, le=7320)
    reactivated_days: int = Field(90, ge=1, le=3660)
    rhythm: float = Field(0.0, ge=0.0, le=100.0)

    @model_validator(mode="after")
    def _ordered(self) -> LifecycleRules:
        if self.active_days >= self.lost_days:
            raise ValueError("active_days must be below lost_days")
        return self


def stage_of(rules: LifecycleRules, today: date, registered: date, first: date | None,
             last: date | None, purchases: int, held: tuple[str, date] | None) -> str:
    """The member's stage today (module doc)."""
    if last is None:
        age = (today - registered).days
        return "new" if age < rules.new_days else (
            "sleeping" if age <= rules.lost_days else "lost")
    silent = (today - last).days
    sleep_after = rules.active_days
    if rules.rhythm > 0 and purchases >= 2 and first is not None and first < last:
        gap = (last - first).days / (purchases - 1)
        sleep_after = min(rules.lost_days - 1, max(1, math.ceil(rules.rhythm * gap)))
    if silent > rules.lost_days:
        return "lost"
    if silent > sleep_after:
        return "sleeping"
    if held is not None:
        stage, since = held
        if stage in ("sleeping", "lost"):
            return "reactivated"
        if stage == "reactivated" and (today - since).days < rules.reactivated_days:
            return "reactivated"
    return "new" if (today - registered).days < rules.new_days else "active"


_SELECT = (
    "SELECT m.member_id, m.registered_hlc, a.first_date, a.last_date, a.purchases, l.stage,"
    " l.since FROM members m LEFT JOIN member_activity a ON a.member_id = m.member_id"
    " LEFT JOIN member_lifecycle l ON l.member_id = m.member_id"
    " WHERE m.merged_into IS NULL AND m.erased = 0")


def _day(text: Any) -> date | None:
    return date.fromisoformat(str(text)) if text else None


def _update(tx: Tx, rows: Sequence[Any], rules: LifecycleRules, today: date,
            zone: ZoneInfo) -> list[str]:
    """Stages for ``rows`` (of ``_SELECT``); the changes written; returns who changed."""
    changed: list[tuple[str, str | None, str]] = []
    for mid, reg_hlc, first, last, purchases, stage, since in rows:
        registered = datetime.fromtimestamp(wall_ms(int(reg_hlc)) / 1000, zone).date()
        held = (str(stage), date.fromisoformat(str(since))) if stage else None
        now = stage_of(rules, today, registered, _day(first), _day(last), int(purchases or 0),
                       held)
        if now != stage:
            changed.append((str(mid), stage, now))
    day = today.isoformat()
    tx.executemany(
        "INSERT INTO member_lifecycle(member_id, stage, since) VALUES (?, ?, ?)"
        " ON CONFLICT(member_id) DO UPDATE SET stage = excluded.stage, since = excluded.since",
        [(m, now, day) for m, _was, now in changed])
    store_members.set_stages(tx, [(now, m) for m, _was, now in changed])
    if changed:  # numbered in the order they happened (two on one day stay in order)
        last = next_counter(tx, "lifecycle_seq", len(changed))
        tx.executemany(
            "INSERT INTO lifecycle_changes(member_id, day, from_stage, to_stage, seq)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT(member_id, day, to_stage) DO UPDATE SET"
            " from_stage = excluded.from_stage, seq = excluded.seq",
            [(m, day, was, now, last - len(changed) + i)
             for i, (m, was, now) in enumerate(changed, 1)])
    return [m for m, _was, _now in changed]


def update_page(tx: Tx, rules: LifecycleRules, today: date, zone: str, after: str,
                page: int = PAGE) -> tuple[list[str], str | None]:
    """Stages of the next ``page`` members after ``after`` (by id): (who changed, where the
    next page starts, None at the end)."""
    rows = tx.all(f"{_SELECT} AND m.member_id > ? ORDER BY m.member_id LIMIT ?", (after, page))
    changed = _update(tx, rows, rules, today, ZoneInfo(zone))
    return changed, (str(rows[-1][0]) if len(rows) == page else None)


def update_members(tx: Tx, rules: LifecycleRules, today: date, zone: str,
                   members: Iterable[str]) -> list[str]:
    """Stages of ``members`` (merged ones lose theirs); returns who changed."""
    changed: list[str] = []
    ids = sorted(set(members))
    for chunk, marks in in_chunks(ids):
        tx.execute("DELETE FROM member_lifecycle WHERE member_id IN (SELECT member_id FROM"
                   f" members WHERE member_id IN ({marks}) AND (merged_into IS NOT NULL"
                   " OR erased = 1))", chunk)
        store_members.unstaged(tx, chunk)
        rows = tx.all(f"{_SELECT} AND m.member_id IN ({marks})", chunk)
        changed += _update(tx, rows, rules, today, ZoneInfo(zone))
    return changed


def history(tx: Tx, member_id: str) -> list[dict[str, Any]]:
    return [{"day": r[0], "from_stage": r[1], "to_stage": r[2]} for r in tx.all(
        "SELECT day, from_stage, to_stage FROM lifecycle_changes WHERE member_id = ?"
        " ORDER BY seq", (member_id,))]

