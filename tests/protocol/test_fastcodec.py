"""``protocol.fastcodec`` against ``protocol.codec``: the same verdict and the same values.

The oracle is always pydantic (``codec.decode_batch`` + ``codec.event_bytes``). Generated valid
batches must be accepted by the fast path itself (not through its fallback); mutated batches
must get the same error or the same values; and the fast path alone must never accept a payload
pydantic refuses.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Callable
from datetime import date
from typing import Annotated, Any, Literal, Union, cast, get_args, get_origin

import annotated_types as at
import msgpack
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

import protocol.events as events_module
from protocol import codec, fastcodec
from protocol.codec import (
    CodecError,
    InvalidMessage,
    MalformedPayload,
    PayloadTooLarge,
    decode_batch,
    event_bytes,
)
from protocol.events import BODY_TYPES, Event, EventBatch
from protocol.fastcodec import (
    BODY_STRUCTS,
    CODEC_MAX_ARRAY_LEN,
    CODEC_MAX_MAP_LEN,
    body_type,
    compile_model,
    decode_batch_fast,
    decode_fast_only,
    python_pattern,
)

FAST = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def packed(data: Any) -> bytes:
    out: bytes = msgpack.packb(data, use_bin_type=True)
    return out


# --- outcomes ----------------------------------------------------------------------------------


def slow(payload: Any, max_bytes: int = codec.DEFAULT_MAX_BYTES) -> tuple[Any, ...]:
    """pydantic's verdict: ("ok", values) or ("error", class, message)."""
    try:
        batch = decode_batch(payload, max_bytes=max_bytes)
    except CodecError as exc:
        return ("error", type(exc), exc.message)
    return ("ok", batch.store_id, batch.epoch,
            [ev.model_dump(mode="json") for ev in batch.events], event_bytes(payload))


def fast(payload: Any, max_bytes: int = codec.DEFAULT_MAX_BYTES) -> tuple[Any, ...]:
    try:
        batch = decode_batch_fast(payload, max_bytes=max_bytes)
    except CodecError as exc:
        return ("error", type(exc), exc.message)
    return ("ok", batch.store_id, batch.epoch,
            [msgspec.to_builtins(ev) for ev in batch.events], batch.raw)


def fast_alone(payload: Any, max_bytes: int = codec.DEFAULT_MAX_BYTES) -> tuple[Any, ...] | None:
    try:
        batch = decode_fast_only(payload, max_bytes=max_bytes)
    except Exception:
        return None
    return ("ok", batch.store_id, batch.epoch,
            [msgspec.to_builtins(ev) for ev in batch.events], batch.raw)


def assert_agree(payload: Any, max_bytes: int = codec.DEFAULT_MAX_BYTES) -> tuple[Any, ...]:
    expected = slow(payload, max_bytes)
    assert fast(payload, max_bytes) == expected
    alone = fast_alone(payload, max_bytes)
    if alone is not None:  # the fast path may refuse more, never accept more or differently
        assert alone == expected
    return expected


# --- valid batches, generated from the models' own constraints ----------------------------------


def _flatten(metadata: Any) -> list[Any]:
    out: list[Any] = []
    for m in metadata:
        if isinstance(m, FieldInfo):
            out.extend(_flatten(m.metadata))
        elif isinstance(m, at.GroupedMetadata) and not isinstance(m, StringConstraints):
            out.extend(_flatten(list(m)))
        else:
            out.append(m)
    return out


def _bounds(metadata: list[Any]) -> dict[str, Any]:
    b: dict[str, Any] = {}
    for m in metadata:
        if isinstance(m, at.Ge):
            b["min"] = m.ge
        elif isinstance(m, at.Gt):
            b["min"] = cast(int, m.gt) + 1
        elif isinstance(m, at.Le):
            b["max"] = m.le
        elif isinstance(m, at.Lt):
            b["max"] = cast(int, m.lt) - 1
        elif isinstance(m, at.MinLen):
            b["min_len"] = m.min_length
        elif isinstance(m, at.MaxLen):
            b["max_len"] = m.max_length
        elif isinstance(m, StringConstraints):
            if m.min_length is not None:
                b["min_len"] = m.min_length
            if m.max_length is not None:
                b["max_len"] = m.max_length
            if m.pattern is not None:
                b["pattern"] = m.pattern
    return b


TEXT = st.text(st.characters(codec="utf-8"), max_size=12)


def strategy_for(tp: Any, metadata: list[Any]) -> st.SearchStrategy[Any]:
    """Values pydantic accepts for ``tp`` under ``metadata``, in their wire (JSON) form."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *meta = get_args(tp)
        return strategy_for(base, [*metadata, *_flatten(meta)])
    b = _bounds(metadata)
    if origin in (Union, types.UnionType):
        members = [m for m in get_args(tp) if m is not type(None)]
        if len(members) == 1:
            return st.none() | strategy_for(members[0], metadata)
        return st.one_of([body_strategy(m) for m in members])
    if origin is list:
        (item,) = get_args(tp)
        low = b.get("min_len", 0)
        return st.lists(strategy_for(item, []), min_size=low,
                        max_size=max(low, min(b.get("max_len", 3), 3)))
    if origin is Literal:
        return st.sampled_from(get_args(tp))
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(b.get("min", -(2**63)), b.get("max", 2**64 - 1))
    if tp is str:
        if "pattern" in b:
            return st.from_regex(b["pattern"], fullmatch=True)
        low = b.get("min_len", 0)
        return st.text(st.characters(codec="utf-8"), min_size=low,
                       max_size=min(b.get("max_len", 12), max(low, 12)))
    if tp is date:
        return st.dates().map(date.isoformat)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return model_strategy(tp)
    raise AssertionError(f"no strategy for {tp!r}")


def model_strategy(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for name, info in model.model_fields.items():
        s = strategy_for(info.annotation, _flatten(info.metadata))
        defaulted = info.default is not PydanticUndefined or info.default_factory is not None
        (optional if defaulted else required)[name] = s
    dicts = st.fixed_dictionaries(required, optional=optional)
    # Key order must not matter: sometimes reversed.
    return st.tuples(dicts, st.booleans()).map(
        lambda pair: dict(reversed(pair[0].items())) if pair[1] else pair[0])


def body_strategy(model: Any) -> st.SearchStrategy[dict[str, Any]]:
    tag = model.model_fields["type"].default
    return model_strategy(model).map(lambda body: {**body, "type": tag})


bodies = st.one_of([body_strategy(m) for m in BODY_TYPES.values()])
store_ids = strategy_for(Event.model_fields["store_id"].annotation,
                         _flatten(Event.model_fields["store_id"].metadata))
event_ids = strategy_for(Event.model_fields["event_id"].annotation,
                         _flatten(Event.model_fields["event_id"].metadata))


@st.composite
def batches(draw: st.DrawFn, body: st.SearchStrategy[dict[str, Any]] = bodies) -> dict[str, Any]:
    store = draw(store_ids)
    epoch = draw(st.integers(1, 2**64 - 1))
    first = draw(st.integers(1, 2**40))
    count = draw(st.integers(1, 3))
    evs = [{"event_id": draw(event_ids), "store_id": store, "epoch": epoch, "seq": first + i,
            "hlc": draw(st.integers(0, 2**64 - 1)), "body": draw(body)} for i in range(count)]
    return {"v": 1, "store_id": store, "epoch": epoch, "events": evs}


@pytest.fixture
def no_fallbacks() -> Any:
    before = fastcodec.fallbacks
    yield
    assert fastcodec.fallbacks == before, "a valid canonical batch took the slow path"


@pytest.mark.parametrize("tag", sorted(BODY_TYPES))
@FAST
@given(data=st.data())
def test_valid_batches_of_every_type_decode_alike(tag: str, data: st.DataObject) -> None:
    before = fastcodec.fallbacks
    batch = data.draw(batches(body_strategy(BODY_TYPES[tag])))
    payload = packed(batch)
    verdict = assert_agree(payload)
    assert verdict[0] == "ok", verdict
    assert fast_alone(payload) == verdict  # accepted by the fast path itself
    assert fastcodec.fallbacks == before
    got = decode_batch_fast(payload)
    assert [body_type(ev.body) for ev in got.events] == [tag] * len(batch["events"])


@settings(FAST, max_examples=60)
@given(batch=batches())
def test_mixed_batches_decode_alike(batch: dict[str, Any]) -> None:
    payload = packed(batch)
    assert fast_alone(payload) == slow(payload)
    assert slow(payload)[0] == "ok"


# --- mutations ----------------------------------------------------------------------------------


def _all_models() -> list[type[BaseModel]]:
    return [m for m in vars(events_module).values()
            if isinstance(m, type) and issubclass(m, BaseModel) and m.__module__ ==
            events_module.__name__]


def _constraint_values() -> tuple[set[int], set[int]]:
    """Every int bound and every length limit the models use: mutations probe them at ±1."""
    ints: set[int] = set()
    lengths: set[int] = set()

    def walk(tp: Any, metadata: list[Any]) -> None:
        for m in metadata:
            b = _bounds([m])
            ints.update(v for k, v in b.items() if k in ("min", "max"))
            lengths.update(v for k, v in b.items() if k in ("min_len", "max_len"))
        for arg in get_args(tp):
            if get_origin(arg) is Annotated:
                base, *meta = get_args(arg)
                walk(base, _flatten(meta))
            else:
                walk(arg, [])

    for model in _all_models():
        for info in model.model_fields.values():
            walk(info.annotation, _flatten(info.metadata))
    return ints, lengths


INT_BOUNDS, LENGTHS = _constraint_values()
ODD_VALUES: list[Any] = [
    True, False, None, 1.0, 0.5, -0.0, "1", b"1", b"abc", [], {}, [1], {"a": 1}, "", " ",
    2**63 - 1, 2**63, 2**64 - 1, -(2**63), msgpack.ExtType(5, b"x"), msgpack.Timestamp(0),
    "2024-02-30", "2024-1-01", "2024-01-01T00:00:00", "2024-01-01\n", "0000-01-01", 20240101,
    "CNY\n", "cny", "CN", "CNYY", "S 1", "S001\n", "\nS001", "\x00", "points.gifted",
    "member.registered", "sale.finalized",
]
ODD_VALUES += sorted({v + d for v in INT_BOUNDS for d in (-1, 0, 1)})
ODD_VALUES += [c * n for n in sorted({n + d for n in LENGTHS for d in (-1, 0, 1)} - {-1})
               for c in ("x", "é", "😀")]


def _sites(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _sites(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _sites(v, (*path, i))
    return out


def _derived(value: Any) -> list[Any]:
    """Mutations of the value found at a site."""
    if isinstance(value, str):
        return [value + "\n", "\n" + value, value + " ", value.encode(), value[:-1], value * 2,
                value + "😀", value.upper(), value.lower()]
    if isinstance(value, bool):
        return [int(value)]
    if isinstance(value, int):
        # Only what msgpack can carry (int64 .. uint64): a bigger int is no payload at all.
        ints = [v for v in (value - 1, value + 1, -value, value * 1000)
                if -(2**63) <= v < 2**64]
        return [*ints, float(value), str(value)]
    if isinstance(value, list):
        return [[], value * 2, value * 26, [*value, None], value[:-1]]
    if isinstance(value, dict):
        return [{}, [*value.values()]]
    return []


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    batch = draw(batches())
    site = draw(st.sampled_from(_sites(batch)))
    holder: Any = batch
    for key in site[:-1]:
        holder = holder[key]
    target: Any = holder if not site else holder[site[-1]]
    how = draw(st.sampled_from(["replace", "derive", "delete", "extra"]
                               if isinstance(target, dict) else ["replace", "derive"]))
    if how == "extra":
        target[draw(st.sampled_from(["surprise", "type", "v", "body", "events", "seq"]))] = (
            draw(st.sampled_from(ODD_VALUES)))
    elif how == "delete":
        if target:
            del target[draw(st.sampled_from(sorted(target)))]
    elif not site:
        batch = draw(st.sampled_from(ODD_VALUES + _derived(batch)))
    else:
        choices = ODD_VALUES if how == "replace" else _derived(target) or ODD_VALUES
        holder[site[-1]] = draw(st.sampled_from(choices))
    return packed(batch)


@settings(FAST, max_examples=200)
@given(payload=mutated())
def test_mutated_batches_get_the_same_verdict(payload: bytes) -> None:
    assert_agree(payload)


# Every field of every body type filled in (optional ones too, so their constraints are probed).
_LINE = {"line_no": 1, "sku": "6901", "name": "牛奶 1L", "category": "dairy", "qty": 2,
         "unit_price": 500, "gross": 1000, "discount": 50, "net": 950, "points": 9}
_TENDER = {"kind": "stored_value", "amount": 950, "points": 0, "sv_principal": 900,
           "sv_bonus": 50, "coupon_code": "C1", "reference": "ref"}
SAMPLES: dict[str, dict[str, Any]] = {
    "member.registered": {"member_id": "m1", "member_code": "100001", "phone": "+8613800000000",
                          "name": "王伟", "birthday": "1990-02-28", "card_uid": "04AB",
                          "tier": "gold", "tags": ["vip"], "v": 3, "guide_id": "G7",
                          "gender": "male"},
    "member.profile_changed": {"member_id": "m1", "name": "李娜", "birthday": "2000-02-29",
                               "phone": "+86", "tags": ["a", "b"], "v": 4, "guide_id": "G7",
                               "email": "li.na@example.cn", "gender": "female",
                               "changed": ["name", "birthday", "phone", "tags", "guide_id",
                                           "email", "gender"],
                               "terminal_id": "POS-1", "cashier_id": "C9", "actor": "hq"},
    "member.card_bound": {"member_id": "m1", "card_uid": "04AB"},
    "member.card_state": {"member_id": "m1", "card_uid": "04AB", "state": "replaced",
                          "reason": "挂失", "replaced_by": "04CD", "terminal_id": "POS-1",
                          "cashier_id": "C9", "actor": "hq"},
    "member.pin_set": {"member_id": "m1",
                       "pin_hash": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2g",
                       "terminal_id": "POS-1", "cashier_id": "C9", "actor": "hq"},
    "member.pin_locked": {"member_id": "m1", "failures": 5, "terminal_id": "POS-1"},
    "member.birthday_gift": {"member_id": "m1", "year": 2026, "sale_id": "s1"},
    "member.message_shown": {"member_id": "m1", "key": "j1:m1:birthday:2026-12-05:1",
                             "terminal_id": "POS-1", "sale_id": "s1"},
    "member.erased": {"member_id": "m1", "actor": "dpo@hq", "reason": "PIPL request 17"},
    "member.consent": {"member_id": "m1", "channel": "sms", "purpose": "marketing",
                       "granted": True, "text_version": "2026-01", "terminal_id": "POS-1",
                       "cashier_id": "C1", "actor": "hq"},
    "sale.finalized": {"sale_id": "s1", "terminal_id": "POS-1", "member_id": "m1",
                       "currency": "CNY", "lines": [_LINE],
                       "discounts": [{"kind": "tier", "label": "Member", "amount": 50,
                                      "campaign_id": "c1", "coupon_code": "C1"}],
                       "tenders": [_TENDER], "subtotal": 1000, "discount_total": 50,
                       "total": 950, "points_earned": 9, "v": 2, "cashier_id": "C01",
                       "guide_id": "G7"},
    "refund.completed": {"refund_id": "r1", "sale_id": "s1", "terminal_id": "POS-1",
                         "v": 3, "cashier_id": "C02",
                         "member_id": "m1", "currency": "CNY",
                         "lines": [{"line_no": 1, "qty": 1, "amount": 475,
                                    "points_reversed": 4}],
                         "amount": 475, "tenders": [_TENDER], "points_reversed": 4,
                         "points_shortfall": 1, "points_returned": 2,
                         "coupon_reopened": "C1", "discounts_reversed": 3000},
    "points.earned": {"member_id": "m1", "lot_id": "l1", "points": 9,
                      "expires_on": "2027-12-31", "reason": "birthday", "sale_id": "s1"},
    "points.redeemed": {"member_id": "m1", "points": 5, "sale_id": "s1",
                        "lots": [{"lot_id": "l1", "points": 5}]},
    "points.expired": {"member_id": "m1", "lot_id": "l1", "points": 5},
    "points.adjusted": {"member_id": "m1", "delta": -5, "reason": "refund_return",
                        "lots": [{"lot_id": "l1", "points": 5}], "shortfall": 1,
                        "sale_id": "s1", "refund_id": "r1", "note": "n", "actor": "hq-ops"},
    "sv.topped_up": {"member_id": "m1", "topup_id": "t1", "currency": "CNY", "principal": 100,
                     "bonus": 10, "campaign_id": "c1", "paid_by": "bank_card"},
    "sv.spent": {"member_id": "m1", "sale_id": "s1", "currency": "CNY", "principal": 100,
                 "bonus": 10},
    "sv.refunded": {"member_id": "m1", "sale_id": "s1", "refund_id": "r1", "currency": "CNY",
                    "principal": 100, "bonus": 10},
    "coupon.issued": {"coupon_code": "C1", "member_id": "m1", "campaign_id": "c1",
                      "kind": "percent_off", "value": 1500, "min_spend": 100,
                      "categories": ["fresh"], "expires_on": "2027-01-01"},
    "coupon.redeemed": {"coupon_code": "C1", "sale_id": "s1", "member_id": "m1",
                        "amount": 100},
    "coupon.voided": {"coupon_code": "C1", "reason": "expired"},
    "coupon.reopened": {"coupon_code": "C1", "sale_id": "s1", "refund_id": "r1"},
}


def _targeted(value: Any) -> list[Any]:
    """Each constraint of the models probed at ±1, plus the wrong types, for one leaf."""
    wrong: list[Any] = [True, False, None, 1.5, "1", b"1", [], {}]
    if isinstance(value, bool) or value is None:
        return [*wrong, 0, 1, "", "x" * 65, "2024-02-30"]
    if isinstance(value, int):
        return [*wrong, float(value), str(value), *sorted({v + d for v in INT_BOUNDS
                                                         for d in (-1, 0, 1)})]
    if isinstance(value, str):
        lengths = sorted({n + d for n in LENGTHS for d in (-1, 0, 1)} - {-1})
        return [*wrong, value.encode(), value + "\n", value + " ", "\n" + value, value.lower(),
                value[:-1], value + "-01", 20240101, *("x" * n for n in lengths),
                *("😀" * n for n in lengths if n <= 300)]
    if isinstance(value, list):
        return [*wrong, *(value * n for n in sorted(LENGTHS) if 0 < n <= 600), [*value] * 2]
    return wrong


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    items = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else ())
    for k, v in items:
        out += _leaves(v, (*path, k))
    return out


_DELETE = object()


def _probe(document: dict[str, Any], payload: Callable[[], bytes],
           skip: Callable[[tuple[Any, ...]], bool] = lambda path: False) -> tuple[int, int]:
    """Every leaf of ``document`` mutated in turn (and every key deleted): the same verdict."""
    refused = tried = 0
    for path in _leaves(document)[1:]:
        if skip(path):
            continue
        holder: Any = document
        for key in path[:-1]:
            holder = holder[key]
        snapshot = holder.copy()
        mutations: list[Any] = _targeted(holder[path[-1]])
        if isinstance(holder, dict):
            mutations.append(_DELETE)
        for mutation in mutations:
            if mutation is _DELETE:
                del holder[path[-1]]
            else:
                holder[path[-1]] = mutation
            tried += 1
            refused += assert_agree(payload())[0] == "error"
            holder.clear()
            holder.update(snapshot) if isinstance(holder, dict) else holder.extend(snapshot)
    return refused, tried


@pytest.mark.parametrize("tag", sorted(SAMPLES))
def test_every_field_of_every_body_probed_at_its_limits(tag: str) -> None:
    assert set(SAMPLES) == set(BODY_TYPES)
    body = {"type": tag, "v": 1, **SAMPLES[tag]}
    assert set(body) == set(BODY_TYPES[tag].model_fields)

    def payload() -> bytes:
        return packed(batch_of(one_event(body)))

    assert assert_agree(payload())[0] == "ok"
    refused, tried = _probe(body, payload)
    assert 0 < refused < tried
    for where in (body, *(v[0] for v in body.values() if isinstance(v, list) and v
                          and isinstance(v[0], dict))):
        where["surprise"] = 1
        assert assert_agree(payload())[0] == "error"
        del where["surprise"]


def test_every_envelope_field_probed_at_its_limits() -> None:
    batch = batch_of(one_event(hlc=2**64 - 1), one_event(seq=2, event_id="e-2"))
    refused, tried = _probe(batch, lambda: packed(batch), skip=lambda path: "body" in path)
    assert 0 < refused < tried
    for where in (batch, batch["events"][0]):
        where["surprise"] = 1
        assert assert_agree(packed(batch))[0] == "error"
        del where["surprise"]



# --- specific differences between msgspec and pydantic -------------------------------------


def one_event(body: dict[str, Any] | None = None, **envelope: Any) -> dict[str, Any]:
    ev = {"event_id": "e-1", "store_id": "S001", "epoch": 1, "seq": 1, "hlc": 5,
          "body": body or {"type": "sv.spent", "v": 1, "member_id": "m", "sale_id": "s",
                           "currency": "CNY", "principal": 100, "bonus": 0}}
    return {**ev, **envelope}


def batch_of(*evs: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {"v": 1, "store_id": "S001", "epoch": 1, "events": list(evs) or [one_event()],
            **changes}


def sv_body(**changes: Any) -> dict[str, Any]:
    return {"type": "sv.spent", "v": 1, "member_id": "m", "sale_id": "s", "currency": "CNY",
            "principal": 100, "bonus": 0, **changes}


@pytest.mark.parametrize("payload", [
    # Python's ``$`` matches before a final newline; pydantic's does not.
    packed(batch_of(one_event(sv_body(currency="CNY\n")))),
    packed(batch_of(store_id="S001\n")),
    packed(batch_of(one_event(store_id="S001\n"))),
    # bool and float are not ints, even for Literal[1] and where the value is integral
    packed(batch_of(one_event(sv_body(principal=True)))),
    packed(batch_of(one_event(sv_body(principal=100.0)))),
    packed(batch_of(one_event(sv_body(v=True)))),
    packed(batch_of(one_event(sv_body(v=1.0)))),
    packed(batch_of(v=True)),
    packed(batch_of(epoch=1.0)),
    packed(batch_of(one_event(seq=True))),
    # lengths count characters, not bytes
    packed(batch_of(one_event(sv_body(member_id="😀" * 65)))),
    packed(batch_of(one_event(event_id=""))),
    # dates
    packed(batch_of(one_event({"type": "points.earned", "member_id": "m", "lot_id": "l",
                               "points": 1, "expires_on": "2023-02-29"}))),
    packed(batch_of(one_event({"type": "points.earned", "member_id": "m", "lot_id": "l",
                               "points": 1, "expires_on": msgpack.Timestamp(0)}))),
    # batch checks
    packed(batch_of(one_event(), one_event(seq=3))),
    packed(batch_of(one_event(), one_event(seq=2, store_id="S002"))),
    packed(batch_of(one_event(), one_event(seq=2, epoch=2))),
    packed(batch_of(events=[])),
    packed(batch_of(v=2)),
    packed(batch_of(one_event(sv_body(type="points.gifted")))),
    packed(batch_of(one_event(sv_body(v=2)))),
    # not a batch at all
    b"", b"\xc1", b"\x84", packed([1, 2]), packed(None), packed("batch"), packed(1),
    packed(batch_of())[:-1], packed(batch_of()) + b"\x00",
    b"\x81\x01\x02", b"\x81\xa1\xff\x01", b"\x91" * 100_000 + b"\x00",
])
def test_known_differences_get_the_same_verdict(payload: bytes) -> None:
    verdict = assert_agree(payload)
    assert verdict[0] == "error"
    assert fast_alone(payload) is None


def test_trailing_newline_is_refused_by_the_fast_path_itself() -> None:
    assert python_pattern(r"^[A-Z]{3}$") == r"^[A-Z]{3}\Z"
    sale = fastcodec.BODY_STRUCTS["sv.spent"]
    with pytest.raises(msgspec.ValidationError, match="currency"):
        msgspec.msgpack.decode(packed(sv_body(currency="CNY\n")), type=sale)


def test_oversized_and_not_bytes() -> None:
    payload = packed(batch_of())
    assert assert_agree(payload, max_bytes=len(payload))[0] == "ok"
    verdict = assert_agree(payload, max_bytes=len(payload) - 1)
    assert verdict[:2] == ("error", PayloadTooLarge)
    assert assert_agree(b"\xc1" * 2_000_000)[:2] == ("error", PayloadTooLarge)
    assert assert_agree("text")[:2] == ("error", MalformedPayload)
    assert assert_agree(bytearray(payload))[0] == "ok"
    assert assert_agree(memoryview(payload))[0] == "ok"


@pytest.mark.parametrize("count", [5_000, 5_001])
def test_batch_length_limit(count: int) -> None:
    evs = [one_event(seq=i, event_id=f"e{i}") for i in range(1, count + 1)]
    verdict = assert_agree(packed(batch_of(*evs)))
    assert verdict[0] == ("ok" if count == 5_000 else "error")


def test_list_limits_of_bodies() -> None:
    lot = {"lot_id": "l", "points": 1}
    for n, ok in ((20, True), (21, False)):
        sale = {"type": "sale.finalized", "sale_id": "s", "terminal_id": "t",
                "currency": "CNY", "subtotal": 1, "discount_total": 0, "total": 1,
                "points_earned": 0,
                "lines": [{"line_no": 1, "sku": "a", "name": "n", "category": "c", "qty": 1,
                           "unit_price": 1, "gross": 1, "discount": 0, "net": 1,
                           "points": 0}],
                "tenders": [{"kind": "cash", "amount": 1}] * n}
        assert assert_agree(packed(batch_of(one_event(sale))))[0] == ("ok" if ok else "error")
    redeemed = {"type": "points.redeemed", "member_id": "m", "points": 1, "sale_id": "s",
                "lots": []}
    assert assert_agree(packed(batch_of(one_event(redeemed))))[0] == "error"
    redeemed["lots"] = [lot] * 3
    assert assert_agree(packed(batch_of(one_event(redeemed))))[0] == "ok"


def test_codec_limits_are_the_ones_fastcodec_assumes() -> None:
    codec.unpack(packed({str(i): 0 for i in range(CODEC_MAX_MAP_LEN)}))
    with pytest.raises(MalformedPayload):
        codec.unpack(packed({str(i): 0 for i in range(CODEC_MAX_MAP_LEN + 1)}))
    codec.unpack(packed([0] * CODEC_MAX_ARRAY_LEN))
    with pytest.raises(MalformedPayload):
        codec.unpack(packed([0] * (CODEC_MAX_ARRAY_LEN + 1)))


def test_array_beyond_the_codec_limit_in_an_unbounded_list() -> None:
    # ``categories`` has no max_length: only msgpack's array limit bounds it.
    body = {"type": "coupon.issued", "coupon_code": "C", "kind": "amount_off", "value": 1,
            "categories": ["x"] * (CODEC_MAX_ARRAY_LEN + 1)}
    payload = packed(batch_of(one_event(body)))
    assert assert_agree(payload)[:2] == ("error", MalformedPayload)
    assert fast_alone(payload) is None
    body["categories"] = ["x"] * CODEC_MAX_ARRAY_LEN
    assert assert_agree(packed(batch_of(one_event(body))))[0] == "ok"


def _map(pairs: list[tuple[str, Any]]) -> bytes:
    """A msgpack map that may repeat keys (a dict cannot)."""
    n = len(pairs)
    head = bytes([0x80 | n]) if n < 16 else b"\xde" + n.to_bytes(2, "big")
    return head + b"".join(packed(k) + packed(v) for k, v in pairs)


def _event_with_body(body: bytes, seq: int = 1) -> bytes:
    env = [("event_id", "e"), ("store_id", "S001"), ("epoch", 1), ("seq", seq), ("hlc", 0)]
    return _map([*env, ("body", None)])[:-1] + body  # the last value (nil) swapped for body


def _batch_bytes(*raw_events: bytes) -> bytes:
    head = _map([("v", 1), ("store_id", "S001"), ("epoch", 1), ("events", None)])[:-1]
    return head + bytes([0x90 | len(raw_events)]) + b"".join(raw_events)


def test_repeated_keys_in_a_body_last_one_wins_in_both() -> None:
    base = list(sv_body().items())
    for extra in ([("principal", 7)], [("principal", "x")], [("type", "sv.spent")],
                  [("type", "sv.refunded"), ("refund_id", "r")], [("v", 2)]):
        payload = _batch_bytes(_event_with_body(_map(base + extra)))
        assert_agree(payload)
    ok = assert_agree(_batch_bytes(_event_with_body(_map([*base, ("principal", 7)]))))
    assert ok[3][0]["body"]["principal"] == 7


def test_a_body_map_beyond_the_codec_limit() -> None:
    # 10,001 entries, all repeats of valid keys: msgpack refuses the map, msgspec alone would
    # take it (last one wins), so fastcodec re-checks large events with codec.unpack.
    pairs = list(sv_body().items())
    pairs += [("bonus", 0)] * (CODEC_MAX_MAP_LEN + 1 - len(pairs))
    payload = _batch_bytes(_event_with_body(_map(pairs)))
    assert assert_agree(payload)[:2] == ("error", MalformedPayload)
    assert fast_alone(payload) is None
    pairs = pairs[:CODEC_MAX_MAP_LEN]
    assert assert_agree(_batch_bytes(_event_with_body(_map(pairs))))[0] == "ok"


def test_repeated_events_key_in_the_batch() -> None:
    # pydantic validates the last "events"; ``event_bytes`` cuts the events of both. The fast
    # path refuses such a map, so the result is today's, whatever today's is.
    ev1 = packed(one_event())
    ev2 = packed(one_event(seq=2))
    payload = (b"\x85" + _map([("v", 1), ("store_id", "S001"), ("epoch", 1)])[1:]
               + packed("events") + b"\x91" + ev1 + packed("events") + b"\x91" + ev2)
    assert msgpack.unpackb(payload)["events"] == [msgpack.unpackb(ev2)]
    assert fast_alone(payload) is None
    assert assert_agree(payload)[0] == "ok"


def test_envelope_in_any_key_order_or_without_v() -> None:
    data = batch_of(one_event(), one_event(seq=2))
    reordered = packed({k: data[k] for k in ("events", "epoch", "store_id", "v")})
    assert assert_agree(reordered)[0] == "ok"
    assert fast_alone(reordered) is not None
    no_v = packed({k: data[k] for k in ("store_id", "epoch", "events")})
    assert assert_agree(no_v)[0] == "ok"


def test_a_large_sale_is_accepted_by_the_fast_path(no_fallbacks: None) -> None:
    line = {"line_no": 1, "sku": "6900000000001", "name": "牛奶 1L" * 10, "category": "dairy",
            "qty": 1, "unit_price": 100, "gross": 100, "discount": 0, "net": 100, "points": 1}
    sale = {"type": "sale.finalized", "v": 1, "sale_id": "s", "terminal_id": "t",
            "member_id": None, "currency": "CNY",
            "lines": [{**line, "line_no": n} for n in range(1, 501)], "discounts": [],
            "tenders": [{"kind": "cash", "amount": 50_000}], "subtotal": 50_000,
            "discount_total": 0, "total": 50_000, "points_earned": 500}
    payload = packed(batch_of(one_event(sale)))
    assert len(payload) > fastcodec._LIMITS_CHECKED_FROM
    assert assert_agree(payload)[0] == "ok"
    assert fast_alone(payload) is not None


# --- the fallback -------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    sv_body(member_id=b"m"),  # pydantic's lax str takes bytes
    {"type": "points.earned", "member_id": "m", "lot_id": "l", "points": 1,
     "expires_on": 86_400},  # and a Unix time for a date
    {"type": "points.earned", "member_id": "m", "lot_id": "l", "points": 1,
     "expires_on": "2027-01-01T00:00:00"},
])
def test_fast_stricter_falls_back_counts_and_warns_once(
        body: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(fastcodec, "_warned", set())
    payload = packed(batch_of(one_event(body), one_event(body, seq=2)))
    assert fast_alone(payload) is None
    before = fastcodec.fallbacks
    with caplog.at_level(logging.WARNING, logger="membergate.protocol.fastcodec"):
        assert assert_agree(payload)[0] == "ok"
        assert assert_agree(payload)[0] == "ok"
    assert fastcodec.fallbacks == before + 2  # once per decode_batch_fast
    warnings = [r for r in caplog.records if r.name == "membergate.protocol.fastcodec"]
    assert len(warnings) == 1
    got = decode_batch_fast(payload)
    assert type(got.events[0]) is fastcodec.BatchEventStruct
    assert body_type(got.events[1].body) == body["type"]


def test_errors_are_the_codecs_not_msgspecs() -> None:
    payload = packed(batch_of(one_event(sv_body(principal=-1))))
    with pytest.raises(InvalidMessage) as exc:
        decode_batch_fast(payload)
    with pytest.raises(InvalidMessage) as expected:
        decode_batch(payload)
    assert exc.value.message == expected.value.message
    # raised from pydantic's refusal, not while handling msgspec's
    assert type(exc.value.__context__) is type(expected.value.__context__)


# --- the compiler -------------------------------------------------------------------------------


def test_every_body_type_has_a_struct_with_its_type() -> None:
    assert set(BODY_STRUCTS) == set(BODY_TYPES)
    for tag, body_model in BODY_TYPES.items():
        struct = BODY_STRUCTS[tag]
        assert struct.type == tag
        assert struct.__struct_config__.tag == tag
        assert struct.__struct_config__.tag_field == "type"
        assert struct.__struct_config__.forbid_unknown_fields
        assert struct.__struct_fields__ == tuple(n for n in body_model.model_fields
                                                 if n != "type")
    for model in _all_models():
        if model.model_fields and model not in BODY_TYPES.values() and model is not EventBatch:
            assert fastcodec._TARGETS[model].__struct_fields__ == tuple(model.model_fields)


def test_compiled_types_are_the_models() -> None:
    assert fastcodec.EventStruct.__struct_fields__ == tuple(Event.model_fields)
    assert fastcodec.BatchStruct.__struct_fields__ == tuple(EventBatch.model_fields)
    assert fastcodec.BatchEventStruct.__struct_fields__ == tuple(Event.model_fields)


def _refuses(model: type[BaseModel], where: str) -> None:
    with pytest.raises(RuntimeError, match=where):
        compile_model(model)


def test_the_compiler_refuses_what_it_does_not_understand() -> None:
    class MultipleOf(BaseModel):
        x: Annotated[int, Field(multiple_of=2)]

    class Validated(BaseModel):
        x: int

        @field_validator("x")
        @classmethod
        def even(cls, v: int) -> int:
            return v

    class After(BaseModel):
        x: Annotated[int, AfterValidator(lambda v: v)]

    class Floaty(BaseModel):
        x: float

    class Aliased(BaseModel):
        x: int = Field(alias="y")

    class Stripped(BaseModel):
        model_config = ConfigDict(str_strip_whitespace=True)
        x: str

    class PlainUnion(BaseModel):
        x: int | str

    class Digits(BaseModel):
        x: str = Field(pattern=r"^\d+$")

    class Boolean(BaseModel):
        x: bool

    class Nested(BaseModel):
        x: list[Annotated[int, Field(multiple_of=3)]]

    class Allow(BaseModel):
        model_config = ConfigDict(extra="allow")
        x: int

    class Upper(BaseModel):
        x: Annotated[str, StringConstraints(to_upper=True)]

    cases: list[tuple[type[BaseModel], str]] = [
        (MultipleOf, "MultipleOf.x"), (Validated, "field_validators"), (After, "After.x"),
        (Floaty, "Floaty.x"), (Aliased, "Aliased.x"), (Stripped, "str_strip_whitespace"),
        (PlainUnion, "PlainUnion.x"), (Digits, "Digits.x"), (Boolean, "Boolean.x"),
        (Nested, "Nested.x"), (Allow, "extra"), (Upper, "Upper.x")]
    for model, where in cases:
        _refuses(model, where)

    class StrictBoolean(BaseModel):  # what pydantic takes is what msgspec takes: compiled
        x: Annotated[bool, Field(strict=True)]

    compiled = fastcodec.compile_model(StrictBoolean)
    assert msgspec.convert({"x": True}, compiled).x is True
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"x": 1}, compiled)


@pytest.mark.parametrize("pattern", [
    r"^\d+$", r"^\w+$", r"\bx", r"^[a-z&&[^aeiou]]+$", r"^[a-z--aeiou]$", r"(?i)abc",
    r"\<x", r"[\d]", r"^é$", r"a{,3}", r"[", r"x\Z", r"a*+", r"a{2}+", r"a??+", r"}",
])
def test_patterns_outside_the_shared_subset_are_refused(pattern: str) -> None:
    with pytest.raises(RuntimeError, match="pattern"):
        python_pattern(pattern)


class Probe(BaseModel):
    """Constraints the events do not use (yet), compiled and checked against pydantic."""

    model_config = ConfigDict(extra="forbid")
    a: Annotated[int, Field(strict=True, gt=-3, lt=7)] = 0
    b: Annotated[int, at.Interval(ge=10, le=12)] = 10
    c: Annotated[str, StringConstraints(pattern=r"(ab|c\.d)$")] = "ab"
    d: Annotated[str, Field(pattern=r"^x?[0-9]{2,}$", min_length=3)] = "x12"
    e: list[Annotated[str, StringConstraints(max_length=2)]] | None = Field(
        default=None, min_length=1, max_length=2)
    f: Literal["a", 3] = "a"


@settings(FAST, max_examples=200)
@given(data=st.dictionaries(
    st.sampled_from(["a", "b", "c", "d", "e", "f", "g"]),
    st.one_of(st.integers(-5, 14), st.sampled_from(ODD_VALUES[:30]),
              st.text("abcdx.0123\n", max_size=6),
              st.lists(st.text("ab\n", max_size=3), max_size=3)),
    max_size=4))
def test_compiled_constraints_never_accept_more_than_pydantic(data: dict[str, Any]) -> None:
    struct = compile_model(Probe)
    try:
        got = msgspec.msgpack.decode(packed(data), type=struct)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return
    assert msgspec.to_builtins(got) == Probe.model_validate(data).model_dump(mode="json")


def test_compiled_probe_accepts_what_it_should() -> None:
    struct = compile_model(Probe)
    good: list[dict[str, Any]] = [{}, {"a": -2}, {"a": 6}, {"b": 12}, {"c": "zzc.d"},
                                  {"d": "0000"}, {"e": ["ab", ""]}, {"e": None}, {"f": 3}]
    bad: list[dict[str, Any]] = [{"a": -3}, {"a": 7}, {"b": 13}, {"c": "ab\n"}, {"d": "x1"},
                                 {"e": []}, {"e": ["abc"]}, {"f": "3"}, {"g": 1}]
    for data in good:
        assert msgspec.to_builtins(msgspec.msgpack.decode(packed(data), type=struct)) == (
            Probe.model_validate(data).model_dump(mode="json"))
    for data in bad:
        with pytest.raises(msgspec.ValidationError):
            msgspec.msgpack.decode(packed(data), type=struct)
