"""Refunds of finalized sales, whole or by line."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from edge.api import requests as m
from edge.api.deps import IdemKey, Service, Terminal
from edge.api.responses import Refund
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["refunds"], route_class=StrictJsonRoute)


@router.post("/v1/refunds", status_code=201, response_model=Refund)
async def refund(body: m.RefundIn, service: Service, terminal: Terminal,
                 key: IdemKey = None) -> Any:
    """Points earned are taken back, redeemed points and stored value given back where they
    came from; a refund beyond what is left of the sale is refused."""
    lines = None if body.lines is None else [(ln.line_no, ln.qty) for ln in body.lines]
    return await service.refund(terminal_id=terminal, idem_key=key, sale_id=body.sale_id,
                                lines=lines, cashier_id=body.cashier_id)
