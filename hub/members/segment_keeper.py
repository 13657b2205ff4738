"""Keeps every active segment's members and every member's lifecycle stage fresh.

One pass (``SegmentKeeper.run``), run by the hub after the projections catch up and every few
seconds:

1. *Who may have changed* (writer): the members of the events the projections have applied
   since the last pass (``events.pos`` up to the lowest checkpoint of the projections the
   conditions read), the members whose row changed (``members.change_no``: profile, tier,
   merge, erasure) and those marked in ``segment_dirty`` (HQ tags). Their lifecycle stages are
   brought up to date here; whoever changed stage is marked too.
2. *Who is in* (a reader, one snapshot): every active segment in dependency order — a segment
   due (new, changed, date-relative after midnight, RFM-reading after a run) whole, any other
   for the members who may have changed and those whose membership of a segment it uses just
   changed.
3. *The difference* (writer): members added and let go, the counts, an evaluation record
   (every whole evaluation; a member-by-member one when it changed something), and how far
   the pass read — in the last transaction, so a pass cut short is done again, not skipped.

HQ's reads and the stores' batches never wait for step 2; the writes are pages of
``WRITE_PAGE`` rows, so a segment of a million members holds the writer for moments at a time.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from hub.core.clock import now_ms
from hub.core.db import HubDatabase, Tx, in_chunks
from hub.core.schema import counter, next_counter
from hub.members import directory, lifecycle, segments
from hub.members.conditions import ConditionError, compile_condition
from hub.members.identity import canonical_all

log = logging.getLogger("membergate.hub.segments")

# The projections whose rows conditions read: a pass takes events up to where all have applied.
READS_FROM = ("sales_facts", "member_activity", "point_lots")
DIRTY_PAGE = 20_000  # members looked at again per pass, at most
WRITE_PAGE = 50_000  # membership rows written per writer transaction


@dataclass
class Plan:
    """What step 1 found."""

    pos: int
    change_no: int
    dirty_cutoff: int  # the marks this pass takes: up to this number
    members: set[str]
    more: bool  # more changed members than one pass takes
    deferred: set[str] = field(default_factory=set)  # to look at again (a segment deferred)


@dataclass
class Diff:
    segment: segments.Segment
    whole: bool
    total: int
    add: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    took_ms: int = 0
    # How many were added and let go (the lists are emptied as pages are written).
    added: int = 0
    removed: int = 0


class SegmentKeeper:
    def __init__(self, db: HubDatabase, zone: str, rules: lifecycle.LifecycleRules,
                 clock: Callable[[], int] = now_ms,
                 today: Callable[[], date] | None = None) -> None:
        self.db = db
        self.zone = zone
        self.rules = rules
        self.clock = clock
        self._today = today
        self.passes = 0
        # One pass at a time: the scheduled job, a wake-up and the nightly run never evaluate
        # the same segment twice side by side.
        self._lock = asyncio.Lock()

    def today(self) -> date:
        if self._today is not None:
            return self._today()
        return datetime.now(ZoneInfo(self.zone)).date()

    async def run(self) -> dict[str, int]:
        """Passes until every change seen is taken in; returns what they did: members looked
        at, segments evaluated (whole or for some members), added and let go."""
        async with self._lock:
            return await self._run()

    async def _run(self) -> dict[str, int]:
        seen: set[str] = set()
        total = {"members": 0, "segments": 0, "added": 0, "removed": 0, "passes": 0}
        while True:
            done, looked = await self._step()
            seen |= looked
            for k in ("segments", "added", "removed"):
                total[k] += done[k]
            total["passes"] += 1
            if not done["more"]:
                total["members"] = len(seen)
                return total

    async def _step(self) -> tuple[dict[str, int], set[str]]:
        today = self.today()
        plan = await self.db.transaction(lambda tx: self._plan(tx, today))
        diffs = await self.db.read(lambda tx: self._evaluate(tx, plan, today), give_way=False)
        for d in diffs:  # big differences first, in pages; the bookkeeping comes last
            while len(d.add) + len(d.remove) > WRITE_PAGE:
                await self.db.transaction(
                    functools.partial(self._write_page, d=d, plan=plan))
        await self.db.transaction(lambda tx: self._finish(tx, plan, diffs))
        self.passes += 1
        return {"segments": len(diffs), "added": sum(d.added for d in diffs),
                "removed": sum(d.removed for d in diffs),
                "more": int(plan.more)}, plan.members

    async def nightly(self) -> dict[str, int]:
        """After the chain's midnight: every member's stage (time alone moves them), then the
        date-relative segments whole."""
        async with self._lock:
            today, changed = self.today(), 0
            cursor: str | None = ""
            while cursor is not None:
                moved, cursor = await self.db.transaction(
                    functools.partial(self._stages_page, today=today, after=cursor))
                changed += moved
            await self.db.transaction(lambda tx: segments.mark_due(tx, relative=True))
            done = await self._run()
        done["stages_changed"] = changed
        return done

    def _stages_page(self, tx: Tx, today: date, after: str) -> tuple[int, str | None]:
        moved, nxt = lifecycle.update_page(tx, self.rules, today, self.zone, after)
        mark(tx, moved)
        directory.touch(tx, moved)
        return len(moved), nxt

    # -- the three steps ------------------------------------------------------------------------

    def _plan(self, tx: Tx, today: date) -> Plan:
        start_pos = counter(tx, "segments_pos")
        start_change = counter(tx, "segments_change_no")
        marks = ", ".join("?" * len(READS_FROM))
        applied = tx.all(f"SELECT name, pos FROM projection_checkpoints WHERE name IN ({marks})",
                         READS_FROM)
        pos = min([int(p) for _n, p in applied] or [0]) if len(applied) == len(READS_FROM) \
            else 0
        pos = max(pos, start_pos)
        ids: set[str] = set()
        more = False
        # Events of the merged projections' positions; then changed member rows; then marks.
        rows = tx.all("SELECT pos, member_id FROM events WHERE pos > ? AND pos <= ?"
                      " AND member_id IS NOT NULL ORDER BY pos LIMIT ?",
                      (start_pos, pos, DIRTY_PAGE))
        if len(rows) == DIRTY_PAGE:
            pos, more = int(rows[-1][0]), True
        ids.update(str(r[1]) for r in rows)
        change_no = int(tx.scalar("SELECT max(change_no) FROM members", default=0) or 0)
        changed = tx.all("SELECT change_no, member_id FROM members WHERE change_no > ?"
                         " AND change_no <= ? ORDER BY change_no LIMIT ?",
                         (start_change, change_no, DIRTY_PAGE))
        if len(changed) == DIRTY_PAGE:
            change_no, more = int(changed[-1][0]), True
        ids.update(str(r[1]) for r in changed)
        cutoff = counter(tx, "segment_dirty_seq")
        marked = tx.all("SELECT member_id FROM segment_dirty WHERE at_ms <= ? LIMIT ?",
                        (cutoff, DIRTY_PAGE))
        more = more or len(marked) == DIRTY_PAGE
        ids.update(str(r[0]) for r in marked)
        # Each id, and the member it now is (a merged id leaves its segments, its survivor
        # is looked at again).
        ids |= set(canonical_all(tx, ids).values())
        moved = lifecycle.update_members(tx, self.rules, today, self.zone, ids)
        mark(tx, moved)
        directory.touch(tx, moved)  # the stage travels to the stores
        if len(changed) < DIRTY_PAGE:  # the new numbers are this pass's own members'
            change_no = int(tx.scalar("SELECT max(change_no) FROM members", default=0) or 0)
        cutoff = counter(tx, "segment_dirty_seq")  # these are in this pass
        return Plan(pos, change_no, cutoff, ids, more)

    def _evaluate(self, tx: Tx, plan: Plan, today: date) -> list[Diff]:
        ctx = segments.context(tx, today, self.zone)
        try:
            order = segments.ordered(segments.active(tx), ctx)
        except ConditionError as exc:  # saving refuses loops; one made by hand is logged
            log.error("segments not evaluated: %s", exc)
            return []
        changed_in: dict[str, set[str]] = {}
        diffs: list[Diff] = []
        # The changed members as one parameter (a JSON array on SQLite, an array on
        # PostgreSQL): one query a segment, however many they are; and what they are in now,
        # read once for every segment.
        listed: object = sorted(plan.members)
        among = "= ANY(?)"
        if tx.dialect == "sqlite":
            among, listed = "IN (SELECT value FROM json_each(?))", json.dumps(listed)
        held_by: dict[str, set[str]] = defaultdict(set)
        if plan.members:
            for sid, mid in tx.all(
                    f"SELECT segment_id, member_id FROM segment_members WHERE member_id {among}",
                    (listed,)):
                held_by[str(sid)].add(str(mid))
        for seg in order:
            if any(changed_in.get(used) for used in seg.uses(ctx)):
                # It reads a segment this pass changed, whose rows this snapshot does not
                # have yet: it and what follows wait for the next pass, which sees them.
                plan.more = True
                plan.deferred = plan.members.union(*changed_in.values())
                break
            if not seg.due and not plan.members:
                continue
            started = time.monotonic()
            where, params = compile_condition(seg.condition, ctx)
            if seg.due:
                now_in = {str(r[0]) for r in tx.all(
                    f"SELECT m.member_id FROM members m WHERE {where}", params)}
                held = {str(r[0]) for r in tx.all(
                    "SELECT member_id FROM segment_members WHERE segment_id = ?",
                    (seg.segment_id,))}
                total = len(now_in)
            else:
                now_in = {str(r[0]) for r in tx.all(
                    f"SELECT m.member_id FROM members m WHERE m.member_id {among} AND {where}",
                    (listed, *params))}
                held = held_by.get(seg.segment_id, set())
                total = -1  # counted when written
            d = Diff(seg, seg.due, total, sorted(now_in - held), sorted(held - now_in))
            d.added, d.removed = len(d.add), len(d.remove)
            d.took_ms = int((time.monotonic() - started) * 1000)
            changed_in[seg.segment_id] = set(d.add) | set(d.remove)
            if d.whole or d.add or d.remove:
                diffs.append(d)
        return diffs

    def _write_page(self, tx: Tx, d: Diff, plan: Plan) -> None:
        """Up to ``WRITE_PAGE`` rows of ``d``, taken off it."""
        now = self.clock()
        take_remove = d.remove[:WRITE_PAGE]
        del d.remove[:len(take_remove)]
        take_add = d.add[:WRITE_PAGE - len(take_remove)]
        del d.add[:len(take_add)]
        _apply(tx, d.segment.segment_id, take_add, take_remove, now)
        if d.segment.for_tills or d.segment.tag is not None:
            _touch(tx, plan, [*take_add, *take_remove])

    def _finish(self, tx: Tx, plan: Plan, diffs: list[Diff]) -> None:
        now = self.clock()
        # Members whose entry at the stores changes: in or out of a segment marked for the
        # tills, or of a rule tag's (a whole evaluation's pages in ``_write_page`` too).
        for d in diffs:
            if d.segment.for_tills or d.segment.tag is not None:
                _touch(tx, plan, [*d.add, *d.remove])
        for d in diffs:
            sid = d.segment.segment_id
            _apply(tx, sid, d.add, d.remove, now)
            count = int(tx.scalar("SELECT count(*) FROM segment_members WHERE segment_id = ?",
                                  (sid,), default=0))
            # A segment changed since it was read stays due: its next version is evaluated
            # whole at the next pass.
            tx.execute("UPDATE segments SET members = ?, evaluated_ms = ?, due = CASE WHEN"
                       " version = ? THEN 0 ELSE due END WHERE segment_id = ?",
                       (count, now, d.segment.version, sid))
            tx.execute("INSERT INTO segment_evaluations(segment_id, version, at_ms, kind,"
                       " members, added, removed, took_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (sid, d.segment.version, now, "whole" if d.whole else "members", count,
                        d.added, d.removed, d.took_ms))
        for name, value in (("segments_pos", plan.pos), ("segments_change_no", plan.change_no)):
            tx.execute("INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name)"
                       " DO UPDATE SET value = excluded.value", (name, value))
        for chunk, marks in in_chunks(sorted(plan.members)):
            tx.execute(f"DELETE FROM segment_dirty WHERE at_ms <= ? AND member_id IN ({marks})",
                       (plan.dirty_cutoff, *chunk))
        mark(tx, plan.deferred)


def _touch(tx: Tx, plan: Plan, members: list[str]) -> None:
    """New change numbers for ``members`` (their entries go to the stores again). When no one
    else changed a member since the plan, the pass counts these as seen: they are its own,
    and a pass over them again would find nothing new."""
    if not members:
        return
    before = int(tx.scalar("SELECT max(change_no) FROM members", default=0) or 0)
    directory.touch(tx, members)
    if before == plan.change_no:
        plan.change_no = int(tx.scalar("SELECT max(change_no) FROM members", default=0) or 0)


def _apply(tx: Tx, segment_id: str, add: list[str], remove: list[str], now: int) -> None:
    for chunk, marks in in_chunks(remove):
        tx.execute(f"DELETE FROM segment_members WHERE segment_id = ? AND member_id IN ({marks})",
                   (segment_id, *chunk))
    tx.executemany("INSERT INTO segment_members(segment_id, member_id, since_ms) VALUES"
                   " (?, ?, ?) ON CONFLICT(segment_id, member_id) DO NOTHING",
                   [(segment_id, m, now) for m in add])
    # A journey waits on members entering this segment (``hub.automation``): each entry in
    # order, in the transaction that made it.
    if add and tx.scalar("SELECT watched FROM segments WHERE segment_id = ?", (segment_id,)):
        last = next_counter(tx, "segment_join_seq", len(add))
        tx.executemany("INSERT INTO segment_joins(seq, segment_id, member_id, at_ms)"
                       " VALUES (?, ?, ?, ?)",
                       [(last - len(add) + i, segment_id, m, now)
                        for i, m in enumerate(add, 1)])


def mark(tx: Tx, members: list[str] | set[str]) -> None:
    """``members`` are looked at again by the next pass. Each mark takes a number from a
    counter (the column is named for the time it stood for): a pass takes the marks up to the
    number it saw, and a mark made meanwhile has a higher one and stays for the next."""
    if not members:
        return
    seq = next_counter(tx, "segment_dirty_seq")
    tx.executemany("INSERT INTO segment_dirty(member_id, at_ms) VALUES (?, ?)"
                   " ON CONFLICT(member_id) DO UPDATE SET at_ms = excluded.at_ms",
                   [(m, seq) for m in sorted(members)])

