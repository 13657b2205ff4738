"""Durable idempotency keys: the answer to a mutating call is stored with the change it made."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import UTC, datetime
from typing import Any

from edge.errors import EdgeError, invalid

MAX_KEY_LEN = 128


def check_key(key: str | None) -> str:
    if not key:
        raise EdgeError("missing_idempotency_key",
                        "mutating calls need an Idempotency-Key header", 400)
    if len(key) > MAX_KEY_LEN or not key.isprintable():
        raise invalid("invalid_idempotency_key", f"Idempotency-Key of 1..{MAX_KEY_LEN} printable"
                      " characters")
    return key


def request_hash(operation: str, request: Any) -> str:
    blob = json.dumps([operation, request], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def replay(
    conn: sqlite3.Connection, key: str, terminal_id: str, operation: str, req_hash: str
) -> Any | None:
    """The stored answer for ``key``, or None if it is new. A reused key with another request
    is refused: it would otherwise silently answer for something the POS did not ask."""
    row = conn.execute(
        "SELECT terminal_id, operation, request_hash, response FROM idempotency"
        " WHERE idem_key = ?", (f"{terminal_id}:{key}",),
    ).fetchone()
    if row is None:
        return None
    if row["operation"] != operation or row["request_hash"] != req_hash:
        raise invalid("idempotency_key_reused",
                      "this Idempotency-Key was used for a different request")
    return json.loads(row["response"])


def remember(
    conn: sqlite3.Connection, key: str, terminal_id: str, operation: str, req_hash: str,
    response: Any,
) -> None:
    conn.execute(
        "INSERT INTO idempotency(idem_key, terminal_id, operation, request_hash, status,"
        " response, created_at) VALUES (?, ?, ?, ?, 200, ?, ?)",
        (f"{terminal_id}:{key}", terminal_id, operation, req_hash, json.dumps(response),
         datetime.now(UTC).isoformat()),
    )
