"""The one shape every consolidated report answers in, so that the API, the console's tables
and charts and the CSV/XLSX exports read any report the same way.

A report is named tables: each a list of column keys, each column's kind (how to show and
export it: money in minor units, points, counts, ratios 0..1, dates, text) and rows of plain
values; plus what its figures mean (``notes``: a definition a reader must know, such as what
counts as an active member), totals, and the completeness of the stores' logs
(``hub.reports.period.completeness``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from hub.reports.period import ReportQuery

Kind = Literal["text", "date", "int", "money", "points", "ratio"]
KINDS: tuple[str, ...] = ("text", "date", "int", "money", "points", "ratio")


@dataclass
class Table:
    name: str
    columns: list[tuple[str, Kind]]
    rows: list[list[Any]] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "columns": [c for c, _ in self.columns],
                "kinds": [k for _, k in self.columns], "rows": self.rows}


def report(name: str, q: ReportQuery, tables: list[Table], completeness: dict[str, Any],
           *, notes: list[str] | None = None, totals: dict[str, Any] | None = None,
           extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The answer of report ``name`` over ``q``."""
    return {"report": name,
            "query": {"start": q.start.isoformat(), "end": q.end.isoformat(),
                      "region": q.region, "store_id": q.store_id, "category": q.category,
                      "tier": q.tier, "segment_id": q.segment_id},
            "notes": notes or [], "totals": totals or {},
            "tables": [t.public() for t in tables], "completeness": completeness,
            **(extra or {})}


def ratio(part: int | float, whole: int | float) -> float | None:
    """``part / whole`` rounded to 4 places; None when there is no whole (shown as '—')."""
    return round(part / whole, 4) if whole else None
