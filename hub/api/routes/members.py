"""A member as the hub knows it after merging every store, as the caller may see them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from hub.api.deps import needs
from hub.api.models import MemberExport, MemberView, RevealRequest
from hub.auth import member_export, member_view
from hub.auth.access import Access
from hub.auth.scope import PERSONAL
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["members"], route_class=StrictJsonRoute)


async def _shown(access: Access, member_id: str, reveal: frozenset[str],
                 reason: str) -> dict[str, Any]:
    view = await access.read(lambda tx, scope: member_view.member(tx, scope, member_id, reveal))
    if view["unmasked"]:  # every view of personal data whole is in the audit log first
        await access.audit("member.reveal" if reveal else "member.view",
                           subject=view["member_id"], fields=view["unmasked"], reason=reason)
    return view


@router.get("/v1/members/{member_id}", response_model=MemberView)
async def member(member_id: str,
                 access: Annotated[Access, Depends(needs("members.read"))]) -> Any:
    """The member inside the caller's scope (404 outside it, as for no member at all)."""
    return await _shown(access, member_id, frozenset(), "")


@router.post("/v1/members/{member_id}/reveal", response_model=MemberView)
async def reveal(member_id: str, body: RevealRequest,
                 access: Annotated[Access, Depends(needs("pii.reveal"))]) -> Any:
    """The member with the named personal fields shown whole, for the reason given: an action
    written to the audit log with who, whose, which fields, why and from where."""
    return await _shown(access, member_id, frozenset(body.fields), body.reason)


@router.get("/v1/members/{member_id}/export", response_model=MemberExport)
async def export(member_id: str, access: Annotated[Access, Depends(needs("pii.export"))],
                 reason: Annotated[str, Query(min_length=1, max_length=200)]) -> Any:
    """Everything held about the member, for their data request (``reason``: its reference);
    written to the audit log."""
    data = await access.read(lambda tx, scope: member_export.export(tx, scope, member_id))
    await access.audit("member.export", subject=data["member"]["member_id"],
                       fields=list(PERSONAL), reason=reason)
    return data
