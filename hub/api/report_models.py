"""What a consolidated report answers (``hub.reports.shape``), as models for OpenAPI."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ReportTable(BaseModel):
    name: str
    columns: list[str]
    kinds: list[str]  # per column: text, date, int, money (minor units), points, ratio
    rows: list[list[Any]]


class StoreCompleteness(BaseModel):
    store_id: str
    name: str
    merged_to_ms: int | None  # the store's last merged event (its own clock)
    last_seen_ms: int | None
    lag_events: int
    complete: bool  # its log is merged past the period's end


class RevisedDay(BaseModel):
    store_id: str
    day: str
    revised_ms: int  # when a late upload last changed this store-day
    events: int


class Completeness(BaseModel):
    complete: bool
    stores: list[StoreCompleteness]
    incomplete_stores: list[str]
    revised: list[RevisedDay]


class Report(BaseModel):
    """A report over a period inside the caller's scope: its tables, what they mean (notes),
    totals, and how complete the stores' logs are for it."""

    report: str
    query: dict[str, Any]
    notes: list[str]
    totals: dict[str, Any]
    tables: list[ReportTable]
    completeness: Completeness


class ReportKindView(BaseModel):
    slug: str
    grains: bool
    default_days: int
    tables_charted: list[str]
