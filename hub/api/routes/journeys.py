"""Journeys (``hub.automation``), the message outbox (``hub.notify``) and consents given to HQ.

Journeys are the chain's (HQ admins and marketing write them, ``journeys.write``); a member's
journeys are read in the caller's scope like every member route. The outbox's listing and
resend are for who runs the channels (``messages.manage``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from hub.api.deps import HubDep, needs
from hub.api.journey_models import (
    ConsentsRecorded,
    ConsentsRequest,
    Journey,
    JourneyPreview,
    JourneyState,
    JourneyVersion,
    MemberJourney,
    Message,
    ResendRequest,
    Resent,
)
from hub.auth.access import Access
from hub.auth.scope import Scope, in_scope
from hub.automation import journeys
from hub.core.db import Tx
from hub.members.identity import canonical
from hub.notify import outbox
from protocol.errors import ServiceError
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["journeys"], route_class=StrictJsonRoute)
Writer = Annotated[Access, Depends(needs("journeys.write"))]
Reader = Annotated[Access, Depends(needs("reports.read"))]
Operator = Annotated[Access, Depends(needs("messages.manage"))]


def _who(access: Access) -> str:
    return access.scope.principal.user.username


@router.post("/v1/journeys", status_code=201, response_model=Journey)
async def create(definition: dict[str, Any], hub: HubDep, access: Writer) -> Any:
    """A new journey, active at once from now on (what happened before it is not acted on);
    422 names what is wrong, nothing is saved."""
    made = await hub.create_journey(definition, _who(access))
    await access.audit("journey.create", subject=made["journey_id"], reason=made["name"])
    hub.scheduler.wake("journeys")
    return made


def _preview(definition: dict[str, Any], journey_id: str | None, hub: HubDep,
             access: Access) -> Any:
    """The checks ``create`` (or ``change``) makes, on a reader: nothing is saved."""
    today = hub.keeper.today()
    return access.read(lambda tx, _s: journeys.preview(
        tx, definition, journey_id, today=today, zone=hub.chain_zone,
        check_message=hub.check_message, would_enter=hub.journeys.would_enter))


@router.post("/v1/journeys/preview", response_model=JourneyPreview)
async def preview(definition: dict[str, Any], hub: HubDep, access: Writer) -> Any:
    """A new journey's definition checked as creating it would check it (422 or 409 naming
    what is wrong), and what it would do; nothing is saved."""
    return await _preview(definition, None, hub, access)


@router.post("/v1/journeys/{journey_id}/preview", response_model=JourneyPreview)
async def preview_change(journey_id: str, definition: dict[str, Any], hub: HubDep,
                         access: Writer) -> Any:
    """A new version checked as ``PUT /v1/journeys/{journey_id}`` would check it; nothing is
    saved."""
    return await _preview(definition, journey_id, hub, access)


@router.get("/v1/journeys", response_model=list[Journey])
async def listing(access: Reader) -> Any:
    return await access.read(lambda tx, _s: journeys.listing(tx))


@router.get("/v1/journeys/{journey_id}", response_model=Journey)
async def one(journey_id: str, access: Reader) -> Any:
    return await access.read(lambda tx, _s: journeys.get(tx, journey_id))


@router.put("/v1/journeys/{journey_id}", response_model=Journey)
async def change(journey_id: str, definition: dict[str, Any], hub: HubDep,
                 access: Writer) -> Any:
    """A new version for members who enter from now on; those on their way finish theirs."""
    done = await hub.update_journey(journey_id, definition, _who(access))
    await access.audit("journey.change", subject=journey_id, reason=f"version {done['version']}")
    return done


@router.post("/v1/journeys/{journey_id}/state", response_model=Journey)
async def set_state(journey_id: str, body: JourneyState, hub: HubDep, access: Writer) -> Any:
    """Pause (no new entries), resume (from now on) or archive (every waiting entry exits)."""
    done = await hub.set_journey_state(journey_id, body.state)
    await access.audit("journey.state", subject=journey_id, reason=body.state)
    return done


@router.get("/v1/journeys/{journey_id}/versions", response_model=list[JourneyVersion])
async def versions(journey_id: str, access: Reader) -> Any:
    return await access.read(lambda tx, _s: journeys.versions(tx, journey_id))


@router.get("/v1/members/{member_id}/journeys", response_model=list[MemberJourney])
async def of_member(member_id: str,
                    access: Annotated[Access, Depends(needs("members.read"))]) -> Any:
    """Every journey the member entered (held out too) and each action taken."""
    def read(tx: Tx, scope: Scope) -> Any:
        member = canonical(tx, member_id)
        in_scope(scope, tx, member)
        return journeys.of_member(tx, member)
    return await access.read(read)


@router.get("/v1/messages", response_model=list[Message])
async def messages(access: Operator, state: Annotated[str | None, Query(max_length=20)] = None,
                   journey_id: Annotated[str | None, Query(max_length=64)] = None,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
    """The outbox, newest first: what left, what waits and why, what is dead."""
    if state is not None and state not in outbox.STATES:
        raise ServiceError("bad_state", f"state is one of {', '.join(outbox.STATES)}", 422)
    return await access.read(lambda tx, _s: outbox.listing(
        tx, state=state, journey_id=journey_id, limit=limit))


@router.post("/v1/messages/{message_id}/resend", response_model=Resent)
async def resend_one(message_id: str, hub: HubDep, access: Operator) -> Any:
    """A dead or failed message out again with its key (409 for any other)."""
    count = await hub.resend(message_id=message_id)
    await access.audit("message.resend", subject=message_id)
    return {"resent": count}


@router.post("/v1/messages/resend", response_model=Resent)
async def resend_dead(body: ResendRequest, hub: HubDep, access: Operator) -> Any:
    """Every dead message (of a channel) out again — after a provider's long outage."""
    count = await hub.resend(channel=body.channel)
    await access.audit("message.resend", reason=f"dead of {body.channel or 'every channel'}")
    return {"resent": count}


@router.post("/v1/members/{member_id}/consents", response_model=ConsentsRecorded)
async def consents(member_id: str, body: ConsentsRequest, hub: HubDep,
                   access: Annotated[Access, Depends(needs("members.write"))]) -> Any:
    """Consents the member gave or withdrew through HQ (the hotline, the online channel): each
    a ``member.consent`` of the HQ stream with the wording's version; the stores learn of it
    like any change. Withdrawing is the same call with ``granted: false``."""
    await access.read(lambda tx, scope: in_scope(scope, tx, canonical(tx, member_id)))
    member, recorded = await hub.record_consents(
        member_id, [c.model_dump() for c in body.consents], actor=f"{body.where}:{body.actor}")
    await access.audit("member.consent", subject=member,
                       reason=", ".join(f"{c.channel}={'yes' if c.granted else 'no'}"
                                        for c in body.consents))
    return {"member_id": member, "recorded": recorded}
