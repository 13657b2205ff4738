"""A member as the hub knows it after merging every store."""

from __future__ import annotations

from fastapi import APIRouter

from hub.api.deps import HubDep
from hub.api.models import MemberView
from hub.members import directory
from protocol.errors import ServiceError
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["members"], route_class=StrictJsonRoute)


@router.get("/v1/members/{member_id}", response_model=MemberView)
async def member(member_id: str, hub: HubDep) -> MemberView:
    entry = await hub.db.read(lambda tx: directory.entry(tx, member_id))
    if entry is None:
        raise ServiceError("member_not_found", "no member with this id", 404)
    return MemberView(**entry.model_dump(exclude={"pin_hash"}),
                      pin_set=entry.pin_hash is not None,
                      points=sum(s.points for s in entry.shares),
                      stored_value=sum(s.sv_principal + s.sv_bonus for s in entry.shares))
