"""Bulk member exports, with a second person's approval above a size (HQ.md principle 6, PIPL).

An export is a request first (``export_requests``): who asked, for which members (the caller's
scope, optionally one store), how many rows, why. Up to ``approval_above`` rows it is approved
as it is made; above, it waits until another user whose role may approve exports approves it
— never the requester. The file is made when the requester downloads it, once, from the
requester's scope at that moment and no more rows than were approved; personal data is masked
as for the requester on screen. Every step, and every refused one, is in the audit log.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from hub.auth.scope import Scope, mask_birthday, mask_name, mask_phone
from hub.core.db import Tx
from protocol.errors import ServiceError
from protocol.ids import uuid7

COLUMNS = ("member_id", "member_code", "name", "phone", "birthday", "tier", "home_store",
           "points", "stored_value")
PERSONAL_COLUMNS = ["birthday", "name", "phone"]


def _members_sql(scope: Scope, store_id: str | None) -> tuple[str, tuple[object, ...]]:
    where, params = scope.member_filter("m")
    if store_id is not None:
        where += " AND m.home_store = ?"
        params = (*params, store_id)
    return f"FROM members m WHERE m.merged_into IS NULL AND {where}", params


def _check_store(tx: Tx, scope: Scope, store_id: str | None) -> None:
    if store_id is None:
        return
    where, params = scope.store_filter("s")
    if tx.scalar(f"SELECT 1 FROM stores s WHERE s.store_id = ? AND {where}",
                 (store_id, *params)) is None:  # outside the scope: as for no store
        raise ServiceError("store_not_found", "no store with this id", 404)


def count(tx: Tx, scope: Scope, store_id: str | None) -> int:
    """Members the export would hold (a reader, bound by the scope)."""
    _check_store(tx, scope, store_id)
    sql, params = _members_sql(scope, store_id)
    return int(tx.scalar(f"SELECT count(*) {sql}", params, default=0))


def create(tx: Tx, scope: Scope, *, store_id: str | None, rows: int, reason: str,
           approval_above: int, max_rows: int, now: int) -> dict[str, Any]:
    if rows > max_rows:
        raise ServiceError("export_too_large", f"{rows} members: an export holds at most"
                           f" {max_rows}; export one store at a time", 422,
                           rows=rows, max_rows=max_rows)
    user = scope.principal.user
    state = "pending" if rows > approval_above else "approved"
    export_id = uuid7()
    tx.execute("INSERT INTO export_requests(export_id, user_id, username, store_id, rows_asked,"
               " reason, state, created_ms, masked) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
               (export_id, user.user_id, user.username, store_id, rows, reason, state, now,
                int(scope.role.masked)))
    return get(tx, export_id)


_SELECT = ("SELECT export_id, username, store_id, rows_asked, reason, state, created_ms,"
           " decided_by, decided_ms, decision_reason, masked, user_id FROM export_requests")


def _request(row: Any) -> dict[str, Any]:
    return {"export_id": row[0], "requested_by": row[1], "store_id": row[2],
            "rows": int(row[3]), "reason": row[4], "state": row[5], "created_ms": int(row[6]),
            "decided_by": row[7], "decided_ms": None if row[8] is None else int(row[8]),
            "decision_reason": row[9], "masked": bool(row[10]), "user_id": row[11]}


def get(tx: Tx, export_id: str) -> dict[str, Any]:
    row = tx.one(f"{_SELECT} WHERE export_id = ?", (export_id,))
    if row is None:
        raise ServiceError("export_not_found", "no export with this id", 404)
    return _request(row)


def _visible(scope: Scope, request: dict[str, Any]) -> bool:
    """The requester sees their own; an approver sees every request."""
    return (request["user_id"] == scope.principal.user.user_id
            or scope.role.allows("exports.approve"))


def listing(tx: Tx, scope: Scope, *, limit: int = 200) -> list[dict[str, Any]]:
    rows = tx.all(f"{_SELECT} ORDER BY created_ms DESC, export_id DESC LIMIT ?", (limit,))
    return [r for r in map(_request, rows) if _visible(scope, r)]


def decide(tx: Tx, scope: Scope, export_id: str, *, approve: bool, reason: str,
           now: int) -> dict[str, Any]:
    """Approve or reject a pending export; a requester cannot decide their own."""
    request = get(tx, export_id)
    if request["user_id"] == scope.principal.user.user_id:
        raise ServiceError("four_eyes_required", "an export is approved by someone other than"
                           " the person who asked for it", 403)
    if request["state"] != "pending":
        raise ServiceError("export_not_pending", f"this export is {request['state']}", 409,
                           state=request["state"])
    tx.execute("UPDATE export_requests SET state = ?, decided_by = ?, decided_ms = ?,"
               " decision_reason = ? WHERE export_id = ? AND state = 'pending'",
               ("approved" if approve else "rejected", scope.principal.user.username, now,
                reason, export_id))
    return get(tx, export_id)


def claim(tx: Tx, scope: Scope, export_id: str, now: int) -> dict[str, Any]:
    """The requester takes their approved export (once): it is marked downloaded."""
    request = get(tx, export_id)
    if request["user_id"] != scope.principal.user.user_id:
        raise ServiceError("export_not_found", "no export with this id", 404)
    if request["state"] == "pending":
        raise ServiceError("approval_required", f"{request['rows']} members is above the"
                           " export approval limit: it waits for a second person's approval",
                           409, rows=request["rows"])
    if request["state"] != "approved":
        raise ServiceError("export_not_available", f"this export is {request['state']}", 409,
                           state=request["state"])
    tx.execute("UPDATE export_requests SET state = 'downloaded', downloaded_ms = ?"
               " WHERE export_id = ? AND state = 'approved'", (now, export_id))
    return request


def csv_rows(tx: Tx, scope: Scope, request: dict[str, Any]) -> bytes:
    """The export as CSV (UTF-8 with a byte-order mark, which spreadsheet programs in China
    need to read Chinese names), at most the approved number of rows."""
    sql, params = _members_sql(scope, request["store_id"])
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    rows = tx.all(
        "SELECT m.member_id, m.member_code, m.name, m.phone, m.birthday, m.tier, m.home_store,"
        " coalesce((SELECT sum(s.points) FROM shares s WHERE s.member_id = m.member_id), 0),"
        " coalesce((SELECT sum(s.sv_principal + s.sv_bonus) FROM shares s"
        f" WHERE s.member_id = m.member_id), 0) {sql} ORDER BY m.member_id LIMIT ?",
        (*params, request["rows"]))
    for r in rows:
        name, phone, birthday = r[2] or "", r[3], r[4]
        if request["masked"]:
            name, phone, birthday = mask_name(name), mask_phone(phone), mask_birthday(birthday)
        writer.writerow([r[0], r[1], name, phone or "", birthday or "", r[5], r[6], int(r[7]),
                         int(r[8])])
    return out.getvalue().encode("utf-8")
