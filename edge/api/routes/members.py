"""Members: registration, lookup, profile, cards, points history, stored value top-ups."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from edge import paging
from edge.api import requests as m
from edge.api.deps import IdemKey, Limit, Service, Terminal
from edge.api.identify import one_identifier
from edge.api.responses import Member, TopUp
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["members"], route_class=StrictJsonRoute)


@router.post("/v1/members", status_code=201, response_model=Member)
async def register(body: m.RegisterMember, service: Service, terminal: Terminal,
                   key: IdemKey = None) -> Any:
    """Register a member; works offline (the member code is minted here)."""
    return await service.register_member(
        terminal_id=terminal, idem_key=key, phone=body.phone, name=body.name,
        birthday=body.birthday, card_uid=body.card_uid, tags=body.tags, guide_id=body.guide_id)


@router.get("/v1/members/lookup", response_model=Member)
async def lookup(service: Service, _: Terminal, card_uid: str | None = None,
                 member_code: str | None = None, phone: str | None = None,
                 qr: str | None = None) -> Any:
    """Find a member by exactly one identifier; one this store does not know is asked of the
    hub (503 ``hub_unreachable`` when it cannot be)."""
    by, value = one_identifier(card_uid=card_uid, member_code=member_code, phone=phone, qr=qr)
    return await service.lookup_member(by, value)


@router.get("/v1/members/{member_id}", response_model=Member)
async def member(member_id: str, service: Service, _: Terminal) -> Any:
    return await service.member(member_id)


@router.patch("/v1/members/{member_id}", response_model=Member)
async def profile(member_id: str, body: m.ProfileChange, service: Service, terminal: Terminal,
                  key: IdemKey = None) -> Any:
    return await service.update_profile(terminal_id=terminal, idem_key=key, member_id=member_id,
                                        changes=body.model_dump(exclude_unset=True))


@router.get("/v1/members/{member_id}/points", response_model=m.PointsHistory)
async def points_history(member_id: str, service: Service, _: Terminal,
                         limit: Limit = paging.DEFAULT_LIMIT,
                         before: Annotated[int | None, Query(ge=1)] = None) -> Any:
    """The member's points ledger at this store (积分明细), newest first, with the balance
    this store shows (its own ledger plus the other stores' shares)."""
    return await service.points_history(member_id, limit=limit, before=before)


@router.post("/v1/members/{member_id}/cards", response_model=Member)
async def bind_card(member_id: str, body: m.BindCard, service: Service, terminal: Terminal,
                    key: IdemKey = None) -> Any:
    return await service.bind_card(terminal_id=terminal, idem_key=key, member_id=member_id,
                                   card_uid=body.card_uid)


@router.post("/v1/members/{member_id}/topups", tags=["stored value"], response_model=TopUp)
async def top_up(member_id: str, body: m.TopUp, service: Service, terminal: Terminal,
                 key: IdemKey = None) -> Any:
    return await service.top_up(terminal_id=terminal, idem_key=key, member_id=member_id,
                                amount=body.amount, paid_by=body.paid_by)
