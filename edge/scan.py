"""What a scanned code does at a terminal, whether a lane's scanner read it or the POS sends it.

A member QR identifies the member on the terminal's open sale, a coupon QR applies the coupon,
and a product barcode adds the product (one more of it when it is already in the basket). A sale
is opened when none is; a code that cannot be used is refused with the usual error codes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from edge import products
from edge.errors import EdgeError
from protocol.ids import COUPON_QR_PREFIX, MEMBER_QR_PREFIX, uuid7

if TYPE_CHECKING:
    from edge.service import EdgeService


def device_key() -> str:
    """An idempotency key for a change a device made (a scan, a tap): there is no POS retry
    to collapse, so each gets a fresh one."""
    return f"device-{uuid7()}"


async def open_sale_for(service: EdgeService, terminal_id: str) -> str:
    cart = service.carts.latest_open(terminal_id)
    if cart is not None:
        return cart.sale_id
    return str((await service.open_sale(terminal_id))["sale_id"])


async def _on_sale(service: EdgeService, terminal_id: str,
                   act: Callable[[str], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """``act`` on the terminal's open sale, opening one if needed; a sale opened for a scan
    that is then refused is dropped again (a refused scan changes nothing)."""
    opened = service.carts.latest_open(terminal_id) is None
    sid = await open_sale_for(service, terminal_id)
    try:
        return await act(sid)
    except EdgeError:
        if opened:
            await service.void_sale(sid, terminal_id)
        raise


async def apply_scan(service: EdgeService, terminal_id: str, code: str, *,
                     add_products: bool = True) -> dict[str, Any]:
    """Act on ``code``; returns ``{"action", "sale"}`` or raises ``EdgeError``."""
    code = code.strip()
    if code.startswith(MEMBER_QR_PREFIX):
        view = await _on_sale(service, terminal_id, lambda sid: service.identify_on_sale(
            sid, terminal_id, device_key(), "qr", code))
        return {"action": "member_identified", "sale": view}
    if code.startswith(COUPON_QR_PREFIX):
        view = await _on_sale(service, terminal_id, lambda sid: service.add_coupon(
            sid, terminal_id, device_key(), code[len(COUPON_QR_PREFIX):]))
        return {"action": "coupon_applied", "sale": view}
    product = await service.db.read(lambda conn: products.get(conn, code))
    if not add_products:
        return {"action": "product_found", "product": product}
    sid = await open_sale_for(service, terminal_id)
    cart = service.carts.get_open(sid, terminal_id)
    same = next((ln for ln in cart.lines.values() if ln.sku == product["sku"]), None)
    if same is not None:
        view = await service.set_qty(sid, terminal_id, device_key(), same.line_no, same.qty + 1)
    else:
        view = await service.add_line(sid, terminal_id, device_key(), sku=product["sku"],
                                      name=product["name"], category=product["category"],
                                      qty=1, unit_price=product["unit_price"])
    return {"action": "product_added", "sale": view, "product": product}
