"""Bulk member exports (``hub.auth.bulk_export``): asked for, approved by a second person above
``[exports] approval_above`` members, taken once as CSV. Every step, refusals too, is audited."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response

from hub.api.deps import HubDep, needs
from hub.api.models import BulkExport, ExportDecision, ExportRequest
from hub.auth import bulk_export
from hub.auth.access import Access
from hub.core.clock import now_ms
from protocol.errors import ServiceError
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["exports"], route_class=StrictJsonRoute)
Exporter = Annotated[Access, Depends(needs("members.export"))]
Approver = Annotated[Access, Depends(needs("exports.approve"))]


async def _refused(access: Access, action: str, subject: str | None, exc: ServiceError) -> None:
    await access.audit(action, subject=subject, outcome=exc.code)


@router.post("/v1/exports", status_code=201, response_model=BulkExport)
async def ask(body: ExportRequest, access: Exporter, hub: HubDep) -> Any:
    """Ask for the members in the caller's scope (or one of its stores) as a file: approved at
    once up to ``[exports] approval_above`` members, else ``pending`` a second person."""
    limits = hub.config.exports
    try:
        rows = await access.read(lambda tx, scope: bulk_export.count(tx, scope, body.store_id))
        made = await access.write(lambda tx, scope: bulk_export.create(
            tx, scope, store_id=body.store_id, rows=rows, reason=body.reason,
            approval_above=limits.approval_above, max_rows=limits.max_rows, now=now_ms()))
    except ServiceError as exc:
        await _refused(access, "export.request", None, exc)
        raise
    await access.audit("export.request", subject=made["export_id"], reason=body.reason,
                       outcome=made["state"])
    return made


@router.get("/v1/exports", response_model=list[BulkExport])
async def listing(access: Exporter) -> Any:
    """The caller's own exports; for a role that approves exports, everyone's."""
    return await access.write(lambda tx, scope: bulk_export.listing(tx, scope))


async def _decide(access: Access, export_id: str, body: ExportDecision, approve: bool) -> Any:
    action = "export.approve" if approve else "export.reject"
    try:
        decided = await access.write(lambda tx, scope: bulk_export.decide(
            tx, scope, export_id, approve=approve, reason=body.reason, now=now_ms()))
    except ServiceError as exc:
        await _refused(access, action, export_id, exc)
        raise
    await access.audit(action, subject=export_id, reason=body.reason)
    return decided


@router.post("/v1/exports/{export_id}/approve", response_model=BulkExport)
async def approve(export_id: str, body: ExportDecision, access: Approver) -> Any:
    """A second person approves a pending export (never the one who asked for it)."""
    return await _decide(access, export_id, body, True)


@router.post("/v1/exports/{export_id}/reject", response_model=BulkExport)
async def reject(export_id: str, body: ExportDecision, access: Approver) -> Any:
    """A second person turns a pending export down; it can no longer be taken."""
    return await _decide(access, export_id, body, False)


@router.get("/v1/exports/{export_id}/file", response_class=Response,
            responses={200: {"content": {"text/csv": {"schema": {
                "type": "string", "description": "members, one a row, UTF-8 with a BOM"}}}}})
async def download(export_id: str, access: Exporter) -> Response:
    """The approved export as CSV, once, for the person who asked for it; masked as their
    screen is. ``approval_required`` (409) while it waits for the second person."""
    try:
        request = await access.write(
            lambda tx, scope: bulk_export.claim(tx, scope, export_id, now_ms()))
    except ServiceError as exc:
        await _refused(access, "export.download", export_id, exc)
        raise
    data = await access.read(lambda tx, scope: bulk_export.csv_rows(tx, scope, request))
    await access.audit("export.download", subject=export_id, reason=request["reason"],
                       fields=[] if request["masked"] else bulk_export.PERSONAL_COLUMNS)
    return Response(data, media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="members-{export_id}.csv"'})
