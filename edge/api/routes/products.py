"""The store's catalogue."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from edge import paging, products
from edge.api import requests as m
from edge.api.deps import Limit, Offset, Prefix, Service, Terminal
from edge.api.responses import Upserted
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["products"], route_class=StrictJsonRoute)


@router.put("/v1/products", response_model=Upserted)
async def put_products(body: m.ProductsIn, service: Service, _: Terminal) -> Any:
    """Add or update catalogue entries (all or nothing)."""
    rows = [p.model_dump() for p in body.products]
    currency = service.config.store.currency
    count = await service.db.write(lambda conn: products.upsert(conn, rows, currency))
    return {"upserted": count}


@router.get("/v1/products", response_model=m.ProductsPage)
async def list_products(service: Service, _: Terminal, sku: Prefix = "", category: Prefix = "",
                        limit: Limit = paging.DEFAULT_LIMIT, offset: Offset = 0) -> Any:
    """The catalogue by sku; ``sku`` and ``category`` filter by prefix."""
    return await service.db.read(lambda conn: products.listing(
        conn, sku_prefix=sku, category_prefix=category, limit=limit, offset=offset))


@router.get("/v1/products/{sku}", response_model=m.Product)
async def get_product(sku: str, service: Service, _: Terminal) -> Any:
    return await service.db.read(lambda conn: products.get(conn, sku))
