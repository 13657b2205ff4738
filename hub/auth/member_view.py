"""A member as an HQ user may see them: only inside their scope, personal data masked below HQ
admin unless revealed with a reason, every unmasked view in the audit log."""

from __future__ import annotations

from typing import Any

from hub.auth.scope import PERSONAL, Scope, in_scope, mask_member, per_store
from hub.core.db import Tx
from hub.members import directory
from hub.members.identity import canonical
from protocol.errors import ServiceError


def consents(tx: Tx, member_id: str) -> list[dict[str, Any]]:
    """The member's consents as merged from every store and HQ."""
    return [{"channel": r[0], "purpose": r[1], "granted": bool(r[2]), "text_version": r[3],
             "store_id": r[4], "hlc": int(r[5])}
            for r in tx.all("SELECT channel, purpose, granted, text_version, store_id, hlc"
                            " FROM consents WHERE member_id = ? ORDER BY channel, purpose",
                            (member_id,))]


def member(tx: Tx, scope: Scope, member_id: str,
           reveal: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The member ``member_id`` is now, as ``scope`` sees them; ``unmasked`` lists the personal
    fields shown whole (the caller writes those to the audit log)."""
    scope.require("members.read")
    if reveal:
        scope.require("pii.reveal")
        unknown = reveal - set(PERSONAL)
        if unknown:
            raise ServiceError("invalid_fields", f"only {', '.join(PERSONAL)} can be revealed",
                               422, fields=sorted(unknown))
    found = canonical(tx, member_id)
    in_scope(scope, tx, found)
    entry = directory.entry(tx, found)
    if entry is None:
        raise ServiceError("member_not_found", "no member with this id", 404)
    data = entry.model_dump(mode="json", exclude={"pin_hash"})
    data["pin_set"] = entry.pin_hash is not None
    # One account, one balance chain-wide; per-store figures only of the scope's stores.
    data["points"] = sum(s.points for s in entry.shares)
    data["stored_value"] = sum(s.sv_principal + s.sv_bonus for s in entry.shares)
    data["shares"] = per_store(scope, tx, data["shares"])
    data["grants"] = per_store(scope, tx, data["grants"])
    data["consents"] = consents(tx, found)
    data["email"], data["gender"] = tx.one(
        "SELECT email, gender FROM members WHERE member_id = ?", (found,))
    shown = frozenset(PERSONAL) if not scope.role.masked else reveal
    data = data if not scope.role.masked else mask_member(data, reveal)
    data["unmasked"] = sorted(shown)
    return data
