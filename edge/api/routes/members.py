"""Members: registration, lookup, profile, cards, points history, stored value top-ups."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from edge import paging
from edge.api import requests as m
from edge.api.deps import IdemKey, Limit, Service, Terminal
from edge.api.identify import one_identifier
from edge.api.responses import Member, MemberChanges, PaymentPinSetOut, TopUp
from edge.consents import Consent
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["members"], route_class=StrictJsonRoute)


@router.post("/v1/members", status_code=201, response_model=Member)
async def register(body: m.RegisterMember, service: Service, terminal: Terminal,
                   key: IdemKey = None) -> Any:
    """Register a member; works offline (the member code is minted here)."""
    return await service.register_member(
        terminal_id=terminal, idem_key=key, phone=body.phone, name=body.name,
        birthday=body.birthday, card_uid=body.card_uid, tags=body.tags, guide_id=body.guide_id,
        gender=body.gender, consents=[Consent(**c.model_dump()) for c in body.consents],
        cashier_id=body.cashier_id)


@router.put("/v1/members/{member_id}/consents", response_model=Member)
async def consents(member_id: str, body: m.ConsentsIn, service: Service, terminal: Terminal,
                   key: IdemKey = None) -> Any:
    """Consent to be contacted given or withdrawn (per channel, with the consent text's
    version): recorded with the till and the cashier, and sent to the hub, which checks it
    before any marketing message."""
    return await service.set_consents(
        terminal_id=terminal, idem_key=key, member_id=member_id,
        consents=[Consent(**c.model_dump()) for c in body.consents], cashier_id=body.cashier_id)


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
    """Change profile fields; recorded with the till and ``cashier_id``. A birthday already
    set is changed only by HQ (409 ``birthday_locked``)."""
    changes = body.model_dump(exclude_unset=True)
    cashier_id = changes.pop("cashier_id", None)
    return await service.update_profile(terminal_id=terminal, idem_key=key, member_id=member_id,
                                        changes=changes, cashier_id=cashier_id)


@router.get("/v1/members/{member_id}/changes", response_model=MemberChanges)
async def changes(member_id: str, service: Service, _: Terminal,
                  limit: Limit = paging.DEFAULT_LIMIT,
                  before: Annotated[int | None, Query(ge=1)] = None) -> Any:
    """What was changed of the member at this store's tills (profile fields before and after,
    cards, PIN set or locked), with the till and the cashier, newest first."""
    return await service.member_changes(member_id, limit=limit, before=before)


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


@router.put("/v1/members/{member_id}/cards/{card_uid}/state", response_model=Member)
async def card_state(member_id: str, card_uid: str, body: m.CardStateIn, service: Service,
                     terminal: Terminal, key: IdemKey = None) -> Any:
    """Report a card lost (挂失), lift the loss, or unbind it. A lost card is refused at every
    store (409 ``card_blocked`` with its reason) once the hub has passed it on, here at once."""
    return await service.set_card_state(
        terminal_id=terminal, idem_key=key, member_id=member_id, card_uid=card_uid,
        state=body.state, reason=body.reason, cashier_id=body.cashier_id)


@router.post("/v1/members/{member_id}/cards/{card_uid}/replacement", response_model=Member)
async def replace_card(member_id: str, card_uid: str, body: m.CardReplacementIn,
                       service: Service, terminal: Terminal, key: IdemKey = None) -> Any:
    """Replace a card (补卡): the old one is blocked for good, the new one identifies the
    member with every balance."""
    return await service.replace_card(
        terminal_id=terminal, idem_key=key, member_id=member_id, card_uid=card_uid,
        new_card_uid=body.new_card_uid, reason=body.reason, cashier_id=body.cashier_id)


@router.put("/v1/members/{member_id}/pin", response_model=PaymentPinSetOut)
async def set_pin(member_id: str, body: m.PaymentPinIn, service: Service, terminal: Terminal,
                  key: IdemKey = None) -> Any:
    """Set the member's payment PIN (stored hashed, checked offline at any store). Once set,
    paying with stored value or points needs it; wrong PINs in a row lock those balances
    until a new PIN is set."""
    return await service.set_payment_pin(
        terminal_id=terminal, idem_key=key, member_id=member_id, pin=body.pin,
        current_pin=body.current_pin, reset=body.reset, cashier_id=body.cashier_id)


@router.post("/v1/members/{member_id}/topups", tags=["stored value"], response_model=TopUp)
async def top_up(member_id: str, body: m.TopUp, service: Service, terminal: Terminal,
                 key: IdemKey = None) -> Any:
    return await service.top_up(terminal_id=terminal, idem_key=key, member_id=member_id,
                                amount=body.amount, paid_by=body.paid_by)
