"""Every POS request field that ends up in an event is bounded no wider than the event's field
(issue 14: a SKU the till took but the sale's event could not carry left a cart that could never
be paid). Field by field: the request's schema bound, or the store setting or normaliser that
bounds it at run time, against the event model's bound."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from edge.api import requests as rq
from edge.config import LimitsSection
from protocol import events as ev

# (request model, field) -> (event model, field) it is written to.
FLOWS: dict[tuple[type[BaseModel], str], tuple[type[BaseModel], str]] = {
    (rq.RegisterMember, "name"): (ev.MemberRegistered, "name"),
    (rq.RegisterMember, "tags"): (ev.MemberRegistered, "tags"),
    (rq.RegisterMember, "guide_id"): (ev.MemberRegistered, "guide_id"),
    (rq.RegisterMember, "gender"): (ev.MemberRegistered, "gender"),
    (rq.RegisterMember, "cashier_id"): (ev.ConsentChanged, "cashier_id"),
    (rq.RegisterMember, "phone"): (ev.MemberRegistered, "phone"),
    (rq.RegisterMember, "card_uid"): (ev.MemberRegistered, "card_uid"),
    (rq.ConsentIn, "text_version"): (ev.ConsentChanged, "text_version"),
    (rq.ConsentsIn, "cashier_id"): (ev.ConsentChanged, "cashier_id"),
    (rq.ProfileChange, "name"): (ev.MemberProfileChanged, "name"),
    (rq.ProfileChange, "tags"): (ev.MemberProfileChanged, "tags"),
    (rq.ProfileChange, "guide_id"): (ev.MemberProfileChanged, "guide_id"),
    (rq.ProfileChange, "cashier_id"): (ev.MemberProfileChanged, "cashier_id"),
    (rq.ProfileChange, "phone"): (ev.MemberProfileChanged, "phone"),
    (rq.BindCard, "card_uid"): (ev.CardBound, "card_uid"),
    (rq.CardStateIn, "reason"): (ev.CardStateChanged, "reason"),
    (rq.CardStateIn, "cashier_id"): (ev.CardStateChanged, "cashier_id"),
    (rq.CardReplacementIn, "reason"): (ev.CardStateChanged, "reason"),
    (rq.CardReplacementIn, "cashier_id"): (ev.CardStateChanged, "cashier_id"),
    (rq.CardReplacementIn, "new_card_uid"): (ev.CardStateChanged, "replaced_by"),
    (rq.PaymentPinIn, "cashier_id"): (ev.PaymentPinSet, "cashier_id"),
    (rq.TopUp, "amount"): (ev.StoredValueToppedUp, "principal"),
    (rq.OpenSale, "cashier_id"): (ev.SaleFinalized, "cashier_id"),
    (rq.OpenSale, "guide_id"): (ev.SaleFinalized, "guide_id"),
    (rq.AddLine, "sku"): (ev.SaleLine, "sku"),
    (rq.AddLine, "name"): (ev.SaleLine, "name"),
    (rq.AddLine, "category"): (ev.SaleLine, "category"),
    (rq.AddLine, "qty"): (ev.SaleLine, "qty"),
    (rq.AddLine, "unit_price"): (ev.SaleLine, "unit_price"),
    (rq.ChangeLine, "qty"): (ev.SaleLine, "qty"),
    (rq.TenderIn, "amount"): (ev.Tender, "amount"),
    (rq.TenderIn, "points"): (ev.Tender, "points"),
    (rq.TenderIn, "reference"): (ev.Tender, "reference"),
    (rq.Finalize, "tenders"): (ev.SaleFinalized, "tenders"),
    (rq.Finalize, "cashier_id"): (ev.SaleFinalized, "cashier_id"),
    (rq.Finalize, "guide_id"): (ev.SaleFinalized, "guide_id"),
    (rq.RefundLineIn, "line_no"): (ev.RefundLine, "line_no"),
    (rq.RefundLineIn, "qty"): (ev.RefundLine, "qty"),
    (rq.RefundIn, "lines"): (ev.RefundCompleted, "lines"),
    (rq.RefundIn, "cashier_id"): (ev.RefundCompleted, "cashier_id"),
    (rq.ProductIn, "sku"): (ev.SaleLine, "sku"),
    (rq.ProductIn, "name"): (ev.SaleLine, "name"),
    (rq.ProductIn, "category"): (ev.SaleLine, "category"),
    (rq.ProductIn, "unit_price"): (ev.SaleLine, "unit_price"),
}

# Bounded at run time rather than by the schema: (request, field) -> why, and for numbers the
# store setting whose own declared maximum must fit the event's.
RUNTIME: dict[tuple[type[BaseModel], str], tuple[str, str | None]] = {
    (rq.RegisterMember, "phone"): ("normalised to E.164 (at most 16 characters) first", None),
    (rq.ProfileChange, "phone"): ("normalised to E.164 (at most 16 characters) first", None),
    (rq.RegisterMember, "card_uid"): ("normalised to 8-20 hex digits first", None),
    (rq.BindCard, "card_uid"): ("normalised to 8-20 hex digits first", None),
    (rq.CardReplacementIn, "new_card_uid"): ("normalised to 8-20 hex digits first", None),
    (rq.AddLine, "qty"): ("the store's limit", "max_qty"),
    (rq.ChangeLine, "qty"): ("the store's limit", "max_qty"),
    (rq.RefundLineIn, "qty"): ("at most the line's quantity sold", "max_qty"),
    (rq.AddLine, "unit_price"): ("the store's limit", "max_unit_price"),
    (rq.ProductIn, "unit_price"): ("the store's limit", "max_unit_price"),
    (rq.TopUp, "amount"): ("the store's limit", "max_topup"),
    (rq.TenderIn, "amount"): ("at most what is due, itself within the sale's bounds", None),
}

# Request fields that reach no event field, and why.
NOT_IN_EVENTS: dict[tuple[type[BaseModel], str], str] = {
    (rq.RegisterMember, "birthday"): "a date: the event's is a date too, any past date",
    (rq.RegisterMember, "consents"): "each becomes its own member.consent event (ConsentIn)",
    (rq.ProfileChange, "birthday"): "a date: the event's is a date too",
    (rq.ConsentIn, "channel"): "the same Literal as the event's",
    (rq.ConsentIn, "purpose"): "the same Literal as the event's",
    (rq.ConsentIn, "granted"): "a bool",
    (rq.ConsentsIn, "consents"): "each becomes its own member.consent event",
    (rq.CardStateIn, "state"): "a Literal narrower than the event's",
    (rq.PaymentPinIn, "pin"): "never leaves the till: only its argon2id hash does",
    (rq.PaymentPinIn, "current_pin"): "checked at the till, never sent",
    (rq.PaymentPinIn, "reset"): "a bool that decides the record, not an event field",
    (rq.TopUp, "paid_by"): "the same Literal as the event's",
    (rq.Identify, "card_uid"): "looked up only",
    (rq.Identify, "member_code"): "looked up only",
    (rq.Identify, "phone"): "looked up only",
    (rq.Identify, "qr"): "looked up only",
    (rq.ApplyCoupon, "code"): "looked up; the coupon's own code is what events carry",
    (rq.TenderIn, "kind"): "a Literal narrower than the event's",
    (rq.TenderIn, "sv_order"): "decides the principal/bonus split, not carried",
    (rq.Finalize, "pin"): "never leaves the till",
    (rq.RefundIn, "sale_id"): "looked up: the sale's own id is what the event carries",
    (rq.ProductsIn, "products"): "the catalogue, not an event",
    (rq.SimulatedScan, "code"): "a scan, resolved before anything is recorded",
    (rq.ScanIn, "code"): "a scan, resolved before anything is recorded",
    (rq.SimulatedTap, "card_uid"): "looked up only",
    (rq.SimulatedTap, "member_number"): "looked up only",
}


def _field_schema(model: type[BaseModel], name: str) -> dict[str, Any]:
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in node:
            return resolve(defs[node["$ref"].split("/")[-1]])
        if "anyOf" in node:  # ``X | None``: the bounds are X's
            options = [resolve(o) for o in node["anyOf"] if o.get("type") != "null"]
            assert len(options) == 1, (model.__name__, name, node)
            return options[0]
        return node

    return resolve(schema["properties"][name])


def _bounds(node: dict[str, Any]) -> dict[str, Any]:
    out = {k: node[k] for k in ("maxLength", "maximum", "maxItems", "pattern") if k in node}
    if node.get("type") == "array" and "items" in node:
        item = node["items"]
        out["items"] = {k: item[k] for k in ("maxLength", "maximum") if k in item}
    return out


def _request_models() -> list[type[BaseModel]]:
    return [v for v in vars(rq).values() if isinstance(v, type) and issubclass(v, rq._Req)
            and v is not rq._Req]


def test_every_request_field_is_accounted_for() -> None:
    listed = set(FLOWS) | set(NOT_IN_EVENTS)
    fields = {(m, f) for m in _request_models() for f in m.model_fields}
    assert {(m.__name__, f) for m, f in fields - listed} == set()
    assert {(m.__name__, f) for m, f in listed - fields} == set()


@pytest.mark.parametrize(("request_field", "event_field"), list(FLOWS.items()),
                         ids=[f"{m.__name__}.{f}" for m, f in FLOWS])
def test_a_request_field_is_no_wider_than_the_event_field_it_fills(
        request_field: tuple[type[BaseModel], str],
        event_field: tuple[type[BaseModel], str]) -> None:
    got = _bounds(_field_schema(*request_field))
    need = _bounds(_field_schema(*event_field))
    if request_field in RUNTIME:
        why, setting = RUNTIME[request_field]
        if setting is not None:  # the setting's own largest value fits the event
            declared = _bounds(_field_schema(LimitsSection, setting))
            assert declared["maximum"] <= need["maximum"], (why, setting)
        return
    for key in ("maxLength", "maximum", "maxItems"):
        if key in need:
            assert key in got and got[key] <= need[key], (key, got, need)
    for key in ("maxLength", "maximum"):
        if key in need.get("items", {}):
            assert got["items"].get(key, need["items"][key] + 1) <= need["items"][key], (
                key, got, need)
