"""Lost cards, payment PINs and birthdays across the chain: what one store or HQ changes, every
store enforces, through a real Mosquitto and the hub's directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import httpx
import pytest

from edge import demo
from edge.checkout import TenderRequest
from edge.errors import EdgeError
from edge.gateway import open_gateway
from edge.service import EdgeService
from hub.api.app import create_app as hub_app
from hub.app import Hub
from hub.ledger import audit
from protocol import signing
from tests.edge.conftest import key, make_config, register, sell
from tests.hub.test_sync_e2e import drained, hub_config, wait_for
from tests.support.mosquitto import Mosquitto, mosquitto_fixture  # noqa: F401

HQ_TOKEN = "hq-test-token-0002"
FAST_PIN = {"hash_memory_kib": 1024, "hash_time_cost": 1, "max_failures": 3}
PIN = "918273"


@pytest.fixture
async def hub(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[Hub]:
    cfg = hub_config(tmp_path, mosquitto, api_token=HQ_TOKEN)
    async with Hub(cfg) as h:
        yield h


async def _store(tmp_path: Path, store_id: str, number: int, broker: Mosquitto,
                 the_hub: Hub) -> EdgeService:
    (tmp_path / store_id).mkdir(exist_ok=True)
    cfg = make_config(tmp_path / store_id, store={"store_id": store_id, "store_number": number},
                      payment_pin=FAST_PIN,
                      sync={"broker_host": broker.host, "broker_port": broker.port,
                            "hub_public_key": signing.public_b64(the_hub.key),
                            "ack_timeout_s": 2.0})
    svc = await open_gateway(cfg)
    await svc.apply_bundle(demo.demo_bundle())
    return svc


async def _refused(svc: EdgeService, uid: str, code: str) -> bool:
    try:
        await svc.find_member_id("card_uid", uid)
    except EdgeError as exc:
        return exc.code == code
    return False


async def _pay_sv(svc: EdgeService, mid: str, pin: str | None) -> dict[str, object]:
    sid = (await svc.open_sale("POS-1"))["sale_id"]
    svc.carts.get_open(sid).member_id = mid
    await svc.add_line(sid, "POS-1", key(), sku="A", name="A", category="grocery", qty=1,
                       unit_price=1_000)
    return await svc.finalize(sid, "POS-1", key(),
                              [TenderRequest(kind="stored_value", amount=1_000)], pin=pin)


async def test_cards_pins_and_birthdays_hold_at_every_store(
        tmp_path: Path, mosquitto: Mosquitto, hub: Hub) -> None:
    a = await _store(tmp_path, "S001", 1, mosquitto, hub)
    b = await _store(tmp_path, "S002", 2, mosquitto, hub)
    try:
        today = a.context.today()
        m = await register(a, "13700000003", card="04C0FFEE", birthday=date(1990, today.month, 1))
        mid = m["member_id"]
        await a.top_up(terminal_id="POS-1", idem_key=key(), member_id=mid, amount=20_000)

        async def b_knows() -> bool:
            try:
                return bool(await b.find_member_id("card_uid", "04C0FFEE") == mid)
            except EdgeError:
                return False

        await wait_for(b_knows, "store B to know the card")

        # Lost at store A: refused at store B with the reason, once the directory has it.
        await a.set_card_state(terminal_id="POS-1", idem_key=key(), member_id=mid,
                               card_uid="04C0FFEE", state="lost", reason="手机壳里丢了",
                               cashier_id="C01")
        await wait_for(lambda: _refused(b, "04C0FFEE", "card_blocked"), "store B to block it")
        with pytest.raises(EdgeError, match="手机壳里丢了"):
            await b.find_member_id("card_uid", "04C0FFEE")
        # Replaced at store B: the new card works at A, the old one stays blocked.
        await b.replace_card(terminal_id="POS-1", idem_key=key(), member_id=mid,
                             card_uid="04C0FFEE", new_card_uid="04BEEF01")

        async def a_has_new() -> bool:
            try:
                return bool(await a.find_member_id("card_uid", "04BEEF01") == mid)
            except EdgeError:
                return False

        await wait_for(a_has_new, "store A to know the replacement card")
        assert await _refused(a, "04C0FFEE", "card_blocked")
        assert (await a.member(mid))["card_states"] == [
            {"card_uid": "04BEEF01", "state": "active", "reason": ""},
            {"card_uid": "04C0FFEE", "state": "replaced", "reason": ""}]

        # A PIN set at store A is asked for at store B.
        await a.set_payment_pin(terminal_id="POS-1", idem_key=key(), member_id=mid, pin=PIN)

        async def b_has_pin() -> bool:
            return bool((await b.member(mid))["payment_pin"]["set"])

        await wait_for(b_has_pin, "store B to hold the PIN")
        with pytest.raises(EdgeError) as exc:
            await _pay_sv(b, mid, None)
        assert exc.value.code == "pin_required"
        assert (await _pay_sv(b, mid, PIN))["total"] == 1_000
        # Locked at store B after wrong PINs: locked at store A too.
        for _ in range(3):
            with pytest.raises(EdgeError):
                await _pay_sv(b, mid, "111112")

        async def a_locked() -> bool:
            return bool((await a.member(mid))["payment_pin"]["locked"])

        await wait_for(a_locked, "store A to hear of the lock")
        with pytest.raises(EdgeError) as exc:
            await _pay_sv(a, mid, PIN)
        assert exc.value.code == "pin_locked"

        # The birthday gift, given at store A, is not given again at store B this year.
        first = await sell(a, [("A", "grocery", 1, 10_000)], member_id=mid)
        assert first["points_earned"] == 100
        assert (await a.member(mid))["birthday_gift_year"] == today.year

        async def b_knows_gift() -> bool:
            return bool((await b.member(mid))["birthday_gift_year"] == today.year)

        await wait_for(b_knows_gift, "store B to hear of the gift")
        before = (await b.member(mid))["points"]
        await sell(b, [("B", "grocery", 1, 10_000)], member_id=mid)
        assert (await b.member(mid))["points"] == before + 100  # earned, no second gift

        # A store cannot move the birthday; HQ can, and the stores take it.
        with pytest.raises(EdgeError) as exc:
            await b.update_profile(terminal_id="POS-1", idem_key=key(), member_id=mid,
                                   changes={"birthday": date(1990, 1, 1)})
        assert exc.value.code == "birthday_locked"
        transport = httpx.ASGITransport(app=hub_app(hub))
        async with httpx.AsyncClient(transport=transport, base_url="http://hub",
                                     headers={"Authorization": f"Bearer {HQ_TOKEN}"}) as hq:
            # HQ sees whether a PIN is set and locked, never its hash.
            view = (await hq.get(f"/v1/members/{mid}")).json()
            assert (view["pin_set"], view["pin_locked"]) == (True, True)
            assert "pin_hash" not in view and "$argon2id$" not in str(view)
            r = await hq.patch(f"/v1/members/{mid}", headers={"Idempotency-Key": "p1"},
                               json={"birthday": "1990-01-01", "gender": "female",
                                     "actor": "li.wei@hq"})
            assert r.status_code == 200, r.text
            assert (r.json()["birthday"], r.json()["gender"]) == ("1990-01-01", "female")
            assert (await hq.get(f"/v1/members/{mid}")).json()["gender"] == "female"

            async def b_has_birthday() -> bool:
                return bool((await b.member(mid))["birthday"] == "1990-01-01")

            await wait_for(b_has_birthday, "store B to take HQ's birthday")
            # HQ blocks the new card (the member called the hotline); both stores refuse it.
            r = await hq.put(f"/v1/members/{mid}/cards/04BEEF01/state",
                             headers={"Idempotency-Key": "c1"},
                             json={"state": "lost", "reason": "热线挂失", "actor": "li.wei@hq"})
            assert r.status_code == 200 and r.json()["seq"] is not None, r.text
            for svc in (a, b):
                await wait_for(lambda s=svc: _refused(s, "04BEEF01", "card_blocked"),  # type: ignore[misc]
                               "a store to block the card HQ reported lost")
            for path, body, status, code in (
                (f"/v1/members/{mid}/cards/04FFFFFF/state", {"state": "lost", "actor": "x"},
                 404, "card_not_found"),
                (f"/v1/members/{mid}/cards/04C0FFEE/state", {"state": "active", "actor": "x"},
                 409, "card_state_final"),
                (f"/v1/members/{mid}", {"birthday": "2999-01-01", "actor": "x"}, 422,
                 "invalid_birthday"),
                (f"/v1/members/{mid}", {"gender": "f", "actor": "x"}, 422, "validation_error"),
                ("/v1/members/nobody", {"name": "x", "actor": "x"}, 404, "member_not_found"),
            ):
                method = hq.put if path.endswith("state") else hq.patch
                r = await method(path, headers={"Idempotency-Key": key()}, json=body)
                assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text

        await wait_for(lambda: drained(a), "store A drained")
        await wait_for(lambda: drained(b), "store B drained")
        check = await hub.db.read(audit.compare)
        assert check["mismatches"] == []
    finally:
        await a.close()
        await b.close()
