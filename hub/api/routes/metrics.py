"""``/metrics`` for Prometheus: the hub's merge, the fleet's lag, refusals, jobs, requests."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from hub.api.deps import HubDep, needs
from hub.auth.access import Access
from protocol.http_errors import StrictJsonRoute
from protocol.metrics import Scrape

router = APIRouter(tags=["status"], route_class=StrictJsonRoute)
TEXT: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}}


@router.get("/metrics", response_class=Response, responses=TEXT)
async def metrics(hub: HubDep, request: Request,
                  _: Annotated[Access, Depends(needs("metrics.read"))]) -> Response:
    status = await hub.status()
    stores = status["stores"]
    ingest = status["ingest"]
    s = Scrape("membergate_hub")
    s.counter("applied_events_total", "events applied to the hub's books",
              status["applied_events"])
    s.counter("duplicate_events_total", "events received again and not applied twice",
              status["duplicate_events"])
    s.counter("gaps_total", "batches that came before the ones they follow",
              status["gaps"])
    s.counter("received_batches_total", "uplink batches taken off the broker",
              ingest["received_batches"])
    s.counter("refusals_total", "uplink messages refused, by reason", by="reason",
              values=status["refused"])
    s.gauge("batches_per_commit", "uplink batches per merge transaction (recent)",
            ingest["batches_per_commit"])
    s.gauge("broker_connected", "1 while the hub is connected to the broker",
            1 if status["broker"]["connected"] else 0)
    s.gauge("store_lag_events", "events a store has recorded that the hub has not merged",
            by="store", values={x["store_id"]: x["lag_events"] for x in stores})
    s.gauge("store_outbox_depth", "events waiting in a store's outbox (as it last reported)",
            by="store", values={x["store_id"]: x["outbox_depth"] for x in stores
                                if x["outbox_depth"] is not None})
    s.gauge("store_last_seen_seconds", "seconds since the hub last heard from a store",
            by="store", values={x["store_id"]: x["last_seen_s_ago"] for x in stores
                                if x["last_seen_s_ago"] is not None})
    projections = status["projections"]
    s.gauge("projection_lag_events", "logged events a projection has not read yet",
            by="projection", values={p["name"]: p["lag_events"] for p in projections})
    s.gauge("projection_lag_seconds", "at most this stale: 0 at the head of the log",
            by="projection", values={p["name"]: p["lag_s"] for p in projections
                                     if p["lag_s"] is not None})
    s.counter("job_failures_total", "scheduled job runs that failed", by="job",
              values={name: j["failures"] for name, j in status["jobs"].items()})
    return s.response(request.app.state.metrics)
