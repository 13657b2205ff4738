"""Single-use coupons redeemed in two stores: the later redemption (by HLC) of each."""

from __future__ import annotations

from fastapi import APIRouter

from hub.api.deps import HubDep
from hub.api.models import CouponConflict, CouponConflicts
from hub.campaigns import coupons
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["coupons"], route_class=StrictJsonRoute)


@router.get("/v1/conflicts/coupons", response_model=CouponConflicts)
async def coupon_conflicts(hub: HubDep) -> CouponConflicts:
    rows = await hub.db.read(coupons.conflicts)
    return CouponConflicts(conflicts=[CouponConflict.model_validate(r) for r in rows])
