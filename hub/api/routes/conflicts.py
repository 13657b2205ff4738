"""Single-use coupons redeemed in two stores: the later redemption (by HLC) of each."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from hub.api.deps import needs
from hub.api.models import CouponConflict, CouponConflicts
from hub.auth.access import Access
from hub.campaigns import coupons
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["coupons"], route_class=StrictJsonRoute)


@router.get("/v1/conflicts/coupons", response_model=CouponConflicts)
async def coupon_conflicts(
        access: Annotated[Access, Depends(needs("conflicts.read"))]) -> CouponConflicts:
    rows = await access.read(lambda tx, _scope: coupons.conflicts(tx))
    return CouponConflicts(conflicts=[CouponConflict.model_validate(r) for r in rows])
