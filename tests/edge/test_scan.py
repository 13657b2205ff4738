"""Scanned codes at a terminal: products by barcode, member and coupon QRs, bad barcodes."""

from __future__ import annotations

import httpx
import pytest

from edge import demo, products
from edge.service import EdgeService
from protocol.ids import member_qr
from tests.edge import invariants
from tests.edge.conftest import register


@pytest.mark.parametrize(("code", "ok"), [
    ("6901234567892", True), ("4006381333931", True), ("96385074", True),
    ("036000291452", True), ("6901234567893", False), ("96385075", False),
    ("12345", False), ("690123456789a", False), ("６９０１２３４５６７８９２", False),
])
def test_gtin_check_digit(code: str, ok: bool) -> None:
    assert products.gtin_ok(code) is ok


async def _catalogue(service: EdgeService) -> None:
    await service.db.write(lambda c: products.upsert(c, demo.demo_products(), "CNY"))


async def test_scanning_products_fills_the_open_sale(client: httpx.AsyncClient,
                                                     service: EdgeService) -> None:
    await _catalogue(service)
    r = await client.post("/v1/scan", json={"code": "6901234567892"})
    assert r.status_code == 200, r.text
    assert r.json()["action"] == "product_added"
    sale = r.json()["sale"]
    r = await client.post("/v1/scan", json={"code": "6901234567892"})
    again = r.json()["sale"]
    assert again["sale_id"] == sale["sale_id"]
    assert [(ln["sku"], ln["qty"]) for ln in again["lines"]] == [("6901234567892", 2)]
    assert again["total"] == 2_500
    m = await register(service, "13500000001")
    r = await client.post("/v1/scan", json={"code": member_qr(m["member_code"])})
    assert r.json()["action"] == "member_identified"
    assert r.json()["sale"]["member_id"] == m["member_id"]


async def test_bad_barcodes_change_nothing(client: httpx.AsyncClient,
                                           service: EdgeService) -> None:
    await _catalogue(service)
    before = invariants.snapshot(service.config.database.path)
    r = await client.post("/v1/scan", json={"code": "6901234567893"})  # wrong check digit
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_barcode"
    r = await client.post("/v1/scan", json={"code": "4006381333931"})  # valid, not sold here
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_product"
    r = await client.post("/v1/scan", json={"code": "MGM:000000000000"})
    assert r.status_code in (404, 422)
    assert service.carts.open_count() <= 1
    assert invariants.snapshot(service.config.database.path) == before


async def test_catalogue_upload_is_all_or_nothing(client: httpx.AsyncClient,
                                                  service: EdgeService) -> None:
    good = {"sku": "6901234567908", "name": "薯片", "category": "snacks", "unit_price": 650}
    bad = {"sku": "6901234567909", "name": "x", "category": "snacks", "unit_price": 650}
    r = await client.put("/v1/products", json={"products": [good, bad]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_barcode"
    assert (await client.get("/v1/products/6901234567908")).status_code == 404
    r = await client.put("/v1/products", json={"products": [good]})
    assert r.json() == {"upserted": 1}
    assert (await client.get("/v1/products/6901234567908")).json()["unit_price"] == 650
    r = await client.put("/v1/products", json={"products": [{**good, "unit_price": -1}]})
    assert r.status_code == 422


def test_csv_prices_in_units_or_minor_units() -> None:
    rows = products.parse_csv(
        "sku,name,category,unit_price\nA1,Tea,drinks,12.50\nB2,Pen,office,300\n")
    import sqlite3

    from edge.db import migrate
    conn = sqlite3.connect(":memory:")
    conn.row_factory = sqlite3.Row
    migrate(conn)
    assert products.upsert(conn, rows, "CNY") == 2
    assert products.get(conn, "A1")["unit_price"] == 1_250
    assert products.get(conn, "B2")["unit_price"] == 300
    with pytest.raises(Exception, match="not a price"):
        products.upsert(conn, [{"sku": "C", "name": "c", "category": "x",
                                "unit_price": "1.234"}], "CNY")
