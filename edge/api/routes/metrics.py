"""``/metrics`` of the store's gateway for Prometheus: outbox depth, ack lag, the hub link,
refusals, device health and POS request latency. Read at scrape time (``protocol.metrics``):
a checkout pays nothing for being observed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from drivers.base import Health
from edge.api.deps import Service, Terminal
from protocol.http_errors import StrictJsonRoute
from protocol.metrics import Scrape

TEXT: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}}


router = APIRouter(tags=["status"], route_class=StrictJsonRoute)


@router.get("/metrics", response_class=Response, responses=TEXT)
async def metrics(request: Request, service: Service, _: Terminal) -> Response:
    st = await service.status()
    hub = st["hub"]
    s = Scrape("membergate_edge")
    s.gauge("outbox_depth", "events recorded here and not yet acknowledged by the hub",
            st["outbox"]["depth"])
    s.gauge("ack_lag_events", "events recorded here beyond the hub's last ack",
            max(0, st["last_seq"] - hub["acked_seq"]))
    s.gauge("hub_connected", "1 while the store is connected to the hub's broker",
            1 if hub["connected"] else 0)
    s.gauge("members", "members in this store's directory", st["members"])
    s.gauge("open_sales", "baskets open on the tills", (st["live"] or {}).get("open_sales", 0))
    link = service.sync
    s.counter("refusals_total", "messages from the hub this store refused, by reason",
              by="reason", values=dict(link.refused) if link is not None else {})
    health = [(d.device_id, d.kind, h.value, 1 if d.health == h.value else 0)
              for d in service.device_health() for h in Health]
    s.gauge("device_health", "1 for each device's current health", by=(
        "device", "kind", "health"), values={(d, k, h): v for d, k, h, v in health})
    return s.response(request.app.state.metrics)
