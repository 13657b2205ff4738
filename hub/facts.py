"""What the hub takes from each validated event: a small flat record per event.

The hub merges sums (points, stored value, spend) and a few rarer changes (registrations,
profiles, cards, coupons). Applying from these records instead of the pydantic models lets the
validation run in another process: a batch crosses the process boundary as plain tuples, which
pickle in a fraction of the time the models would, and the apply never touches pydantic.

``facts_of`` is the only place that reads an event's fields for the merge; ``hub.ingest``
applies the result, and ``hub.directory.rebuild`` recomputes balances from the log with the same
``points_delta`` / ``stored_value_delta`` rules, so a disagreement shows in ``compare``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from hub.allowances import escrow_used
from protocol.codec import decode_batch, event_bytes
from protocol.events import (
    CardBound,
    CouponRedeemed,
    CouponReopened,
    EventBatch,
    MemberProfileChanged,
    MemberRegistered,
    RefundCompleted,
    SaleFinalized,
    points_delta,
    stored_value_delta,
)


class Fact(NamedTuple):
    seq: int
    event_id: str
    hlc: int
    type: str
    member_id: str | None
    points: int = 0  # what the event adds to the member's points balance
    principal: int = 0  # ... and to stored value, principal and bonus
    bonus: int = 0
    spend: int = 0  # a member's sale total, or minus a refund: what tiers are made of
    escrow_points: int = 0  # spending at this store net of refunds (``allowances.escrow_used``)
    escrow_sv: int = 0
    detail: dict[str, Any] | None = None  # the fields of a registration, profile, card, coupon


@dataclass(frozen=True)
class Decoded:
    """A validated batch as the apply takes it."""

    store_id: str
    epoch: int
    facts: list[Fact]
    raw: list[bytes]  # each event's bytes as received: the event log stores them as they are


def decode(payload: bytes, *, max_bytes: int) -> Decoded:
    """Validate a batch payload strictly (raises ``CodecError``) and reduce it to facts. Runs in
    a validation worker process or inline; the caller checks the topic's store id."""
    batch = decode_batch(payload, max_bytes=max_bytes)
    return Decoded(batch.store_id, batch.epoch, facts_of(batch), event_bytes(payload))


def facts_of(batch: EventBatch) -> list[Fact]:
    out: list[Fact] = []
    append = out.append
    for e in batch.events:
        body = e.body
        member_id: str | None = getattr(body, "member_id", None)
        points = points_delta(body)
        principal, bonus = stored_value_delta(body)
        spend = 0
        escrow_points, escrow_sv = escrow_used(body)
        detail: dict[str, Any] | None = None
        if isinstance(body, SaleFinalized):
            spend = body.total
        elif isinstance(body, RefundCompleted):
            spend = -body.amount
        elif isinstance(body, MemberRegistered):
            detail = {"member_code": body.member_code, "phone": body.phone, "name": body.name,
                      "birthday": body.birthday.isoformat() if body.birthday else None,
                      "card_uid": body.card_uid, "tier": body.tier, "tags": list(body.tags)}
        elif isinstance(body, MemberProfileChanged):
            detail = {"changed": list(body.changed), "name": body.name,
                      "birthday": body.birthday.isoformat() if body.birthday else None,
                      "phone": body.phone, "tags": list(body.tags or [])}
        elif isinstance(body, CardBound):
            detail = {"card_uid": body.card_uid}
        elif isinstance(body, CouponRedeemed):
            detail = {"coupon_code": body.coupon_code, "sale_id": body.sale_id,
                      "amount": body.amount}
        elif isinstance(body, CouponReopened):
            detail = {"coupon_code": body.coupon_code, "sale_id": body.sale_id}
        append(Fact(e.seq, e.event_id, e.hlc, body.type, member_id, points, principal, bonus,
                    spend, escrow_points, escrow_sv, detail))
    return out
