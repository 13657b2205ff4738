"""What the hub takes from a validated batch: its event-log rows and its effects, summed.

The hub merges sums (points, stored value, escrow, spend) and a few rarer changes
(registrations, profiles, cards, coupons). A batch is reduced here, in the validation worker,
to what the apply writes: the log rows ready for ``executemany``, the ledger and spend effects
summed per member as the events name them, and the rare changes as ``Fact`` records in event
order. The apply then does work per member touched rather than per event, and a batch crosses
the process boundary as plain tuples and dicts, which pickle in a fraction of the time models
would; the apply never touches pydantic.

Sums are linear, so summing per member id as the store wrote it and mapping merged members to
the member they now are afterwards (``hub.ledger.apply``) gives what mapping each event first would.

``reduce_events`` is the only place that reads an event's fields for the merge. Its ledger
rules (``LEDGER``) must say what ``protocol.events.points_delta`` / ``stored_value_delta`` and
``hub.ledger.allowances.escrow_used`` say: ``tests/hub/test_facts.py`` checks every event type, and
``hub.ledger.audit.rebuild`` recomputes balances from the log with the protocol's functions, so a
disagreement also shows in ``compare``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from hub.members.tiers import DEFAULT_ZONE, month_of_hlc
from protocol import fastcodec
from protocol.codec import decode as decode_message
from protocol.events import BODY_TYPES, Event

# What a ledger event adds to (points, sv principal, sv bonus) of its member's balance and to
# (points, stored value) of the escrow its store has used up — negative when a refund gives
# escrow back (``hub.ledger.allowances.escrow_used``).
LedgerEffect = tuple[int, int, int, int, int]
LEDGER: dict[str, Callable[[Any], LedgerEffect]] = {
    "points.earned": lambda b: (b.points, 0, 0, 0, 0),
    "points.redeemed": lambda b: (-b.points, 0, 0, b.points, 0),
    "points.expired": lambda b: (-b.points, 0, 0, 0, 0),
    "points.adjusted": lambda b: (b.delta, 0, 0, -b.delta if b.reason == "refund_return" else 0,
                                  0),
    "sv.topped_up": lambda b: (0, b.principal, b.bonus, 0, 0),
    "sv.spent": lambda b: (0, -b.principal, -b.bonus, 0, b.principal + b.bonus),
    "sv.refunded": lambda b: (0, b.principal, b.bonus, 0, -(b.principal + b.bonus)),
}
# What a sale or refund adds to its member's spend (what tiers are made of).
SPEND: dict[str, Callable[[Any], int]] = {
    "sale.finalized": lambda b: b.total,
    "refund.completed": lambda b: -b.amount,
}


def _iso(day: Any) -> str | None:
    return day.isoformat() if day is not None else None


# The rare changes, applied one by one in event order: what each keeps of its event.
DETAIL: dict[str, Callable[[Any], dict[str, Any]]] = {
    "member.registered": lambda b: {
        "member_code": b.member_code, "phone": b.phone, "name": b.name,
        "birthday": _iso(b.birthday), "card_uid": b.card_uid, "tier": b.tier,
        "tags": list(b.tags), "guide_id": getattr(b, "guide_id", None),
        "gender": getattr(b, "gender", None)},
    "member.profile_changed": lambda b: {
        "changed": list(b.changed), "name": b.name, "birthday": _iso(b.birthday),
        "phone": b.phone, "tags": list(b.tags or []), "guide_id": getattr(b, "guide_id", None),
        "email": getattr(b, "email", None), "gender": getattr(b, "gender", None)},
    "member.card_bound": lambda b: {"card_uid": b.card_uid},
    "member.card_state": lambda b: {"card_uid": b.card_uid, "state": b.state,
                                    "reason": b.reason},
    "member.pin_set": lambda b: {"pin_hash": b.pin_hash},
    "member.pin_locked": lambda b: {},
    "member.birthday_gift": lambda b: {"year": b.year},
    "member.message_shown": lambda b: {"key": b.key, "terminal_id": b.terminal_id},
    "member.erased": lambda b: {},
    "member.consent": lambda b: {"channel": b.channel, "purpose": b.purpose,
                                 "granted": b.granted, "text_version": b.text_version},
    "coupon.redeemed": lambda b: {"coupon_code": b.coupon_code, "sale_id": b.sale_id,
                                  "amount": b.amount},
    "coupon.reopened": lambda b: {"coupon_code": b.coupon_code, "sale_id": b.sale_id},
    "coupon.issued": lambda b: {
        "coupon_code": b.coupon_code, "campaign_id": b.campaign_id, "kind": b.kind,
        "value": b.value, "min_spend": b.min_spend, "categories": list(b.categories),
        "expires_on": _iso(b.expires_on)},
    "coupon.voided": lambda b: {"coupon_code": b.coupon_code},
}
# Kept in the log (and in rebuilds) with no effect on the hub's tables.
LOG_ONLY: frozenset[str] = frozenset()

if set(LEDGER) | set(SPEND) | set(DETAIL) | LOG_ONLY != set(BODY_TYPES):
    # A new event type must say what it does at the hub.
    raise RuntimeError("hub.ledger.facts does not say what these event types do: "
                       f"{set(BODY_TYPES) - set(LEDGER) - set(SPEND) - set(DETAIL) - LOG_ONLY}")


class Fact(NamedTuple):
    """One of the rare changes (``DETAIL``), applied in event order."""

    seq: int
    hlc: int
    type: str
    member_id: str | None
    detail: dict[str, Any]


# An event-log row: (store_id, epoch, seq, event_id, hlc, type, member_id, payload).
Row = tuple[str, int, int, str, int, str, str | None, bytes]


class Decoded(NamedTuple):
    """A validated batch as the apply takes it."""

    store_id: str
    epoch: int
    rows: list[Row]  # one per event in seq order; payload = the event's bytes as received
    facts: list[Fact]
    # member id (as the store wrote it) -> summed ``LedgerEffect``; every member with a ledger
    # event is here, even when its sums are zero (its escrow books are looked at again).
    ledger: dict[str, list[int]]
    # (member id, month) -> summed spend; every member with a sale or refund is here.
    spend: dict[tuple[str, str], int]
    # Validated by the pydantic fallback, not the compiled decoder (``protocol.fastcodec``):
    # counted in the hub's status, as each one costs a slow decode.
    slow: bool = False
    # The store's time zone: ``spend`` months are its calendar months.
    zone: str = DEFAULT_ZONE

    @property
    def first_seq(self) -> int:
        return self.rows[0][2]

    @property
    def last_seq(self) -> int:
        return self.rows[-1][2]


def decode(payload: bytes, *, max_bytes: int, zone: str = DEFAULT_ZONE) -> Decoded:
    """Validate a batch payload strictly (raises ``CodecError``) and reduce it. Runs in a
    validation worker process or inline; the caller checks the topic's store id.

    ``protocol.fastcodec``: the pydantic models compiled to msgspec, several times faster
    than validating with pydantic, and never accepting what pydantic would refuse."""
    batch = fastcodec.decode_batch_fast(payload, max_bytes=max_bytes)
    reduced = reduce_events(batch.store_id, batch.epoch, batch.events, batch.raw, zone)
    return reduced._replace(slow=True) if batch.slow else reduced


def reduce_events(store_id: str, epoch: int, events: Sequence[Any], raw: Sequence[bytes],
                  zone: str = DEFAULT_ZONE) -> Decoded:
    """``events`` (``protocol.events.Event`` or anything with its attributes) and their bytes
    as received, reduced to a ``Decoded``; ``zone`` is the store's (its spend months)."""
    rows: list[Row] = []
    facts: list[Fact] = []
    ledger: dict[str, list[int]] = {}
    spend: dict[tuple[str, str], int] = {}
    for e, blob in zip(events, raw, strict=True):
        body = e.body
        kind: str = body.type
        member_id: str | None = getattr(body, "member_id", None)
        rows.append((store_id, epoch, e.seq, e.event_id, e.hlc, kind, member_id, blob))
        effect = LEDGER.get(kind)
        if effect is not None:
            assert member_id is not None  # every ledger event names its member
            sums = ledger.get(member_id)
            if sums is None:
                ledger[member_id] = list(effect(body))
            else:
                for i, v in enumerate(effect(body)):
                    sums[i] += v
            continue
        amount = SPEND.get(kind)
        if amount is not None:
            if member_id is not None:  # an anonymous sale or its refund moves no member
                key = (member_id, month_of_hlc(e.hlc, zone))
                spend[key] = spend.get(key, 0) + amount(body)
            continue
        detail = DETAIL.get(kind)
        if detail is not None:
            facts.append(Fact(e.seq, e.hlc, kind, member_id, detail(body)))
    return Decoded(store_id, epoch, rows, facts, ledger, spend, zone=zone)


def tail(batch: Decoded, skip: int) -> Decoded:
    """``batch`` without its first ``skip`` events (a resent batch the hub partly applied):
    reduced again from the bytes it keeps. Rare, so it takes the plain pydantic path."""
    blobs = [row[7] for row in batch.rows[skip:]]
    events = [decode_message(blob, Event) for blob in blobs]
    return reduce_events(batch.store_id, batch.epoch, events, blobs, batch.zone)
