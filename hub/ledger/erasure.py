"""A member's personal data erased on their request (PIPL): from the member row, the cards,
and the payloads of the events in the hub's log that carry it. Balances and ledgers stay as
statutory records, and so does every event's effect: what is scrubbed is only the name, phone,
birthday, tags and card numbers, which no balance depends on, so ``rebuild`` still recomputes
every balance from the log (``tests/hub/test_erasure.py``)."""

from __future__ import annotations

from typing import Any

from hub.core.db import Tx, in_chunks
from protocol.codec import decode, encode
from protocol.events import Event
from protocol.redact import erase_personal

# Card numbers scrubbed from the log become this: an Id, and no card's.
ERASED_CARD = "ERASED"
_PERSONAL = ("member.registered", "member.profile_changed", "member.card_bound",
             "member.card_state")


def _scrubbed(body: Any) -> Any:
    update: dict[str, Any] = {}
    if body.type in ("member.registered", "member.profile_changed"):
        update = {"phone": None, "name": "" if body.type == "member.registered" else None,
                  "birthday": None, "tags": [] if body.type == "member.registered" else None,
                  "gender": None}
        if body.type == "member.profile_changed":
            update["email"] = None
        if body.type == "member.registered":
            update["card_uid"] = None
    else:
        update = {"card_uid": ERASED_CARD}
        if body.type == "member.card_state":
            update["replaced_by"] = None
    return body.model_copy(update=update)


def erase(tx: Tx, member_id: str) -> int:
    """Scrub ``member_id`` (and the ids merged into it) everywhere the hub keeps their personal
    data; returns how many logged events were rewritten."""
    ids = [member_id, *(str(r[0]) for r in tx.all(
        "SELECT member_id FROM members WHERE merged_into = ?", (member_id,)))]
    rewritten = 0
    for chunk, marks in in_chunks(ids):
        tx.execute(f"UPDATE members SET phone = NULL, name = '', birthday = NULL, tags = '[]',"
                   f" email = NULL, gender = NULL, erased = 1 WHERE member_id IN ({marks})", chunk)
        tx.execute(f"DELETE FROM cards WHERE member_id IN ({marks})", chunk)
        # Messages may name the member; a journey's occasion data may hold their birthday.
        tx.execute(f"DELETE FROM till_messages WHERE member_id IN ({marks})", chunk)
        tx.execute(f"UPDATE outbox SET text = '', params = '{{}}' WHERE member_id IN ({marks})",
                   chunk)
        tx.execute(f"UPDATE journey_entries SET context = '{{}}' WHERE member_id IN ({marks})",
                   chunk)
        for mid in chunk:  # HQ's answers kept for retries may show the member whole: emptied
            for key, text in tx.all("SELECT idem_key, response FROM hq_requests"
                                    " WHERE response LIKE ?", (f"%{mid}%",)):
                tx.execute("UPDATE hq_requests SET response = ? WHERE idem_key = ?",
                           (erase_personal(str(text)), key))
        types = ", ".join("?" * len(_PERSONAL))
        for store, epoch, seq, payload in tx.all(
                f"SELECT store_id, epoch, seq, payload FROM events WHERE type IN ({types})"
                f" AND member_id IN ({marks})", (*_PERSONAL, *chunk)):
            event = decode(bytes(payload), Event)
            clean = event.model_copy(update={"body": _scrubbed(event.body)})
            tx.execute("UPDATE events SET payload = ? WHERE store_id = ? AND epoch = ?"
                       " AND seq = ?", (encode(clean), store, epoch, seq))
            rewritten += 1
    return rewritten
