"""A report as a file: CSV (one table, UTF-8 with a byte-order mark so that Excel opens Chinese
right) or XLSX (every table a sheet, and a sheet saying what the figures mean and how complete
they are). Money is written in yuan with its two decimals, exactly (``format_amount``: no
float ever holds an amount on the way), ratios as numbers; headers are the reader's labels.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from openpyxl import Workbook

from protocol.errors import ServiceError
from protocol.money import format_amount

CURRENCY = "CNY"  # the chain's: amounts are minor units of it
MAX_ROWS = 100_000  # beyond this an export goes through the approved bulk export

Label = Callable[[str], str]


def rows_of(report: dict[str, Any]) -> int:
    return sum(len(t["rows"]) for t in report["tables"])


def check_size(report: dict[str, Any]) -> None:
    n = rows_of(report)
    if n > MAX_ROWS:
        raise ServiceError("export_too_large", f"{n} rows is more than {MAX_ROWS} in one"
                           " export; narrow the filters or ask for an approved bulk export",
                           413, rows=n)


def _cell(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind in ("money",) and isinstance(value, int):
        return Decimal(format_amount(value, CURRENCY))
    return value


def table(report: dict[str, Any], name: str | None) -> dict[str, Any]:
    tables = report["tables"]
    if not tables:
        raise ServiceError("no_table", "this report has no table", 404)
    if name is None:
        return dict(tables[0])
    for t in tables:
        if t["name"] == name:
            return dict(t)
    raise ServiceError("unknown_table", f"no table {name!r}; one of"
                       f" {', '.join(t['name'] for t in tables)}", 404, part="table")


def to_csv(report: dict[str, Any], name: str | None, label: Label) -> bytes:
    t = table(report, name)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([label(c) for c in t["columns"]])
    for row in t["rows"]:
        writer.writerow(["" if v is None else _cell(v, k) for v, k in zip(row, t["kinds"],
                                                                          strict=True)])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def to_xlsx(report: dict[str, Any], label: Label) -> bytes:
    book = Workbook()
    about = book.active
    assert about is not None
    about.title = label("details")[:31]
    q = report["query"]
    about.append([label(f"report_{report['report']}")])
    about.append([label("start"), q["start"], label("end"), q["end"]])
    for k in ("region", "store_id", "category", "tier", "segment_id"):
        if q.get(k):
            about.append([label(k), q[k]])
    for note in report["notes"]:
        about.append([note])
    done = report["completeness"]
    about.append([label("complete") if done.get("complete") else label("incomplete"),
                  ", ".join(done.get("incomplete_stores", []))])
    for r in done.get("revised", []):
        about.append([label("revised"), r["store_id"], r["day"], r["events"]])
    for t in report["tables"]:
        sheet = book.create_sheet(t["name"][:31])
        sheet.append([label(c) for c in t["columns"]])
        for row in t["rows"]:
            sheet.append([_cell(v, k) for v, k in zip(row, t["kinds"], strict=True)])
        for i, k in enumerate(t["kinds"], start=1):
            fmt = {"money": "#,##0.00", "ratio": "0.00%", "int": "#,##0",
                   "points": "#,##0"}.get(k)
            if fmt:
                for cells in sheet.iter_rows(min_row=2, min_col=i, max_col=i):
                    for c in cells:
                        c.number_format = fmt
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
