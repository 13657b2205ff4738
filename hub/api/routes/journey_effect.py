"""A journey's effect (``hub.reports.journey_effect``): what the treated members did beyond the
held-out ones, with confidence intervals, and what it earned against what it cost — priced
with the chain's ``[automation] margin_percent`` and ``message_cost``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from hub.api.deps import HubDep, needs
from hub.api.journey_models import JourneyEffect
from hub.auth.access import Access
from hub.core.clock import now_ms
from hub.reports import journey_effect
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["journeys"], route_class=StrictJsonRoute)
Reader = Annotated[Access, Depends(needs("reports.read"))]


@router.get("/v1/journeys/{journey_id}/effect", response_model=JourneyEffect)
async def effect(journey_id: str, hub: HubDep, access: Reader,
                 window_days: Annotated[int, Query(ge=1, le=366)] = 30) -> Any:
    """Treated against held out over each member's first ``window_days`` after entering:
    visit rate and spend per member with 95 % intervals, coupons, messages, ROI, and how far
    each store's log is merged; only the members the caller sees. 404 for no such journey."""
    settings = hub.config.automation
    at = now_ms()
    return await access.read(lambda tx, scope: journey_effect.effect(
        tx, scope, journey_id, window_days=window_days, margin_percent=settings.margin_percent,
        message_cost=settings.message_cost, now_ms=at))
