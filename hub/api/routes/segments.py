"""Segments, the tag catalogue and HQ's tags, lifecycle stages and the member 360 card
(``hub.members.segments``, ``tags``, ``lifecycle``; ``hub.reports.member360``).

Definitions are the chain's (one catalogue, one set of segments); what a caller sees of their
members — a preview's count, a segment's members, a member's tags, stage or card — is cut to
their scope. Changes wake the segment keeper, which evaluates them within seconds.
"""

from __future__ import annotations

import csv
import io
import time
from datetime import date, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Response

from hub.api.deps import HubDep, needs
from hub.api.models import (
    CatalogTag,
    Member360,
    MemberLifecycle,
    MemberTag,
    MemberTagsRequest,
    Segment,
    SegmentCreate,
    SegmentEvaluation,
    SegmentMember,
    SegmentPreview,
    SegmentPreviewRequest,
    SegmentUpdate,
    SegmentVersion,
    TagDefinition,
)
from hub.app import Hub
from hub.auth.access import Access
from hub.auth.scope import Scope, in_scope
from hub.core.clock import now_ms
from hub.core.db import Tx
from hub.members import segments, tags
from hub.members.identity import canonical
from hub.reports import member360, segment_reads
from protocol.errors import ServiceError
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["segments"], route_class=StrictJsonRoute)
Writer = Annotated[Access, Depends(needs("segments.write"))]
Reader = Annotated[Access, Depends(needs("members.read"))]
Exporter = Annotated[Access, Depends(needs("members.export"))]


def _today(hub: Hub) -> date:
    return datetime.now(ZoneInfo(hub.chain_zone)).date()


def _who(access: Access) -> str:
    return access.scope.principal.user.username


@router.post("/v1/segments", status_code=201, response_model=Segment)
async def create(body: SegmentCreate, hub: HubDep, access: Writer) -> Any:
    """A new segment, evaluated whole within seconds; 422 names what is wrong in the
    definition, 409 for a name or rule tag taken."""
    made = await access.write(lambda tx, _s: segments.create(
        tx, name=body.name, definition=body.definition, for_tills=body.for_tills,
        tag=body.tag, by=_who(access), now_ms=now_ms(), today=_today(hub), zone=hub.chain_zone))
    await access.audit("segment.create", subject=made["segment_id"], reason=body.name)
    hub.scheduler.wake("segments")
    return made


@router.get("/v1/segments", response_model=list[Segment])
async def listing(access: Reader,
                  state: Literal["active", "archived"] | None = None) -> Any:
    return await access.read(lambda tx, _s: segments.listing(tx, state))


@router.post("/v1/segments/preview", response_model=SegmentPreview)
async def preview(body: SegmentPreviewRequest, hub: HubDep, access: Reader) -> Any:
    """The count and a sample of a definition being edited, inside the caller's scope;
    nothing is saved."""
    cond = segments.parse(body.definition)
    today = _today(hub)

    def count(tx: Tx, scope: Scope) -> dict[str, Any]:
        started = time.monotonic()
        where, params = scope.member_filter("m")
        out = segments.preview(tx, cond, today, hub.chain_zone, where, params, body.sample)
        out["took_ms"] = int((time.monotonic() - started) * 1000)
        return out

    return await access.read(count)


@router.get("/v1/segments/{segment_id}", response_model=Segment)
async def one(segment_id: str, access: Reader) -> Any:
    return await access.read(lambda tx, _s: segments.get(tx, segment_id))


@router.put("/v1/segments/{segment_id}", response_model=Segment)
async def change(segment_id: str, body: SegmentUpdate, hub: HubDep, access: Writer) -> Any:
    """A new definition is a new version (kept) evaluated whole; name and ``for_tills`` change
    in place."""
    done = await access.write(lambda tx, _s: segments.update(
        tx, segment_id, definition=body.definition, name=body.name, for_tills=body.for_tills,
        by=_who(access), now_ms=now_ms(), today=_today(hub), zone=hub.chain_zone))
    await access.audit("segment.change", subject=segment_id,
                       reason=f"version {done['version']}")
    hub.link.directory_moved()  # a till segment renamed or (un)marked: its members go again
    hub.scheduler.wake("segments")
    return done


@router.post("/v1/segments/{segment_id}/archive", response_model=Segment)
async def archive(segment_id: str, hub: HubDep, access: Writer) -> Any:
    """No longer kept (409 while another segment uses it)."""
    done = await access.write(lambda tx, _s: segments.archive(
        tx, segment_id, now_ms=now_ms(), today=_today(hub), zone=hub.chain_zone))
    await access.audit("segment.archive", subject=segment_id)
    hub.link.directory_moved()
    return done


@router.get("/v1/segments/{segment_id}/versions", response_model=list[SegmentVersion])
async def versions(segment_id: str, access: Reader) -> Any:
    return await access.read(lambda tx, _s: segments.versions(tx, segment_id))


@router.get("/v1/segments/{segment_id}/evaluations", response_model=list[SegmentEvaluation])
async def evaluations(segment_id: str, access: Reader,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
    """Every evaluation, newest first: when, which version, how many members, what changed."""
    return await access.read(lambda tx, _s: segments.evaluations(tx, segment_id, limit))


@router.get("/v1/segments/{segment_id}/members", response_model=list[SegmentMember])
async def members(segment_id: str, access: Reader,
                  after: Annotated[str, Query(max_length=64)] = "",
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
    """The segment's members inside the caller's scope, by id (``after`` pages on)."""
    return await access.read(
        lambda tx, scope: segment_reads.members(tx, scope, segment_id, after, limit))


@router.get("/v1/segments/{segment_id}/members.csv", response_class=Response,
            responses={200: {"content": {"text/csv": {"schema": {
                "type": "string", "description": "member_id, member_code, since (UTC)"}}}}})
async def members_csv(segment_id: str, hub: HubDep, access: Exporter) -> Response:
    """The segment's members in the caller's scope as CSV (ids and member codes, no personal
    data), at most ``[exports] max_rows``; written to the audit log."""
    cap = hub.config.exports.max_rows
    rows = await access.read(lambda tx, scope: segment_reads.members(
        tx, scope, segment_id, "", cap + 1))
    if len(rows) > cap:
        raise ServiceError("export_too_large", f"the segment holds more than {cap} members"
                           " in your scope; ask for a bulk export", 413)
    out = io.StringIO()
    out.write("\ufeff")  # a BOM: spreadsheet programs then read the file as UTF-8
    w = csv.writer(out)
    w.writerow(["member_id", "member_code", "since"])
    for r in rows:
        w.writerow([r["member_id"], r["member_code"],
                    datetime.fromtimestamp(r["since_ms"] / 1000).astimezone(
                        ZoneInfo("UTC")).isoformat(timespec="seconds")])
    await access.audit("segment.export", subject=segment_id, reason=f"{len(rows)} members")
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="segment-{segment_id}.csv"'})


# --- tags ---------------------------------------------------------------------------------------


@router.get("/v1/tags", response_model=list[CatalogTag])
async def catalogue(access: Reader) -> Any:
    return await access.read(lambda tx, _s: tags.catalogue(tx))


@router.put("/v1/tags/{tag}", response_model=list[CatalogTag])
async def define(tag: str, body: TagDefinition, access: Writer) -> Any:
    """A tag in the catalogue (or its group and description changed)."""
    if not 1 <= len(tag) <= 100:
        raise ServiceError("bad_tag", "a tag is 1 to 100 characters", 422)
    await access.write(lambda tx, _s: tags.define(tx, tag, body.group, body.description,
                                                  _who(access), now_ms()))
    await access.audit("tag.define", subject=tag)
    return await access.read(lambda tx, _s: tags.catalogue(tx))


@router.delete("/v1/tags/{tag}", response_model=list[CatalogTag])
async def drop(tag: str, hub: HubDep, access: Writer) -> Any:
    """Out of the catalogue and off the members HQ set it on (409 while a rule keeps it or a
    segment names it)."""
    await access.write(lambda tx, _s: tags.drop(tx, tag, now_ms()))
    await access.audit("tag.drop", subject=tag)
    hub.link.directory_moved()
    hub.scheduler.wake("segments")
    return await access.read(lambda tx, _s: tags.catalogue(tx))


@router.post("/v1/members/tags", response_model=list[str])
async def tag_members(body: MemberTagsRequest, hub: HubDep, access: Writer) -> Any:
    """HQ's tags set on or taken off members (each inside the caller's scope); returns the
    members as they now are."""
    def run(tx: Tx, scope: Scope) -> list[str]:
        for m in body.members:
            in_scope(scope, tx, canonical(tx, m))
        return tags.set_hq(tx, body.members, body.add, body.remove, _who(access), now_ms())

    done = await access.write(run)
    await access.audit("member.tags", subject=",".join(done[:20]),
                       reason=f"+{body.add} -{body.remove} on {len(done)} members")
    hub.link.directory_moved()  # HQ's tags travel to the stores
    hub.scheduler.wake("segments")
    return done


@router.get("/v1/members/{member_id}/tags", response_model=list[MemberTag])
async def member_tags(member_id: str, access: Reader) -> Any:
    """The member's tags with their source (store, hq, rule), who set them and when."""
    return await access.read(lambda tx, scope: segment_reads.member_tags(tx, scope, member_id))


@router.get("/v1/members/{member_id}/lifecycle", response_model=MemberLifecycle)
async def member_lifecycle(member_id: str, access: Reader) -> Any:
    """The member's stage, since when, and every change of stage."""
    return await access.read(
        lambda tx, scope: segment_reads.member_lifecycle(tx, scope, member_id))


@router.get("/v1/members/{member_id}/360", response_model=Member360)
async def member_card(member_id: str, hub: HubDep, access: Reader) -> Any:
    """The member 360 card: everything about the member in one call, as the caller may see
    it (masked below HQ admin; per-store figures of their stores)."""
    card = await access.read(lambda tx, scope: member360.card(
        tx, scope, member_id, rules=hub.config.tiers, now_ms=now_ms(), zone=hub.chain_zone))
    if card["member"]["unmasked"]:
        await access.audit("member.view", subject=card["member"]["member_id"],
                           fields=card["member"]["unmasked"])
    return card
