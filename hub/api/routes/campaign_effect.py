"""A campaign's effect (``hub.reports.campaign_effect``): what the members who could have its
offer did beyond its held-out members, with confidence intervals, and what it earned against
the discounts it gave, priced with the chain's ``[automation] margin_percent``."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query

from hub.api.campaign_models import CampaignEffect
from hub.api.deps import HubDep, needs
from hub.auth.access import Access
from hub.core.clock import now_ms
from hub.reports import campaign_effect
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["campaigns"], route_class=StrictJsonRoute)
Reader = Annotated[Access, Depends(needs("reports.read"))]


@router.get("/v1/campaigns/{campaign_id}/effect", response_model=CampaignEffect)
async def effect(campaign_id: str, hub: HubDep, access: Reader,
                 start: Annotated[date | None, Query()] = None,
                 end: Annotated[date | None, Query()] = None) -> Any:
    """Treated against held out over the store-local days ``start`` to ``end`` (both
    included; by default the campaign's dates, up to yesterday): visit rate and spend per
    member with 95 % intervals, the discounts it gave, ROI, and how far each of its stores'
    logs is merged; only the members the caller sees. 404 for a campaign never pushed, 422
    for a window that ends before it starts."""
    at = now_ms()
    today = datetime.fromtimestamp(at / 1000, ZoneInfo(hub.chain_zone)).date()
    margin = hub.config.automation.margin_percent
    return await access.read(lambda tx, scope: campaign_effect.effect(
        tx, scope, campaign_id, start=start, end=end, margin_percent=margin, today=today,
        zone=hub.chain_zone, now_ms=at))
