"""The lanes' devices: health, simulated input for POS development, receipt reprints."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from edge.api import requests as m
from edge.api.deps import Service, Terminal
from edge.api.responses import Devices, Done, PrintJob
from edge.errors import EdgeError
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["devices"], route_class=StrictJsonRoute)


@router.get("/v1/devices", response_model=Devices)
async def devices(service: Service, _: Terminal) -> Any:
    """Every device of every lane with its health (connected, error, paper low / out)."""
    return {"devices": [h.model_dump() for h in service.device_health()]}


def _lane(service: Service, terminal: str) -> Any:
    return service.devices.by_terminal.get(terminal) if service.devices else None


@router.post("/v1/devices/simulated/scan", response_model=Done)
async def simulated_scan(body: m.SimulatedScan, service: Service, terminal: Terminal) -> Any:
    """Type a scan on this terminal's simulated scanner (lanes with ``simulated = true``)."""
    lane = _lane(service, terminal)
    if lane is None or lane.sim_scanner is None:
        raise EdgeError("no_simulated_scanner", "this terminal has no simulated scanner", 409)
    await lane.sim_scanner.scan(body.code)
    return {"ok": True}


@router.post("/v1/devices/simulated/tap", response_model=Done)
async def simulated_tap(body: m.SimulatedTap, service: Service, terminal: Terminal) -> Any:
    """Put a card on this terminal's simulated reader."""
    lane = _lane(service, terminal)
    if lane is None or lane.sim_reader is None:
        raise EdgeError("no_simulated_reader", "this terminal has no simulated reader", 409)
    await lane.sim_reader.tap(body.card_uid, member_number=body.member_number)
    return {"ok": True}


@router.post("/v1/sales/{sale_id}/reprint", status_code=202, response_model=PrintJob)
async def reprint(sale_id: str, service: Service, terminal: Terminal) -> Any:
    """Print a finalized sale's receipt again (marked REPRINT) on this terminal's printer.
    The only way a receipt prints twice."""
    if service.devices is None:
        raise EdgeError("no_printer", "this terminal has no receipt printer", 409)
    return {"job_id": await service.devices.reprint(terminal, sale_id)}
