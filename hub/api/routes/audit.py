"""The books' check: every balance the hub holds against one rebuilt from the event log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from hub.api.deps import needs
from hub.api.models import RebuildCheck
from hub.auth.access import Access
from hub.ledger import audit
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["audit"], route_class=StrictJsonRoute)


@router.get("/v1/rebuild", response_model=RebuildCheck)
async def rebuild(access: Annotated[Access, Depends(needs("books.check"))]) -> RebuildCheck:
    """Balances held vs. recomputed from the event log (on a reader: ingest goes on)."""
    result = await access.read(lambda tx, _scope: audit.compare(tx))
    return RebuildCheck(members=result["members"], events=result["events"],
                        mismatches=result["mismatches"][:100],
                        mismatch_count=len(result["mismatches"]))
