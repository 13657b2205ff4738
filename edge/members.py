"""Members and their cards: registration, identification, profile, and what the POS shows."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import date, timedelta
from typing import Any, Literal, cast

from edge import consents, member_changes, outbox
from edge.context import StoreContext
from edge.errors import EdgeError, conflict, invalid, not_found
from edge.phone import normalise_phone
from protocol.events import (
    WHO_SOLD_IT,
    CardBound,
    Gender,
    MemberProfileChanged,
    MemberRegistered,
    registered_version,
)
from protocol.ids import MEMBER_QR_PREFIX, is_member_code, member_code, uuid7

IdentifyBy = Literal["card_uid", "member_code", "phone", "qr"]

_HEX = re.compile(r"^[0-9A-F]+$")


def normalise_card_uid(raw: str) -> str:
    """Upper-case hex, no separators; 4, 7 or 10-byte UIDs (ISO 14443) and 8-byte (15693)."""
    uid = re.sub(r"[\s:.-]", "", raw).upper()
    if not _HEX.match(uid) or len(uid) not in (8, 14, 16, 20):
        raise invalid("invalid_card_uid", f"not a card UID: {raw!r}")
    return uid


STATE_TEXT = {"lost": "reported lost (挂失)", "replaced": "replaced by a new card (已补卡)",
              "unbound": "unbound from its member (已解绑)"}


def refuse_unusable(row: sqlite3.Row) -> None:
    """Raise the till's refusal for a card that does not identify its member any more."""
    state = row["state"]
    if state == "active":
        return
    if state == "unbound":
        raise not_found("unknown_card", "this card was unbound and is not bound to any member",
                        card_uid=row["card_uid"])
    reason = f": {row['reason']}" if row["reason"] else ""
    raise EdgeError("card_blocked", f"this card is {STATE_TEXT[state]}{reason}", 409,
                    card_uid=row["card_uid"], state=state, reason=row["reason"])


def _member_row(conn: sqlite3.Connection, member_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM members WHERE member_id = ?", (member_id,)).fetchone()
    if row is None:
        raise not_found("member_not_found", f"no member {member_id}")
    return cast(sqlite3.Row, row)


def get_member(conn: sqlite3.Connection, member_id: str) -> sqlite3.Row:
    return _member_row(conn, member_id)


def register(
    conn: sqlite3.Connection,
    ctx: StoreContext,
    *,
    phone: str | None,
    name: str = "",
    birthday: date | None = None,
    card_uid: str | None = None,
    tags: list[str] | None = None,
    guide_id: str | None = None,
    gender: Gender | None = None,
) -> str:
    """Create a member; works offline: the id and member code are minted here. ``guide_id``:
    the shopping guide who looks after them (their sales count for the guide by default).
    ``gender`` travels to HQ in the registration (its segments select on it); the store keeps
    no copy, as it keeps no e-mail address."""
    e164 = normalise_phone(phone, ctx.config.store.phone_region) if phone else None
    uid = normalise_card_uid(card_uid) if card_uid else None
    if e164 is None and uid is None:
        raise invalid("phone_or_card_required", "a member needs a phone number or a card")
    if birthday is not None and not date(1900, 1, 1) <= birthday <= ctx.today():
        raise invalid("invalid_birthday", "birthday must be a past date after 1900")
    if e164 and conn.execute("SELECT 1 FROM members WHERE phone = ?", (e164,)).fetchone():
        raise conflict("phone_taken", "a member with this phone number exists", phone=e164)
    if uid and conn.execute("SELECT 1 FROM cards WHERE card_uid = ? AND state <> 'unbound'",
                            (uid,)).fetchone():
        raise conflict("card_taken", "this card belongs to another member")
    counter = int(outbox.meta_get(conn, "member_counter", "0") or 0) + 1
    outbox.meta_set(conn, "member_counter", counter)
    code = member_code(ctx.config.store.store_number, counter)
    member_id = uuid7()
    tag_list = sorted(set(tags or []))
    event = outbox.append(
        conn,
        ctx,
        MemberRegistered(
            v=registered_version(guide_id, gender),
            member_id=member_id, member_code=code, phone=e164, name=name, birthday=birthday,
            card_uid=uid, tags=tag_list, guide_id=guide_id, gender=gender,
        ),
    )
    conn.execute(
        "INSERT INTO members(member_id, member_code, phone, name, birthday, tags, home_store,"
        " created_hlc, updated_hlc, guide_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (member_id, code, e164, name, birthday.isoformat() if birthday else None,
         json.dumps(tag_list), ctx.store_id, event.hlc, event.hlc, guide_id),
    )
    if uid:
        _take_card(conn, uid, member_id, event.hlc)
    return member_id


def _take_card(conn: sqlite3.Connection, uid: str, member_id: str, hlc: int) -> None:
    conn.execute(
        "INSERT INTO cards(card_uid, member_id, bound_hlc, state, reason, state_hlc)"
        " VALUES (?, ?, ?, 'active', '', ?) ON CONFLICT(card_uid) DO UPDATE SET"
        " member_id = excluded.member_id, bound_hlc = excluded.bound_hlc, state = 'active',"
        " reason = '', state_hlc = excluded.state_hlc", (uid, member_id, hlc, hlc))


def bind_card(conn: sqlite3.Connection, ctx: StoreContext, member_id: str, card_uid: str) -> None:
    """Bind a card new to this store, or one unbound from its member before."""
    uid = normalise_card_uid(card_uid)
    _member_row(conn, member_id)
    owner = conn.execute("SELECT * FROM cards WHERE card_uid = ?", (uid,)).fetchone()
    if owner is not None and owner["state"] != "unbound":
        if owner["member_id"] != member_id:
            raise conflict("card_taken", "this card belongs to another member")
        refuse_unusable(owner)  # the member's own card, lost or replaced: say so
        return  # bound already: a till's retry
    bind_free_card(conn, ctx, member_id, uid)


def bind_free_card(conn: sqlite3.Connection, ctx: StoreContext, member_id: str, uid: str) -> None:
    """Bind a card that is free here: new to this store, or unbound."""
    event = outbox.append(conn, ctx, CardBound(member_id=member_id, card_uid=uid))
    _take_card(conn, uid, member_id, event.hlc)


def update_profile(
    conn: sqlite3.Connection, ctx: StoreContext, member_id: str, changes: dict[str, Any], *,
    terminal_id: str | None = None, cashier_id: str | None = None,
) -> None:
    """Change profile fields at a till; recorded with the till and the cashier, before and
    after (``edge.member_changes``). A birthday is set once here: it decides the birthday gift,
    so a birthday already set changes only at HQ (which reaches stores through the
    directory)."""
    row = _member_row(conn, member_id)
    fields: dict[str, Any] = {}
    if "name" in changes:
        fields["name"] = str(changes["name"] or "")
    if "birthday" in changes:
        b = changes["birthday"]
        if b is not None and not date(1900, 1, 1) <= b <= ctx.today():
            raise invalid("invalid_birthday", "birthday must be a past date after 1900")
        held = row["birthday"]
        if held is not None and (b is None or b.isoformat() != held):
            raise conflict("birthday_locked", "a birthday once set is changed only by HQ",
                           birthday=held)
        if held is None:
            fields["birthday"] = b
    if "phone" in changes:
        if changes["phone"] is None:  # the member's key across stores: changed, never cleared
            raise invalid("phone_required", "a phone number cannot be removed; give the new one")
        e164 = normalise_phone(changes["phone"], ctx.config.store.phone_region)
        other = conn.execute("SELECT member_id FROM members WHERE phone = ?", (e164,)).fetchone()
        if other is not None and other[0] != member_id:
            raise conflict("phone_taken", "a member with this phone number exists")
        fields["phone"] = e164
    if "tags" in changes:
        fields["tags"] = sorted(set(changes["tags"] or []))
    if "guide_id" in changes:
        fields["guide_id"] = changes["guide_id"]  # None: no guide any more
    if not fields:
        if "birthday" in changes:
            return  # the birthday it has already: nothing changes
        raise invalid("nothing_to_change", "no known profile field given")
    # A guide named (or cleared) is version 2 of the event: a hub older than this refuses it
    # by version instead of misreading it.
    version = WHO_SOLD_IT if "guide_id" in fields or terminal_id or cashier_id else 1
    event = outbox.append(
        conn, ctx,
        MemberProfileChanged(v=version, member_id=member_id, changed=sorted(fields),
                             terminal_id=terminal_id, cashier_id=cashier_id, **fields),
    )
    sql_values = {
        k: (json.dumps(v) if k == "tags" else v.isoformat() if isinstance(v, date) else v)
        for k, v in fields.items()
    }
    before = {k: json.loads(row[k]) if k == "tags" else row[k] for k in sql_values}
    member_changes.record(
        conn, ctx, member_id, "profile",
        {k: [before[k], fields[k]] for k in sql_values if before[k] != (
            fields[k].isoformat() if isinstance(fields[k], date) else fields[k])},
        terminal_id=terminal_id, cashier_id=cashier_id)
    sets = ", ".join(f"{k} = ?" for k in sql_values)
    conn.execute(
        f"UPDATE members SET {sets}, updated_hlc = ? WHERE member_id = ?",
        (*sql_values.values(), event.hlc, row["member_id"]),
    )


def resolve(conn: sqlite3.Connection, member_id: str) -> str:
    """Follow a member the hub merged into another to the member it is now."""
    seen = {member_id}
    while True:
        row = conn.execute("SELECT merged_into FROM members WHERE member_id = ?",
                           (member_id,)).fetchone()
        if row is None or row[0] is None or row[0] in seen:
            return member_id
        member_id = str(row[0])
        seen.add(member_id)


def identify(conn: sqlite3.Connection, ctx: StoreContext, by: IdentifyBy, value: str) -> str:
    """The member id for a card tap, a typed or scanned member code, a phone, or a member QR."""
    return resolve(conn, _identify(conn, ctx, by, value))


def _identify(conn: sqlite3.Connection, ctx: StoreContext, by: IdentifyBy, value: str) -> str:
    if by == "card_uid":
        uid = normalise_card_uid(value)
        row = conn.execute("SELECT * FROM cards WHERE card_uid = ?", (uid,)).fetchone()
        if row is None:
            raise not_found("unknown_card", "this card is not bound to any member", card_uid=uid)
        refuse_unusable(row)
        return str(row["member_id"])
    if by == "qr":
        if not value.startswith(MEMBER_QR_PREFIX):
            raise invalid("invalid_qr", "not a member QR code")
        by, value = "member_code", value[len(MEMBER_QR_PREFIX):]
    if by == "member_code":
        code = value.strip()
        if not is_member_code(code):
            raise invalid("invalid_member_code", f"{value!r} is not a valid member code")
        row = conn.execute("SELECT member_id FROM members WHERE member_code = ?",
                           (code,)).fetchone()
        if row is None:
            raise not_found("member_not_found", "no member with this code")
        return str(row[0])
    if by == "phone":
        e164 = normalise_phone(value, ctx.config.store.phone_region)
        row = conn.execute("SELECT member_id FROM members WHERE phone = ?", (e164,)).fetchone()
        if row is None:
            raise not_found("member_not_found", "no member with this phone number")
        return str(row[0])
    raise invalid("invalid_identifier", f"cannot identify a member by {by!r}")


def shown_balances(conn: sqlite3.Connection, m: sqlite3.Row) -> tuple[int, int, int]:
    """(points, principal, bonus) as this store shows them: its own ledgers of the member and
    of any alias merged into it, plus the other stores' shares as the hub last reported them,
    less what was spent of those here."""
    aliases = conn.execute(
        "SELECT coalesce(sum(points_balance), 0), coalesce(sum(sv_principal), 0),"
        " coalesce(sum(sv_bonus), 0) FROM members WHERE merged_into = ?",
        (m["member_id"],)).fetchone()
    return (m["points_balance"] + aliases[0] + m["remote_points"] - m["remote_points_used"],
            m["sv_principal"] + aliases[1] + m["remote_sv_principal"]
            - m["remote_sv_principal_used"],
            m["sv_bonus"] + aliases[2] + m["remote_sv_bonus"] - m["remote_sv_bonus_used"])


def member_view(conn: sqlite3.Connection, ctx: StoreContext, member_id: str) -> dict[str, Any]:
    """Everything a cashier or the member may see: profile, balances, expiring lots, coupons."""
    m = _member_row(conn, member_id)
    today = ctx.today()
    horizon = (today + timedelta(days=ctx.config.points.reminder_days)).isoformat()
    expiring = [
        {"lot_id": r["lot_id"], "points": r["remaining"], "expires_on": r["expires_on"]}
        for r in conn.execute(
            "SELECT lot_id, remaining, expires_on FROM point_lots WHERE member_id = ? AND"
            " remaining > 0 AND expires_on IS NOT NULL AND expires_on <= ? ORDER BY expires_on",
            (member_id, horizon),
        )
    ]
    coupons = [
        {
            "coupon_code": r["coupon_code"], "kind": r["kind"], "value": r["value"],
            "min_spend": r["min_spend"], "expires_on": r["expires_on"],
            "categories": json.loads(r["categories"]),
        }
        for r in conn.execute(
            "SELECT * FROM coupons WHERE member_id = ? AND state = 'issued'"
            " AND (expires_on IS NULL OR expires_on >= ?) ORDER BY expires_on",
            (member_id, today.isoformat()),
        )
    ]
    card_rows = conn.execute("SELECT card_uid, state, reason FROM cards WHERE member_id = ?"
                             " ORDER BY card_uid", (member_id,)).fetchall()
    points, principal, bonus = shown_balances(conn, m)
    return {
        "member_id": m["member_id"],
        "member_code": m["member_code"],
        "phone": m["phone"],
        "name": m["name"],
        "birthday": m["birthday"],
        "tier": m["tier"],
        "tags": json.loads(m["tags"]),
        "cards": [r["card_uid"] for r in card_rows if r["state"] == "active"],
        # every card with its state: lost (挂失), replaced (补卡) or unbound ones too
        "card_states": [{"card_uid": r["card_uid"], "state": r["state"], "reason": r["reason"]}
                        for r in card_rows],
        "payment_pin": {"set": m["pin_hash"] is not None, "locked": bool(m["pin_locked"])},
        "consents": consents.held(conn, member_id),
        "birthday_gift_year": m["birthday_gift_year"],
        "points": points,
        "points_here": m["points_balance"],
        "points_debt": m["points_debt"],
        "stored_value": {
            "principal": principal, "bonus": bonus, "total": principal + bonus,
            "currency": ctx.currency,
        },
        "points_expiring": expiring,
        "coupons": coupons,
        "home_store": m["home_store"],
        "guide_id": m["guide_id"],
        "visits": m["visits"],
        "spend_total": m["spend_total"],
        "hq_tags": json.loads(m["hq_tags"]),
        "segments": json.loads(m["till_segments"]),
        "rfm_group": m["rfm_group"],
        "stage": m["stage"],
        # What HQ left for the member at the tills, to show now and print on their receipt.
        "messages": [{"key": r["key"], "text": r["text"], "coupon_code": r["coupon_code"]}
                     for r in conn.execute("SELECT key, text, coupon_code FROM till_messages"
                                           " WHERE member_id = ? AND shown_sale IS NULL"
                                           " ORDER BY key", (member_id,))],
    }
