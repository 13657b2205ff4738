"""The fleet and the hub itself: per store how far its log is merged, the uplink's figures."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from hub.api.deps import HubDep, needs
from hub.api.models import HubStatus
from hub.auth.access import Access
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["status"], route_class=StrictJsonRoute)


@router.get("/v1/status", response_model=HubStatus)
async def status(hub: HubDep,
                 access: Annotated[Access, Depends(needs("status.read"))]) -> HubStatus:
    """Per store: last seen, epoch and acked seq, outbox depth, lag, versions, devices — the
    stores of the caller's scope (a role the chain gives ``status.read`` for a region sees
    that region's)."""
    found = await hub.status()
    stores = await access.read(lambda tx, scope: scope.store_ids(tx))
    if stores is not None:
        found["stores"] = [s for s in found["stores"] if s["store_id"] in stores]
    return HubStatus.model_validate(found)
