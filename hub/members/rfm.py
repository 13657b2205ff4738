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
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hub.core.db import Tx
from hub.members.identity import canonical
from protocol.errors import ServiceError
from protocol.ids import uuid7

DIMENSIONS = ("r", "f", "m")
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
    ids: set[str] = field(default_factory=set)


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


def _cuts(scored: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, int]]]:
    """Per dimension and score: the values it spans and how many members it holds."""
    field_of = {"r": "recency_days", "f": "frequency", "m": "monetary"}
    cuts: dict[str, list[dict[str, int]]] = {}
    for dim in DIMENSIONS:
        spans: dict[int, list[int]] = {}
        for row in scored.values():
            if row[dim]:
                v = row[field_of[dim]]
                lo_hi = spans.setdefault(row[dim], [v, v, 0])
                lo_hi[0], lo_hi[1], lo_hi[2] = min(lo_hi[0], v), max(lo_hi[1], v), lo_hi[2] + 1
        cuts[dim] = [{"score": s, "min": spans[s][0], "max": spans[s][1], "members": spans[s][2]}
                     for s in sorted(spans, reverse=True)]
    return cuts


def _movement(tx: Tx, previous: str | None, scored: dict[str, dict[str, Any]]
              ) -> dict[str, list[list[int]]]:
    """Per dimension, a 6 x 6 matrix: [before][after] members (0: none)."""
    before: dict[str, tuple[int, int, int]] = {}
    if previous is not None:
        before = {str(m): (int(r), int(f), int(mm)) for m, r, f, mm in tx.all(
            "SELECT member_id, r, f, m FROM rfm_scores WHERE run_id = ?", (previous,))}
    matrix = {d: [[0] * 6 for _ in range(6)] for d in DIMENSIONS}
    for m, row in scored.items():
        was = before.get(m, (0, 0, 0))
        for i, d in enumerate(DIMENSIONS):
            matrix[d][was[i]][row[d]] += 1
    return matrix


def run(tx: Tx, params: RfmParams, now_ms: int) -> dict[str, Any]:
    """Compute and keep a run (on the writer: one transaction, the run whole or not at all)."""
    scored = score(aggregate(tx, params), params)
    previous = tx.scalar("SELECT run_id FROM rfm_runs ORDER BY created_ms DESC, run_id DESC"
                         " LIMIT 1")
    run_id = uuid7()
    sizes = {d: {str(s): sum(1 for r in scored.values() if r[d] == s) for s in range(6)}
             for d in DIMENSIONS}
    groups: dict[str, int] = defaultdict(int)
    for row in scored.values():
        groups[row["group"]] += 1
    summary = {"cuts": _cuts(scored), "sizes": sizes, "groups": dict(sorted(groups.items())),
               "movement": _movement(tx, previous, scored)}
    tx.execute("INSERT INTO rfm_runs(run_id, as_of, params, created_ms, members, previous_run,"
               " summary) VALUES (?, ?, ?, ?, ?, ?, ?)",
               (run_id, params.as_of.isoformat(), params.model_dump_json(), now_ms,
                len(scored), previous, json.dumps(summary, sort_keys=True)))
    tx.executemany(
        "INSERT INTO rfm_scores(run_id, member_id, recency_days, frequency, monetary, r, f, m,"
        " grp) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(run_id, m, r["recency_days"], r["frequency"], r["monetary"], r["r"], r["f"], r["m"],
          r["group"]) for m, r in sorted(scored.items())])
    return get(tx, run_id)


def group_names(tx: Tx) -> dict[str, str]:
    names = dict(GROUPS)
    names.update({str(k): str(v) for k, v in tx.all("SELECT grp, name FROM rfm_group_names")})
    return names


def get(tx: Tx, run_id: str) -> dict[str, Any]:
    row = tx.one("SELECT run_id, as_of, params, created_ms, members, previous_run, summary"
                 " FROM rfm_runs WHERE run_id = ?", (run_id,))
    if row is None:
        raise ServiceError("rfm_run_not_found", "no RFM run with this id", 404)
    summary = json.loads(row[6])
    names = group_names(tx)
    summary["groups"] = {g: {"name": names.get(g, g), "members": n}
                         for g, n in summary["groups"].items()}
    return {"run_id": row[0], "as_of": row[1], "params": json.loads(row[2]),
            "created_ms": int(row[3]), "members": int(row[4]), "previous_run": row[5],
            **summary}


def runs(tx: Tx, limit: int = 100) -> list[dict[str, Any]]:
    return [{"run_id": r[0], "as_of": r[1], "kind": json.loads(r[2])["kind"],
             "created_ms": int(r[3]), "members": int(r[4])} for r in tx.all(
        "SELECT run_id, as_of, params, created_ms, members FROM rfm_runs"
        " ORDER BY created_ms DESC, run_id DESC LIMIT ?", (limit,))]
