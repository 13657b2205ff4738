from __future__ import annotations

from datetime import date
from typing import Any

import msgpack
import pytest

from protocol.codec import (
    CodecError,
    InvalidMessage,
    MalformedPayload,
    PayloadTooLarge,
    UnknownVersion,
    decode,
    decode_batch,
    encode,
)
from protocol.events import (
    CouponIssued,
    CouponVoided,
    Event,
    EventBatch,
    PointsEarned,
    SaleFinalized,
    SaleLine,
    Tender,
    points_delta,
)
from protocol.sync import (
    Ack,
    DirectoryNotice,
    DirectoryPage,
    DirectoryRequest,
    RpcReply,
    RpcRequest,
)


def sale_body() -> SaleFinalized:
    return SaleFinalized(
        sale_id="s-1", terminal_id="POS-1", member_id="m-1", currency="CNY",
        lines=[SaleLine(line_no=1, sku="A", name="苹果", category="fresh", qty=2, unit_price=1_250,
                        gross=2_500, discount=500, net=2_000, points=20)],
        tenders=[Tender(kind="cash", amount=2_000)],
        subtotal=2_500, discount_total=500, total=2_000, points_earned=20,
    )


def event(seq: int, body: Any = None, store: str = "S001") -> Event:
    return Event(event_id=f"e-{seq}", store_id=store, epoch=1, seq=seq, hlc=seq << 16,
                 body=body or PointsEarned(member_id="m-1", lot_id=f"l-{seq}", points=10,
                                           expires_on=date(2027, 1, 1)))


def raw_event(seq: int = 1, **body_changes: Any) -> dict[str, Any]:
    data = event(seq).model_dump(mode="json")
    data["body"].update(body_changes)
    return data


def packed(data: Any) -> bytes:
    out: bytes = msgpack.packb(data, use_bin_type=True)
    return out


# --- round trips -----------------------------------------------------------------------------


def test_event_round_trip() -> None:
    ev = event(1, sale_body())
    back = decode(encode(ev), Event)
    assert back == ev
    assert isinstance(back.body, SaleFinalized)
    assert back.body.lines[0].name == "苹果"


def test_batch_round_trip_keeps_types_and_dates() -> None:
    batch = EventBatch(store_id="S001", epoch=1, events=[event(5), event(6, sale_body()),
                                                          event(7)])
    back = decode_batch(encode(batch))
    assert back == batch
    assert [e.seq for e in back.events] == [5, 6, 7]
    first = back.events[0].body
    assert isinstance(first, PointsEarned) and first.expires_on == date(2027, 1, 1)
    assert points_delta(first) == 10


def test_coupon_event_round_trip() -> None:
    body = CouponIssued(coupon_code="ABCDEFGHJK123", kind="percent_off", value=1_500,
                        categories=["fresh"])
    assert decode(encode(event(1, body)), Event).body == body


# --- bad bytes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xc1",  # never used in msgpack
        b"\x92\x01",  # array of two with one element: truncated
        packed({"a": 1})[:-1],
        packed({"a": 1}) + b"\x00",  # trailing data
        b"\x81\x01\x02",  # map with an int key
        b"\x81\xa1\xff\x01",  # key that is not UTF-8
        b"\xd9\x05abc",  # str8 longer than the data
    ],
)
def test_malformed_bytes_are_a_codec_error(payload: bytes) -> None:
    with pytest.raises(MalformedPayload) as exc:
        decode(payload, Event)
    assert exc.value.code == "malformed"


def test_payload_that_is_not_bytes_or_not_a_map() -> None:
    with pytest.raises(MalformedPayload):
        decode("text", Event)  # type: ignore[arg-type]
    with pytest.raises(MalformedPayload, match="expected a map"):
        decode(packed([1, 2, 3]), Event)
    with pytest.raises(MalformedPayload, match="expected a map"):
        decode(packed(None), EventBatch)


def test_oversized_payload_is_refused_before_unpacking() -> None:
    ev = event(1, sale_body())
    data = encode(ev)
    with pytest.raises(PayloadTooLarge) as exc:
        decode(data, Event, max_bytes=len(data) - 1)
    assert exc.value.code == "oversized"
    assert decode(data, Event, max_bytes=len(data)) == ev
    with pytest.raises(PayloadTooLarge):
        decode(b"\xc1" * (1024 * 1024 + 1), Event)  # garbage, but too big is said first


def test_deeply_nested_payload_is_a_codec_error_not_a_crash() -> None:
    payload = b"\x91" * 100_000 + b"\x00"
    with pytest.raises(CodecError):
        decode(payload, Event)


# --- unknown types and versions --------------------------------------------------------------


def test_unknown_event_type() -> None:
    data = raw_event(type="points.gifted")
    with pytest.raises(UnknownVersion, match="unknown event type") as exc:
        decode(packed(data), Event)
    assert exc.value.code == "unknown_version"


@pytest.mark.parametrize("version", [2, 0, True, 1.0, "1", [1], {"v": 1}, None])
def test_unknown_body_version(version: Any) -> None:
    data = raw_event(v=version)
    with pytest.raises(UnknownVersion, match="version"):
        decode(packed(data), Event)


@pytest.mark.parametrize("version", [2, True, [1]])
def test_unknown_batch_version(version: Any) -> None:
    data = EventBatch(store_id="S001", epoch=1, events=[event(1)]).model_dump(mode="json")
    data["v"] = version
    with pytest.raises(UnknownVersion, match="batch version"):
        decode_batch(packed(data))


def test_unknown_version_inside_a_batch() -> None:
    data = EventBatch(store_id="S001", epoch=1, events=[event(1), event(2)]).model_dump(
        mode="json")
    data["events"][1]["body"]["v"] = 3
    with pytest.raises(UnknownVersion, match=r"points\.earned version 3"):
        decode_batch(packed(data))


# --- wrong field types -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"points": 10.0}, "body.points.earned.points"),  # float points
        ({"points": 10.5}, "body.points.earned.points"),
        ({"points": True}, "body.points.earned.points"),  # bool is not a number of points
        ({"points": "10"}, "body.points.earned.points"),
        ({"points": -10}, "body.points.earned.points"),
        ({"points": 0}, "body.points.earned.points"),
        ({"expires_on": "not a date"}, "body.points.earned.expires_on"),
        ({"surprise": 1}, "body.points.earned.surprise"),  # extra field
    ],
)
def test_wrong_body_field_types_are_invalid(change: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidMessage) as exc:
        decode(packed(raw_event(**change)), Event)
    assert exc.value.code == "invalid"
    assert where in exc.value.message


def test_float_or_bool_money_in_a_sale_is_invalid() -> None:
    for bad in (2_000.0, True, "2000", -1):
        data = event(1, sale_body()).model_dump(mode="json")
        data["body"]["total"] = bad
        with pytest.raises(InvalidMessage, match="total"):
            decode(packed(data), Event)
    data = event(1, sale_body()).model_dump(mode="json")
    data["body"]["lines"][0]["unit_price"] = 12.5
    with pytest.raises(InvalidMessage, match="unit_price"):
        decode(packed(data), Event)


@pytest.mark.parametrize(
    ("field", "value"),
    [("seq", 1.0), ("seq", True), ("seq", 0), ("epoch", "1"), ("hlc", -1), ("store_id", "S 1"),
     ("event_id", "")],
)
def test_wrong_envelope_field_types_are_invalid(field: str, value: Any) -> None:
    data = raw_event()
    data[field] = value
    with pytest.raises(InvalidMessage, match=field):
        decode(packed(data), Event)


def test_missing_body_type_is_invalid() -> None:
    data = raw_event()
    del data["body"]["type"]
    with pytest.raises(InvalidMessage):
        decode(packed(data), Event)


# --- batches ---------------------------------------------------------------------------------


def batch_payload(seqs: list[int], stores: list[str] | None = None) -> bytes:
    stores = stores or ["S001"] * len(seqs)
    data = EventBatch(store_id="S001", epoch=1, events=[event(1)]).model_dump(mode="json")
    data["events"] = [event(s, store=st).model_dump(mode="json")
                      for s, st in zip(seqs, stores, strict=True)]
    return packed(data)


@pytest.mark.parametrize("seqs", [[1, 3], [2, 1], [1, 1], [5, 6, 8]])
def test_batch_with_non_consecutive_seq_is_invalid(seqs: list[int]) -> None:
    with pytest.raises(InvalidMessage, match="not consecutive"):
        decode_batch(batch_payload(seqs))


def test_batch_with_an_event_of_another_store_is_invalid() -> None:
    with pytest.raises(InvalidMessage, match="store or epoch"):
        decode_batch(batch_payload([1, 2], ["S001", "S002"]))


def test_empty_batch_is_invalid() -> None:
    data = EventBatch(store_id="S001", epoch=1, events=[event(1)]).model_dump(mode="json")
    data["events"] = []
    with pytest.raises(InvalidMessage, match="events"):
        decode_batch(packed(data))


def test_consecutive_batch_from_any_start_is_fine() -> None:
    assert [e.seq for e in decode_batch(batch_payload([41, 42, 43])).events] == [41, 42, 43]


def test_event_bytes_are_the_events_as_received() -> None:
    import msgpack

    from protocol.codec import decode, event_bytes

    events = [Event(event_id=f"e{i}", store_id="S001", epoch=1, seq=i, hlc=i,
                    body=CouponVoided(coupon_code="C1", reason="x")) for i in range(1, 4)]
    payload = encode(EventBatch(store_id="S001", epoch=1, events=events))
    raw = event_bytes(payload)
    assert raw == [encode(e) for e in events]
    assert [decode(r, Event) for r in raw] == events
    # The envelope keys may come in any order; the cut stays exact.
    reordered = msgpack.packb({"events": [msgpack.unpackb(r) for r in raw], "epoch": 1,
                               "store_id": "S001", "v": 1})
    assert event_bytes(reordered) == raw


def test_a_repeated_events_key_cuts_the_events_that_were_validated() -> None:
    """msgpack keeps the last of a repeated key: the bytes the hub logs must be those events,
    one for each validated event, not the events of every list the payload carried."""
    import msgpack

    from protocol.codec import event_bytes

    def dumped(seq: int) -> dict[str, object]:
        return Event(event_id=f"e{seq}", store_id="S001", epoch=1, seq=seq, hlc=seq,
                     body=CouponVoided(coupon_code="C1", reason="x")).model_dump(mode="json")

    first, last = [dumped(1), dumped(2)], [dumped(7)]
    packer = msgpack.Packer()
    payload = (packer.pack_map_header(5) + packer.pack("v") + packer.pack(1)
               + packer.pack("store_id") + packer.pack("S001") + packer.pack("epoch")
               + packer.pack(1) + packer.pack("events") + packer.pack(first)
               + packer.pack("events") + packer.pack(last))
    batch = decode_batch(payload)
    assert [e.seq for e in batch.events] == [7]
    assert event_bytes(payload) == [msgpack.packb(last[0])]


# -- what a store is told tolerates additions; what it sends and what it must obey does not --


def _packed(message: dict[str, Any]) -> bytes:
    return msgpack.packb(message, use_bin_type=True)


def test_acks_and_directory_pages_from_a_newer_hub_decode_without_its_new_fields() -> None:
    page = {"v": 1, "request_id": "r1", "after": 0, "upto": 1, "added_later": [1, 2],
            "members": [{"member_id": "m1", "member_code": "C1", "home_store": "S001",
                         "points_expiring": 300,
                         "grants": [{"store_id": "S001", "points_granted": 5,
                                     "sv_granted": 0, "until": "2027-01-01"}],
                         "shares": [{"store_id": "S002", "points": 1, "sv_principal": 0,
                                     "sv_bonus": 0, "region": "east"}]}]}
    got = decode(_packed(page), DirectoryPage)
    assert got.members[0].grants[0].points_granted == 5
    assert got.members[0].shares[0].points == 1
    assert "points_expiring" not in got.members[0].model_dump()
    ack = decode(_packed({"v": 1, "store_id": "S001", "epoch": 1, "seq": 7, "lag_hint": 3}),
                 Ack)
    assert ack.seq == 7
    assert decode(_packed({"v": 1, "head": 9, "reason": "x"}), DirectoryNotice).head == 9
    # A change a store must not misread comes as a new version, and that is refused.
    with pytest.raises(CodecError):
        decode(_packed({**page, "v": 2}), DirectoryPage)
    # Values still have to be right where the fields are known.
    bad = {**page, "members": [{**page["members"][0], "member_id": 12}]}
    with pytest.raises(CodecError):
        decode(_packed(bad), DirectoryPage)


def test_what_a_store_sends_and_what_it_must_obey_stays_strict() -> None:
    request = {"v": 1, "request_id": "q1", "store_id": "S001", "kind": "authorize",
               "member_id": "m1", "points": 5, "sneaky": True}
    with pytest.raises(CodecError):
        decode(_packed(request), RpcRequest)
    reply = {"v": 1, "request_id": "q1", "ok": True, "granted_points": 5, "condition": "x"}
    with pytest.raises(CodecError):
        decode(_packed(reply), RpcReply)
    directory_request = {"v": 1, "store_id": "S001", "after": 0, "request_id": "r",
                         "extra": 1}
    with pytest.raises(CodecError):
        decode(_packed(directory_request), DirectoryRequest)
