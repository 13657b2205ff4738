"""One identifier of a member, out of the ways a POS may give one."""

from __future__ import annotations

from edge.errors import EdgeError
from edge.members import IdentifyBy


def one_identifier(**given: str | None) -> tuple[IdentifyBy, str]:
    present = [(k, v) for k, v in given.items() if v]
    if len(present) != 1:
        raise EdgeError("identifier_required",
                        "give exactly one of card_uid, member_code, phone, qr", 422)
    key, value = present[0]
    assert value is not None
    return key, value  # type: ignore[return-value]
