"""HQ users, roles and scopes (issue 15): who may call which route, which members each scope
sees, personal data masked below HQ admin, reveals and views in the audit log."""

from __future__ import annotations

import ast
import io
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from edge.consents import Consent
from edge.directory import apply_entry
from hub import cli
from hub.api.app import ROUTERS, create_app
from hub.app import Hub
from hub.auth import passwords, roles, users
from hub.config import HubConfig
from hub.ledger.apply import apply_batch
from hub.stores import registry
from protocol.errors import ServiceError
from protocol.sync import MemberEntry
from tests.edge.conftest import register, sell
from tests.hub.test_ingest import _store, batches

LEGACY = "hq-legacy-token-0001"
ROUTES = Path(__file__).resolve().parents[2] / "hub" / "api" / "routes"


def _permission_of(route: APIRoute) -> str | None:
    for dep in route.dependant.dependencies:
        permission = getattr(dep.call, "permission", None)
        if permission is not None:
            return str(permission)
    return None


def test_every_route_names_the_permission_it_needs_and_none_reads_the_database(
        tmp_path: Path) -> None:
    cfg = HubConfig.model_validate({"hub": {"database": str(tmp_path / "h.db"),
                                            "data_dir": str(tmp_path)},
                                    "api": {"token": LEGACY}})
    app = create_app(Hub(cfg))
    routes = [r for router in ROUTERS for r in router.routes if isinstance(r, APIRoute)]
    # Every HQ route is in one of those routers: the OpenAPI lists no other.
    assert {r.path for r in routes} == set(app.openapi()["paths"])
    assert len(routes) > 15
    missing = [r.path for r in routes if _permission_of(r) is None]
    assert missing == []
    assert [r.path for r in routes if _permission_of(r) == "public"] == ["/v1/auth/sign-in"]
    # Every permission a route asks for is one roles can be given, and every one is asked for.
    assert sorted(r.path for r in routes if _permission_of(r) == "provider") == [
        "/v1/providers/sms/receipts", "/v1/providers/sms/replies"]  # a secret of their own
    asked = {_permission_of(r) for r in routes} - {"public", roles.SIGNED_IN, "provider"}
    assert asked == roles.PERMISSIONS
    # By construction: a route module never touches the hub's database, only ``Access``.
    for path in ROUTES.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        uses = [n.lineno for n in ast.walk(tree)
                if isinstance(n, ast.Attribute) and n.attr == "db"]
        assert uses == [], f"{path.name} reads the database directly at lines {uses}"


@pytest.fixture
async def chain(tmp_path: Path, hub_url: str) -> AsyncIterator[dict[str, Any]]:
    """A hub with two regions (S001 east, S002 west), members registered and buying in each,
    and a user of every role; on SQLite and on PostgreSQL."""
    a = await _store(tmp_path, "S001", 1)
    b = await _store(tmp_path, "S002", 2)
    try:
        east = (await a.register_member(terminal_id="POS-1", idem_key="r1",
                                        phone="13800138001", name="王芳", card_uid="04AA0001",
                                        guide_id="G1", consents=[Consent(
                                            "sms", "marketing", True, "2026-01")],
                                        cashier_id="C1"))["member_id"]
        west = (await register(b, "13800138002", name="李雷"))["member_id"]
        m = await register(b, "13800138003", name="张伟")
        both = m["member_id"]
        # Store A learns of store B's member (as its directory would tell it), who buys there.
        conn = sqlite3.connect(a.config.database.path)
        conn.row_factory = sqlite3.Row
        with conn:
            apply_entry(conn, a.context, MemberEntry(
                member_id=both, member_code=m["member_code"], phone=m["phone"], name="张伟",
                home_store="S002"))
        conn.close()
        await sell(a, [("A", "grocery", 1, 1_000)], member_id=both)  # a west member, in east
        streams = [*batches(a.config.database.path, "S001", 100),
                   *batches(b.config.database.path, "S002", 100)]
    finally:
        await a.close()
        await b.close()
    cfg = HubConfig.model_validate({
        "hub": {"database": hub_url, "data_dir": str(tmp_path / "hub"),
                "validate_workers": 0},
        "broker": {"embedded_port": 0}, "api": {"token": LEGACY},
        "exports": {"approval_above": 2}})
    async with Hub(cfg) as hub:
        for batch in streams:
            await hub.db.transaction(lambda tx, b=batch: apply_batch(tx, b, 1))  # type: ignore[misc]
        await hub.set_stores([
            registry.StoreRecord(store_id="S001", name="East 1", region="east"),
            registry.StoreRecord(store_id="S002", name="West 1", region="west")])
        await hub.project()
        secret = passwords.hash_password("correct horse battery")

        def people(tx: Any) -> None:
            # A role the chain made itself (roles are data): a regional editor may change
            # and erase members, in its region only; the route matrix holds it to that.
            tx.execute("INSERT INTO roles(role, permissions, scope, masked) VALUES (?, ?, ?, ?)",
                       ("region_editor", '["members.read", "members.write", "pii.erase",'
                        ' "pii.export", "pii.reveal", "status.read"]', "regions", 1))
            for username, role, scope in (
                ("east.ed", "region_editor", {"regions": ["east"]}),
                ("east.mgr", "region_manager", {"regions": ["east"]}),
                ("s2.mgr", "store_manager", {"stores": ["S002"]}),
                ("guide1", "guide", {"guide_id": "G1"}),
                ("dpo", "auditor", {}),
                ("mkt", "marketing", {}),
                ("boss", "hq_admin", {}),
                ("boss2", "hq_admin", {}),
            ):
                users.add(tx, username=username, role=role, password_hash=secret, now_ms=1,
                          **scope)

        await hub.db.transaction(people)
        transport = httpx.ASGITransport(app=create_app(hub))
        async with httpx.AsyncClient(transport=transport, base_url="http://hq") as c:
            tokens: dict[str, str] = {}
            for username in ("east.mgr", "s2.mgr", "guide1", "dpo", "mkt", "boss", "boss2",
                             "east.ed"):
                r = await c.post(f"/v1/users/{username}/tokens", json={"name": "test"},
                                 headers={"Authorization": f"Bearer {LEGACY}"})
                assert r.status_code == 201, r.text
                tokens[username] = r.json()["token"]
            yield {"hub": hub, "client": c, "tokens": tokens, "east": east, "west": west,
                   "both": both}


def _as(chain: dict[str, Any], username: str) -> dict[str, str]:
    token = LEGACY if username == "legacy" else chain["tokens"][username]
    return {"Authorization": f"Bearer {token}"}


def _sees(chain: dict[str, Any]) -> dict[str, set[str]]:
    """Which of the chain's members each user's scope holds."""
    east, west, both = chain["east"], chain["west"], chain["both"]
    return {
        "legacy": {east, west, both},
        "boss": {east, west, both},
        "mkt": {east, west, both},
        "east.mgr": {east, both},  # registered in east, or bought there
        "east.ed": {east, both},
        "s2.mgr": {west, both},
        "guide1": {east},
        "dpo": set(),
    }


async def test_each_scope_sees_exactly_its_members(chain: dict[str, Any]) -> None:
    c: httpx.AsyncClient = chain["client"]
    east, west, both = chain["east"], chain["west"], chain["both"]
    for who, sees in _sees(chain).items():
        seen = set()
        for mid in (east, west, both):
            r = await c.get(f"/v1/members/{mid}", headers=_as(chain, who))
            if r.status_code == 200:
                seen.add(mid)
            else:  # outside the scope looks exactly like no member at all
                assert r.status_code in (403, 404), r.text
                if r.status_code == 404:
                    missing = await c.get("/v1/members/no-such-member", headers=_as(chain, who))
                    assert r.json() == missing.json()
        assert seen == sees, who


async def test_personal_data_is_masked_below_hq_admin_and_revealing_is_audited(
        chain: dict[str, Any]) -> None:
    c: httpx.AsyncClient = chain["client"]
    east = chain["east"]
    view = (await c.get(f"/v1/members/{east}", headers=_as(chain, "east.mgr"))).json()
    assert (view["phone"], view["name"], view["cards"]) == ("+86138****8001", "王*", ["****0001"])
    assert view["unmasked"] == [] and view["pin_set"] is False
    assert [(c["channel"], c["granted"], c["store_id"]) for c in view["consents"]] == [
        ("sms", True, "S001")]
    assert [s["store_id"] for s in view["shares"]] in ([], ["S001"])
    whole = (await c.get(f"/v1/members/{east}", headers=_as(chain, "boss"))).json()
    assert (whole["phone"], whole["name"]) == ("+8613800138001", "王芳")

    r = await c.post(f"/v1/members/{east}/reveal", headers=_as(chain, "east.mgr"),
                     json={"fields": ["phone"], "reason": "member asked for a callback"})
    assert r.status_code == 200 and r.json()["phone"] == "+8613800138001", r.text
    assert r.json()["name"] == "王*" and r.json()["unmasked"] == ["phone"]
    # Marketing sees masked data and may not reveal; the refusal is logged too.
    r = await c.post(f"/v1/members/{east}/reveal", headers=_as(chain, "mkt"),
                     json={"fields": ["phone"], "reason": "campaign"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = await c.post(f"/v1/members/{chain['west']}/reveal", headers=_as(chain, "east.mgr"),
                     json={"fields": ["phone"], "reason": "curious"})
    assert r.status_code == 404  # outside the scope: nothing revealed, nothing told

    log = (await c.get("/v1/audit-log", headers=_as(chain, "dpo"))).json()
    entries = [(e["username"], e["action"], e["subject"], e["fields"], e["reason"], e["outcome"])
               for e in log]
    assert ("east.mgr", "member.reveal", east, ["phone"], "member asked for a callback",
            "ok") in entries
    assert ("boss", "member.view", east, ["birthday", "cards", "email", "name", "phone"], "",
            "ok") in entries
    assert ("mkt", "pii.reveal", None, [], "", "forbidden") in entries
    assert not any(e[0] == "east.mgr" and e[2] == chain["west"] for e in entries)
    # The auditor reads the log and nothing else.
    r = await c.get(f"/v1/members/{east}", headers=_as(chain, "dpo"))
    assert r.status_code == 403
    assert (await c.get("/v1/audit-log", headers=_as(chain, "east.mgr"))).status_code == 403


async def test_routes_refuse_roles_without_the_permission(chain: dict[str, Any]) -> None:
    c: httpx.AsyncClient = chain["client"]
    east = chain["east"]
    calls = [
        ("GET", "/v1/status", None), ("GET", "/v1/rebuild", None),
        ("GET", "/v1/conflicts/coupons", None), ("GET", "/metrics", None),
        ("GET", "/v1/users", None),
        ("POST", f"/v1/members/{east}/points/adjustments",
         {"delta": 5, "reason": "x", "actor": "y"}),
        ("PUT", "/v1/stores/S001", {"name": "x", "region": "east", "timezone": None,
                                    "legal_entity": None}),
    ]
    for who in ("east.mgr", "s2.mgr", "guide1", "dpo", "mkt"):
        for method, path, body in calls:
            headers = {**_as(chain, who), "Idempotency-Key": "k-" + who + path}
            r = await c.request(method, path, json=body, headers=headers)
            assert r.status_code == 403, (who, path, r.text)
    # A region manager lists the stores of its region only.
    r = await c.get("/v1/stores", headers=_as(chain, "east.mgr"))
    assert [s["store_id"] for s in r.json()] == ["S001"]
    assert (await c.get("/v1/stores/S002", headers=_as(chain, "east.mgr"))).status_code == 404
    regions = (await c.get("/v1/regions", headers=_as(chain, "boss"))).json()
    assert [r["region"] for r in regions] == ["east", "west"]


async def test_users_and_tokens_are_managed_by_admins_and_take_effect_at_once(
        chain: dict[str, Any]) -> None:
    c: httpx.AsyncClient = chain["client"]
    admin = _as(chain, "boss")
    for body, code in (
        ({"username": "xx1", "role": "store_manager", "password": "long enough 1",
          "stores": ["S404"]}, "unknown_store"),
        ({"username": "xx1", "role": "region_manager", "password": "long enough 1",
          "regions": ["north"]}, "unknown_region"),
        ({"username": "xx1", "role": "store_manager", "password": "long enough 1"},
         "invalid_scope"),
        ({"username": "xx1", "role": "king", "password": "long enough 1"}, "unknown_role"),
        ({"username": "xx1", "role": "auditor", "password": "short"}, "weak_password"),
        ({"username": "east.mgr", "role": "auditor", "password": "long enough 1"},
         "username_taken"),
    ):
        r = await c.post("/v1/users", json=body, headers=admin)
        assert (r.status_code // 100, r.json()["error"]["code"]) == (4, code), r.text
    log = (await c.get("/v1/audit-log", params={"limit": 500},
                       headers=_as(chain, "dpo"))).json()
    refused = {(e["username"], e["action"], e["subject"], e["outcome"]) for e in log}
    assert {("boss", "user.add", "xx1", "unknown_store"),
            ("boss", "user.add", "xx1", "unknown_region"),
            ("boss", "user.add", "xx1", "unknown_role"),
            ("boss", "user.add", "east.mgr", "username_taken")} <= refused
    assert (await c.post("/v1/users", headers=_as(chain, "east.mgr"), json={
        "username": "xx2", "role": "hq_admin", "password": "long enough 1"})).status_code == 403
    r = await c.post("/v1/users", headers=admin, json={
        "username": "s1.mgr", "role": "store_manager", "password": "long enough 1",
        "stores": ["S001"]})
    assert r.status_code == 201, r.text
    r = await c.post("/v1/users/s1.mgr/tokens", headers=admin, json={"name": "bi"})
    token, token_id = r.json()["token"], r.json()["token_id"]
    mine = {"Authorization": f"Bearer {token}"}
    assert (await c.get(f"/v1/members/{chain['east']}", headers=mine)).status_code == 200
    assert token not in str((await c.get("/v1/tokens", headers=admin)).json())
    r = await c.patch("/v1/users/s1.mgr", headers=admin, json={"disabled": True})
    assert r.json()["disabled"] is True
    assert (await c.get(f"/v1/members/{chain['east']}", headers=mine)).status_code == 401
    await c.patch("/v1/users/s1.mgr", headers=admin, json={"disabled": False})
    assert (await c.get(f"/v1/members/{chain['east']}", headers=mine)).status_code == 200
    r = await c.delete(f"/v1/tokens/{token_id}", headers=admin)
    assert r.status_code == 200 and r.json()["revoked_ms"] is not None, r.text
    assert (await c.get(f"/v1/members/{chain['east']}", headers=mine)).status_code == 401
    # The configured token of earlier releases still works, as an HQ admin.
    assert (await c.get("/v1/status", headers=_as(chain, "legacy"))).status_code == 200
    # The last enabled HQ admin is never disabled, not even by themselves.
    r = await c.patch("/v1/users/boss2", headers=admin, json={"disabled": True})
    assert r.status_code == 200 and r.json()["disabled"] is True, r.text
    r = await c.patch("/v1/users/boss", headers=admin, json={"disabled": True})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "last_admin"), r.text
    assert (await c.get("/v1/status", headers=admin)).status_code == 200
    r = await c.patch("/v1/users/boss2", headers=admin, json={"disabled": False})
    assert r.json()["disabled"] is False


async def test_wrong_passwords_lock_an_account_until_a_reset(chain: dict[str, Any]) -> None:
    hub: Hub = chain["hub"]

    def attempt(password: str, now: int) -> Any:
        return hub.db.transaction(lambda tx: users.sign_in(tx, "guide1", password, now))

    for i in range(users.MAX_FAILURES):
        refused = await attempt("wrong password", 1_000 + i)
        assert isinstance(refused, ServiceError) and refused.code == "sign_in_refused"
    locked = await attempt("correct horse battery", 2_000)
    assert isinstance(locked, ServiceError) and locked.code == "account_locked"
    ok = await attempt("correct horse battery", 2_000 + users.LOCK_MS)
    assert isinstance(ok, users.User) and ok.username == "guide1"
    again = await attempt("correct horse battery", 3_000)  # a sign-in clears the lock
    assert isinstance(again, users.User)
    nobody = await hub.db.transaction(lambda tx: users.sign_in(tx, "nobody", "x", 1))
    assert isinstance(nobody, ServiceError) and nobody.code == "sign_in_refused"


def test_users_from_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "hub.db")
    config = tmp_path / "hub.toml"
    config.write_text(f'[hub]\ndatabase = "{db}"\ndata_dir = "{tmp_path}"\n', encoding="utf-8")

    def run(*argv: str, password: str | None = None) -> int:
        if password is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(password + "\n"))
        return cli.main(["--config", str(config), *argv])

    assert run("init", "--admin", "root", "--password-stdin",
               password="a long admin password") == 0
    assert run("users", "add", "eve", "--role", "region_manager", "--region", "nowhere",
               "--password-stdin", password="a long password 2") == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert run("users", "add", "dpo", "--role", "auditor", "--password-stdin",
               password="a long password 3") == 0
    assert run("tokens", "add", "dpo", "--name", "siem") == 0
    out = capsys.readouterr().out
    assert '"token": "mgt_' in out
    assert run("users", "disable", "dpo") == 0
    assert run("users", "list") == 0
    listing = capsys.readouterr().out
    assert "root" in listing and "hq_admin" in listing and "disabled" in listing
    assert run("users", "reset", "nobody", "--password-stdin", password="a long password 4") == 2
    # Every change from the shell, refused ones too, is in the audit log.
    conn = sqlite3.connect(db)
    logged = {tuple(r) for r in conn.execute(
        "SELECT action, subject, outcome, remote FROM audit_log WHERE username LIKE 'cli:%'")}
    conn.close()
    assert {("user.add", "eve", "unknown_region", "cli"), ("user.add", "dpo", "ok", "cli"),
            ("token.add", "dpo", "ok", "cli"), ("user.disable", "dpo", "ok", "cli"),
            ("user.reset", "nobody", "user_not_found", "cli")} <= logged


async def test_console_sign_in_sessions_and_csrf(chain: dict[str, Any]) -> None:
    hub: Hub = chain["hub"]
    east = chain["east"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(hub)),
                                 base_url="http://hq") as browser:
        r = await browser.post("/v1/auth/sign-in",
                               json={"username": "east.mgr", "password": "wrong password"})
        assert (r.status_code, r.json()["error"]["code"]) == (401, "sign_in_refused")
        assert "set-cookie" not in r.headers
        assert (await browser.get("/v1/auth/me")).status_code == 401
        r = await browser.post("/v1/auth/sign-in", json={
            "username": "east.mgr", "password": "correct horse battery"})
        assert r.status_code == 200, r.text
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "mg_session=" in cookie
        csrf = r.json()["csrf_token"]
        assert (await browser.get("/v1/auth/me")).json()["username"] == "east.mgr"
        assert (await browser.get(f"/v1/members/{east}")).status_code == 200
        reveal = {"fields": ["phone"], "reason": "callback"}
        r = await browser.post(f"/v1/members/{east}/reveal", json=reveal)
        assert (r.status_code, r.json()["error"]["code"]) == (403, "csrf_required")
        r = await browser.post(f"/v1/members/{east}/reveal", json=reveal,
                               headers={"X-CSRF-Token": "forged"})
        assert r.status_code == 403
        r = await browser.post(f"/v1/members/{east}/reveal", json=reveal,
                               headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200 and r.json()["phone"] == "+8613800138001"
        r = await browser.post("/v1/auth/sign-out", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200, r.text
        browser.cookies.clear()
        browser.cookies.set("mg_session", cookie.split("mg_session=")[1].split(";")[0])
        assert (await browser.get("/v1/auth/me")).status_code == 401  # ended: refused
    log = (await chain["client"].get("/v1/audit-log", headers=_as(chain, "dpo"))).json()
    outcomes = [(e["action"], e["username"], e["outcome"]) for e in log]
    assert ("sign_in", "east.mgr", "sign_in_refused") in outcomes
    assert ("sign_in", "east.mgr", "ok") in outcomes
    assert ("pii.reveal", "?", "csrf_refused") in outcomes


async def test_member_search_and_store_day_stay_inside_the_scope(chain: dict[str, Any]) -> None:
    c: httpx.AsyncClient = chain["client"]
    east, both = chain["east"], chain["both"]

    async def found(who: str, **key: str) -> list[str]:
        r = await c.get("/v1/members", params=key, headers=_as(chain, who))
        assert r.status_code == 200, r.text
        return [m["member_id"] for m in r.json()]

    assert await found("boss", phone="13800138001") == [east]
    assert await found("boss", phone="+86 138 0013 8001") == [east]
    assert await found("east.mgr", phone="13800138003") == [both]  # bought in east
    # Another region's member: not found, exactly as a phone nobody has.
    assert await found("s2.mgr", phone="13800138001") == []
    assert await found("s2.mgr", phone="13999999999") == []
    assert await found("east.mgr", card_uid="04aa0001") == [east]
    masked = (await c.get("/v1/members", params={"phone": "13800138001"},
                          headers=_as(chain, "east.mgr"))).json()[0]
    assert masked["phone"] == "+86138****8001" and masked["name"] == "王*"
    for params in ({}, {"phone": "1", "card_uid": "04AA0001"}, {"phone": "12"}):
        r = await c.get("/v1/members", params=params, headers=_as(chain, "boss"))
        assert r.status_code == 422, (params, r.text)
    log = (await c.get("/v1/audit-log", headers=_as(chain, "dpo"))).json()
    assert ("boss", "member.search", east) in [(e["username"], e["action"], e["subject"])
                                               for e in log]

    hub: Hub = chain["hub"]
    day = await hub.db.read(lambda tx: tx.scalar(
        "SELECT max(day) FROM daily_rollups WHERE store_id = 'S001'"))
    r = await c.get("/v1/reports/store-day", params={"store_id": "S001", "date": day},
                    headers=_as(chain, "east.mgr"))
    assert r.status_code == 200, r.text
    assert r.json()["totals"]["sales"] == 1 and r.json()["totals"]["amount"] > 0
    for who, store, status in (("east.mgr", "S002", 404), ("s2.mgr", "S001", 404),
                               ("dpo", "S001", 403), ("guide1", "S001", 403)):
        r = await c.get("/v1/reports/store-day", params={"store_id": store, "date": day},
                        headers=_as(chain, who))
        assert r.status_code == status, (who, store, r.text)


@pytest.mark.parametrize("hub_url", ["postgres"], indirect=True)
async def test_row_level_security_is_the_second_lock_on_postgresql(
        chain: dict[str, Any]) -> None:
    """A query that forgets the scope still sees only what the caller may: HQ's reads run as a
    role that owns nothing, bound by restrictive policies to the scope the read set."""
    from hub.auth.access import Access
    from hub.auth.scope import Scope
    from hub.core.clock import now_ms

    hub: Hub = chain["hub"]

    def access(who: str) -> Access:
        token = LEGACY if who == "legacy" else chain["tokens"][who]
        principal = hub.tokens.principal(token, now_ms())
        assert principal is not None
        return Access(hub.db, Scope(principal), None)

    def unscoped(sql: str) -> Any:
        return lambda tx, _scope: tx.scalar(sql)

    members = "SELECT count(*) FROM members"
    expected = {"boss": 3, "mkt": 3, "east.mgr": 2, "s2.mgr": 2, "guide1": 1, "dpo": 0}
    for who, count in expected.items():
        assert await access(who).read(unscoped(members)) == count, who
    assert await hub.db.read(lambda tx: tx.scalar(members)) == 3  # the hub's own reads
    rollups = "SELECT count(DISTINCT store_id) FROM daily_rollups"
    assert await hub.db.read(lambda tx: tx.scalar(rollups)) == 1  # only S001 sold
    assert await access("east.mgr").read(unscoped(rollups)) == 1
    assert await access("s2.mgr").read(unscoped(rollups)) == 0
    cards = "SELECT count(*) FROM cards"  # east's card: its member is outside S002's scope
    assert await access("s2.mgr").read(unscoped(cards)) == 0
    assert await access("east.mgr").read(unscoped(cards)) == 1
    # The log carries names and phones: east's member's events are not S002's to read.
    east_log = f"SELECT count(*) FROM events WHERE member_id = '{chain['east']}'"
    assert await hub.db.read(lambda tx: tx.scalar(east_log)) >= 1
    assert await access("east.mgr").read(unscoped(east_log)) == await hub.db.read(
        lambda tx: tx.scalar(east_log))
    assert await access("s2.mgr").read(unscoped(east_log)) == 0
    assert await access("dpo").read(unscoped("SELECT count(*) FROM events")) == 0
    # Each store's members (hub schema 28): a row is seen from its own store only.
    counted = "SELECT count(*) FROM store_members WHERE store_id = '{}'"
    held = {s: await hub.db.read(lambda tx, s=s: tx.scalar(counted.format(s)))
            for s in ("S001", "S002")}
    assert held["S001"] >= 1 and held["S002"] >= 1
    every = "SELECT count(*) FROM store_members"
    for who, sees in (("east.mgr", held["S001"]), ("s2.mgr", held["S002"]),
                      ("boss", held["S001"] + held["S002"]), ("guide1", 0), ("dpo", 0)):
        assert await access(who).read(unscoped(every)) == sees, who

    def catalogue(tx: Any) -> dict[str, Any]:
        return {
            "user": tx.scalar("SELECT current_user"),
            "owned": tx.scalar("SELECT count(*) FROM pg_class c JOIN pg_roles r"
                               " ON r.oid = c.relowner WHERE r.rolname = 'membergate_hq'"),
            "forced": {r[0] for r in tx.all(
                "SELECT relname FROM pg_class WHERE relforcerowsecurity AND relkind = 'r'")},
            "definers": tx.scalar("SELECT count(*) FROM pg_proc p JOIN pg_namespace n"
                                  " ON n.oid = p.pronamespace WHERE n.nspname = 'public'"
                                  " AND p.prosecdef"),
        }

    seen = await hub.db.read(catalogue)
    assert seen["user"] == "membergate_hq" and seen["owned"] == 0 and seen["definers"] == 0
    assert {"members", "member_stores", "sales_facts", "daily_rollups", "member_activity",
            "cards", "shares", "consents", "events", "coupons", "coupon_redemptions",
            "coupon_conflicts", "spend_months", "segment_joins"} <= seen["forced"]
    # Every table with a member or a store in it is behind a policy (hub schema 23 closed the
    # last: coupons, the log) but these, which hold ids and counters, no one's data: a stream's
    # position, the store list, refusal counts, merged ids for RFM, who asked for an export,
    # members waiting for their segments. Listed so that a new table cannot be forgotten.
    unforced = await hub.db.read(lambda tx: {str(r[0]) for r in tx.all(
        "SELECT c.table_name FROM information_schema.columns c JOIN pg_class p"
        " ON p.relname = c.table_name AND p.relkind = 'r' AND NOT p.relforcerowsecurity"
        " WHERE c.table_schema = 'public' AND c.column_name IN ('member_id', 'store_id')")})
    assert unforced == {"store_streams", "stores", "refusals", "rfm_aliases", "export_requests",
                        "segment_dirty"}, unforced


async def test_bulk_exports_need_a_second_person_above_the_limit(chain: dict[str, Any]) -> None:
    """Up to ``[exports] approval_above`` members (2 here) an export is approved as it is asked
    for; above, it waits for another approver — never the one who asked — and is taken once.
    Scoped and masked as the requester's screen; every step and refusal audited."""
    c: httpx.AsyncClient = chain["client"]
    # A region manager: two members in the scope, within the limit: approved at once, masked.
    r = await c.post("/v1/exports", json={"reason": "east mailing"},
                     headers=_as(chain, "east.mgr"))
    assert r.status_code == 201 and r.json()["state"] == "approved" and r.json()["rows"] == 2
    f = await c.get(f"/v1/exports/{r.json()['export_id']}/file", headers=_as(chain, "east.mgr"))
    assert f.status_code == 200 and f.headers["content-type"].startswith("text/csv")
    lines = f.content.decode("utf-8-sig").splitlines()
    assert lines[0].startswith("member_id,member_code,name,phone")
    ids = {line.split(",")[0] for line in lines[1:]}
    assert ids == {chain["east"], chain["both"]}  # the west-only member is not in it
    assert "138****8001" in f.text and "王*" in f.text and "13800138001" not in f.text
    again = await c.get(f"/v1/exports/{r.json()['export_id']}/file",
                        headers=_as(chain, "east.mgr"))
    assert again.status_code == 409 and again.json()["error"]["code"] == "export_not_available"
    # A store outside the scope is no store at all; a guide may not export.
    r = await c.post("/v1/exports", json={"reason": "x", "store_id": "S002"},
                     headers=_as(chain, "east.mgr"))
    assert r.status_code == 404
    assert (await c.post("/v1/exports", json={"reason": "x"},
                         headers=_as(chain, "guide1"))).status_code == 403

    # HQ: three members, above the limit: pending until a second admin approves it.
    r = await c.post("/v1/exports", json={"reason": "year-end"}, headers=_as(chain, "boss"))
    big = r.json()
    assert r.status_code == 201 and big["state"] == "pending" and big["rows"] == 3
    url = f"/v1/exports/{big['export_id']}"
    early = await c.get(f"{url}/file", headers=_as(chain, "boss"))
    assert early.status_code == 409 and early.json()["error"]["code"] == "approval_required"
    own = await c.post(f"{url}/approve", json={"reason": "mine"}, headers=_as(chain, "boss"))
    assert own.status_code == 403 and own.json()["error"]["code"] == "four_eyes_required"
    assert (await c.post(f"{url}/approve", json={"reason": "ok"},
                         headers=_as(chain, "east.mgr"))).status_code == 403
    ok = await c.post(f"{url}/approve", json={"reason": "checked"}, headers=_as(chain, "boss2"))
    assert ok.status_code == 200 and ok.json()["state"] == "approved"
    assert ok.json()["decided_by"] == "boss2"
    # Someone else cannot take it; the requester can, whole (an admin's screen is unmasked).
    assert (await c.get(f"{url}/file", headers=_as(chain, "boss2"))).status_code == 404
    f = await c.get(f"{url}/file", headers=_as(chain, "boss"))
    assert f.status_code == 200 and "13800138001" in f.text and len(f.text.splitlines()) == 4
    listed = (await c.get("/v1/exports", headers=_as(chain, "east.mgr"))).json()
    assert {e["requested_by"] for e in listed} == {"east.mgr"}  # their own only

    log = (await c.get("/v1/audit-log", params={"limit": 500},
                       headers=_as(chain, "dpo"))).json()
    seen = {(e["username"], e["action"], e["outcome"]) for e in log}
    assert {("east.mgr", "export.request", "approved"), ("boss", "export.request", "pending"),
            ("boss", "export.download", "approval_required"),
            ("boss", "export.approve", "four_eyes_required"),
            ("boss2", "export.approve", "ok"), ("boss", "export.download", "ok"),
            ("east.mgr", "export.download", "export_not_available"),
            ("east.mgr", "export.request", "store_not_found")} <= seen
    downloaded = next(e for e in log if e["action"] == "export.download"
                      and e["username"] == "boss" and e["outcome"] == "ok")
    assert downloaded["fields"] == ["birthday", "name", "phone"]


# Every HQ route about one member, with a request it accepts (the matrix below is held to the
# app's routes: a new member route must be added here).
MEMBER_ROUTES: dict[tuple[str, str], tuple[dict[str, Any] | None, dict[str, str] | None]] = {
    ("GET", "/v1/members/{member_id}"): (None, None),
    ("POST", "/v1/members/{member_id}/reveal"): ({"fields": ["phone"], "reason": "m"}, None),
    ("GET", "/v1/members/{member_id}/export"): (None, {"reason": "matrix"}),
    ("GET", "/v1/members/{member_id}/rfm"): (None, None),
    ("GET", "/v1/members/{member_id}/tags"): (None, None),
    ("GET", "/v1/members/{member_id}/lifecycle"): (None, None),
    ("GET", "/v1/members/{member_id}/360"): (None, None),
    ("POST", "/v1/members/{member_id}/points/adjustments"): (
        {"delta": 1, "reason": "m", "actor": "m"}, None),
    ("POST", "/v1/members/{member_id}/coupons"): ({"kind": "amount_off", "value": 100}, None),
    ("PATCH", "/v1/members/{member_id}"): ({"name": "m", "actor": "m"}, None),
    ("PUT", "/v1/members/{member_id}/cards/{card_uid}/state"): (
        {"state": "lost", "actor": "m"}, None),
    ("POST", "/v1/members/{member_id}/erasure"): ({"actor": "m", "reason": "m"}, None),
    ("GET", "/v1/members/{member_id}/journeys"): (None, None),
    ("POST", "/v1/members/{member_id}/consents"): (
        {"consents": [{"channel": "sms", "granted": True, "text_version": "v1"}],
         "actor": "m"}, None),
}


async def test_every_member_route_for_every_role_inside_and_outside_the_scope(
        chain: dict[str, Any]) -> None:
    """Route x role x member: without the permission 403; a member outside the scope gets
    word for word the answer for no member at all (and nothing changes); inside, reads
    answer. Writes inside the scope are the other tests' (they change the member)."""
    from hub.core.clock import now_ms

    c: httpx.AsyncClient = chain["client"]
    hub: Hub = chain["hub"]
    routes = {(m, r.path): r for router in ROUTERS for r in router.routes
              if isinstance(r, APIRoute) and "{member_id}" in r.path for m in r.methods}
    assert set(routes) == set(MEMBER_ROUTES)
    before = await hub.db.read(lambda tx: tx.all(
        "SELECT member_id, name, change_no FROM members ORDER BY member_id"))
    sees = _sees(chain)
    for (method, path), (body, params) in MEMBER_ROUTES.items():
        needed = _permission_of(routes[(method, path)])
        for who, inside in sees.items():
            token = LEGACY if who == "legacy" else chain["tokens"][who]
            principal = hub.tokens.principal(token, now_ms())
            assert principal is not None
            allowed = principal.role.allows(str(needed))

            async def call(member: str, method: str = method, path: str = path,
                           body: Any = body, params: Any = params,
                           who: str = who) -> httpx.Response:
                url = path.format(member_id=member, card_uid="04AA0001")
                return await c.request(method, url, json=body, params=params,
                                       headers={**_as(chain, who),
                                                "Idempotency-Key": f"mx-{who}-{member}-{url}"})

            nobody = await call("no-such-member")
            for member in (chain["east"], chain["west"], chain["both"]):
                if not allowed:
                    r = await call(member)
                    assert r.status_code == 403, (method, path, who, r.text)
                elif member not in inside:
                    r = await call(member)
                    assert (r.status_code, r.json()) == (nobody.status_code, nobody.json()), (
                        method, path, who)
                    assert r.status_code == 404
                elif method == "GET" or path.endswith("/reveal"):
                    r = await call(member)
                    assert r.status_code == 200, (method, path, who, r.text)
    after = await hub.db.read(lambda tx: tx.all(
        "SELECT member_id, name, change_no FROM members ORDER BY member_id"))
    assert after == before  # nothing outside a scope, or refused, changed anything


async def test_fleet_status_lists_the_stores_of_the_callers_scope(chain: dict[str, Any]) -> None:
    c: httpx.AsyncClient = chain["client"]
    everyone = (await c.get("/v1/status", headers=_as(chain, "boss"))).json()
    east = (await c.get("/v1/status", headers=_as(chain, "east.ed"))).json()
    assert {s["store_id"] for s in everyone["stores"]} == {"S001", "S002"}
    assert {s["store_id"] for s in east["stores"]} == {"S001"}


async def test_rfm_runs_through_the_api_and_their_members_inside_the_scope(
        chain: dict[str, Any]) -> None:
    c: httpx.AsyncClient = chain["client"]
    # Marketing runs RFM; a region manager may not; a malformed run is refused, nothing kept.
    bad = await c.post("/v1/rfm/runs", json={"thresholds": {"f": [5, 3, 2, 1]}},
                       headers=_as(chain, "mkt"))
    assert bad.status_code == 422
    assert (await c.post("/v1/rfm/runs", json={}, headers=_as(chain, "east.mgr"))
            ).status_code == 403
    assert (await c.get("/v1/rfm/runs", headers=_as(chain, "mkt"))).json() == []
    from datetime import datetime
    from zoneinfo import ZoneInfo

    today = datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat()  # the sale's day
    r = await c.post("/v1/rfm/runs", json={"window_days": 30, "as_of": today},
                     headers=_as(chain, "mkt"))
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["members"] == 3 and run["params"]["window_days"] == 30
    assert sum(run["sizes"]["r"].values()) == 3
    listed = (await c.get("/v1/rfm/runs", headers=_as(chain, "mkt"))).json()
    assert [x["run_id"] for x in listed] == [run["run_id"]]
    # A run's members and a member's history: inside the caller's scope only.
    url = f"/v1/rfm/runs/{run['run_id']}/members"
    east_sees = {m["member_id"] for m in (await c.get(url, headers=_as(chain, "east.mgr"))
                                           ).json()}
    assert east_sees == {chain["east"], chain["both"]}
    buyer = (await c.get(url, params={"r": 0}, headers=_as(chain, "boss"))).json()
    assert chain["both"] not in {m["member_id"] for m in buyer}  # it bought in the window
    hist = await c.get(f"/v1/members/{chain['both']}/rfm", headers=_as(chain, "east.mgr"))
    assert hist.status_code == 200 and hist.json()[0]["run_id"] == run["run_id"]
    outside = await c.get(f"/v1/members/{chain['west']}/rfm", headers=_as(chain, "east.mgr"))
    assert outside.status_code == 404
    # The chain names its groups.
    named = await c.put("/v1/rfm/groups/HHH", json={"name": "钻石会员"},
                        headers=_as(chain, "mkt"))
    assert named.status_code == 200 and named.json()["HHH"] == "钻石会员"
    again = (await c.get(f"/v1/rfm/runs/{run['run_id']}", headers=_as(chain, "mkt"))).json()
    assert again["groups"].get("HHH", {"name": "钻石会员"})["name"] == "钻石会员"
    # A second run keeps where each member was in the first; its members can be listed by
    # the group they were in.
    first = {m["member_id"]: m for m in (await c.get(url, headers=_as(chain, "boss"))).json()}
    assert all((m["was_r"], m["was_group"]) == (0, None) for m in first.values())
    r = await c.post("/v1/rfm/runs", json={"window_days": 30, "as_of": today},
                     headers=_as(chain, "mkt"))
    url = f"/v1/rfm/runs/{r.json()['run_id']}/members"
    second = (await c.get(url, headers=_as(chain, "boss"))).json()
    assert {m["member_id"]: (m["was_r"], m["was_f"], m["was_m"], m["was_group"])
            for m in second} == {k: (m["r"], m["f"], m["m"], m["group"])
                                 for k, m in first.items()}
    was = first[chain["both"]]["group"]
    fell = (await c.get(url, params={"was_group": was}, headers=_as(chain, "boss"))).json()
    assert {m["member_id"] for m in fell} == {k for k, m in first.items()
                                              if m["group"] == was}
    hist = (await c.get(f"/v1/members/{chain['both']}/rfm", headers=_as(chain, "boss"))).json()
    assert [h["was_group"] for h in hist] == [None, was]


async def test_rfm_runs_on_schedule_monthly_and_quarterly(chain: dict[str, Any]) -> None:
    from datetime import date

    hub: Hub = chain["hub"]
    assert await hub.scheduled_rfm(date(2027, 2, 2)) == []  # not the first of a month
    assert len(await hub.scheduled_rfm(date(2027, 2, 1))) == 1
    made = await hub.scheduled_rfm(date(2027, 1, 1))
    c: httpx.AsyncClient = chain["client"]
    listed = (await c.get("/v1/rfm/runs", headers=_as(chain, "boss"))).json()
    # A quarter's first day: the quarterly run, which is that month's as well (not two).
    assert [(x["kind"], x["as_of"]) for x in listed if x["run_id"] in made] == [
        ("quarterly", "2026-12-31")]


async def test_segments_tags_and_the_member_card_through_the_api(chain: dict[str, Any]) -> None:
    """Marketing defines tags and segments; what a region manager previews, lists, exports or
    reads of a member is cut to their region; a guide may not define; a bad definition is a
    422 naming the part and saves nothing; every change and export is audited."""
    c: httpx.AsyncClient = chain["client"]
    hub: Hub = chain["hub"]
    east, west, both = chain["east"], chain["west"], chain["both"]
    mkt, mgr = _as(chain, "mkt"), _as(chain, "east.mgr")
    r = await c.put("/v1/tags/vip", json={"group": "value", "description": "贵宾"}, headers=mkt)
    assert r.status_code == 200 and r.json()[0]["tag"] == "vip"
    r = await c.post("/v1/members/tags", json={"members": [east, west], "add": ["vip"]},
                     headers=mkt)
    assert r.status_code == 200 and sorted(r.json()) == sorted([east, west])
    tree = {"all": [{"field": "tag", "any": ["vip"]}, {"field": "consent", "in": ["sms"]}]}
    r = await c.post("/v1/segments", json={"name": "vip sms", "definition": tree,
                                           "for_tills": True}, headers=mkt)
    assert r.status_code == 201, r.text
    seg = r.json()["segment_id"]
    anyone = await c.post("/v1/segments", json={"name": "vips",
                                                "definition": {"field": "tag", "any": ["vip"]}},
                          headers=mkt)
    vips = anyone.json()["segment_id"]
    await hub.keeper.run()
    assert (await c.get(f"/v1/segments/{seg}", headers=mgr)).json()["members"] == 1

    # Preview and listing: the chain's count for marketing, the region's for its manager.
    body = {"definition": {"field": "tag", "any": ["vip"]}}
    chain_wide = (await c.post("/v1/segments/preview", json=body, headers=mkt)).json()
    region = (await c.post("/v1/segments/preview", json=body, headers=mgr)).json()
    assert (chain_wide["count"], sorted(chain_wide["sample"])) == (2, sorted([east, west]))
    assert (region["count"], region["sample"]) == (1, [east])
    listed = (await c.get(f"/v1/segments/{vips}/members", headers=mgr)).json()
    assert [m["member_id"] for m in listed] == [east]
    r = await c.get(f"/v1/segments/{vips}/members.csv", headers=mgr)
    assert r.status_code == 200 and r.text.startswith("\ufeffmember_id,member_code,since")
    assert east in r.text and west not in r.text
    assert (await c.get(f"/v1/segments/{vips}/members.csv",
                        headers=_as(chain, "guide1"))).status_code == 403

    # A guide may read but not define; a bad definition names its part and saves nothing.
    r = await c.post("/v1/segments", json={"name": "x", "definition": tree},
                     headers=_as(chain, "guide1"))
    assert r.status_code == 403
    r = await c.post("/v1/segments", json={"name": "bad", "definition": {"all": [
        {"field": "tier", "in": ["gold"]}, {"field": "spend", "window_days": 0, "gte": 1}]}},
                     headers=mkt)
    assert r.status_code == 422 and "all[1].window_days" in r.text
    r = await c.post("/v1/segments", json={"name": "loop", "definition": {
        "field": "segment", "in": ["no-such"]}}, headers=mkt)
    assert r.status_code == 422 and "unknown segment 'no-such'" in r.text
    names = [s["name"] for s in (await c.get("/v1/segments", headers=mkt)).json()]
    assert names == ["vip sms", "vips"]

    # A new version, evaluated whole again; the old one kept.
    r = await c.put(f"/v1/segments/{seg}", json={"definition": {"field": "tag",
                                                                "any": ["vip"]}}, headers=mkt)
    assert r.json()["version"] == 2 and r.json()["due"] is True
    await hub.keeper.run()
    got = (await c.get(f"/v1/segments/{seg}", headers=mkt)).json()
    assert (got["members"], got["due"]) == (2, False)
    versions = (await c.get(f"/v1/segments/{seg}/versions", headers=mkt)).json()
    assert [v["definition"] for v in versions] == [tree, {"field": "tag", "any": ["vip"]}]
    evals = (await c.get(f"/v1/segments/{seg}/evaluations", headers=mkt)).json()
    assert [(e["version"], e["kind"], e["members"]) for e in evals] == [
        (2, "whole", 2), (1, "whole", 1)]

    # The member card: inside the scope, masked for the region manager; outside, 404.
    card = (await c.get(f"/v1/members/{east}/360", headers=mgr)).json()
    assert card["member"]["name"] == "王*"
    assert {t["tag"]: t["source"] for t in card["tags"]} == {"vip": "hq"}
    assert {s["name"] for s in card["segments"]} == {"vip sms", "vips"}
    assert card["tier"]["next_tier"] == "silver" and card["tier"]["spend_needed"] == 100_000
    bought = (await c.get(f"/v1/members/{both}/360", headers=mgr)).json()
    assert [(x["kind"], x["amount"], x["store_id"]) for x in bought["recent"]] == [
        ("sale", 1_000, "S001")]
    assert bought["favourite_categories"][0]["category"] == "grocery"
    assert bought["visits"]["purchases"] == 1
    assert (await c.get(f"/v1/members/{west}/360", headers=mgr)).status_code == 404
    tags_of = (await c.get(f"/v1/members/{west}/tags", headers=mkt)).json()
    assert [(t["tag"], t["source"], t["set_by"]) for t in tags_of] == [("vip", "hq", "mkt")]

    # Archiving is refused while used; the tag cannot be dropped while a segment names it.
    assert (await c.delete("/v1/tags/vip", headers=mkt)).status_code == 409
    r = await c.post(f"/v1/segments/{vips}/archive", headers=mkt)
    assert r.status_code == 200 and r.json()["state"] == "archived"
    actions = await hub.db.read(lambda tx: [str(a) for (a,) in tx.all(
        "SELECT action FROM audit_log WHERE username = 'mkt' ORDER BY at_ms")])
    for action in ("tag.define", "member.tags", "segment.create", "segment.change",
                   "segment.archive"):
        assert action in actions
    assert "segment.export" in await hub.db.read(lambda tx: [str(a) for (a,) in tx.all(
        "SELECT action FROM audit_log WHERE username = 'east.mgr'")])


async def test_journeys_messages_and_consents_through_the_api(chain: dict[str, Any]) -> None:
    """Marketing makes journeys (a guide may not); a bad one is a 422 naming the part, nothing
    saved; a care plan reaches a segment's members once; a region manager reads only their
    members' journeys; consents taken by HQ become HQ-stream events, a repeat changes nothing;
    the outbox is for who runs the channels."""
    c: httpx.AsyncClient = chain["client"]
    hub: Hub = chain["hub"]
    east, west = chain["east"], chain["west"]
    mkt, mgr, boss = _as(chain, "mkt"), _as(chain, "east.mgr"), _as(chain, "boss")
    await c.put("/v1/tags/vip", json={"group": "value"}, headers=mkt)
    await c.post("/v1/members/tags", json={"members": [east, west], "add": ["vip"]},
                 headers=mkt)
    seg = (await c.post("/v1/segments", json={
        "name": "vips", "definition": {"field": "tag", "any": ["vip"]}},
        headers=mkt)).json()["segment_id"]
    await hub.keeper.run()
    plan = {"name": "关怀", "trigger": {"kind": "scheduled", "segment_id": seg,
                                        "at": "2026-01-01T10:00:00+08:00"},
            "actions": [{"kind": "points", "points": 88}]}
    assert (await c.post("/v1/journeys", json=plan, headers=_as(chain, "guide1"))
            ).status_code == 403
    for bad, says in (
            ({**plan, "actions": [{"kind": "message", "channel": "webhook", "text": "hi"}]},
             "channel 'webhook' is not configured"),
            ({**plan, "trigger": {"kind": "scheduled", "segment_id": seg,
                                  "at": "2026-01-01T10:00:00"}}, "time zone offset")):
        r = await c.post("/v1/journeys", json=bad, headers=mkt)
        assert r.status_code == 422 and says in r.text, r.text
    assert (await c.get("/v1/journeys", headers=mkt)).json() == []
    r = await c.post("/v1/journeys", json=plan, headers=mkt)
    assert r.status_code == 201, r.text
    journey = r.json()["journey_id"]
    await hub.run_journeys()
    await hub.run_journeys()  # once: nobody twice
    got = (await c.get(f"/v1/journeys/{journey}", headers=mkt)).json()
    assert got["entries"] == {"done": 2}
    mine = (await c.get(f"/v1/members/{east}/journeys", headers=mgr)).json()
    assert [(j["name"], [a["kind"] for a in j["actions"]]) for j in mine] == [
        ("关怀", ["points"])]
    assert (await c.get(f"/v1/members/{west}/journeys", headers=mgr)).status_code == 404
    card = (await c.get(f"/v1/members/{east}/360", headers=mgr)).json()
    assert [j["name"] for j in card["journeys"]] == ["关怀"]
    assert card["points"]["balance"] >= 88
    r = await c.post(f"/v1/journeys/{journey}/state", json={"state": "paused"}, headers=mkt)
    assert r.json()["state"] == "paused"

    # Consents through HQ: an HQ-stream event each, a repeat changes nothing.
    body = {"consents": [{"channel": "email", "granted": True, "text_version": "2026-12"},
                         {"channel": "sms", "granted": False, "text_version": "2026-12"}],
            "actor": "hotline 7"}
    r = await c.post(f"/v1/members/{east}/consents", json=body, headers=boss)
    assert r.json() == {"member_id": east, "recorded": 2}
    assert (await c.post(f"/v1/members/{east}/consents", json=body,
                         headers=boss)).json()["recorded"] == 0
    held = await hub.db.read(lambda tx: tx.all(
        "SELECT channel, granted, store_id FROM consents WHERE member_id = ? ORDER BY channel",
        (east,)))
    assert [tuple(h) for h in held] == [("email", 1, "HQ"), ("sms", 0, "HQ")]
    # The outbox: who runs the channels.
    assert (await c.get("/v1/messages", headers=mkt)).status_code == 403
    assert (await c.get("/v1/messages", headers=boss)).json() == []
    r = await c.post("/v1/messages/nope/resend", headers=boss)
    assert r.status_code == 404
    audit = await hub.db.read(lambda tx: [str(a) for (a,) in tx.all(
        "SELECT action FROM audit_log WHERE action IN (?, ?, ?) ORDER BY at_ms",
        ("journey.create", "journey.state", "member.consent"))])
    assert audit == ["journey.create", "journey.state", "member.consent", "member.consent"]


async def test_row_level_security_leaves_the_planner_its_row_counts(pg_url: str) -> None:
    """PostgreSQL plans a read before it reads the scope (an initplan does): every policy must
    let the planner count on most of the rows the query's own conditions leave. Schema 22's
    ``scope = 'all' OR (scope IN (...) AND store_id = ANY(list))`` it counted as keeping
    0.7 % of them, and a store's member activity sorted 70,000 rows it had planned as 440
    (hub schema 29: a CASE, counted as half). Empty tables never analysed: the planner
    counts each as ten pages of rows, the same for both reads."""
    from hub.core.db import HubDatabase
    from hub.core.schema import migrate

    async with HubDatabase(pg_url) as db:
        await db.transaction(migrate)

        def policed(tx: Any) -> list[str]:
            return [str(r[0]) for r in tx.all(
                "SELECT c.relname FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid"
                " WHERE p.polname = 'hq_scope' ORDER BY 1")]

        def planned(tx: Any, tables: list[str]) -> dict[str, float]:
            return {t: float(tx.scalar(f"EXPLAIN (FORMAT JSON) SELECT * FROM {t}")[0]["Plan"]
                             ["Plan Rows"]) for t in tables}

        tables = await db.transaction(policed)
        assert {"members", "store_days", "member_store_days", "store_members", "events",
                "coupons", "sv_flows", "sku_chain_days", "rfm_scores"} <= set(tables)
        owner = await db.transaction(lambda tx: planned(tx, tables))
        assert min(owner.values()) >= 100, owner  # room for a ratio to tell
        for scope in ({"membergate.scope": "stores", "membergate.stores": "S001"},
                      {"membergate.scope": "all"}):
            role = await db.read(lambda tx: planned(tx, tables), row_scope=scope)
            low = {t: round(role[t] / owner[t], 3) for t in tables if role[t] < owner[t] / 4}
            assert not low, (scope, low)
