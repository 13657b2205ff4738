"""A member's data request (PIPL): everything held exported, then erased at the hub, in its log
and at every store, balances kept and ``rebuild`` still exact (issue 15)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import httpx
import pytest

from edge.errors import EdgeError
from edge.service import EdgeService
from hub.api.app import create_app
from hub.app import Hub
from hub.ledger import audit
from tests.edge.conftest import register, sell
from tests.hub.test_sync_e2e import drained, hub_config, start_store, wait_for
from tests.support.mosquitto import Mosquitto, mosquitto_fixture  # noqa: F401

TOKEN = "hq-test-token-0004"
PHONE, NAME = "13700000009", "欧阳娜娜"


@pytest.fixture
async def hub(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[Hub]:
    cfg = hub_config(tmp_path, mosquitto, api_token=TOKEN)
    async with Hub(cfg) as h:
        yield h


async def _unknown(svc: EdgeService, by: str, value: str) -> bool:
    try:
        await svc.find_member_id(by, value)  # type: ignore[arg-type]
    except EdgeError as exc:
        return exc.code in ("unknown_card", "member_not_found")
    return False


async def test_a_member_exported_then_erased_everywhere_with_balances_kept(
        tmp_path: Path, mosquitto: Mosquitto, hub: Hub) -> None:
    a = await start_store(tmp_path, "S001", 1, mosquitto, hub)
    b = await start_store(tmp_path, "S002", 2, mosquitto, hub)
    try:
        m = await register(a, PHONE, card="04E1A5ED", name=NAME, birthday=date(1991, 3, 9))
        mid = m["member_id"]
        await a.update_profile(terminal_id="POS-1", idem_key="p1", member_id=mid,
                               changes={"name": NAME + "X"}, cashier_id="C1")
        await sell(a, [("A", "grocery", 3, 10_000)], member_id=mid)
        await wait_for(lambda: drained(a), "store A drained")

        async def b_knows() -> bool:
            return not await _unknown(b, "card_uid", "04E1A5ED")

        await wait_for(b_knows, "store B to know the member")
        points = (await b.member(mid))["points"]
        assert points == 270  # 300.00 less the demo 满300减30

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(hub)),
                                     base_url="http://hq",
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as hq:
            r = await hq.get(f"/v1/members/{mid}/export", params={"reason": "request 17"})
            assert r.status_code == 200, r.text
            exported = r.json()
            assert exported["member"]["phone"] == "+86" + PHONE
            kinds = [e["body"]["type"] for e in exported["events"]]
            assert kinds[0] == "member.registered" and "sale.finalized" in kinds
            assert (await hq.get(f"/v1/members/{mid}/export")).status_code == 422  # no reason

            r = await hq.post(f"/v1/members/{mid}/erasure", headers={"Idempotency-Key": "e1"},
                              json={"actor": "dpo@hq", "reason": "request 17"})
            assert r.status_code == 201, r.text
            again = await hq.post(f"/v1/members/{mid}/erasure",
                                  headers={"Idempotency-Key": "e2"},
                                  json={"actor": "dpo@hq", "reason": "request 17"})
            assert again.json()["error"]["code"] == "already_erased"

            for svc in (a, b):
                await wait_for(lambda s=svc: _unknown(s, "card_uid", "04E1A5ED"),  # type: ignore[misc]
                               "a store to forget the card")
                assert await _unknown(svc, "phone", PHONE)
                view = await svc.member(mid)
                assert (view["phone"], view["name"], view["birthday"], view["cards"]) == (
                    None, "", None, [])
                assert view["points"] == points  # statutory records stay
            # A till's retry of a request made before still gets its answer, emptied of them,
            # and changes nothing.
            retry = await a.update_profile(terminal_id="POS-1", idem_key="p1", member_id=mid,
                                           changes={"name": NAME + "X"}, cashier_id="C1")
            assert (retry["member_id"], retry["name"], retry["phone"]) == (mid, "", None)
            assert (await a.member(mid))["name"] == ""
            # Nothing of them is left in any store's database or the hub's log.
            for path in (a.config.database.path, b.config.database.path):
                dump = "\n".join(sqlite3.connect(path).iterdump())
                assert PHONE not in dump and NAME not in dump and "04E1A5ED" not in dump
            payloads = await hub.db.read(lambda tx: [bytes(r[0]) for r in tx.all(
                "SELECT payload FROM events")])
            blob = b"".join(payloads)
            assert PHONE.encode() not in blob and NAME.encode() not in blob
            assert b"04E1A5ED" not in blob
            check = await hub.db.read(audit.compare)
            assert check["mismatches"] == [] and check["members"] >= 1
            after = (await hq.get(f"/v1/members/{mid}")).json()
            assert (after["phone"], after["name"], after["points"]) == (None, "", points)
            log = (await hq.get("/v1/audit-log", params={"subject": mid})).json()
            assert [e["action"] for e in log][:2] == ["member.view", "member.erase"]
            assert "member.export" in [e["action"] for e in log]
    finally:
        await a.close()
        await b.close()
