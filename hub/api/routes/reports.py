"""HQ's reads about members and sales, each inside the caller's scope (``hub.reports``)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from hub.api.deps import needs
from hub.api.models import MemberFound, StoreDay
from hub.auth.access import Access
from hub.reports import member_search, store_day
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["reports"], route_class=StrictJsonRoute)
Key = Annotated[str | None, Query(min_length=1, max_length=64)]


@router.get("/v1/members", response_model=list[MemberFound])
async def search(access: Annotated[Access, Depends(needs("members.read"))],
                 phone: Key = None, member_code: Key = None, card_uid: Key = None) -> Any:
    """Members by exactly one of phone, member code or card UID, inside the caller's scope
    (outside it: not found, as for no member); masked below HQ admin, whose finds are
    audited."""
    found = await access.read(lambda tx, scope: member_search.search(
        tx, scope, phone=phone, member_code=member_code, card_uid=card_uid))
    if not access.scope.role.masked:
        for member in found:
            await access.audit("member.search", subject=member["member_id"],
                               fields=["birthday", "name", "phone"])
    return found


@router.get("/v1/reports/store-day", response_model=StoreDay)
async def store_day_report(access: Annotated[Access, Depends(needs("reports.read"))],
                           store_id: Annotated[str, Query(min_length=1, max_length=32)],
                           day: Annotated[date, Query(alias="date")]) -> Any:
    """One store's calendar day by category: sales, items, gross, discounts, amount, members'
    share, refunds; a store outside the caller's scope is 404."""
    return await access.read(lambda tx, scope: store_day.store_day(
        tx, scope, store_id, day.isoformat()))
