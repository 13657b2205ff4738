"""The books' check: every balance the hub holds against one rebuilt from the event log."""

from __future__ import annotations

from fastapi import APIRouter

from hub.api.deps import HubDep
from hub.api.models import RebuildCheck
from hub.ledger import audit
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["audit"], route_class=StrictJsonRoute)


@router.get("/v1/rebuild", response_model=RebuildCheck)
async def rebuild(hub: HubDep) -> RebuildCheck:
    """Balances held vs. recomputed from the event log (on a reader: ingest goes on)."""
    result = await hub.db.read(audit.compare)
    return RebuildCheck(members=result["members"], events=result["events"],
                        mismatches=result["mismatches"][:100],
                        mismatch_count=len(result["mismatches"]))
