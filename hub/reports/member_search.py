"""Finding a member by phone, member code or card, inside the caller's scope: a member outside
it is not found, exactly as one that does not exist (a store manager cannot learn that a phone
belongs to a member of another region, or whose)."""

from __future__ import annotations

from typing import Any

import phonenumbers

from hub.auth.scope import Scope, mask_member
from hub.core.db import Tx
from protocol.errors import ServiceError

MAX_RESULTS = 20


def e164(raw: str, region: str = "CN") -> str:
    """A phone as the stores store it (E.164), or 422 ``invalid_phone``."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        raise ServiceError("invalid_phone", "not a phone number", 422) from None
    if not phonenumbers.is_possible_number(number):
        raise ServiceError("invalid_phone", "not a phone number", 422)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def search(tx: Tx, scope: Scope, *, phone: str | None = None, member_code: str | None = None,
           card_uid: str | None = None) -> list[dict[str, Any]]:
    """Members matching exactly one of the keys, as ``scope`` may see them (masked below HQ
    admin). Merged ids lead to the member they became."""
    scope.require("members.read")
    given = [k for k, v in (("phone", phone), ("member_code", member_code),
                            ("card_uid", card_uid)) if v]
    if len(given) != 1:
        raise ServiceError("one_key_required", "search by exactly one of phone, member_code,"
                           " card_uid", 422)
    # One query: the key, and the scope's condition on the member it leads to.
    if phone:
        key, arg = "m.phone = ? AND m.merged_into IS NULL", e164(phone)
    elif member_code:
        key, arg = ("m.member_id = (SELECT coalesce(merged_into, member_id) FROM members"
                    " WHERE member_code = ?)", member_code)
    else:
        key, arg = ("m.member_id = (SELECT member_id FROM cards WHERE card_uid = ?"
                    " AND state <> 'unbound')", (card_uid or "").upper())
    where, params = scope.member_filter("m")
    found = []
    for row in tx.all("SELECT m.member_id, m.member_code, m.phone, m.name, m.birthday, m.tier,"
                      f" m.home_store FROM members m WHERE {key} AND {where}"
                      f" LIMIT {MAX_RESULTS}", (arg, *params)):
        view = {"member_id": row[0], "member_code": row[1], "phone": row[2], "name": row[3],
                "birthday": row[4], "tier": row[5], "home_store": row[6]}
        found.append(mask_member(view) if scope.role.masked else view)
    return found
