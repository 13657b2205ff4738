"""HQ requests applied once: an ``Idempotency-Key`` and the answer it got, kept with the effect.

A client that did not hear back (a timeout, a hub killed mid-request) sends the same request
with the same key again. The key, a hash of what was asked and the answer are committed in the
transaction that made the effect, so after a crash either both are there (the retry gets the
first answer) or neither is (the retry applies it, once). A refusal is an answer too: a retry
of a refused request is refused the same way, though the state may have moved since. The same
key with another request is a client error, refused without effect.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any, NamedTuple

from hub.core.db import Tx
from protocol.errors import ServiceError, error_body


class Answer(NamedTuple):
    status: int
    body: dict[str, Any]
    replayed: bool = False  # the stored answer of an earlier request with this key


def request_hash(operation: str, target: str, body: dict[str, Any]) -> str:
    """What a request asked for, as a stable digest (the same JSON whatever the key order)."""
    text = json.dumps([operation, target, body], sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def once(tx: Tx, key: str, digest: str, now_ms: int,
         apply: Callable[[Tx], dict[str, Any]], status: int = 201) -> Answer:
    """``apply``'s answer for a new ``key``, kept with its effect; the kept answer for a key
    seen before with the same ``digest``. ``apply`` raising ``ServiceError`` is a refusal:
    whatever it wrote is rolled back and the refusal is the key's answer. Raises
    ``ServiceError`` (409) for a key seen before with another request."""
    row = tx.one("SELECT request_hash, status, response FROM hq_requests WHERE idem_key = ?",
                 (key,))
    if row is not None:
        if row[0] != digest:
            raise ServiceError("idempotency_key_reused",
                               "this Idempotency-Key was used for another request", 409)
        return Answer(int(row[1]), json.loads(row[2]), replayed=True)
    tx.execute("SAVEPOINT hq_request")
    try:
        answer = Answer(status, apply(tx))
    except ServiceError as exc:
        tx.execute("ROLLBACK TO SAVEPOINT hq_request")
        answer = Answer(exc.status, error_body(exc.code, exc.message, exc.details))
    tx.execute("RELEASE SAVEPOINT hq_request")
    tx.execute("INSERT INTO hq_requests(idem_key, request_hash, status, response, created_ms)"
               " VALUES (?, ?, ?, ?, ?)",
               (key, digest, answer.status, json.dumps(answer.body, ensure_ascii=False), now_ms))
    return answer


def raise_refusal(answer: Answer) -> dict[str, Any]:
    """The body of a successful answer; a refusal raised again as the ``ServiceError`` it was."""
    if answer.status < 400:
        return answer.body
    error = answer.body["error"]
    raise ServiceError(error["code"], error["message"], answer.status,
                       **(error.get("details") or {}))
