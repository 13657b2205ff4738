from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge import demo
from edge.api import create_app
from edge.checkout import TenderRequest
from edge.config import EdgeConfig
from edge.gateway import StoreGateway
from edge.service import EdgeService

TOKEN = "test-token-pos-1"
TOKEN2 = "test-token-pos-2"
_keys = count(1)


def key() -> str:
    return f"k{next(_keys)}"


def make_config(tmp_path: Path, **over: Any) -> EdgeConfig:
    data: dict[str, Any] = {
        "database": {"path": str(tmp_path / "edge.db")},
        "api": {"tokens": {"POS-1": TOKEN, "POS-2": TOKEN2}},
    }
    data.update(over)
    return EdgeConfig.model_validate(data)


@pytest.fixture
def config(tmp_path: Path) -> EdgeConfig:
    return make_config(tmp_path)


@pytest.fixture
async def service(config: EdgeConfig) -> AsyncIterator[EdgeService]:
    async with StoreGateway(config) as svc:
        await svc.apply_bundle(demo.demo_bundle())
        yield svc


@pytest.fixture
async def client(service: EdgeService) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(service, manage_lifetime=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge",
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        yield c


async def register(svc: EdgeService, phone: str = "13800138000", *, card: str | None = None,
                   birthday: date | None = None, name: str = "Li Lei") -> dict[str, Any]:
    return await svc.register_member(terminal_id="POS-1", idem_key=key(), phone=phone,
                                     name=name, birthday=birthday, card_uid=card)


async def sell(svc: EdgeService, lines: list[tuple[str, str, int, int]], *,
               member_id: str | None = None, tenders: list[TenderRequest] | None = None,
               coupons: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    """Open, fill and finalize a sale; ``lines`` are (sku, category, qty, unit_price)."""
    sale = await svc.open_sale("POS-1")
    sid = sale["sale_id"]
    if member_id:
        svc.carts.get_open(sid).member_id = member_id
    for sku, category, qty, price in lines:
        await svc.add_line(sid, "POS-1", key(), sku=sku, name=sku, category=category, qty=qty,
                           unit_price=price)
    for code in coupons:
        await svc.add_coupon(sid, "POS-1", key(), code)
    if tenders is None:
        q = await svc.sale_view(sid, "POS-1")
        tenders = [TenderRequest(kind="cash", amount=q["total"])]
    return await svc.finalize(sid, "POS-1", key(), tenders)
