"""Fraud at the till (issue 14): lost cards, payment PINs, profile changes recorded with the till
and the cashier, a birthday set once at the store and a birthday gift once a year."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge import demo
from edge.api import create_app
from edge.checkout import TenderRequest
from edge.config import EdgeConfig
from edge.directory import apply_entry
from edge.errors import EdgeError
from edge.gateway import StoreGateway
from edge.service import EdgeService
from protocol.sync import MemberCard, MemberEntry
from tests.edge import invariants
from tests.edge.conftest import TOKEN, key, make_config, register, sell

PIN = "918273"
# Cheap argon2 settings: the hash carries them, so the checks are the real ones.
FAST_PIN = {"hash_memory_kib": 1024, "hash_time_cost": 1, "max_failures": 3}


@pytest.fixture
def config(tmp_path: Path) -> EdgeConfig:
    return make_config(tmp_path, payment_pin=FAST_PIN)


@pytest.fixture
async def pos(service: EdgeService) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(service, manage_lifetime=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge",
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        yield c


def idem() -> dict[str, str]:
    return {"Idempotency-Key": key()}


def books(svc: EdgeService) -> dict[str, Any]:
    return invariants.snapshot(svc.config.database.path)


async def _member_with_money(svc: EdgeService, card: str = "04A1B2C3") -> str:
    m = await register(svc, "13900139000", card=card)
    await svc.top_up(terminal_id="POS-1", idem_key=key(), member_id=m["member_id"],
                     amount=50_000)
    return str(m["member_id"])


async def _open_sale(pos: httpx.AsyncClient, member_id: str, price: int = 10_000) -> str:
    sid = str((await pos.post("/v1/sales", json={})).json()["sale_id"])
    r = await pos.post(f"/v1/sales/{sid}/member", headers=idem(), json={"member_code": (
        await pos.get(f"/v1/members/{member_id}")).json()["member_code"]})
    assert r.status_code == 200, r.text
    r = await pos.post(f"/v1/sales/{sid}/lines", headers=idem(), json={
        "sku": "A", "name": "A", "category": "grocery", "qty": 1, "unit_price": price})
    assert r.status_code == 200, r.text
    return sid


def _sv(amount: int, pin: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"tenders": [{"kind": "stored_value", "amount": amount}]}
    if pin is not None:
        body["pin"] = pin
    return body


# --- cards ----------------------------------------------------------------------------------


async def test_a_lost_card_is_refused_with_its_reason_until_the_loss_is_lifted(
        service: EdgeService, pos: httpx.AsyncClient) -> None:
    mid = await _member_with_money(service)
    r = await pos.put(f"/v1/members/{mid}/cards/04a1b2c3/state", headers=idem(),
                      json={"state": "lost", "reason": "钱包丢失", "cashier_id": "C01"})
    assert r.status_code == 200, r.text
    assert r.json()["cards"] == []
    assert r.json()["card_states"] == [{"card_uid": "04A1B2C3", "state": "lost",
                                        "reason": "钱包丢失"}]
    r = await pos.get("/v1/members/lookup", params={"card_uid": "04A1B2C3"})
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["code"] == "card_blocked" and "钱包丢失" in err["message"]
    assert err["details"]["state"] == "lost"
    # The member is still served by phone, balances untouched.
    assert (await service.find_member_id("phone", "13900139000")) == mid
    assert (await service.member(mid))["stored_value"]["total"] == 55_000

    event = invariants.outbox_events(service.config.database.path)[-1].body
    assert (event.type, event.state, event.terminal_id, event.cashier_id) == (  # type: ignore[union-attr]
        "member.card_state", "lost", "POS-1", "C01")

    r = await pos.put(f"/v1/members/{mid}/cards/04A1B2C3/state", headers=idem(),
                      json={"state": "active", "cashier_id": "C02"})
    assert r.status_code == 200 and r.json()["cards"] == ["04A1B2C3"]
    assert await service.find_member_id("card_uid", "04A1B2C3") == mid
    changes = (await pos.get(f"/v1/members/{mid}/changes")).json()["changes"]
    assert [(c["what"], c["detail"]["state"], c["cashier_id"]) for c in changes] == [
        ("card", ["lost", "active"], "C02"), ("card", ["active", "lost"], "C01")]


async def test_a_replaced_card_is_blocked_for_good_and_the_new_one_keeps_every_balance(
        service: EdgeService, pos: httpx.AsyncClient) -> None:
    mid = await _member_with_money(service)
    await pos.put(f"/v1/members/{mid}/cards/04A1B2C3/state", headers=idem(),
                  json={"state": "lost"})
    r = await pos.post(f"/v1/members/{mid}/cards/04A1B2C3/replacement", headers=idem(),
                       json={"new_card_uid": "04:D0:0D:F0:0D:BE:EF", "reason": "补卡",
                             "cashier_id": "C01"})
    assert r.status_code == 200, r.text
    assert r.json()["cards"] == ["04D00DF00DBEEF"]
    assert r.json()["stored_value"]["total"] == 55_000
    assert await service.find_member_id("card_uid", "04D00DF00DBEEF") == mid
    with pytest.raises(EdgeError) as exc:
        await service.find_member_id("card_uid", "04A1B2C3")
    assert exc.value.code == "card_blocked" and exc.value.details["state"] == "replaced"
    kinds = [(e.body.type, getattr(e.body, "state", None))
             for e in invariants.outbox_events(service.config.database.path)[-2:]]
    assert kinds == [("member.card_state", "replaced"), ("member.card_bound", None)]

    # Final: a replaced card cannot be lifted, replaced again or bound; nothing changes.
    before = books(service)
    for call in (
        pos.put(f"/v1/members/{mid}/cards/04A1B2C3/state", headers=idem(),
                json={"state": "active"}),
        pos.post(f"/v1/members/{mid}/cards/04A1B2C3/replacement", headers=idem(),
                 json={"new_card_uid": "04EEEEEE"}),
        pos.post(f"/v1/members/{mid}/cards", headers=idem(), json={"card_uid": "04A1B2C3"}),
    ):
        r = await call
        assert r.status_code == 409, r.text
    assert books(service) == before


async def test_an_unbound_card_identifies_nobody_and_can_be_given_to_another_member(
        service: EdgeService, pos: httpx.AsyncClient) -> None:
    mid = await _member_with_money(service)
    other = (await register(service, "13700137000"))["member_id"]
    r = await pos.post(f"/v1/members/{other}/cards", headers=idem(),
                       json={"card_uid": "04A1B2C3"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "card_taken"
    await pos.put(f"/v1/members/{mid}/cards/04A1B2C3/state", headers=idem(),
                  json={"state": "unbound"})
    with pytest.raises(EdgeError) as exc:
        await service.find_member_id("card_uid", "04A1B2C3")
    assert exc.value.code == "unknown_card"
    r = await pos.post(f"/v1/members/{other}/cards", headers=idem(),
                       json={"card_uid": "04A1B2C3"})
    assert r.status_code == 200, r.text
    assert await service.find_member_id("card_uid", "04A1B2C3") == other
    assert (await service.member(mid))["cards"] == []


@pytest.mark.parametrize(("path", "body", "status", "code"), [
    ("/cards/04FFFFFF/state", {"state": "lost"}, 404, "card_not_found"),
    ("/cards/zz/state", {"state": "lost"}, 422, "invalid_card_uid"),
    ("/cards/04A1B2C3/state", {"state": "replaced"}, 422, "validation_error"),
    ("/cards/04A1B2C3/replacement", {"new_card_uid": "04A1B2C3"}, 409, "same_card"),
    ("/cards/04A1B2C3/replacement", {"new_card_uid": "04BBBBBB"}, 409, "card_taken"),
])
async def test_bad_card_requests_are_refused_and_change_nothing(
        service: EdgeService, pos: httpx.AsyncClient, path: str, body: dict[str, Any],
        status: int, code: str) -> None:
    mid = await _member_with_money(service)
    await register(service, "13700137000", card="04BBBBBB")
    before = books(service)
    r = await pos.request("PUT" if path.endswith("state") else "POST",
                          f"/v1/members/{mid}{path}", headers=idem(), json=body)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    assert books(service) == before


async def test_the_hubs_card_state_applies_unless_this_store_changed_the_card_since(
        service: EdgeService) -> None:
    mid = await _member_with_money(service)
    m = await service.member(mid)

    def entry(state: str, hlc: int) -> MemberEntry:
        return MemberEntry(member_id=mid, member_code=m["member_code"], phone=m["phone"],
                           home_store="S001", card_states=[MemberCard(
                               card_uid="04A1B2C3", state=state, reason="hq",  # type: ignore[arg-type]
                               hlc=hlc)])

    def apply(e: MemberEntry) -> None:
        conn = sqlite3.connect(service.config.database.path)
        conn.row_factory = sqlite3.Row
        with conn:
            apply_entry(conn, service.context, e)
        conn.close()

    apply(entry("lost", 2**62))  # HQ blocked it after anything here
    with pytest.raises(EdgeError) as exc:
        await service.find_member_id("card_uid", "04A1B2C3")
    assert exc.value.code == "card_blocked"
    await service.set_card_state(terminal_id="POS-1", idem_key=key(), member_id=mid,
                                 card_uid="04A1B2C3", state="active")
    apply(entry("lost", 1))  # an older state from the hub: this store's newer one stands
    assert await service.find_member_id("card_uid", "04A1B2C3") == mid


# --- payment PIN ----------------------------------------------------------------------------


async def test_a_member_with_a_pin_pays_from_balances_only_with_it(
        service: EdgeService, pos: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    mid = await _member_with_money(service)
    for bad, code in (("123456", "weak_pin"), ("000000", "weak_pin"), ("12345", None)):
        r = await pos.put(f"/v1/members/{mid}/pin", headers=idem(), json={"pin": bad})
        assert r.status_code == 422, r.text
        assert code is None or r.json()["error"]["code"] == code
    r = await pos.put(f"/v1/members/{mid}/pin", headers=idem(),
                      json={"pin": PIN, "cashier_id": "C01"})
    assert r.status_code == 200, r.text
    assert r.json() == {"member_id": mid, "payment_pin": {"set": True, "locked": False}}
    event = invariants.outbox_events(service.config.database.path)[-1].body
    assert event.type == "member.pin_set"
    assert event.pin_hash.startswith("$argon2id$")  # type: ignore[union-attr]

    sid = await _open_sale(pos, mid)
    before = books(service)
    r = await pos.post(f"/v1/sales/{sid}/finalize", headers=idem(), json=_sv(10_000))
    assert (r.status_code, r.json()["error"]["code"]) == (409, "pin_required"), r.text
    assert books(service) == before
    # Cash needs no PIN; balances with the right one go through.
    r = await pos.post(f"/v1/sales/{sid}/finalize", headers=idem(), json=_sv(10_000, PIN))
    assert r.status_code == 200, r.text
    assert (await service.member(mid))["stored_value"]["total"] == 45_000
    sid = await _open_sale(pos, mid)
    r = await pos.post(f"/v1/sales/{sid}/finalize", headers=idem(),
                       json={"tenders": [{"kind": "cash", "amount": 10_000}]})
    assert r.status_code == 200, r.text

    # The PIN itself is nowhere: not in the database, not in the logs.
    raw = repr(books(service))
    assert PIN not in raw
    assert PIN not in caplog.text


async def test_wrong_pins_in_a_row_lock_balances_until_staff_reset_the_pin(
        service: EdgeService, pos: httpx.AsyncClient) -> None:
    mid = await _member_with_money(service)
    await pos.put(f"/v1/members/{mid}/pin", headers=idem(), json={"pin": PIN})
    sid = await _open_sale(pos, mid)
    answers = []
    for _ in range(3):  # FAST_PIN: three wrong PINs lock
        r = await pos.post(f"/v1/sales/{sid}/finalize", headers=idem(), json=_sv(10_000, "111112"))
        answers.append((r.status_code, r.json()["error"]["code"],
                        r.json()["error"].get("details", {}).get("attempts_left")))
    assert answers == [(409, "wrong_pin", 2), (409, "wrong_pin", 1), (409, "pin_locked", None)]
    assert invariants.outbox_events(service.config.database.path)[-1].body.type == \
        "member.pin_locked"
    # Locked: the right PIN does not pay either, and the member cannot change it alone.
    r = await pos.post(f"/v1/sales/{sid}/finalize", headers=idem(), json=_sv(10_000, PIN))
    assert r.json()["error"]["code"] == "pin_locked"
    r = await pos.put(f"/v1/members/{mid}/pin", headers=idem(),
                      json={"pin": "864209", "current_pin": PIN})
    assert r.json()["error"]["code"] == "pin_locked"
    r = await pos.put(f"/v1/members/{mid}/pin", headers=idem(),
                      json={"pin": "864209", "reset": True})
    assert r.json()["error"]["code"] == "cashier_required"
    r = await pos.put(f"/v1/members/{mid}/pin", headers=idem(),
                      json={"pin": "864209", "reset": True, "cashier_id": "M01"})
    assert r.status_code == 200 and r.json()["payment_pin"] == {"set": True, "locked": False}
    r = await pos.post(f"/v1/sales/{sid}/finalize", headers=idem(), json=_sv(10_000, "864209"))
    assert r.status_code == 200, r.text
    changes = (await pos.get(f"/v1/members/{mid}/changes")).json()["changes"]
    assert [(c["detail"]["pin"], c["cashier_id"]) for c in changes if c["what"] == "pin"] == [
        ("reset", "M01"), ("locked", None), ("set", None)]


async def test_changing_a_pin_needs_the_current_one(service: EdgeService,
                                                    pos: httpx.AsyncClient) -> None:
    mid = await _member_with_money(service)
    await pos.put(f"/v1/members/{mid}/pin", headers=idem(), json={"pin": PIN})
    r = await pos.put(f"/v1/members/{mid}/pin", headers=idem(), json={"pin": "864209"})
    assert r.json()["error"]["code"] == "current_pin_required"
    r = await pos.put(f"/v1/members/{mid}/pin", headers=idem(),
                      json={"pin": "864209", "current_pin": "111112"})
    assert r.json()["error"]["code"] == "wrong_pin"
    r = await pos.put(f"/v1/members/{mid}/pin", headers=idem(),
                      json={"pin": "864209", "current_pin": PIN})
    assert r.status_code == 200, r.text
    sid = await _open_sale(pos, mid)
    r = await pos.post(f"/v1/sales/{sid}/finalize", headers=idem(), json=_sv(10_000, PIN))
    assert r.json()["error"]["code"] == "wrong_pin"


async def test_the_chain_can_require_a_pin_above_an_amount(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, payment_pin={**FAST_PIN, "required_above": 5_000})
    async with StoreGateway(cfg) as svc:
        await svc.apply_bundle(demo.demo_bundle())
        mid = await _member_with_money(svc)
        r = await sell(svc, [("A", "grocery", 1, 5_000)], member_id=mid,
                       tenders=[TenderRequest(kind="stored_value", amount=5_000)])
        assert r["total"] == 5_000  # at the limit: no PIN asked
        before = invariants.snapshot(cfg.database.path)
        with pytest.raises(EdgeError) as exc:
            await sell(svc, [("A", "grocery", 1, 8_000)], member_id=mid,
                       tenders=[TenderRequest(kind="stored_value", amount=5_001),
                                TenderRequest(kind="cash", amount=2_999)])
        assert exc.value.code == "pin_not_set"
        after = invariants.snapshot(cfg.database.path)
        assert after["sales"] == before["sales"] and after["sv_ledger"] == before["sv_ledger"]


# --- profile changes and the birthday --------------------------------------------------------


async def test_profile_changes_are_recorded_with_till_and_cashier_and_a_birthday_is_set_once(
        service: EdgeService, pos: httpx.AsyncClient) -> None:
    mid = (await register(service, "13900139000"))["member_id"]
    r = await pos.patch(f"/v1/members/{mid}", headers=idem(),
                        json={"phone": "13600136000", "birthday": "1990-05-17",
                              "cashier_id": "C07"})
    assert r.status_code == 200 and r.json()["birthday"] == "1990-05-17", r.text
    event = invariants.outbox_events(service.config.database.path)[-1].body
    assert (event.type, event.v, event.terminal_id, event.cashier_id) == (  # type: ignore[union-attr]
        "member.profile_changed", 2, "POS-1", "C07")
    change = (await pos.get(f"/v1/members/{mid}/changes")).json()["changes"][0]
    assert (change["what"], change["terminal_id"], change["cashier_id"]) == (
        "profile", "POS-1", "C07")
    assert change["detail"] == {"birthday": [None, "1990-05-17"],
                                "phone": ["+8613900139000", "+8613600136000"]}

    before = books(service)
    for bday in ("1990-12-05", None):
        r = await pos.patch(f"/v1/members/{mid}", headers=idem(), json={"birthday": bday})
        assert (r.status_code, r.json()["error"]["code"]) == (409, "birthday_locked"), r.text
    assert books(service) == before
    r = await pos.patch(f"/v1/members/{mid}", headers=idem(), json={"birthday": "1990-05-17"})
    assert r.status_code == 200  # the birthday it has: nothing to do (but remember the answer)
    assert {k: v for k, v in books(service).items() if k != "idempotency"} == {
        k: v for k, v in before.items() if k != "idempotency"}
    r = await pos.get(f"/v1/members/{mid}/changes", params={"limit": 1, "before": 1})
    assert r.json() == {"member_id": mid, "changes": [], "next_before": None}
    assert (await pos.get("/v1/members/nobody/changes")).status_code == 404


async def test_a_birthday_gift_is_given_once_a_year_whichever_store_gave_it(
        service: EdgeService) -> None:
    today = service.context.today()
    m = await register(service, "13900139000", birthday=date(1990, today.month, 1))
    mid = m["member_id"]
    # The hub says another store gave this year's gift: none here.
    entry = MemberEntry(member_id=mid, member_code=m["member_code"], phone=m["phone"],
                        birthday=date(1990, today.month, 1), home_store="S001",
                        birthday_gift_year=today.year)
    conn = sqlite3.connect(service.config.database.path)
    conn.row_factory = sqlite3.Row
    with conn:
        apply_entry(conn, service.context, entry)
    conn.close()
    r = await sell(service, [("A", "grocery", 1, 10_000)], member_id=mid)
    assert r["points_earned"] == 100 and (await service.member(mid))["points"] == 100
    assert "member.birthday_gift" not in [
        e.body.type for e in invariants.outbox_events(service.config.database.path)]


async def test_a_gift_given_here_is_told_to_the_hub(service: EdgeService) -> None:
    today = service.context.today()
    mid = (await register(service, "13900139000",
                          birthday=date(1990, today.month, 1)))["member_id"]
    await sell(service, [("A", "grocery", 1, 10_000)], member_id=mid)
    await sell(service, [("A", "grocery", 1, 10_000)], member_id=mid)
    gifts = [e.body for e in invariants.outbox_events(service.config.database.path)
             if e.body.type == "member.birthday_gift"]
    assert [(g.member_id, g.year) for g in gifts] == [(mid, today.year)]  # type: ignore[union-attr]
    assert (await service.member(mid))["points"] == 200 + 100 + 100  # one gift of 200


# --- consent ---------------------------------------------------------------------------------


async def test_consent_given_at_registration_and_withdrawn_later_is_recorded_and_sent(
        service: EdgeService, pos: httpx.AsyncClient) -> None:
    r = await pos.post("/v1/members", headers=idem(), json={
        "phone": "13900139000", "cashier_id": "C01",
        "consents": [{"channel": "sms", "granted": True, "text_version": "2026-01"},
                     {"channel": "wechat", "granted": False, "text_version": "2026-01"}]})
    assert r.status_code == 201, r.text
    mid = r.json()["member_id"]
    assert [(c["channel"], c["granted"]) for c in r.json()["consents"]] == [
        ("sms", True), ("wechat", False)]
    r = await pos.put(f"/v1/members/{mid}/consents", headers=idem(), json={
        "consents": [{"channel": "sms", "granted": False, "text_version": "2026-01"}],
        "cashier_id": "C02"})
    assert [(c["channel"], c["granted"]) for c in r.json()["consents"]] == [
        ("sms", False), ("wechat", False)]
    events = [e.body for e in invariants.outbox_events(service.config.database.path)
              if e.body.type == "member.consent"]
    assert [(e.channel, e.granted, e.cashier_id, e.terminal_id) for e in events] == [  # type: ignore[union-attr]
        ("sms", True, "C01", "POS-1"), ("wechat", False, "C01", "POS-1"),
        ("sms", False, "C02", "POS-1")]
    before = books(service)
    r = await pos.put(f"/v1/members/{mid}/consents", headers=idem(), json={
        "consents": [{"channel": "fax", "granted": True, "text_version": "v"}]})
    assert r.status_code == 422
    assert books(service) == before
    changes = (await pos.get(f"/v1/members/{mid}/changes")).json()["changes"]
    assert changes[0]["what"] == "consent" and changes[0]["cashier_id"] == "C02"


async def test_a_sale_under_an_id_merged_since_asks_the_survivors_pin(
        service: EdgeService) -> None:
    mid = await _member_with_money(service)
    await service.set_payment_pin(terminal_id="POS-1", idem_key=key(), member_id=mid, pin=PIN)
    alias = (await register(service, "13700137000"))["member_id"]
    await service.top_up(terminal_id="POS-1", idem_key=key(), member_id=alias, amount=50_000)
    m = await service.member(mid)
    entry = MemberEntry(member_id=mid, member_code=m["member_code"], phone=m["phone"],
                        home_store="S001", aliases=[alias])
    await service._write(lambda conn, ctx: apply_entry(conn, ctx, entry))
    with pytest.raises(EdgeError) as exc:  # the till identified the alias before the merge
        await sell(service, [("A", "grocery", 1, 1_000)], member_id=alias,
                   tenders=[TenderRequest(kind="stored_value", amount=1_000)])
    assert exc.value.code == "pin_required"
