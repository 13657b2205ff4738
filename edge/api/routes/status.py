"""Is the gateway up, and how does the store stand (outbox, hub link, campaigns)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from edge.api.deps import Service, Terminal
from edge.api.responses import Health, StoreStatus
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["status"], route_class=StrictJsonRoute)


@router.get("/v1/health", response_model=Health)
async def health(service: Service) -> Any:
    """Liveness, without a token."""
    return {"ok": True, "store_id": service.config.store.store_id}


@router.get("/v1/status", response_model=StoreStatus)
async def status(service: Service, _: Terminal) -> Any:
    """The same figures as ``membergate-edge status``, plus what only this process knows."""
    return await service.status()
