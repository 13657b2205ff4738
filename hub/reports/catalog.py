"""Every consolidated report HQ can open, export and chart, each declared once: its name, how
it is run over a period and the caller's scope, whether it is cut by day/week/month, and which
of its tables the console draws and how. The API (``/v1/reports/{kind}``), its exports and
the console's report pages all read this one table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

from hub.auth.scope import Scope
from hub.core.db import Tx
from hub.reports import campaigns, liabilities, members, sales, staff
from hub.reports.period import ReportQuery
from protocol.errors import ServiceError


@dataclass(frozen=True)
class Context:
    """What a report needs besides its query: now, the chain's calendar and legal entity,
    and the knobs a kind takes (grain, how many rows in a ranking)."""

    now_ms: int
    chain_zone: str
    chain_entity: str
    grain: str = "day"
    limit: int = 20


@dataclass(frozen=True)
class Chart:
    """A chart of one table: ``line`` of ``values`` over ``x``, or ``bars`` of ``values[0]``
    per ``x`` (the first ``limit`` rows)."""

    kind: Literal["line", "bars"]
    table: str
    x: str
    values: tuple[str, ...]
    limit: int = 20


@dataclass(frozen=True)
class Kind:
    slug: str
    fn: Callable[[Tx, Scope, ReportQuery, Context], dict[str, Any]]
    charts: tuple[Chart, ...] = ()
    grains: bool = False  # cut by day / week / month
    default_days: int = 30
    drill: tuple[str, ...] = field(default=("region", "store_id"))
    filters: tuple[str, ...] = ()  # beyond period, region and store: category, tier, segment_id

    def run(self, tx: Tx, scope: Scope, q: ReportQuery, ctx: Context) -> dict[str, Any]:
        """The report, named by its kind (the name exports and pages are keyed by)."""
        return {**self.fn(tx, scope, q, ctx), "report": self.slug}


def _common(ctx: Context) -> dict[str, Any]:
    return {"now_ms": ctx.now_ms, "chain_zone": ctx.chain_zone}


KINDS: dict[str, Kind] = {k.slug: k for k in (
    Kind("dashboard", lambda tx, s, q, c: sales.dashboard(tx, s, q, **_common(c)),
         charts=(Chart("line", "trend", "day", ("net", "net_last_year")),
                 Chart("bars", "stores", "store_id", ("net",))), default_days=30,
         filters=("category",)),
    Kind("sales_trend", lambda tx, s, q, c: sales.trend(tx, s, q, grain=c.grain,
                                                        **_common(c)),
         charts=(Chart("line", "trend", "period", ("net", "net_last_year")),
                 Chart("bars", "stores", "store_id", ("net",))), grains=True,
         filters=("category",)),
    Kind("categories", lambda tx, s, q, c: sales.categories(tx, s, q, **_common(c)),
         charts=(Chart("bars", "categories", "category", ("net",)),), filters=("category",)),
    Kind("profile", lambda tx, s, q, c: sales.profile(tx, s, q, **_common(c)),
         charts=(Chart("bars", "hours", "hour", ("net",), limit=24),
                 Chart("bars", "weekdays", "weekday", ("net",), limit=7))),
    Kind("products", lambda tx, s, q, c: sales.products(tx, s, q, limit=c.limit,
                                                         **_common(c)),
         charts=(Chart("bars", "top", "sku", ("net",)),), filters=("category",)),
    Kind("staff", lambda tx, s, q, c: staff.staff(tx, s, q, **_common(c))),
    Kind("member_structure", lambda tx, s, q, c: members.structure(tx, s, q, **_common(c)),
         charts=(Chart("bars", "tiers", "tier", ("members",)),
                 Chart("bars", "stages", "stage", ("members",))), filters=("tier", "segment_id")),
    Kind("member_activity", lambda tx, s, q, c: members.activity(
        tx, s, q, grain=c.grain if c.grain != "day" else "month", **_common(c)),
         charts=(Chart("line", "active", "period", ("active_members",)),), grains=True,
         default_days=365, filters=("tier", "segment_id")),
    Kind("funnel", lambda tx, s, q, c: members.funnel(tx, s, q, **_common(c)),
         default_days=365, filters=("tier", "segment_id")),
    Kind("top_up_loyalty", lambda tx, s, q, c: members.top_up_loyalty(
        tx, s, q, limit=c.limit, **_common(c)), default_days=365,
         filters=("tier", "segment_id")),
    Kind("points", lambda tx, s, q, c: liabilities.points(tx, s, q, **_common(c)),
         charts=(Chart("bars", "expiry", "expires", ("expiring_points",), limit=24),),
         default_days=365, filters=("tier", "segment_id")),
    Kind("stored_value", lambda tx, s, q, c: liabilities.stored_value(
        tx, s, q, chain_entity=c.chain_entity, **_common(c)), default_days=365),
    Kind("settlement", lambda tx, s, q, c: liabilities.settlement(
        tx, s, q, grain=c.grain if c.grain != "day" else "month", **_common(c)),
         grains=True, default_days=90),
    Kind("campaigns", lambda tx, s, q, c: campaigns.campaigns(tx, s, q, **_common(c)),
         charts=(Chart("bars", "campaigns", "campaign_id", ("redeemed",)),)),
)}


def kind(slug: str) -> Kind:
    found = KINDS.get(slug)
    if found is None:
        raise ServiceError("unknown_report", f"no report {slug!r}; one of"
                           f" {', '.join(KINDS)}", 404, part="report")
    return found


def default_period(k: Kind, today: date) -> tuple[date, date]:
    return today - timedelta(days=k.default_days - 1), today
