"""What message providers push back to the hub: Alibaba Cloud SMS delivery reports
(``SmsReport``) and members' replies (``SmsUp``: 回T退订 withdraws their SMS consent).

Aliyun calls the URLs it was given with no bearer token, so these two routes are open to the
network like sign-in, and take a secret of their own instead: ``?token=`` must be
``[channels.sms] callback_token`` (compared in constant time); without it, or without SMS
configured, they answer 404 as for no route. Aliyun wants ``{"code": 0, "msg": "成功"}`` back;
any other answer makes it push the same reports again later, which changes nothing here.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from hub.api.deps import HubDep
from hub.notify.channels.sms import inbound, receipts
from protocol.errors import ServiceError
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["providers"], route_class=StrictJsonRoute)
RECEIPTS = "/v1/providers/sms/receipts"
REPLIES = "/v1/providers/sms/replies"
ACCEPTED = {"code": 0, "msg": "成功"}


class Accepted(BaseModel):
    """What Aliyun wants back for a push it need not send again."""

    code: int
    msg: str


async def provider(hub: HubDep, token: Annotated[str, Query(max_length=200)] = "") -> None:
    """The provider's own secret in the URL, instead of an HQ user's token."""
    sms = hub.config.channels.sms
    wanted = sms.callback_token.get_secret_value() if sms and sms.callback_token else None
    if wanted is None or not hmac.compare_digest(token.encode(), wanted.encode()):
        raise ServiceError("not_found", "Not Found", 404)


provider.permission = "provider"  # type: ignore[attr-defined]
Provider = Depends(provider)


async def _body(request: Request) -> bytes:
    return await request.body()


@router.post(RECEIPTS, dependencies=[Provider], response_model=Accepted)
async def sms_receipts(hub: HubDep, body: Annotated[bytes, Depends(_body)]) -> Any:
    """Delivery reports: each message delivered or failed, found by its key (``OutId``)."""
    try:
        reports = receipts(body)
    except ValueError as exc:
        raise ServiceError("bad_receipts", str(exc), 422) from None
    await hub.delivery_reports([(r.key, r.provider_id, r.delivered, r.error)
                                for r in reports])
    return ACCEPTED


@router.post(REPLIES, dependencies=[Provider], response_model=Accepted)
async def sms_replies(hub: HubDep, body: Annotated[bytes, Depends(_body)]) -> Any:
    """Members' replies: an opt-out withdraws the SMS marketing consent of every member with
    that number, as an HQ-stream consent event (the stores hear of it)."""
    try:
        replies = inbound(body)
    except ValueError as exc:
        raise ServiceError("bad_replies", str(exc), 422) from None
    await hub.sms_opt_outs([r.phone for r in replies if r.opt_out])
    return ACCEPTED
