"""Campaign bundles: validated, signed and published for the fleet, a region or a store."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from hub.api.deps import HubDep, needs
from hub.api.models import PushedBundle
from hub.auth.access import Access
from hub.campaigns.bundles import StaleBundle
from protocol.campaigns import CampaignBundle
from protocol.errors import ServiceError
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["campaigns"], route_class=StrictJsonRoute)


@router.post("/v1/campaigns", status_code=201, response_model=PushedBundle)
async def push(bundle: CampaignBundle, hub: HubDep,
               _: Annotated[Access, Depends(needs("campaigns.push"))]) -> PushedBundle:
    """Validate, sign and publish a bundle for the fleet, a region or a store."""
    try:
        topic = await hub.push_campaigns(bundle)
    except StaleBundle as exc:
        raise ServiceError(exc.code, str(exc), 409) from None
    return PushedBundle(topic=topic, version=bundle.version, generation=bundle.generation,
                        scope=bundle.scope)
