"""The store registry: who each store is (name, region, time zone, issuing legal entity)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import ValidationError

from hub.api.deps import HubDep, needs
from hub.api.models import RegionView, StoreIn, StoreView
from hub.auth.access import Access
from hub.auth.scope import Scope
from hub.core.db import Tx
from hub.stores import registry
from protocol.errors import ServiceError
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["stores"], route_class=StrictJsonRoute)


def _chain(hub: HubDep) -> tuple[str, str]:
    return hub.config.hub.timezone, hub.config.hub.legal_entity


Reader = Annotated[Access, Depends(needs("stores.read"))]


def _listing(hub: HubDep) -> Any:
    """The stores the caller's scope covers (every store for a scope over all)."""
    zone, entity = _chain(hub)

    def read(tx: Tx, scope: Scope) -> list[dict[str, Any]]:
        mine = scope.store_ids(tx)
        return [s for s in registry.listing(tx, zone, entity)
                if mine is None or s["store_id"] in mine]

    return read


@router.get("/v1/stores", response_model=list[StoreView])
async def stores(hub: HubDep, access: Reader) -> Any:
    return await access.read(_listing(hub))


@router.get("/v1/stores/{store_id}", response_model=StoreView)
async def store(store_id: str, hub: HubDep, access: Reader) -> Any:
    for found in await access.read(_listing(hub)):
        if found["store_id"] == store_id:
            return found
    raise ServiceError("store_not_found", "no store with this id", 404, store_id=store_id)


@router.put("/v1/stores/{store_id}", response_model=StoreView)
async def put_store(store_id: str, body: StoreIn, hub: HubDep,
                    access: Annotated[Access, Depends(needs("stores.write"))]) -> Any:
    """Set a store's name, region, time zone and legal entity (all four: null zone or entity
    is the chain's). A store not heard from yet is registered. A new zone applies to what the
    store sends from now on; rebuild the projections for their rows to follow."""
    try:
        record = registry.StoreRecord(store_id=store_id, **body.model_dump())
    except ValidationError as exc:
        raise ServiceError("invalid_store", str(exc.errors()[0]["msg"]), 422,
                           store_id=store_id) from None
    await hub.set_stores([record])
    return await store(store_id, hub, access)


@router.get("/v1/regions", response_model=list[RegionView])
async def regions(hub: HubDep, access: Reader) -> Any:
    """Each region with its stores (stores without a region are left out), of the stores the
    caller's scope covers."""
    found: dict[str, list[str]] = {}
    for s in await access.read(_listing(hub)):
        if s["region"]:
            found.setdefault(s["region"], []).append(s["store_id"])
    return [{"region": r, "stores": ids} for r, ids in sorted(found.items())]
