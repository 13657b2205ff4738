"""RFM runs, as the chain defines them (shared/HQ.md, "RFM, as the chain defines it").

For a window of ``window_days`` ending on ``as_of`` (the chain's calendar): R is the days since
the member's last purchase, F their purchases (or items bought) and M their spend, both net of
refunds, all from the sales facts (``hub.projections.sales``) under the member each id now is.

Scores 5 (most recent, most frequent, highest spend) to 1, by quintile, or by business
thresholds when a dimension has them. **The tie rule**: members with equal values get equal
scores, the score of the lowest position their block reaches — ``1 + floor(5 * worse / n)``,
``worse`` being how many ranked members have a strictly worse value. Without ties that is
exactly 20 % a group; a block of equal values that crosses a 20 % mark stays whole in the lower
group (with typical retail data, the many one-time buyers are all F = 1, not spread over
F 1..3 by an arbitrary order). Members with no purchase in the window are not ranked: their
values are empty and their scores 0.

A run keeps its parameters, the values each score spans (``cuts``), the group sizes, every
member's values, scores and named group, and the movement from the previous run (members per
score before and after, per dimension; 0: not in the previous run or no purchase). The same
log and parameters give the same run, member for member (``tests/hub/test_rfm.py``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hub.core.db import Tx
from hub.members import directory, store_members
from hub.members.identity import canonical
from protocol.errors import ServiceError
from protocol.ids import uuid7

DIMENSIONS = ("r", "f", "m")
RF_GRID = "rf_grid"  # a run's summary key: members per R and F score (``rf_grid``)
# The eight groups the 125 cells roll up to (R, F, M each high at or above ``high_from``), as
# Chinese retail names them; a chain renames them in ``rfm_group_names``.
GROUPS: dict[str, str] = {
    "HHH": "重要价值", "HLH": "重要发展", "LHH": "重要保持", "LLH": "重要挽留",
    "HHL": "一般价值", "HLL": "一般发展", "LHL": "一般保持", "LLL": "一般挽留",
}
NO_PURCHASE = "none"


class RfmParams(BaseModel):
    """What a run is computed with; kept with the run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    as_of: date
    window_days: int = Field(365, ge=1, le=3660)
    f_measure: Literal["purchases", "items"] = "purchases"
    # Business thresholds instead of quintiles: four ascending bounds. R: days, at most
    # t1 -> 5, t2 -> 4, t3 -> 3, t4 -> 2, beyond -> 1. F and M: below t1 -> 1, t1.. -> 2,
    # t2.. -> 3, t3.. -> 4, t4 and above -> 5 (M in minor units).
    thresholds: dict[Literal["r", "f", "m"], list[int]] = Field(default_factory=dict)
    high_from: int = Field(3, ge=2, le=5)  # a score at or above it is "high" in a group name
    kind: Literal["monthly", "quarterly", "on_demand"] = "on_demand"

    @model_validator(mode="after")
    def _thresholds(self) -> RfmParams:
        check_thresholds(self.thresholds)
        return self


def check_thresholds(thresholds: Mapping[Any, list[int]]) -> None:
    for dim, bounds in thresholds.items():
        if len(bounds) != 4 or sorted(bounds) != bounds or len(set(bounds)) != 4:
            raise ValueError(f"thresholds for {dim} are four ascending, distinct numbers")


@dataclass
class Values:
    last: date | None = None
    purchases: int = 0
    items: int = 0
    spend: int = 0


def window(params: RfmParams) -> tuple[str, str]:
    start = params.as_of - timedelta(days=params.window_days - 1)
    return start.isoformat(), params.as_of.isoformat()


def aggregate(tx: Tx, params: RfmParams) -> dict[str, Values]:
    """Every live member's values in the window (members without a purchase included)."""
    start, end = window(params)
    out: dict[str, Values] = {str(m): Values() for (m,) in tx.all(
        "SELECT member_id FROM members WHERE merged_into IS NULL")}
    rows = tx.all(
        "SELECT member_id, max(CASE WHEN kind = 'sale' THEN local_date END),"
        " sum(CASE WHEN kind = 'sale' THEN 1 ELSE 0 END), sum(qty), sum(amount)"
        " FROM sales_facts WHERE kind IN ('sale', 'refund') AND member_id IS NOT NULL"
        " AND local_date >= ? AND local_date <= ? GROUP BY member_id", (start, end))
    merged = {str(a) for (a,) in tx.all(
        "SELECT member_id FROM members WHERE merged_into IS NOT NULL")}
    for member_id, last, purchases, items, spend in rows:
        mid = str(member_id)
        now_is = canonical(tx, mid) if mid in merged else mid
        v = out.setdefault(now_is, Values())
        if last is not None:
            day = date.fromisoformat(str(last))
            v.last = day if v.last is None or day > v.last else v.last
        v.purchases += int(purchases)
        v.items += int(items)
        v.spend += int(spend)
    return out


def _quintiles(values: dict[str, int], higher_better: bool) -> dict[str, int]:
    """Score 1..5 by the tie rule (module doc): 1 + floor(5 * worse / n)."""
    n = len(values)
    ordered = sorted(set(values.values()), reverse=not higher_better)  # worst first
    worse, score_of = 0, {}
    counts: dict[int, int] = defaultdict(int)
    for v in values.values():
        counts[v] += 1
    for v in ordered:
        score_of[v] = min(5, 1 + (5 * worse) // n)
        worse += counts[v]
    return {m: score_of[v] for m, v in values.items()}


def _by_thresholds(values: dict[str, int], bounds: list[int], dim: str) -> dict[str, int]:
    if dim == "r":  # days: fewer is better
        return {m: 5 - sum(1 for b in bounds if v > b) for m, v in values.items()}
    return {m: 1 + sum(1 for b in bounds if v >= b) for m, v in values.items()}


def score(values: dict[str, Values], params: RfmParams) -> dict[str, dict[str, Any]]:
    """Each member's values and scores (0 and no values: no purchase in the window)."""
    bought = {m: v for m, v in values.items() if v.last is not None}
    dims = {
        "r": {m: (params.as_of - v.last).days for m, v in bought.items()
              if v.last is not None},
        "f": {m: (v.purchases if params.f_measure == "purchases" else v.items)
              for m, v in bought.items()},
        "m": {m: v.spend for m, v in bought.items()},
    }
    scores: dict[str, dict[str, int]] = {}
    for dim, vals in dims.items():
        if not vals:
            scores[dim] = {}
        elif dim in params.thresholds:
            scores[dim] = _by_thresholds(vals, params.thresholds[dim], dim)
        else:
            scores[dim] = _quintiles(vals, higher_better=dim != "r")
    out: dict[str, dict[str, Any]] = {}
    for m in values:
        if m not in bought:
            out[m] = {"recency_days": None, "frequency": None, "monetary": None,
                      "r": 0, "f": 0, "m": 0, "group": NO_PURCHASE}
            continue
        r, f, mm = scores["r"][m], scores["f"][m], scores["m"][m]
        key = "".join("H" if s >= params.high_from else "L" for s in (r, f, mm))
        out[m] = {"recency_days": dims["r"][m], "frequency": dims["f"][m],
                  "monetary": dims["m"][m], "r": r, "f": f, "m": mm, "group": key}
    return out


def _days(tx: Tx) -> str:
    """SQL: whole days from the column ``last`` to the parameter (as of)."""
    if tx.dialect == "sqlite":
        return "CAST(julianday(?) - julianday(last) AS INTEGER)"
    return "(CAST(? AS date) - CAST(last AS date))"


# A run's members' values, kept for the run's own statements only (the writer's connection).
_VALUES = {"sqlite": "temp.rfm_values", "postgres": "pg_temp.rfm_values"}
_COLUMN = {"r": "rd", "f": "fv", "m": "mv"}


def _values(tx: Tx, params: RfmParams) -> int:
    """Each ranked member's values (R in days, F, M) in the run's scratch table, in member
    order: the sums over the window's sales facts under the member each id now is. Returns
    how many were ranked."""
    start, end = window(params)
    tx.execute("DELETE FROM rfm_aliases")
    aliases = [(str(a),) for (a,) in tx.all(
        "SELECT member_id FROM members WHERE merged_into IS NOT NULL")]
    tx.executemany("INSERT INTO rfm_aliases(alias, member_id) VALUES (?, ?)",
                   [(a, canonical(tx, a)) for (a,) in aliases])
    table = _VALUES[tx.dialect]
    tx.execute(f"DROP TABLE IF EXISTS {table}")
    tail = " WITHOUT ROWID" if tx.dialect == "sqlite" else " ON COMMIT DROP"
    tx.execute(f"CREATE TEMP TABLE rfm_values (member_id TEXT PRIMARY KEY, rd BIGINT NOT NULL,"
               f" fv BIGINT NOT NULL, mv BIGINT NOT NULL){tail}")
    f_value = "purchases" if params.f_measure == "purchases" else "items"
    ranked = tx.execute(f"""
        INSERT INTO {table}(member_id, rd, fv, mv)
        SELECT g.member_id, {_days(tx)}, {f_value}, spend FROM (
            SELECT coalesce(a.member_id, s.member_id) AS member_id,
                   max(CASE WHEN s.kind = 'sale' THEN s.local_date END) AS last,
                   sum(CASE WHEN s.kind = 'sale' THEN 1 ELSE 0 END) AS purchases,
                   sum(s.qty) AS items, sum(s.amount) AS spend
            FROM sales_facts s LEFT JOIN rfm_aliases a ON a.alias = s.member_id
            WHERE s.kind IN ('sale', 'refund') AND s.member_id IS NOT NULL
              AND s.local_date >= ? AND s.local_date <= ?
            GROUP BY coalesce(a.member_id, s.member_id)) AS g
        JOIN members m ON m.member_id = g.member_id
        WHERE m.merged_into IS NULL AND g.last IS NOT NULL
        ORDER BY g.member_id""", (params.as_of.isoformat(), start, end)).rowcount
    if tx.dialect == "postgres":
        tx.execute(f"ANALYZE {table}")  # a temporary table has no statistics of its own
    return int(ranked)


def _threshold_sql(dim: str, column: str, bounds: list[int]) -> str:
    """SQL: the score of ``column`` by the business thresholds ``bounds`` (RfmParams)."""
    if dim == "r":
        return "5 - (" + " + ".join(
            f"CASE WHEN {column} > {int(b)} THEN 1 ELSE 0 END" for b in bounds) + ")"
    return "1 + " + " + ".join(f"CASE WHEN {column} >= {int(b)} THEN 1 ELSE 0 END"
                               for b in bounds)


def _spans(tx: Tx, dim: str, params: RfmParams, ranked: int) -> list[tuple[int, int, int, int]]:
    """The values each score of ``dim`` spans: (score, lowest, highest, members), best score
    first. By quintile, each distinct value's score is the tie rule's ``1 + 5 * worse / n``
    (integer division), ``worse`` summed over the values' counts in worst-first order — one
    pass over the values and a sort of the distinct ones, not a rank of every member."""
    column, table = _COLUMN[dim], _VALUES[tx.dialect]
    bounds = params.thresholds.get(dim)  # type: ignore[call-overload]
    if bounds is not None:
        scored = (f"SELECT {_threshold_sql(dim, 'v', bounds)} AS s, v, c FROM ("
                  f"SELECT {column} AS v, count(*) AS c FROM {table} GROUP BY {column}) AS h")
    else:
        worst_first = "v DESC" if dim == "r" else "v"
        # The running sum cast back to an integer: PostgreSQL sums BIGINTs as NUMERIC, and
        # the division must be the integer one.
        scored = (f"SELECT 1 + 5 * (CAST(sum(c) OVER (ORDER BY {worst_first} ROWS UNBOUNDED"
                  f" PRECEDING) AS BIGINT) - c) / {int(ranked)} AS s, v, c FROM ("
                  f"SELECT {column} AS v, count(*) AS c FROM {table} GROUP BY {column}) AS h")
    return [(int(s), int(lo), int(hi), int(n)) for s, lo, hi, n in tx.all(
        f"SELECT s, min(v), max(v), sum(c) FROM ({scored}) AS t GROUP BY s ORDER BY s DESC")]


def _score_case(dim: str, spans: list[tuple[int, int, int, int]]) -> str:
    """SQL: a member's score of ``dim`` from the spans, 0 without values. The score only
    grows with the value (R: falls with the days), so the spans' edges decide it."""
    column = f"v.{_COLUMN[dim]}"
    if not spans:
        return "0"
    whens = " ".join(f"WHEN {column} {'<=' if dim == 'r' else '>='} {hi if dim == 'r' else lo}"
                     f" THEN {score}" for score, lo, hi, _n in spans[:-1])
    return f"CASE WHEN {column} IS NULL THEN 0 {whens} ELSE {spans[-1][0]} END"


def _insert_scores(tx: Tx, run_id: str, params: RfmParams, previous: str | None,
                   spans: dict[str, list[tuple[int, int, int, int]]]) -> int:
    """Every live member's values and scores, and where they were in the ``previous`` run, in
    one pass along the members' key: the run's rows are written in key order (in ranked
    order they scattered over the tree: 16 s against 9 s at 1M members)."""
    high = int(params.high_from)
    grp = " || ".join(f"CASE WHEN {d} >= {high} THEN 'H' ELSE 'L' END" for d in DIMENSIONS)
    return int(tx.execute(f"""
        INSERT INTO rfm_scores(run_id, member_id, recency_days, frequency, monetary, r, f, m,
                               grp, was_r, was_f, was_m, was_grp)
        SELECT ?, member_id, rd, fv, mv, r, f, m,
               CASE WHEN r = 0 THEN '{NO_PURCHASE}' ELSE {grp} END, was_r, was_f, was_m,
               was_grp
        FROM (SELECT m.member_id, v.rd, v.fv, v.mv, {_score_case("r", spans["r"])} AS r,
                     {_score_case("f", spans["f"])} AS f, {_score_case("m", spans["m"])} AS m,
                     coalesce(p.r, 0) AS was_r, coalesce(p.f, 0) AS was_f,
                     coalesce(p.m, 0) AS was_m, p.grp AS was_grp
              FROM members m LEFT JOIN {_VALUES[tx.dialect]} v ON v.member_id = m.member_id
              LEFT JOIN rfm_scores p ON p.run_id = ? AND p.member_id = m.member_id
              WHERE m.merged_into IS NULL) AS q
        ORDER BY member_id""", (run_id, previous or "")).rowcount)


def _summary(tx: Tx, run_id: str, members: int,
             spans: dict[str, list[tuple[int, int, int, int]]]) -> dict[str, Any]:
    """Sizes and cut values from the spans; groups and the movement from the previous run
    from one pass over the run's own rows (each member's cell and their cell before)."""
    sizes = {d: {str(s): 0 for s in range(6)} for d in DIMENSIONS}
    for d in DIMENSIONS:
        for score, _lo, _hi, n in spans[d]:
            sizes[d][str(score)] = n
        sizes[d]["0"] = members - sum(n for *_, n in spans[d])
    cuts = {d: [{"score": s, "min": lo, "max": hi, "members": n} for s, lo, hi, n in spans[d]]
            for d in DIMENSIONS}
    groups: dict[str, int] = defaultdict(int)
    movement = {d: [[0] * 6 for _ in range(6)] for d in DIMENSIONS}
    grid = [[0] * 6 for _ in range(6)]
    # One number per cell pair: the database sorts one integer per member, not six.
    for cell, grp, n in tx.all(
            "SELECT r * 100000 + f * 10000 + m * 1000 + was_r * 100 + was_f * 10 + was_m,"
            " min(grp), count(*) FROM rfm_scores WHERE run_id = ?"
            " GROUP BY r * 100000 + f * 10000 + m * 1000 + was_r * 100 + was_f * 10 + was_m",
            (run_id,)):
        digits = [int(cell) // 10 ** k % 10 for k in (5, 4, 3, 2, 1, 0)]
        groups[str(grp)] += int(n)
        grid[digits[0]][digits[1]] += int(n)
        for d, now, was in zip(DIMENSIONS, digits[:3], digits[3:], strict=True):
            movement[d][was][now] += int(n)
    return {"cuts": cuts, "sizes": sizes, "groups": dict(sorted(groups.items())),
            "movement": movement, RF_GRID: grid}


def run(tx: Tx, params: RfmParams, now_ms: int) -> dict[str, Any]:
    """Compute and keep a run (on the writer: one transaction, the run whole or not at all).
    The database computes it: the members' values, each score's span of values, then every
    member's row; ``score`` is the same rule in Python, the reference the tests hold it to."""
    previous = tx.scalar("SELECT run_id FROM rfm_runs ORDER BY created_ms DESC, run_id DESC"
                         " LIMIT 1")
    run_id = uuid7()
    ranked = _values(tx, params)
    spans = {d: _spans(tx, d, params, ranked) for d in DIMENSIONS}
    members = _insert_scores(tx, run_id, params, previous, spans)
    store_members.groups_of_run(tx, run_id)
    tx.execute(f"DROP TABLE IF EXISTS {_VALUES[tx.dialect]}")
    summary = _summary(tx, run_id, members, spans)
    # The stores get each member whose group changed (promotions may target groups): the
    # directory churn of a run.
    summary["directory_churn"] = directory.touch_selected(
        tx, "SELECT member_id FROM rfm_scores WHERE run_id = ? AND (was_grp IS NULL"
        " OR was_grp <> grp)", (run_id,), segments_know=True)
    tx.execute("INSERT INTO rfm_runs(run_id, as_of, params, created_ms, members, previous_run,"
               " summary) VALUES (?, ?, ?, ?, ?, ?, ?)",
               (run_id, params.as_of.isoformat(), params.model_dump_json(), now_ms, members,
                previous, json.dumps(summary, sort_keys=True)))
    return get(tx, run_id)


def group_names(tx: Tx) -> dict[str, str]:
    names = dict(GROUPS)
    names.update({str(k): str(v) for k, v in tx.all("SELECT grp, name FROM rfm_group_names")})
    return names


def _kept(tx: Tx, run_id: str) -> tuple[Any, dict[str, Any]]:
    row = tx.one("SELECT run_id, as_of, params, created_ms, members, previous_run, summary"
                 " FROM rfm_runs WHERE run_id = ?", (run_id,))
    if row is None:
        raise ServiceError("rfm_run_not_found", "no RFM run with this id", 404)
    return row, json.loads(row[6])


def get(tx: Tx, run_id: str) -> dict[str, Any]:
    row, summary = _kept(tx, run_id)
    summary.pop(RF_GRID, None)  # ``rf_grid`` answers it
    names = group_names(tx)
    summary["groups"] = {g: {"name": names.get(g, g), "members": n}
                         for g, n in summary["groups"].items()}
    return {"run_id": row[0], "as_of": row[1], "params": json.loads(row[2]),
            "created_ms": int(row[3]), "members": int(row[4]), "previous_run": row[5],
            **summary}


def rf_grid(tx: Tx, run_id: str) -> list[list[int]]:
    """Members per R and F score of a run: ``grid[r][f]`` for scores 0..5 (0: no purchase in
    the window), what the console draws as the 5×5 R×F grid. Kept with the run (counted in
    the pass that sums its groups): counting a chain's million rows again took 0.5-0.7 s of
    each view of the RFM page on SQLite. A run kept before that is counted from its rows."""
    _row, summary = _kept(tx, run_id)  # 404 for a run that does not exist
    if RF_GRID in summary:
        return [[int(n) for n in row] for row in summary[RF_GRID]]
    grid = [[0] * 6 for _ in range(6)]
    for r, f, n in tx.all("SELECT r, f, count(*) FROM rfm_scores WHERE run_id = ?"
                          " GROUP BY r, f", (run_id,)):
        grid[int(r)][int(f)] = int(n)
    return grid


def runs(tx: Tx, limit: int = 100) -> list[dict[str, Any]]:
    return [{"run_id": r[0], "as_of": r[1], "kind": json.loads(r[2])["kind"],
             "created_ms": int(r[3]), "members": int(r[4])} for r in tx.all(
        "SELECT run_id, as_of, params, created_ms, members FROM rfm_runs"
        " ORDER BY created_ms DESC, run_id DESC LIMIT ?", (limit,))]
