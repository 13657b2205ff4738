"""Consent to be contacted (营销授权), given or withdrawn at the till: per channel (SMS, e-mail,
WeChat, app push) and purpose (marketing), with the version of the consent text the member was
shown, recorded with the till and the cashier and sent to the hub, which checks it before any
marketing message (HQ.md, principle 8). Transactional messages need none."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from edge import member_changes, outbox
from edge.context import StoreContext
from protocol.events import ConsentChanged


@dataclass(frozen=True)
class Consent:
    channel: str
    purpose: str
    granted: bool
    text_version: str


def record(conn: sqlite3.Connection, ctx: StoreContext, member_id: str,
           consents: list[Consent], *, terminal_id: str, cashier_id: str | None) -> None:
    """Each consent that differs from the one held (a repeat changes nothing)."""
    for c in consents:
        held = conn.execute(
            "SELECT granted, text_version FROM member_consents WHERE member_id = ?"
            " AND channel = ? AND purpose = ?", (member_id, c.channel, c.purpose)).fetchone()
        if held is not None and (bool(held[0]), held[1]) == (c.granted, c.text_version):
            continue
        event = outbox.append(conn, ctx, ConsentChanged(
            member_id=member_id, channel=c.channel, purpose=c.purpose,
            granted=c.granted, text_version=c.text_version, terminal_id=terminal_id,
            cashier_id=cashier_id))
        conn.execute(
            "INSERT INTO member_consents(member_id, channel, purpose, granted, text_version,"
            " at, hlc) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(member_id, channel, purpose)"
            " DO UPDATE SET granted = excluded.granted, text_version = excluded.text_version,"
            " at = excluded.at, hlc = excluded.hlc",
            (member_id, c.channel, c.purpose, int(c.granted), c.text_version,
             ctx.now().isoformat(), event.hlc))
        member_changes.record(conn, ctx, member_id, "consent",
                              {"channel": c.channel, "purpose": c.purpose,
                               "granted": c.granted, "text_version": c.text_version},
                              terminal_id=terminal_id, cashier_id=cashier_id)


def held(conn: sqlite3.Connection, member_id: str) -> list[dict[str, Any]]:
    return [{"channel": r[0], "purpose": r[1], "granted": bool(r[2]), "text_version": r[3],
             "at": r[4]}
            for r in conn.execute("SELECT channel, purpose, granted, text_version, at FROM"
                                  " member_consents WHERE member_id = ? ORDER BY channel,"
                                  " purpose", (member_id,))]
