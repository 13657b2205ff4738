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
                 _: Annotated[Access, Depends(needs("status.read"))]) -> HubStatus:
    """Per store: last seen, epoch and acked seq, outbox depth, lag, versions, devices."""
    return HubStatus.model_validate(await hub.status())
