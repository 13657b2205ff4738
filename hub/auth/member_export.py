"""Everything the hub holds about one member, for their data request (PIPL): the profile whole,
cards, balances per store, open coupons, every logged event about them (theirs and of the ids
merged into them) and the audit log's entries about them."""

from __future__ import annotations

from typing import Any

from hub.auth import audit_log, member_view
from hub.auth.scope import Scope, in_scope
from hub.core.db import Tx, in_chunks
from hub.members import directory
from hub.members.identity import canonical
from protocol.codec import decode
from protocol.errors import ServiceError
from protocol.events import Event


def export(tx: Tx, scope: Scope, member_id: str) -> dict[str, Any]:
    scope.require("pii.export")
    member = canonical(tx, member_id)
    in_scope(scope, tx, member)
    entry = directory.entry(tx, member)
    if entry is None:
        raise ServiceError("member_not_found", "no member with this id", 404)
    ids = [member, *entry.aliases]
    events: list[dict[str, Any]] = []
    for chunk, marks in in_chunks(ids):
        for (payload,) in tx.all(f"SELECT payload FROM events WHERE member_id IN ({marks})"
                                 " ORDER BY hlc", chunk):
            e = decode(bytes(payload), Event)
            events.append({"store_id": e.store_id, "hlc": e.hlc,
                           "body": e.body.model_dump(mode="json")})
    events.sort(key=lambda e: e["hlc"])
    profile = entry.model_dump(mode="json", exclude={"pin_hash"})
    profile["pin_set"] = entry.pin_hash is not None
    profile["consents"] = member_view.consents(tx, member)
    return {"member": profile, "events": events,
            "audit": audit_log.page(tx, limit=10_000, subject=member)}
