"""Members across the chain: who they are, how active, how new members convert, and who tops
up most.

How each figure is counted:

* **Members**: live members (not merged into another) the caller's scope sees, of the tier
  and segment asked for; with a region or store filter, the members registered at one of its
  stores or who bought at one (the scope's own rule, ``hub.auth.scope``).
* **New members**: registered in the period, on their home store's calendar; online when the
  home store is the online channel (``ONLINE``), else in store.
* **Active members**: members with at least one purchase at a covered store in the period (a
  purchase refunded later still made them active). **Repurchase rate**: of the members with
  at least one purchase in the whole period that was not fully refunded, the share with two or
  more; a purchase stops counting when the refunds of it merged so far reach its total.
  **Top 20 %**: the members with a purchase in the period, ranked by their net spend there
  (purchases less refunds in the period; ties by member id), the first fifth (rounded up):
  their share of the net spend of all of them.
* **Funnel**: members registered in the period, by registration month and home store; of
  them, those with a purchase (anywhere) within 7 days of registering, and of those, those
  with a second purchase within 90 days (calendar days, counting the registration day as 0).
* **Top-up loyalty**: members ranked by the principal they topped up at covered stores in the
  period, then by how many times; names masked for roles that see personal data masked.

Reads: for the whole chain with no member filter, each breakdown from its own table (tiers and
new members one pass over ``members``, stages the lifecycle's stage index, RFM groups the
run's own count); for some stores and no segment (HQ, a store's or a region's scope), the
stores' rows in ``store_members`` (hub schema 28: each member with their tier, stage and
group; several stores, each member once); with a segment or a guide's scope, one pass over
the members the caller sees, from two index ranges for some stores (registered there:
``members_home``; bought there: ``member_stores_store``), each with their stage and score.
Activity: the
``member_store_days`` projection (the chain in member order, a store a range of its store
index); with a tier, a segment or a guide's scope, each member checked once, after their rows
are summed (a store's or region's members are those with rows at its stores).
Funnel: the cohort's registrations (a range of ``members_home`` per store, of
``members_registered`` for the chain), then each member's first purchase and second earliest
purchase day (``member_activity``, by key).
Top-ups: ``sv_topups``, whose rows name the id a store wrote (an alias counts as the member it
was merged into).
"""

from __future__ import annotations

import json
from bisect import bisect_left
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hub.auth.scope import Scope, mask_name
from hub.core.db import Tx
from hub.members.rfm import group_names
from hub.reports.grouping import grouped
from hub.reports.liabilities import (
    chain_stores,
    counted_at_stores,
    every_member,
    in_list,
    live_members,
    seen_where_they_shop,
    store_names,
)
from hub.reports.period import (
    ReportQuery,
    Selection,
    bucket,
    completeness,
    periods,
    select_stores,
)
from hub.reports.sales import unsupported
from hub.reports.shape import Table, ratio, report
from hub.stores.registry import ONLINE
from protocol.errors import ServiceError
from protocol.hlc import COUNTER_BITS, pack

DAY_MS = 86_400_000
EPOCH = date(1970, 1, 1)
FIRST_WITHIN, REPEAT_WITHIN = 7, 90  # days after registering
MAX_LIMIT = 1_000

STRUCTURE_NOTES = [
    "members: live members you can see, of the tier and segment asked for; with a region or"
    " store filter, those registered at or buying at its stores",
    "region: of the member's home store; stage: the lifecycle stage as last computed; RFM"
    " group: in the latest RFM run ('none': no purchase in its window; none at all: not"
    " scored, registered after the run); for the whole chain, as the run counted its groups",
    "new members: registered in the period, on their home store's calendar, at a covered"
    " store; channel: online when registered by the online channel, else in store",
]
ACTIVITY_NOTES = [
    "active members: members with at least one purchase at a covered store in the period"
    " (counted once however many stores they bought at; a purchase refunded later still"
    " counts)",
    "repurchase rate: members with two or more purchases in the whole period / members with"
    " at least one; a purchase whose refunds (merged so far, whenever made) reach its total"
    " does not count",
    "top 20 % share: the members with a purchase in the period ranked by net spend (purchases"
    " less refunds in the period, at covered stores); the first fifth, rounded up, and their"
    " share of all these members' net spend",
]
FUNNEL_NOTES = [
    "cohort: members registered in the month (their home store's calendar) at a covered"
    " store",
    "first purchase ≤ 7 d: a purchase anywhere within 7 days of registering (day 0 is the"
    " registration day); repeat ≤ 90 d: of those, a second purchase within 90 days",
    "a cohort registered less than 90 days ago is still filling: members registered on or"
    " after windows_open_from may still repeat",
]
LOYALTY_NOTES = [
    "ranked by the principal topped up at covered stores in the period, then by the number"
    " of top-ups; bonus value is not counted",
]


def day_number(day: date) -> int:
    return (day - EPOCH).days


def _ms(day: date) -> int:
    return day_number(day) * DAY_MS


class Calendar:
    """SQL for the store-local day (a day number since 1970-01-01) of an HLC column, on the
    calendar of the store in another column: each zone's UTC offset over the dates asked for,
    as pieces between its transitions, so the database needs no time zone data."""

    def __init__(self, tx: Tx, chain_zone: str, first: date, last: date) -> None:
        self.chain_zone = chain_zone
        self.first, self.last = first - timedelta(days=2), last + timedelta(days=2)
        self.zones: dict[str, list[str]] = {}
        for store, zone in tx.all("SELECT store_id, timezone FROM stores"
                                  " WHERE timezone IS NOT NULL ORDER BY store_id"):
            if zone != chain_zone:
                self.zones.setdefault(str(zone), []).append(str(store))

    def _offset(self, zone: str, hlc: str) -> str:
        tz = ZoneInfo(zone)

        def at(ms: int) -> int:
            offset = datetime.fromtimestamp(ms / 1000, tz).utcoffset()
            return int(offset.total_seconds() * 1000) if offset is not None else 0

        pieces: list[tuple[int, int]] = []  # (from wall ms, offset from then on)
        start = _ms(self.first)
        current = at(start)
        for day in range((self.last - self.first).days):
            lo, hi = start + day * DAY_MS, start + (day + 1) * DAY_MS
            if at(hi) == current:
                continue
            while hi - lo > 1:  # the first millisecond of the new offset
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if at(mid) == current else (lo, mid)
            current = at(hi)
            pieces.append((hi, current))
        if not pieces:
            return str(at(start))
        # Before each transition, the offset in force until then.
        before = [at(start)] + [offset for _edge, offset in pieces[:-1]]
        whens = " ".join(f"WHEN {hlc} < {pack(edge, 0)} THEN {was}"
                         for (edge, _offset), was in zip(pieces, before, strict=True))
        return f"CASE {whens} ELSE {pieces[-1][1]} END"

    def day(self, hlc: str, store: str) -> str:
        """SQL: the local day number of HLC column ``hlc`` at the store in column ``store``."""
        offset = self._offset(self.chain_zone, hlc)
        if self.zones:
            whens = " ".join(
                f"WHEN {store} IN ({', '.join(_quoted(s) for s in stores)})"
                f" THEN {self._offset(zone, hlc)}" for zone, stores in self.zones.items())
            offset = f"CASE {whens} ELSE {offset} END"
        return f"(({hlc}) / {1 << COUNTER_BITS} + {offset}) / {DAY_MS}"


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _of_stores(selection: Selection, alias: str) -> tuple[str, tuple[Any, ...]]:
    """``members`` as ``alias``, or for some stores only their members (registered or bought at
    one, as the scope counts its own: ``Scope.member_filter``): the ids from two index ranges
    (``members_home``, ``member_stores_store``), each member once, then their rows by key,
    instead of a pass over every member."""
    if selection.everything:
        return f"members {alias}", ()
    if not selection.ids:
        return f"(SELECT * FROM members WHERE 1 = 0) {alias}", ()
    marks = ", ".join("?" * len(selection.ids))
    return (f"(SELECT h.member_id FROM members h WHERE h.home_store IN ({marks}) UNION"
            f" SELECT ms2.member_id FROM member_stores ms2 WHERE ms2.store_id IN ({marks}))"
            f" ids JOIN members {alias} ON {alias}.member_id = ids.member_id",
            (*selection.ids, *selection.ids))


def latest_run(tx: Tx) -> tuple[str, str] | None:
    row = tx.one("SELECT run_id, as_of FROM rfm_runs ORDER BY created_ms DESC, run_id DESC"
                 " LIMIT 1")
    return (str(row[0]), str(row[1])) if row is not None else None


def _counted(name: str, key: str, counts: dict[Any, int], total: int,
             label: dict[Any, str] | None = None) -> Table:
    """A table of members per value of ``key``, and each one's share of ``total``."""
    columns: list[tuple[str, Any]] = [(key, "text"), ("members", "int"), ("share", "ratio")]
    if label is not None:
        columns.insert(1, ("group_name", "text"))
    table = Table(name, columns)
    for value, n in sorted(counts.items(), key=lambda kv: (kv[0] is None, str(kv[0]))):
        row = [value, n, ratio(n, total)]
        if label is not None:
            row.insert(1, label.get(value, value) if value is not None else None)
        table.rows.append(row)
    return table


def structure(tx: Tx, scope: Scope, q: ReportQuery, *, now_ms: int,
              chain_zone: str) -> dict[str, Any]:
    unsupported(q, "category")
    sel = select_stores(tx, scope, q)
    cal = Calendar(tx, chain_zone, q.start, q.end)

    def fresh(alias: str) -> str:
        """SQL: 1 for a row ``alias`` (registration and home store) registered in the period."""
        day = cal.day(f"{alias}.registered_hlc", f"{alias}.home_store")
        return f"CASE WHEN {day} >= ? AND {day} <= ? THEN 1 ELSE 0 END"

    span = (day_number(q.start), day_number(q.end))
    run = latest_run(tx)
    run_id = run[0] if run else ""
    tiers: dict[Any, int] = {}
    places: dict[Any, int] = {}
    stages: dict[Any, int] = {}
    groups: dict[Any, int] = {}
    new: dict[str, int] = {}
    regions = {str(r[0]): r[1] for r in tx.all("SELECT store_id, region FROM stores")}

    def count(tier: Any, home: Any, n: int, fresh_n: Any) -> None:
        tiers[tier] = tiers.get(tier, 0) + n
        region = regions.get(str(home))
        places[region] = places.get(region, 0) + n
        # A new member counts at the store they registered at, if it is covered.
        if int(fresh_n or 0) and (sel.everything or str(home) in sel.by_id):
            new[str(home)] = new.get(str(home), 0) + int(fresh_n)

    if every_member(scope, q) and sel.everything:
        # The whole chain: each breakdown from its own table, no member looked up twice.
        # A million members into a few hundred groups (tiers x stores): hashed.
        for tier, home, n, fresh_n in grouped(
                tx, f"SELECT m.tier, m.home_store, count(*), sum({fresh('m')}) FROM members m"
                " WHERE m.merged_into IS NULL GROUP BY 1, 2", span):
            count(tier, home, int(n), fresh_n)
        total = sum(tiers.values())
        # A merged member loses its stage (the stage index answers the count); a run keeps
        # the size of each of its groups.
        stages.update((r[0], int(r[1])) for r in tx.all(
            "SELECT l.stage, count(*) FROM member_lifecycle l GROUP BY l.stage"))
        summary = json.loads(tx.scalar("SELECT summary FROM rfm_runs WHERE run_id = ?",
                                       (run_id,), default="{}"))
        groups.update((str(g), int(n)) for g, n in summary.get("groups", {}).items())
        for held in (stages, groups):
            if total - sum(held.values()):
                held[None] = total - sum(held.values())
    elif counted_at_stores(scope, q, sel):
        # Some stores' members: their rows in store_members (hub.members.store_members), a
        # member at several of the stores once.
        stores, params = in_list("s.store_id", list(sel.ids))
        if q.tier is not None:
            stores, params = f"{stores} AND s.tier = ?", (*params, q.tier)
        source, each = f"store_members s WHERE {stores}", "count(*)"
        if len(sel.ids) > 1 and tx.dialect == "postgres":
            # The distinct rows of what a row copies of its member, then counted: hashed
            # twice. A count of distinct members per group sorted every row by its group
            # first: a region 600 ms against 330.
            source = ("(SELECT DISTINCT s.member_id, s.tier, s.home_store, s.stage, s.grp,"
                      f" s.registered_hlc FROM store_members s WHERE {stores}) s")
        elif len(sel.ids) > 1:
            # SQLite counts the distinct members per group as fast or faster (a region:
            # 435 ms against 490 in one run, within the noise in another).
            each = "count(DISTINCT s.member_id)"
        for tier, home, stage, grp, is_new, n in tx.all(
                f"SELECT s.tier, s.home_store, s.stage, s.grp, {fresh('s')}, {each}"
                f" FROM {source} GROUP BY 1, 2, 3, 4, 5", (*span, *params)):
            count(tier, home, int(n), int(n) if int(is_new) else 0)
            stages[stage] = stages.get(stage, 0) + int(n)
            groups[grp] = groups.get(grp, 0) + int(n)
    else:
        # One pass over the members the caller sees: every breakdown sums these groups.
        members, params = live_members(scope, q, "m")
        source, sparams = _of_stores(sel, "m")
        for tier, home, stage, grp, is_new, n in tx.all(
                f"SELECT m.tier, m.home_store, l.stage, r.grp, {fresh('m')}, count(*) FROM {source}"
                " LEFT JOIN member_lifecycle l ON l.member_id = m.member_id"
                " LEFT JOIN rfm_scores r ON r.run_id = ? AND r.member_id = m.member_id"
                f" WHERE {members} GROUP BY 1, 2, 3, 4, 5",
                (*span, *sparams, run_id, *params)):
            count(tier, home, int(n), int(n) if int(is_new) else 0)
            stages[stage] = stages.get(stage, 0) + int(n)
            groups[grp] = groups.get(grp, 0) + int(n)
    total = sum(tiers.values())
    names = store_names(tx, set(new))
    by_store = Table("new_by_store", [("store_id", "text"), ("store_name", "text"),
                                      ("new_members", "int")],
                     [[s, names.get(s, (s, None))[0] or s, n] for s, n in sorted(new.items())])
    online = new.get(ONLINE, 0)
    by_channel = Table("new_by_channel", [("channel", "text"), ("new_members", "int")],
                       [["in_store", sum(new.values()) - online], ["online", online]])
    tables = [_counted("tiers", "tier", tiers, total), _counted("regions", "region", places, total),
              _counted("stages", "stage", stages, total)]
    rfm = _counted("rfm", "rfm_group", groups if run else {}, total, group_names(tx))
    return report("member_structure", q, [*tables, rfm, by_store, by_channel],
                  completeness(tx, sel, q, now_ms, chain_zone), notes=STRUCTURE_NOTES,
                  totals={"members": total, "new_members": sum(new.values()),
                          "rfm_run": run[0] if run else None,
                          "rfm_as_of": run[1] if run else None})


def as_now(tx: Tx, table: str) -> str:
    """SQL: the member ``table``'s ``member_id`` now is. The merged ids are few (a partial
    index holds them): read once per query into a set the database hashes, and only an id in
    it looked up by key (with none merged, no lookup at all). A join with the merged ids hashed
    them when PostgreSQL's planner guessed their number right and looped over them for every
    row when it did not: a chain's top-ups once took 9 s instead of 0.6."""
    if tx.scalar("SELECT 1 FROM members WHERE merged_into IS NOT NULL LIMIT 1") is None:
        return f"{table}.member_id"
    return (f"CASE WHEN {table}.member_id IN (SELECT member_id FROM members"
            " WHERE merged_into IS NOT NULL) THEN (SELECT al.merged_into FROM members al"
            f" WHERE al.member_id = {table}.member_id) ELSE {table}.member_id END")


MASK_MONTHS = 63  # months a period's presence mask holds (a signed 64-bit integer)


def activity(tx: Tx, scope: Scope, q: ReportQuery, *, now_ms: int, chain_zone: str,
             grain: str = "month") -> dict[str, Any]:
    unsupported(q, "category")
    cuts = periods(q, grain)
    sel = select_stores(tx, scope, q)
    # The whole chain streams through the rows in member order, their key, so that grouping
    # by member needs no sort (``|| ''``: no index range on the day tempts SQLite off it);
    # stores are ranges of the rows' store index.
    if sel.everything:
        stores, sparams, day = "1 = 1", (), "d.day || ''"
    else:
        (stores, sparams), day = in_list("d.store_id", sel.ids), "d.day"
    members, mparams = live_members(scope, q, "m")
    # Some members only: each member looked up once, after their rows are summed (the same
    # members as joining every row: a member's rows are all in or all out). A store's or a
    # region's own members are every member with a row at its stores: none looked up (on
    # PostgreSQL each lookup was also checked by row-level security: 60 % of a store's query).
    seen, mwhere = ("", ()) if every_member(scope, q) or seen_where_they_shop(scope, q) else (
        f" AND EXISTS (SELECT 1 FROM members m WHERE m.member_id = d.member_id AND {members})",
        mparams)
    rows = f" FROM member_store_days d WHERE {stores} AND {day} >= ? AND {day} <= ?"
    params = (*sparams, q.start.isoformat(), q.end.isoformat())
    # Months: each member's months with a purchase as the bits of one number, summed over
    # its distinct bits in the same pass. Weeks: a count of distinct (week, member) pairs.
    masked = grain == "month" and len(cuts) <= MASK_MONTHS
    first = q.start.year * 12 + q.start.month
    month = (f"(CAST(substr(d.day, 1, 4) AS INTEGER) * 12 + CAST(substr(d.day, 6, 2) AS INTEGER)"
             f" - {first})")
    bit = f"CASE WHEN d.purchases > 0 THEN CAST(1 AS BIGINT) << {month} ELSE 0 END"
    # PostgreSQL ORs them as they come (bit_or); a DISTINCT aggregate sorted each member's
    # values apart: 127 ms against 86 for a store's year. SQLite has no bit_or.
    ored = f"bit_or({bit})" if tx.dialect == "postgres" else f"CAST(sum(DISTINCT {bit}) AS BIGINT)"
    mask = f", {ored} AS months" if masked else ""
    bits = "".join(f", sum((months >> {i}) & 1)" for i in range(len(cuts))) if masked else ""
    # Per member over the whole period; the top fifth (rounded up) by net spend is the
    # spend of the first (n + 4) / 5 of them: a bounded sort that keeps only those (a
    # window numbering every member sorted them all: 20 ms of a store's 100 on SQLite).
    # The sums as BIGINT: PostgreSQL's sum of a BIGINT is a NUMERIC, slower to sort and add
    # up again (a store's year: 6 ms of 82). A member's year fits: 2^63 minor units.
    whole = tx.one(
        "WITH who AS MATERIALIZED (SELECT d.member_id, CAST(sum(d.purchases) AS BIGINT) AS"
        " purchases, CAST(sum(d.kept) AS BIGINT) AS kept, CAST(sum(d.spend) AS BIGINT) AS"
        f" spend{mask}{rows} GROUP BY d.member_id"
        f" HAVING sum(d.purchases) > 0{seen})"
        " SELECT count(*), coalesce(sum(CASE WHEN kept >= 1 THEN 1 ELSE 0 END), 0),"
        " coalesce(sum(CASE WHEN kept >= 2 THEN 1 ELSE 0 END), 0), coalesce(sum(spend), 0),"
        " (SELECT coalesce(sum(spend), 0) FROM (SELECT spend FROM who ORDER BY spend DESC"
        f" LIMIT (SELECT (count(*) + 4) / 5 FROM who)) top){bits} FROM who",
        (*params, *mwhere))
    buyers, repeat, spend, top = (int(whole[i]) for i in range(1, 5))
    if masked:
        active = {label: int(whole[5 + i] or 0) for i, (label, _f, _l) in enumerate(cuts)}
    else:
        period, pparams = bucket("d.day", cuts)
        active = {str(r[0]): int(r[1]) for r in tx.all(
            f"SELECT period, count(*) FROM (SELECT DISTINCT {period} AS period, d.member_id"
            f"{rows} AND d.purchases > 0{seen}) v GROUP BY period",
            (*pparams, *params, *mwhere))}
    figures = {"active_members": int(whole[0]), "buyers": buyers, "repeat_buyers": repeat,
               "repurchase_rate": ratio(repeat, buyers),
               "top_share": ratio(top, spend) if spend > 0 else None}
    tables = [Table("active", [("period", "text"), ("active_members", "int")],
                    [[label, active.get(label, 0)] for label, _first, _last in cuts]),
              Table("repurchase", [("active_members", "int"), ("buyers", "int"),
                                   ("repeat_buyers", "int"), ("repurchase_rate", "ratio"),
                                   ("top_share", "ratio")], [list(figures.values())])]
    return report("member_activity", q, tables, completeness(tx, sel, q, now_ms, chain_zone),
                  notes=ACTIVITY_NOTES, totals=figures, extra={"grain": grain})


def funnel(tx: Tx, scope: Scope, q: ReportQuery, *, now_ms: int,
           chain_zone: str) -> dict[str, Any]:
    unsupported(q, "category")
    sel = select_stores(tx, scope, q)
    cal = Calendar(tx, chain_zone, q.start, q.end)
    members, mparams = live_members(scope, q, "m")
    home, hparams = ("1 = 1", ()) if sel.everything else in_list("m.home_store", sel.ids)
    months = periods(q, "month")
    # Within the windows: the member's earliest purchase day, and for a repeat the second
    # earliest, are at most 7 and 90 days after the registration's (day numbers, kept by the
    # activity projection: one row read by key).
    first = f"a.purchase_day_1 <= r.rd + {FIRST_WITHIN}"
    repeat = f"{first} AND a.purchase_day_2 <= r.rd + {REPEAT_WITHIN}"

    # The registration instant bounds the scan loosely (a day either side covers every
    # zone); the local day decides. Counted per registration day and store, their months
    # summed here.
    lo = pack(_ms(q.start - timedelta(days=1)), 0)
    hi = pack(_ms(q.end + timedelta(days=2)), 0)
    per_day = grouped(  # a year's cohort into days and stores: hashed
        tx, f"WITH r AS MATERIALIZED (SELECT m.member_id, m.home_store,"
        f" {cal.day('m.registered_hlc', 'm.home_store')} AS rd FROM members m"
        f" WHERE {members} AND {home} AND m.registered_hlc >= ? AND m.registered_hlc < ?)"
        f" SELECT r.rd, r.home_store, count(*), sum(CASE WHEN {first} THEN 1 ELSE 0 END),"
        f" sum(CASE WHEN {repeat} THEN 1 ELSE 0 END)"
        " FROM r LEFT JOIN member_activity a ON a.member_id = r.member_id"
        " WHERE r.rd >= ? AND r.rd <= ? GROUP BY 1, 2",
        (*mparams, *hparams, lo, hi, day_number(q.start), day_number(q.end)))
    ends = [day_number(last) for _label, _first, last in months]
    summed: dict[tuple[str, str], list[int]] = {}
    for rd, store, *counts in per_day:
        label = str(months[bisect_left(ends, int(rd))][0])
        held = summed.setdefault((label, str(store)), [0, 0, 0])
        for i in range(3):
            held[i] += int(counts[i] or 0)
    names = store_names(tx, {store for _label, store in summed})
    figures = ("registered", "first_purchase_7d", "repeat_90d")
    columns: list[tuple[str, Any]] = [(f, "int") for f in figures] + [
        ("first_purchase_rate", "ratio"), ("repeat_rate", "ratio")]
    by_store = Table("funnel", [("cohort", "text"), ("store_id", "text"),
                                ("store_name", "text"), *columns])
    cohorts: dict[str, list[int]] = {}
    for (label, store), counts in sorted(summed.items()):
        by_store.rows.append([label, store, names.get(str(store), (store, None))[0] or store,
                              *counts, ratio(counts[1], counts[0]), ratio(counts[2], counts[1])])
        held = cohorts.setdefault(str(label), [0, 0, 0])
        for i in range(3):
            held[i] += counts[i]
    by_month = Table("cohorts", [("cohort", "text"), *columns],
                     [[label, *c, ratio(c[1], c[0]), ratio(c[2], c[1])]
                      for label, c in sorted(cohorts.items())])
    today = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(chain_zone)).date()
    totals = {f: sum(c[i] for c in cohorts.values()) for i, f in enumerate(figures)}
    return report("funnel", q, [by_month, by_store], completeness(tx, sel, q, now_ms, chain_zone),
                  notes=FUNNEL_NOTES,
                  totals={**totals, "windows_open_from":
                          (today - timedelta(days=REPEAT_WITHIN)).isoformat()})


def top_up_loyalty(tx: Tx, scope: Scope, q: ReportQuery, *, now_ms: int, chain_zone: str,
                   limit: int = 50) -> dict[str, Any]:
    if not 1 <= limit <= MAX_LIMIT:
        raise ServiceError("invalid_limit", f"limit is 1 to {MAX_LIMIT}", 422, part="limit")
    unsupported(q, "category")
    sel = select_stores(tx, scope, q)
    where, params = in_list("t.store_id", chain_stores(tx, sel))
    members, mparams = live_members(scope, q, "m")
    # Summed per id the stores wrote, then each id resolved once to the member it now is (an
    # alias's top-ups count as the member it was merged into) and summed again.
    rows = tx.all(
        "WITH ids AS MATERIALIZED (SELECT t.member_id, sum(t.topups) AS topups,"
        f" sum(t.principal) AS principal FROM sv_topups t WHERE {where}"
        " AND t.day >= ? AND t.day <= ? GROUP BY t.member_id),"
        f" per AS (SELECT {as_now(tx, 'ids')} AS member_id, sum(ids.topups) AS topups,"
        " sum(ids.principal) AS principal FROM ids GROUP BY 1)"
        " SELECT m.member_code, m.name, per.topups, per.principal FROM per"
        f" JOIN members m ON m.member_id = per.member_id WHERE {members}"
        " ORDER BY per.principal DESC, per.topups DESC, m.member_code LIMIT ?",
        (*params, q.start.isoformat(), q.end.isoformat(), *mparams, limit))
    masked = scope.role.masked
    table = Table("members", [("rank", "int"), ("member_code", "text"), ("name", "text"),
                              ("topups", "int"), ("topup_principal", "money")])
    for rank, (code, name, topups, principal) in enumerate(rows, 1):
        table.rows.append([rank, code, mask_name(name or "") if masked else name,
                           int(topups), int(principal)])
    return report("top_up_loyalty", q, [table], completeness(tx, sel, q, now_ms, chain_zone),
                  notes=LOYALTY_NOTES, extra={"masked": masked, "limit": limit})
