"""Finalized sales: one receipt, or a day's sales and refunds at this store."""

from __future__ import annotations

import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from edge import paging
from edge.api import requests as m
from edge.api.deps import Limit, Offset, Service, Terminal
from edge.api.responses import Receipt
from edge.errors import EdgeError
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["sales"], route_class=StrictJsonRoute)
DAY = r"^\d{4}-\d{2}-\d{2}$"


@router.get("/v1/receipts", response_model=m.DayReceipts)
async def day_receipts(service: Service, _: Terminal, date: Annotated[str, Query(pattern=DAY)],
                       limit: Limit = paging.DEFAULT_LIMIT, offset: Offset = 0) -> Any:
    """The sales finalized and refunds made at this store on ``date`` (YYYY-MM-DD, the
    store's calendar), oldest first, with the day's totals."""
    try:
        on = datetime.date.fromisoformat(date)
    except ValueError:
        raise EdgeError("invalid_date", f"{date} is not a date", 422, date=date) from None
    return await service.day_receipts(on, limit=limit, offset=offset)


@router.get("/v1/receipts/{sale_id}", response_model=Receipt)
async def receipt(sale_id: str, service: Service, _: Terminal) -> Any:
    return await service.receipt(sale_id)
