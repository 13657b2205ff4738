"""Events the hub writes itself, as the stream of a virtual store (``HQ``, later ``ONLINE``).

Whatever HQ changes in a balance or a coupon is an event in the hub's log like a store's
(HQ.md, principle 1): an envelope of the virtual store's id, epoch 1, the stream's next
``seq``, an HLC from the hub's clock and a UUIDv7 id, applied by the merge every uplink batch
goes through (``hub.ledger.facts.reduce_events`` + ``hub.ledger.apply.apply_facts``). It runs in
the caller's transaction, so the log row, the balances, the directory change and the stream's
position commit together: ``seq`` is the stream's acknowledged position + 1 read in that same
transaction on the one writer, so the stream has no gap and no ``seq`` twice, and ``rebuild``
recomputes HQ's share from the log like any store's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from hub.core.db import Tx
from hub.ledger import allowances
from hub.ledger.allowances import AllowancePolicy
from hub.ledger.apply import ApplyResult, acked_seq, apply_facts
from hub.ledger.facts import reduce_events
from hub.members.identity import canonical
from hub.members.tiers import DEFAULT_ZONE, TierRules
from hub.stores.registry import HQ, is_virtual
from protocol.codec import encode
from protocol.errors import ServiceError
from protocol.events import (
    MAX_POINTS,
    CardStateChanged,
    Event,
    EventBody,
    MemberErased,
    MemberProfileChanged,
    PointsAdjusted,
    profile_version,
)
from protocol.hlc import HybridClock
from protocol.ids import uuid7

EPOCH = 1  # a virtual store is never re-provisioned: its stream is one epoch for good


@dataclass(frozen=True)
class Merge:
    """What the merge needs besides the events: the hub's clock and its policies."""

    clock: HybridClock
    now_ms: int
    tiers: TierRules | None = None
    allowance: AllowancePolicy | None = None
    zone: str = DEFAULT_ZONE  # the chain's: HQ's stream keeps the chain's calendar


def append(tx: Tx, stream: str, bodies: Sequence[EventBody], merge: Merge
           ) -> tuple[list[Event], ApplyResult]:
    """Write ``bodies`` as the next events of the virtual store ``stream`` and apply them."""
    if not is_virtual(stream):
        raise ValueError(f"{stream!r} is a store's stream, not one the hub writes")
    if not bodies:
        raise ValueError("nothing to append")
    seq = acked_seq(tx, stream, EPOCH)
    # Never behind the stream's last event, also after a restart or a clock set back.
    last = tx.scalar("SELECT hlc FROM events WHERE store_id = ? AND epoch = ? AND seq = ?",
                     (stream, EPOCH, seq), default=0)
    if merge.clock.last < last:
        merge.clock.observe(int(last))
    events = [Event(event_id=uuid7(), store_id=stream, epoch=EPOCH, seq=seq + i,
                    hlc=merge.clock.now(), body=body)
              for i, body in enumerate(bodies, 1)]
    decoded = reduce_events(stream, EPOCH, events, [encode(e) for e in events], merge.zone)
    result = apply_facts(tx, decoded, merge.now_ms, merge.tiers, merge.allowance,
                         chain_zone=merge.zone)
    if result.applied != len(events):  # the one writer read the position: cannot happen
        raise RuntimeError(f"the {stream} stream did not take its events at seq {seq + 1}")
    return events, result


def adjust_points(tx: Tx, member_id: str, delta: int, reason: str, actor: str, merge: Merge
                  ) -> dict[str, object]:
    """HQ's signed change of a member's points: a ``points.adjusted`` event (reason
    ``manual``) of the HQ stream. Refused (``ServiceError``) for an unknown member, or when it
    takes away more than is free (the balance less what stores hold as offline allowances,
    ``hub.ledger.allowances``): stores must be able to spend what they hold."""
    if delta == 0 or abs(delta) > MAX_POINTS:
        raise ServiceError("invalid_delta", f"delta must be non-zero and at most {MAX_POINTS}"
                           " either way", 422, delta=delta)
    member = live_member(tx, member_id)
    books = allowances.load(tx, [member])[member].points
    if delta < 0 and -delta > books.free():
        raise ServiceError(
            "insufficient_balance",
            f"the member has {max(0, books.free())} points free to take away (balance"
            f" {books.balance}, {books.held()} held by stores as offline allowances)",
            409, free=max(0, books.free()), balance=books.balance)
    events, _result = append(tx, HQ, [PointsAdjusted(
        member_id=member, delta=delta, reason="manual", note=reason, actor=actor)], merge)
    return {"member_id": member, "delta": delta, "reason": reason, "actor": actor,
            "points": books.balance + delta, **envelope(events[0])}


def change_profile(tx: Tx, member_id: str, changes: dict[str, Any], actor: str, merge: Merge
                   ) -> dict[str, object]:
    """HQ's change of a member's name, birthday, e-mail address or gender: a
    ``member.profile_changed`` of the HQ stream, merged last-writer-wins like a store's. A
    birthday, once set, changes only here (stores set it once): stores take it from the
    directory. The e-mail address and the gender stay at the hub (the e-mail channel's and the
    segments'; no till needs them)."""
    if not changes:
        raise ServiceError("nothing_to_change", "give a name, a birthday, an e-mail or a gender",
                           422)
    birthday = changes.get("birthday")
    today = datetime.fromtimestamp(merge.now_ms / 1000, ZoneInfo(merge.zone)).date()
    if birthday is not None and not date(1900, 1, 1) <= birthday <= today:
        raise ServiceError("invalid_birthday", "birthday must be a past date after 1900", 422)
    member = live_member(tx, member_id)
    events, _result = append(tx, HQ, [MemberProfileChanged(
        v=profile_version(changes), member_id=member,
        changed=sorted(changes), actor=actor, **changes)], merge)
    name, held, email, gender = tx.one(
        "SELECT name, birthday, email, gender FROM members WHERE member_id = ?", (member,))
    return {"member_id": member, "name": name, "birthday": held, "email": email,
            "gender": gender,
            "actor": actor, **envelope(events[0])}


def set_card_state(tx: Tx, member_id: str, card_uid: str, state: str, reason: str, actor: str,
                   merge: Merge) -> dict[str, object]:
    """HQ reports a member's card lost (the member called the hotline), lifts the loss or
    unbinds it: a ``member.card_state`` of the HQ stream; every store refuses a lost card once
    the directory carries it. A replaced or unbound card's state is final."""
    member = live_member(tx, member_id)
    row = tx.one("SELECT member_id, state FROM cards WHERE card_uid = ?", (card_uid,))
    if row is None or canonical(tx, str(row[0])) != member:
        raise ServiceError("card_not_found", "this member has no such card", 404,
                           card_uid=card_uid)
    held = str(row[1])
    if held != state:
        if held in ("replaced", "unbound"):
            raise ServiceError("card_state_final", f"a {held} card cannot be made {state}", 409,
                               card_uid=card_uid, state=held)
        events, _result = append(tx, HQ, [CardStateChanged(
            member_id=member, card_uid=card_uid, state=state,
            reason=reason, actor=actor)], merge)
        where = envelope(events[0])
    else:
        where = {"stream": None, "seq": None, "event_id": None, "hlc": None}
    return {"member_id": member, "card_uid": card_uid, "state": state, "reason": reason,
            "actor": actor, **where}


def erase_member(tx: Tx, member_id: str, actor: str, reason: str, merge: Merge
                 ) -> dict[str, object]:
    """The member's personal data erased on their request: a ``member.erased`` of the HQ
    stream (``hub.ledger.erasure``), which every store follows through the directory."""
    member = live_member(tx, member_id)
    if tx.scalar("SELECT erased FROM members WHERE member_id = ?", (member,)):
        raise ServiceError("already_erased", "this member's data is erased already", 409)
    events, _result = append(tx, HQ, [MemberErased(member_id=member, actor=actor,
                                                   reason=reason)], merge)
    return {"member_id": member, "actor": actor, "reason": reason, **envelope(events[0])}


def live_member(tx: Tx, member_id: str) -> str:
    """The member ``member_id`` is now (a merged id: the member it became); 404 if none."""
    member = canonical(tx, member_id)
    if tx.scalar("SELECT 1 FROM members WHERE member_id = ?", (member,)) is None:
        raise ServiceError("member_not_found", "no member with this id", 404,
                           member_id=member_id)
    return member


def envelope(event: Event) -> dict[str, object]:
    """Where an HQ write stands in the log, for its answer."""
    return {"stream": event.store_id, "seq": event.seq, "event_id": event.event_id,
            "hlc": event.hlc}
