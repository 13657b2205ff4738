"""The personal-data audit log: who saw, revealed or exported whose data, and refused
attempts. Readable by roles allowed ``auditlog.read`` (the auditor, HQ admins)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from hub.api.deps import needs
from hub.api.models import AuditEntry
from hub.auth import audit_log
from hub.auth.access import Access
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["audit"], route_class=StrictJsonRoute)


@router.get("/v1/audit-log", response_model=list[AuditEntry])
async def entries(access: Annotated[Access, Depends(needs("auditlog.read"))],
                  limit: Annotated[int, Query(ge=1, le=500)] = 100,
                  before_ms: Annotated[int | None, Query(ge=0)] = None,
                  subject: Annotated[str | None, Query(max_length=64)] = None) -> Any:
    """Newest first; ``before_ms`` pages back; ``subject``: about one member."""
    return await access.read(lambda tx, _scope: audit_log.page(
        tx, limit=limit, before_ms=before_ms, subject=subject))
