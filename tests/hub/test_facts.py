"""``hub.ledger.facts`` says what each event does at the hub with its own small table; it must say
what the protocol's ``points_delta`` / ``stored_value_delta`` and the allowances'
``escrow_used`` say (the rebuild and the edge use those), for every event, on both the pydantic
models and the msgspec structs the hub decodes into."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.bench import make_workload
from hub.ledger.allowances import escrow_used
from hub.ledger.facts import LEDGER, SPEND, decode, reduce_events
from protocol.codec import DEFAULT_MAX_BYTES, decode_batch, encode, event_bytes
from protocol.events import (
    Event,
    EventBatch,
    LotDraw,
    PointsAdjusted,
    PointsEarned,
    PointsExpired,
    PointsRedeemed,
    StoredValueRefunded,
    StoredValueSpent,
    StoredValueToppedUp,
    points_delta,
    stored_value_delta,
)

amount = st.integers(1, 10**9)
REASONS = ("refund_reversal", "refund_return", "debt_repayment", "manual", "merge")
ledger_body = st.one_of(
    st.builds(lambda p: PointsEarned(member_id="m", lot_id="l", points=p), amount),
    st.builds(lambda p: PointsRedeemed(member_id="m", points=p, sale_id="s",
                                       lots=[LotDraw(lot_id="l", points=p)]), amount),
    st.builds(lambda p: PointsExpired(member_id="m", lot_id="l", points=p), amount),
    st.builds(lambda d, r: PointsAdjusted(member_id="m", delta=d, reason=r),
              st.integers(-10**9, 10**9), st.sampled_from(REASONS)),
    st.builds(lambda a, b: StoredValueToppedUp(member_id="m", topup_id="t", currency="CNY",
                                               principal=a, bonus=b), amount, amount),
    st.builds(lambda a, b: StoredValueSpent(member_id="m", sale_id="s", currency="CNY",
                                            principal=a, bonus=b), amount, amount),
    st.builds(lambda a, b: StoredValueRefunded(member_id="m", sale_id="s", refund_id="r",
                                               currency="CNY", principal=a, bonus=b),
              amount, amount),
)


def expected(body: Any) -> tuple[int, ...]:
    return (points_delta(body), *stored_value_delta(body), *escrow_used(body))


@settings(max_examples=300)
@given(ledger_body)
def test_ledger_rules_say_what_the_protocol_says(body: Any) -> None:
    assert LEDGER[body.type](body) == expected(body)
    # The same through the wire and the hub's decoder (msgspec structs).
    event = Event(event_id="e", store_id="S001", epoch=1, seq=1, hlc=1, body=body)
    reduced = decode(encode(EventBatch(store_id="S001", epoch=1, events=[event])),
                     max_bytes=DEFAULT_MAX_BYTES)
    assert reduced.ledger == {"m": list(expected(body))}


def test_a_bench_fleet_reduces_the_same_through_both_decoders() -> None:
    """Every batch of a realistic workload: the fast decoder's reduction equals the one made
    from pydantic models, and the sums equal the per-event rules summed by hand."""
    work = make_workload(3, 3_000, batch_events=250)
    for payload in work.payloads:
        fast = decode(payload, max_bytes=DEFAULT_MAX_BYTES)
        batch = decode_batch(payload)
        slow = reduce_events(batch.store_id, batch.epoch, batch.events, event_bytes(payload))
        assert fast == slow
        sums: dict[str, list[int]] = {}
        spend: dict[str, int] = {}
        for e in batch.events:
            member = getattr(e.body, "member_id", None)
            if e.body.type in LEDGER:
                row = sums.setdefault(member, [0] * 5)
                for i, v in enumerate(expected(e.body)):
                    row[i] += v
            elif e.body.type in SPEND and member is not None:
                spend[member] = spend.get(member, 0) + SPEND[e.body.type](e.body)
        assert fast.ledger == sums
        by_member: dict[str, int] = {}
        for (m, _month), v in fast.spend.items():
            by_member[m] = by_member.get(m, 0) + v
        assert by_member == spend
        assert [r[2] for r in fast.rows] == [e.seq for e in batch.events]
