"""RFM runs (``hub.members.rfm``): made on a schedule or on demand, kept, read back; a run's
members and a member's history inside the caller's scope (``hub.reports.rfm_members``)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query

from hub.api.deps import HubDep, needs
from hub.api.models import (
    RfmGroupName,
    RfmHistoryEntry,
    RfmMember,
    RfmRun,
    RfmRunListed,
    RfmRunRequest,
)
from hub.auth.access import Access
from hub.members import rfm
from hub.reports import rfm_members
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["rfm"], route_class=StrictJsonRoute)
Runner = Annotated[Access, Depends(needs("rfm.run"))]
Reader = Annotated[Access, Depends(needs("members.read"))]
Score = Annotated[int | None, Query(ge=0, le=5)]


@router.post("/v1/rfm/runs", status_code=201, response_model=RfmRun)
async def run(body: RfmRunRequest, hub: HubDep, access: Runner) -> Any:
    """Run RFM now over every member (projections caught up first) and keep the run."""
    as_of = body.as_of or (datetime.now(ZoneInfo(hub.chain_zone)).date() - timedelta(days=1))
    params = rfm.RfmParams(as_of=as_of, window_days=body.window_days, f_measure=body.f_measure,
                           thresholds=body.thresholds, high_from=body.high_from)
    run_id = await hub.run_rfm(params)
    await access.audit("rfm.run", subject=run_id, reason=params.model_dump_json())
    return await access.read(lambda tx, _scope: rfm.get(tx, run_id))


@router.get("/v1/rfm/runs", response_model=list[RfmRunListed])
async def runs(access: Runner, limit: Annotated[int, Query(ge=1, le=500)] = 100) -> Any:
    """The kept runs, newest first."""
    return await access.read(lambda tx, _scope: rfm.runs(tx, limit))


@router.get("/v1/rfm/runs/{run_id}", response_model=RfmRun)
async def one(run_id: str, access: Runner) -> Any:
    return await access.read(lambda tx, _scope: rfm.get(tx, run_id))


@router.get("/v1/rfm/runs/{run_id}/grid", response_model=list[list[int]])
async def grid(run_id: str, access: Runner) -> Any:
    """Members per R score (rows) and F score (columns), 0..5 each (0: no purchase in the
    window): the R×F grid."""
    return await access.read(lambda tx, _scope: rfm.rf_grid(tx, run_id))


@router.get("/v1/rfm/runs/{run_id}/members", response_model=list[RfmMember])
async def run_members(run_id: str, access: Reader, r: Score = None, f: Score = None,
                      m: Score = None,
                      group: Annotated[str | None, Query(min_length=3, max_length=4)] = None,
                      was_group: Annotated[str | None,
                                           Query(min_length=3, max_length=4)] = None,
                      after: Annotated[str, Query(max_length=64)] = "",
                      limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
    """The run's members inside the caller's scope, by member id (``after`` pages on);
    ``was_group``: those who were in that group at the run before."""
    scores = {k: v for k, v in (("r", r), ("f", f), ("m", m)) if v is not None}
    return await access.read(lambda tx, scope: rfm_members.members(
        tx, scope, run_id, scores=scores, group=group, after=after, limit=limit,
        was_group=was_group))


@router.get("/v1/members/{member_id}/rfm", response_model=list[RfmHistoryEntry])
async def member_history(member_id: str, access: Reader) -> Any:
    """The member's scores in every kept run, oldest first (404 outside the scope)."""
    return await access.read(lambda tx, scope: rfm_members.history(tx, scope, member_id))


Group = Literal["HHH", "HLH", "LHH", "LLH", "HHL", "HLL", "LHL", "LLL"]


@router.put("/v1/rfm/groups/{group}", response_model=dict[str, str])
async def rename_group(group: Group, body: RfmGroupName, access: Runner) -> Any:
    """The chain's name for an RFM group (R, F, M high or low); every run shows it."""
    def rename(tx: Any, _scope: Any) -> dict[str, str]:
        tx.execute("INSERT INTO rfm_group_names(grp, name) VALUES (?, ?) ON CONFLICT(grp)"
                   " DO UPDATE SET name = excluded.name", (group, body.name))
        return rfm.group_names(tx)

    names = await access.write(rename)
    await access.audit("rfm.rename", subject=group, reason=body.name)
    return names
