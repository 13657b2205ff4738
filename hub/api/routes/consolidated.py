"""The consolidated reports (``hub.reports.catalog``): each over a period and filters, inside
the caller's scope, with its completeness; exported as CSV or XLSX, audited."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Response

from hub.api.console.i18n import pick, t
from hub.api.deps import HubDep, needs
from hub.api.report_models import Report, ReportKindView
from hub.app import Hub
from hub.auth.access import Access
from hub.core.clock import now_ms
from hub.reports import catalog, files
from hub.reports.period import GRAINS, ReportQuery
from protocol.errors import ServiceError
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["reports"], route_class=StrictJsonRoute)
Reader = Annotated[Access, Depends(needs("reports.read"))]
Filter = Annotated[str | None, Query(min_length=1, max_length=64)]


def query(hub: Hub, kind: catalog.Kind, start: date | None, end: date | None,
          region: str | None = None, store_id: str | None = None, category: str | None = None,
          tier: str | None = None, segment_id: str | None = None) -> ReportQuery:
    """The period asked for, or the kind's default ending today; half a period is refused."""
    if start is None and end is None:
        today = datetime.now(ZoneInfo(hub.chain_zone)).date()
        start, end = catalog.default_period(kind, today)
    if start is None or end is None:
        raise ServiceError("period_unbounded", "a period needs both start and end", 422,
                           part="start" if start is None else "end")
    return ReportQuery(start, end, region, store_id, category, tier, segment_id)


async def run(hub: Hub, access: Access, slug: str, q: ReportQuery, grain: str,
              limit: int) -> dict[str, Any]:
    kind = catalog.kind(slug)
    if grain not in GRAINS:
        raise ServiceError("unknown_grain", f"grain is one of {', '.join(GRAINS)}", 422,
                           part="grain")
    ctx = catalog.Context(now_ms=now_ms(), chain_zone=hub.chain_zone,
                          chain_entity=hub.config.hub.legal_entity, grain=grain, limit=limit)
    done = await access.read(lambda tx, scope: kind.run(tx, scope, q, ctx))
    if done.get("masked") is False:  # members' names shown unmasked: in the audit log
        await access.audit("report.view", subject=slug, fields=["name"])
    return done


@router.get("/v1/report-kinds", response_model=list[ReportKindView])
async def kinds(access: Reader) -> Any:
    """The reports there are, whether each is cut by day/week/month, and its default period."""
    return [{"slug": k.slug, "grains": k.grains, "default_days": k.default_days,
             "tables_charted": [c.table for c in k.charts]} for k in catalog.KINDS.values()]


@router.get("/v1/reports/{kind}", response_model=Report)
async def report(kind: str, hub: HubDep, access: Reader, start: date | None = None,
                 end: date | None = None, region: Filter = None, store_id: Filter = None,
                 category: Filter = None, tier: Filter = None, segment_id: Filter = None,
                 grain: Literal["day", "week", "month"] = "day",
                 limit: Annotated[int, Query(ge=1, le=500)] = 20) -> Any:
    """One report over ``start``..``end`` (store-local dates, both included; the report's
    default period ending today when neither is given), narrowed to a region, store,
    category, tier or segment inside the caller's scope. 422 for a reversed or over-long
    period, 404 for an unknown region/store/segment, 403 for one outside the scope."""
    q = query(hub, catalog.kind(kind), start, end, region, store_id, category, tier,
              segment_id)
    return await run(hub, access, kind, q, grain, limit)


@router.get("/v1/reports/{kind}/export", response_class=Response,
            responses={200: {"content": {
                "text/csv": {"schema": {"type": "string", "description": "one table"}},
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {
                    "schema": {"type": "string", "format": "binary"}}}}})
async def export(kind: str, hub: HubDep, access: Reader,
                 format: Literal["csv", "xlsx"] = "csv",
                 table: Filter = None, lang: Literal["zh", "en"] = "zh",
                 start: date | None = None, end: date | None = None, region: Filter = None,
                 store_id: Filter = None, category: Filter = None, tier: Filter = None,
                 segment_id: Filter = None, grain: Literal["day", "week", "month"] = "day",
                 limit: Annotated[int, Query(ge=1, le=500)] = 20) -> Response:
    """The report as a file (CSV: one ``table``, the first by default; XLSX: every table and
    a sheet with its notes and completeness), masked as on screen; written to the audit log.
    More than ``hub.reports.files.MAX_ROWS`` rows is refused (413) in favour of an approved
    bulk export."""
    q = query(hub, catalog.kind(kind), start, end, region, store_id, category, tier,
              segment_id)
    done = await run(hub, access, kind, q, grain, limit)
    asked = json.dumps({k: v for k, v in done["query"].items() if v is not None}
                       | {"format": format}, sort_keys=True)
    try:
        files.check_size(done)
        language = pick(lang, None)
        body = (files.to_csv(done, table, lambda k: t(language, k)) if format == "csv"
                else files.to_xlsx(done, lambda k: t(language, k)))
    except ServiceError as refused:
        await access.audit("report.export", subject=kind, reason=asked, outcome=refused.code)
        raise
    await access.audit("report.export", subject=kind, reason=asked)
    name = f"{kind}_{q.start}_{q.end}.{format}"
    media = ("text/csv; charset=utf-8" if format == "csv" else
             "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
    return Response(body, media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
