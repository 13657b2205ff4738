"""HQ's own writes to a member: points adjustments, coupons, profile and card changes, each an
event of the HQ stream (``hub.ledger.hq_events``), applied once per ``Idempotency-Key``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Response

from hub.api.deps import HubDep, needs
from hub.api.models import (
    CardStateChange,
    CardStateRequest,
    CouponIssueRequest,
    Erased,
    ErasureRequest,
    IssuedCoupon,
    PointsAdjustment,
    PointsAdjustmentRequest,
    ProfileChanged,
    ProfileChangeRequest,
)
from hub.auth.access import Access
from hub.auth.scope import in_scope
from hub.core.idempotency import Answer, raise_refusal
from hub.members.identity import canonical
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["members"], route_class=StrictJsonRoute)

# A client's retry of the same request carries the same key; a key is any text it chose.
IdempotencyKey = Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=200)]


# HQ's writes to a member: a role that may make them, on a member in its scope.
Writer = Annotated[Access, Depends(needs("members.write"))]


async def _in_scope(access: Access, member_id: str) -> None:
    await access.read(lambda tx, scope: in_scope(scope, tx, canonical(tx, member_id)))


def _answered(answer: Answer, response: Response) -> None:
    if answer.replayed:
        response.headers["Idempotent-Replayed"] = "true"


@router.post("/v1/members/{member_id}/points/adjustments", status_code=201,
             response_model=PointsAdjustment)
async def adjust_points(member_id: str, request: PointsAdjustmentRequest, hub: HubDep,
                        key: IdempotencyKey, response: Response,
                        access: Writer) -> PointsAdjustment:
    """Add (or, within what stores do not hold, take away) points; stores see it through the
    directory. A retry with the same key gets the first answer."""
    await _in_scope(access, member_id)
    answer = await hub.adjust_points(member_id, delta=request.delta, reason=request.reason,
                                     actor=request.actor, key=key)
    _answered(answer, response)
    return PointsAdjustment.model_validate(raise_refusal(answer))


@router.post("/v1/members/{member_id}/coupons", status_code=201, response_model=IssuedCoupon)
async def issue_coupon(member_id: str, request: CouponIssueRequest, hub: HubDep,
                       key: IdempotencyKey, response: Response,
                       access: Writer) -> IssuedCoupon:
    """Issue the member a single-use coupon that any store redeems, offline too. A retry with
    the same key gets the first answer (the same code)."""
    await _in_scope(access, member_id)
    answer = await hub.issue_coupon(
        member_id, kind=request.kind, value=request.value, min_spend=request.min_spend,
        categories=request.categories, expires_on=request.expires_on,
        campaign_id=request.campaign_id, key=key)
    _answered(answer, response)
    return IssuedCoupon.model_validate(raise_refusal(answer))


@router.patch("/v1/members/{member_id}", response_model=ProfileChanged)
async def change_profile(member_id: str, request: ProfileChangeRequest, hub: HubDep,
                         key: IdempotencyKey, response: Response,
                         access: Writer) -> ProfileChanged:
    """Change a member's name or birthday; stores take it from the directory. Stores set a
    birthday once; a birthday already set is corrected here."""
    await _in_scope(access, member_id)
    changes = request.model_dump(exclude_unset=True, exclude={"actor"})
    answer = await hub.change_profile(member_id, changes=changes, actor=request.actor, key=key)
    _answered(answer, response)
    return ProfileChanged.model_validate(raise_refusal(answer))


@router.put("/v1/members/{member_id}/cards/{card_uid}/state", response_model=CardStateChange)
async def set_card_state(member_id: str, card_uid: str, request: CardStateRequest,
                         hub: HubDep, key: IdempotencyKey, response: Response,
                         access: Writer) -> CardStateChange:
    """Report a member's card lost (挂失, e.g. the member called the hotline), lift the loss,
    or unbind it; every store refuses a lost card once the directory carries it."""
    await _in_scope(access, member_id)
    answer = await hub.set_card_state(member_id, card_uid, state=request.state,
                                      reason=request.reason, actor=request.actor, key=key)
    _answered(answer, response)
    return CardStateChange.model_validate(raise_refusal(answer))


@router.post("/v1/members/{member_id}/erasure", status_code=201, response_model=Erased)
async def erase(member_id: str, request: ErasureRequest, hub: HubDep, key: IdempotencyKey,
                response: Response,
                access: Annotated[Access, Depends(needs("pii.erase"))]) -> Erased:
    """Erase the member's personal data on their request (PIPL): name, phone, birthday, e-mail,
    gender, tags and cards, at the hub, in its log and, through the directory, at every store.
    The account and its balances stay (statutory records). Written to the audit log."""
    await _in_scope(access, member_id)
    answer = await hub.erase_member(member_id, actor=request.actor, reason=request.reason,
                                    key=key)
    _answered(answer, response)
    erased = Erased.model_validate(raise_refusal(answer))
    if not answer.replayed:
        await access.audit("member.erase", subject=erased.member_id, fields=["birthday",
                           "cards", "email", "gender", "name", "phone", "tags"],
                           reason=request.reason)
    return erased
