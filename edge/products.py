"""The store's product catalogue: what a scanned barcode is, and what it costs.

Barcodes that carry a GTIN check digit (EAN-8, UPC-A, EAN-13, GTIN-14) are checked before they
are looked up, so a misread is refused as a misread instead of as an unknown product.
"""

from __future__ import annotations

import csv
import io
import sqlite3
from datetime import UTC, datetime
from typing import Any

from edge import paging
from edge.errors import invalid, not_found
from protocol.money import MAX_AMOUNT, parse_amount

GTIN_LENGTHS = (8, 12, 13, 14)


def gtin_ok(code: str) -> bool:
    """True when ``code`` is a GTIN with a correct check digit (mod 10, weights 3/1 from the
    right, the check digit excluded)."""
    if len(code) not in GTIN_LENGTHS or not code.isdigit() or not code.isascii():
        return False
    body, check = code[:-1], int(code[-1])
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10 == check


def looks_like_gtin(code: str) -> bool:
    return code.isascii() and code.isdigit() and len(code) in GTIN_LENGTHS


def get(conn: sqlite3.Connection, sku: str) -> dict[str, Any]:
    if looks_like_gtin(sku) and not gtin_ok(sku):
        raise invalid("invalid_barcode", f"{sku} is not a valid barcode (check digit)",
                      barcode=sku)
    row = conn.execute("SELECT sku, name, category, unit_price FROM products WHERE sku = ?",
                       (sku,)).fetchone()
    if row is None:
        raise not_found("unknown_product", f"no product with barcode {sku}", sku=sku)
    return dict(row)


def listing(conn: sqlite3.Connection, *, sku_prefix: str, category_prefix: str, limit: int,
            offset: int) -> dict[str, Any]:
    """Products by sku, those whose sku and category start with the prefixes given."""
    where = ("sku >= :sku AND substr(sku, 1, length(:sku)) = :sku"
             " AND substr(category, 1, length(:cat)) = :cat")
    params = {"sku": sku_prefix, "cat": category_prefix, "limit": limit, "offset": offset}
    rows = [dict(r) for r in conn.execute(
        f"SELECT sku, name, category, unit_price FROM products WHERE {where}"
        " ORDER BY sku LIMIT :limit OFFSET :offset", params)]
    total = conn.execute(f"SELECT count(*) FROM products WHERE {where}", params).fetchone()[0]
    return {"products": rows, "total": total,
            "next_offset": paging.next_offset(offset, len(rows), total)}


def upsert(conn: sqlite3.Connection, rows: list[dict[str, Any]], currency: str) -> int:
    """Add or update products; every row is checked first, so a bad file changes nothing."""
    now = datetime.now(UTC).isoformat()
    checked = []
    for n, r in enumerate(rows, start=1):
        sku, name, category = (str(r.get(k, "")).strip() for k in ("sku", "name", "category"))
        price = r.get("unit_price")
        if not sku or len(sku) > 64 or not name or len(name) > 200 or not category:
            raise invalid("invalid_product", f"row {n}: sku, name and category are required")
        if looks_like_gtin(sku) and not gtin_ok(sku):
            raise invalid("invalid_barcode", f"row {n}: {sku} has a wrong check digit")
        if isinstance(price, str):
            try:  # "12.50" is a price in currency units, "1250" in minor units
                price = parse_amount(price, currency) if "." in price else int(price)
            except ValueError:
                raise invalid("invalid_amount", f"row {n}: {price!r} is not a price") from None
        if isinstance(price, bool) or not isinstance(price, int) or not 0 < price <= MAX_AMOUNT:
            raise invalid("invalid_amount", f"row {n}: unit_price must be minor units above 0")
        checked.append((sku, name, category, price, now))
    conn.executemany(
        "INSERT INTO products(sku, name, category, unit_price, updated_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT(sku) DO UPDATE SET name = excluded.name, category = excluded.category,"
        " unit_price = excluded.unit_price, updated_at = excluded.updated_at", checked)
    return len(checked)


def parse_csv(text: str) -> list[dict[str, Any]]:
    """``sku,name,category,unit_price`` with a header row; prices in minor units or as 12.50."""
    return list(csv.DictReader(io.StringIO(text)))
