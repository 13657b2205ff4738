"""Sales at a till: open, identify the member, lines, coupons, scans, quote, finalize, void."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from edge.api import requests as m
from edge.api.deps import IdemKey, Service, Terminal
from edge.api.identify import one_identifier
from edge.api.responses import Receipt, SaleView, ScanResult, Voided
from edge.checkout import TenderRequest
from edge.scan import apply_scan
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["sales"], route_class=StrictJsonRoute)
LinePath = Annotated[int, Path(ge=1, le=10_000)]


@router.post("/v1/scan", response_model=ScanResult)
async def scan(body: m.ScanIn, service: Service, terminal: Terminal) -> Any:
    """A code read at this terminal: a member QR identifies, a coupon QR applies, a product
    barcode adds the product to the terminal's open sale (opening one if needed)."""
    return await apply_scan(service, terminal, body.code)


@router.post("/v1/sales", status_code=201, response_model=SaleView)
async def open_sale(service: Service, terminal: Terminal,
                    body: m.OpenSale | None = None) -> Any:
    """A new sale on this terminal; ``cashier_id`` and ``guide_id`` (optional) say who sells
    it, and reach HQ with the sale."""
    who = body or m.OpenSale()
    return await service.open_sale(terminal, cashier_id=who.cashier_id, guide_id=who.guide_id)


@router.get("/v1/sales/{sale_id}", response_model=SaleView)
async def sale(sale_id: str, service: Service, terminal: Terminal) -> Any:
    return await service.sale_view(sale_id, terminal)


@router.get("/v1/sales/{sale_id}/quote", response_model=SaleView)
async def quote(sale_id: str, service: Service, terminal: Terminal) -> Any:
    """Promotions, tier discount, points to earn, what points and stored value can pay."""
    return await service.sale_view(sale_id, terminal)


@router.post("/v1/sales/{sale_id}/member", response_model=SaleView)
async def identify(sale_id: str, body: m.Identify, service: Service, terminal: Terminal,
                   key: IdemKey = None) -> Any:
    by, value = one_identifier(**body.model_dump())
    return await service.identify_on_sale(sale_id, terminal, key, by, value)


@router.post("/v1/sales/{sale_id}/lines", response_model=SaleView)
async def add_line(sale_id: str, body: m.AddLine, service: Service, terminal: Terminal,
                   key: IdemKey = None) -> Any:
    return await service.add_line(sale_id, terminal, key, sku=body.sku, name=body.name,
                                  category=body.category, qty=body.qty,
                                  unit_price=body.unit_price)


@router.patch("/v1/sales/{sale_id}/lines/{line_no}", response_model=SaleView)
async def change_line(sale_id: str, line_no: LinePath, body: m.ChangeLine, service: Service,
                      terminal: Terminal, key: IdemKey = None) -> Any:
    return await service.set_qty(sale_id, terminal, key, line_no, body.qty)


@router.delete("/v1/sales/{sale_id}/lines/{line_no}", response_model=SaleView)
async def remove_line(sale_id: str, line_no: LinePath, service: Service, terminal: Terminal,
                      key: IdemKey = None) -> Any:
    return await service.remove_line(sale_id, terminal, key, line_no)


@router.post("/v1/sales/{sale_id}/coupons", response_model=SaleView)
async def add_coupon(sale_id: str, body: m.ApplyCoupon, service: Service, terminal: Terminal,
                     key: IdemKey = None) -> Any:
    return await service.add_coupon(sale_id, terminal, key, body.code)


@router.delete("/v1/sales/{sale_id}/coupons/{code}", response_model=SaleView)
async def remove_coupon(sale_id: str, code: str, service: Service, terminal: Terminal,
                        key: IdemKey = None) -> Any:
    return await service.remove_coupon(sale_id, terminal, key, code)


@router.post("/v1/sales/{sale_id}/void", response_model=Voided)
async def void(sale_id: str, service: Service, terminal: Terminal) -> Any:
    return await service.void_sale(sale_id, terminal)


@router.post("/v1/sales/{sale_id}/finalize", response_model=Receipt)
async def finalize(sale_id: str, body: m.Finalize, service: Service, terminal: Terminal,
                   key: IdemKey = None) -> Any:
    """Pay with the tenders given; committed with its ledger and outbox rows before this
    answers. A retry with the same key gets the first answer."""
    tenders = [TenderRequest(kind=t.kind, amount=t.amount, points=t.points,
                             sv_order=t.sv_order, reference=t.reference)
               for t in body.tenders]
    return await service.finalize(sale_id, terminal, key, tenders, cashier_id=body.cashier_id,
                                  guide_id=body.guide_id, pin=body.pin)
