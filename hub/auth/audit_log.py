"""The append-only log of who saw, revealed or exported whose personal data, and of refused
attempts (a wrong password, a request outside one's scope). Rows are only ever inserted."""

from __future__ import annotations

import json
from typing import Any

from hub.core.db import Tx
from protocol.ids import uuid7


def append(tx: Tx, *, at_ms: int, user_id: str | None, username: str, action: str,
           subject: str | None = None, fields: list[str] | None = None, reason: str = "",
           remote: str | None = None, outcome: str = "ok") -> None:
    tx.execute(
        "INSERT INTO audit_log(entry_id, at_ms, user_id, username, action, subject, fields,"
        " reason, remote, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (uuid7(), at_ms, user_id, username, action, subject, json.dumps(sorted(fields or [])),
         reason, remote, outcome))


def page(tx: Tx, *, limit: int, before_ms: int | None = None,
         subject: str | None = None) -> list[dict[str, Any]]:
    """Newest first; ``subject``: the entries about one member."""
    where = ["at_ms < ?"]
    params: list[object] = [before_ms if before_ms is not None else 2**62]
    if subject is not None:
        where.append("subject = ?")
        params.append(subject)
    rows = tx.all("SELECT entry_id, at_ms, user_id, username, action, subject, fields, reason,"
                  f" remote, outcome FROM audit_log WHERE {' AND '.join(where)}"
                  " ORDER BY at_ms DESC, entry_id DESC LIMIT ?", (*params, limit))
    return [{"entry_id": r[0], "at_ms": int(r[1]), "user_id": r[2], "username": r[3],
             "action": r[4], "subject": r[5], "fields": json.loads(r[6]), "reason": r[7],
             "remote": r[8], "outcome": r[9]} for r in rows]
