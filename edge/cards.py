"""A member's cards after binding: loss (挂失) and its lifting, replacement (补卡), unbinding.

A lost card is blocked at every store once the directory carries it (and at once here); a
replaced card is blocked for good and its replacement identifies the member with the same
balances; an unbound card identifies nobody and may be bound again, to anyone. Each change is an
event the hub merges last-writer-wins by HLC (``protocol.events.CardStateChanged``), and is
recorded with the till and the cashier (``edge.member_changes``).
"""

from __future__ import annotations

import sqlite3
from typing import Any, Literal

from edge import member_changes, members, outbox
from edge.context import StoreContext
from edge.errors import conflict, not_found
from edge.members import STATE_TEXT
from protocol.events import CardState, CardStateChanged

# What a till may ask for; ``replaced`` comes only with a replacement.
Requested = Literal["lost", "active", "unbound"]

# state now -> the states a till may move it to
_MOVES: dict[str, frozenset[str]] = {
    "active": frozenset({"lost", "unbound"}),
    "lost": frozenset({"active", "unbound"}),
    "replaced": frozenset(),
    "unbound": frozenset(),
}

def _card(conn: sqlite3.Connection, member_id: str, card_uid: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM cards WHERE card_uid = ?", (card_uid,)).fetchone()
    if row is None or members.resolve(conn, row["member_id"]) != member_id:
        raise not_found("card_not_found", "this member has no such card", card_uid=card_uid)
    return row  # type: ignore[no-any-return]


def set_state(conn: sqlite3.Connection, ctx: StoreContext, member_id: str, card_uid: str,
              state: Requested, *, reason: str = "", terminal_id: str,
              cashier_id: str | None) -> None:
    """Report ``card_uid`` lost, lift the loss (``active``) or unbind it. Asking for the state
    it is in already changes nothing (a till's retry)."""
    member_id = members.resolve(conn, member_id)
    members.get_member(conn, member_id)
    uid = members.normalise_card_uid(card_uid)
    row = _card(conn, member_id, uid)
    if row["state"] == state:
        return
    if state not in _MOVES[row["state"]]:
        raise conflict("card_state_final" if row["state"] in ("replaced", "unbound")
                       else "invalid_card_state",
                       f"a card {STATE_TEXT.get(row['state'], row['state'])} cannot be made"
                       f" {state}", card_uid=uid, state=row["state"])
    _change(conn, ctx, member_id, uid, row["state"], state, reason, None, terminal_id,
            cashier_id)


def replace(conn: sqlite3.Connection, ctx: StoreContext, member_id: str, old_uid: str,
            new_uid: str, *, reason: str = "", terminal_id: str,
            cashier_id: str | None) -> None:
    """Block ``old_uid`` for good and bind ``new_uid`` in its place (补卡): the member keeps
    every balance; only the new card identifies them."""
    member_id = members.resolve(conn, member_id)
    members.get_member(conn, member_id)
    old = members.normalise_card_uid(old_uid)
    new = members.normalise_card_uid(new_uid)
    row = _card(conn, member_id, old)
    if old == new:
        raise conflict("same_card", "the new card must be another card", card_uid=old)
    if row["state"] not in ("active", "lost"):
        raise conflict("card_state_final", f"a card {STATE_TEXT[row['state']]} cannot be"
                       " replaced", card_uid=old, state=row["state"])
    taken = conn.execute("SELECT state FROM cards WHERE card_uid = ?", (new,)).fetchone()
    if taken is not None and taken["state"] != "unbound":
        raise conflict("card_taken", "the new card belongs to a member already", card_uid=new)
    _change(conn, ctx, member_id, old, row["state"], "replaced", reason, new, terminal_id,
            cashier_id)
    members.bind_free_card(conn, ctx, member_id, new)


def _change(conn: sqlite3.Connection, ctx: StoreContext, member_id: str, uid: str, was: str,
            state: CardState, reason: str, replaced_by: str | None, terminal_id: str,
            cashier_id: str | None) -> None:
    event = outbox.append(conn, ctx, CardStateChanged(
        member_id=member_id, card_uid=uid, state=state,
        reason=reason, replaced_by=replaced_by, terminal_id=terminal_id, cashier_id=cashier_id))
    conn.execute("UPDATE cards SET state = ?, reason = ?, state_hlc = ? WHERE card_uid = ?",
                 (state, reason, event.hlc, uid))
    detail: dict[str, Any] = {"card_uid": uid, "state": [was, state], "reason": reason}
    if replaced_by is not None:
        detail["replaced_by"] = replaced_by
    member_changes.record(conn, ctx, member_id, "card", detail, terminal_id=terminal_id,
                          cashier_id=cashier_id)

