"""The durable outbox: every message once, from the transaction that decided to send it to the
provider's receipt.

A message is a row keyed by ``key`` (a journey's ``journey:member:occasion:step``, an API
caller's idempotency key): written in the transaction of the decision, so a decision rolled
back sends nothing and one committed is sent even if the hub dies a moment later; written
twice, it is one message. States::

    pending --(gates pass, claimed)--> sending --(provider took it)--> sent --(receipt)--> delivered
       ^  \\--(quiet hours, channel quota)--> pending, later           \\--(receipt)--> failed
       |   \\--(no consent, over budget, erased, control group)--> suppressed
       +--(provider down: Retry, backed off)--  sending --(Refused, or retried too long)--> dead
    dead / failed --(resend)--> pending

A hub killed while a message is ``sending`` puts it back to ``pending`` at start
(``recover``): the provider may see it twice, with the same key, and dedupes on it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hub.core.db import Tx, in_chunks
from protocol.errors import ServiceError
from protocol.ids import uuid7

STATES = ("pending", "sending", "sent", "delivered", "failed", "suppressed", "dead")
COUNTED = ("sending", "sent", "delivered")  # what a member has been sent, for the budget


@dataclass(frozen=True)
class Message:
    """A message to write to the outbox."""

    key: str
    member_id: str
    channel: str
    purpose: str
    template: str
    params: dict[str, str]
    text: str
    journey_id: str | None = None


def enqueue(tx: Tx, messages: Sequence[Message], now_ms: int, not_before_ms: int = 0) -> int:
    """Write ``messages`` (a key already there is the same message: kept as it is); returns how
    many were new."""
    held: set[str] = set()
    for chunk, marks in in_chunks([m.key for m in messages]):
        held |= {str(k) for (k,) in tx.all(f"SELECT key FROM outbox WHERE key IN ({marks})",
                                           chunk)}
    new = [m for m in messages if m.key not in held]
    tx.executemany(
        "INSERT INTO outbox(message_id, key, member_id, channel, purpose, template, params,"
        " text, journey_id, state, next_ms, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?,"
        " 'pending', ?, ?) ON CONFLICT(key) DO NOTHING",
        [(uuid7(), m.key, m.member_id, m.channel, m.purpose, m.template,
          json.dumps(m.params, ensure_ascii=False, sort_keys=True), m.text, m.journey_id,
          max(now_ms, not_before_ms), now_ms) for m in new])
    return len(new)


def recover(tx: Tx) -> int:
    """At start: messages a killed hub left ``sending`` go out again (same key)."""
    return int(tx.execute("UPDATE outbox SET state = 'pending' WHERE state = 'sending'").rowcount)


_DUE = ("message_id", "key", "member_id", "channel", "purpose", "template", "params", "text",
        "journey_id", "attempts", "created_ms")


def due(tx: Tx, channel: str, now_ms: int, limit: int) -> list[dict[str, Any]]:
    return [dict(zip(_DUE, r, strict=True)) for r in tx.all(
        f"SELECT {', '.join(_DUE)} FROM outbox WHERE channel = ? AND state = 'pending'"
        " AND next_ms <= ? ORDER BY next_ms, message_id LIMIT ?", (channel, now_ms, limit))]


def next_due_ms(tx: Tx, channel: str) -> int | None:
    value = tx.scalar("SELECT min(next_ms) FROM outbox WHERE channel = ? AND state = 'pending'",
                      (channel,))
    return None if value is None else int(value)


def sent_since(tx: Tx, member_ids: list[str], since_ms: int, *,
               purpose: str | None = "marketing", channel: str | None = None) -> dict[str, int]:
    """How many messages (of ``purpose``; None: any) each member was sent after ``since_ms``
    (all channels, or one): what the budget and a channel's quota count."""
    out: dict[str, int] = {}
    extra, params = "", []
    for column, value in (("purpose", purpose), ("channel", channel)):
        if value is not None:
            extra += f" AND {column} = ?"
            params.append(value)
    for chunk, marks in in_chunks(member_ids):
        for member, n in tx.all(
                f"SELECT member_id, count(*) FROM outbox WHERE member_id IN ({marks})"
                f" AND sent_ms > ? AND state IN {COUNTED}{extra} GROUP BY member_id",
                (*chunk, since_ms, *params)):
            out[str(member)] = int(n)
    return out


_LISTED = ("message_id", "key", "member_id", "channel", "purpose", "template", "text",
           "journey_id", "state", "reason", "attempts", "next_ms", "created_ms", "sent_ms",
           "done_ms", "provider_id", "error")


def listing(tx: Tx, *, member_id: str | None = None, state: str | None = None,
            journey_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    where, params = ["1 = 1"], []
    for column, value in (("member_id", member_id), ("state", state),
                          ("journey_id", journey_id)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    rows = tx.all(
        f"SELECT {', '.join(_LISTED)} FROM outbox WHERE {' AND '.join(where)}"
        " ORDER BY created_ms DESC, message_id DESC LIMIT ?", (*params, limit))
    return [dict(zip(_LISTED, r, strict=True)) for r in rows]


def counts(tx: Tx) -> dict[str, dict[str, int]]:
    """Messages per channel and state (the status page, metrics)."""
    out: dict[str, dict[str, int]] = {}
    for channel, state, n in tx.all("SELECT channel, state, count(*) FROM outbox"
                                    " GROUP BY channel, state"):
        out.setdefault(str(channel), {})[str(state)] = int(n)
    return out


def resend(tx: Tx, *, message_id: str | None = None, channel: str | None = None,
           now_ms: int) -> int:
    """A dead (or failed) message — or every dead one of a channel — goes out again, with its
    key: a provider that had it after all recognises it."""
    if message_id is not None:
        state = tx.scalar("SELECT state FROM outbox WHERE message_id = ?", (message_id,))
        if state is None:
            raise ServiceError("message_not_found", "no message with this id", 404)
        if state not in ("dead", "failed"):
            raise ServiceError("not_dead", f"the message is {state}: only a dead or failed"
                               " message is sent again", 409, state=state)
        where, params = "message_id = ?", [message_id]
    else:
        where, params = "state = 'dead'", []
        if channel is not None:
            where += " AND channel = ?"
            params.append(channel)
    return int(tx.execute(
        f"UPDATE outbox SET state = 'pending', attempts = 0, next_ms = ?, reason = '',"
        f" error = '' WHERE {where}", (now_ms, *params)).rowcount)


def receipt(tx: Tx, key: str, provider_id: str | None, delivered: bool, error: str,
            now_ms: int) -> bool:
    """A provider's delivery receipt; False when no message has this key (or id)."""
    row = tx.one("SELECT message_id FROM outbox WHERE key = ?", (key,))
    if row is None and provider_id:
        row = tx.one("SELECT message_id FROM outbox WHERE provider_id = ?", (provider_id,))
    if row is None:
        return False
    tx.execute("UPDATE outbox SET state = ?, done_ms = ?, error = ? WHERE message_id = ?"
               " AND state IN ('sent', 'sending', 'delivered', 'failed')",
               ("delivered" if delivered else "failed", now_ms, error[:500], row[0]))
    return True
