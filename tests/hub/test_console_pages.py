"""The console's pages and reports without a browser: every page names the permission it
needs; every report runs over the demo chain on both backends, inside each role's scope, and
every table and column it answers with has a label in Chinese and English; the API's report
routes answer in the report shape and export files the figures of the report."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import typing
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from openpyxl import load_workbook

from hub.api.app import create_app
from hub.api.console import assets, authoring, authoring_words, i18n
from hub.api.console import pages as console
from hub.app import Hub
from hub.auth import roles, users
from hub.auth.scope import Scope
from hub.auth.tokens import Principal
from hub.automation import examples as journey_examples
from hub.automation.definition import Action, Trigger
from hub.campaigns import examples as campaign_examples
from hub.config import HubConfig
from hub.core.clock import now_ms
from hub.core.db import HubDatabase, Tx
from hub.reports import catalog
from hub.reports.period import ReportQuery
from provisioning import demo_history
from provisioning.demo_history import PASSWORD


def test_every_console_page_names_the_permission_it_needs() -> None:
    pages = [r for router in (console.router, authoring.router) for r in router.routes
             if isinstance(r, APIRoute)]
    assert len(pages) >= 16
    assert {f"{console.PREFIX}/campaigns/edit", f"{console.PREFIX}/journeys/new",
            f"{console.PREFIX}/journeys/{{journey_id}}/edit"} <= {r.path for r in pages}
    for route in pages:
        named = [getattr(d.call, "permission", None) for d in route.dependant.dependencies]
        named = [p for p in named if p is not None]
        if route.path in (console.PREFIX, f"{console.PREFIX}/"):
            continue  # a redirect to the dashboard
        assert len(named) == 1, route.path
        assert named[0] == "public" if route.path.endswith("/sign-in") else \
            named[0] in roles.PERMISSIONS, route.path


def _scope(tx: Tx, username: str) -> Scope:
    user = users.get(tx, username)
    return Scope(Principal(user, roles.load(tx)[user.role], None))


async def test_every_report_runs_in_every_scope_and_every_column_has_a_label(
        hub_db: HubDatabase) -> None:
    chain = await demo_history.seed(hub_db, members=60, days=120)
    q = ReportQuery(chain.today - timedelta(days=89), chain.today)
    ctx = catalog.Context(now_ms=now_ms(), chain_zone=demo_history.ZONE, chain_entity="")
    unlabelled: set[str] = set()
    for who in ("admin", "east", "s001", "mkt"):
        for slug, kind in catalog.KINDS.items():
            done: dict[str, Any] = await hub_db.read(
                lambda tx, k=kind, w=who: k.run(tx, _scope(tx, w), q, ctx))
            assert done["report"] == slug
            assert done["completeness"]["stores"], (slug, who)
            for table in done["tables"]:
                unlabelled.update(k for k in (table["name"], *table["columns"])
                                  if not i18n.known(k))
                assert len(table["columns"]) == len(table["kinds"])
                assert all(k in ("text", "date", "int", "money", "points", "ratio")
                           for k in table["kinds"]), (slug, table["kinds"])
                for row in table["rows"]:
                    assert len(row) == len(table["columns"]), (slug, table["name"])
            for key in done["totals"]:
                unlabelled.update([key] if not i18n.known(key) else [])
        assert i18n.known(f"report_{slug}")
    assert unlabelled == set()


async def test_the_report_routes_answer_and_export_the_same_figures(tmp_path: Any) -> None:
    cfg = HubConfig.model_validate({"hub": {"database": str(tmp_path / "hub.db"),
                                            "data_dir": str(tmp_path)},
                                    "broker": {"embedded_port": 0}})
    async with Hub(cfg) as hub:
        chain = await demo_history.seed(hub.db, members=60, days=120)
        await hub.reload_access()
        app = create_app(hub)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://hub") as client:
            signed = await client.post("/v1/auth/sign-in", json={"username": "admin",
                                                                  "password": PASSWORD})
            assert signed.status_code == 200
            start, end = chain.today - timedelta(days=29), chain.today
            params = {"start": str(start), "end": str(end), "store_id": "S002"}
            answer = (await client.get("/v1/reports/sales_trend", params=params)).json()
            trend = answer["tables"][0]
            net_at = trend["columns"].index("net")
            net = sum(r[net_at] for r in trend["rows"])
            sold = sum(t for s, d, t, _m in chain.sales if s == "S002" and start <= d <= end)
            back = sum(a for s, d, a in chain.refunds if s == "S002" and start <= d <= end)
            assert net == sold - back
            got = await client.get("/v1/reports/sales_trend/export",
                                   params={**params, "format": "csv"})
            assert got.status_code == 200
            rows = list(csv.reader(io.StringIO(got.content.decode("utf-8-sig"))))
            assert rows[0][net_at] == "净销售额"
            assert [r[net_at] for r in rows[1:]] == [
                f"{r[net_at] // 100}.{r[net_at] % 100:02d}" for r in trend["rows"]]
            got = await client.get("/v1/reports/sales_trend/export",
                                   params={**params, "format": "xlsx", "lang": "en"})
            book = load_workbook(io.BytesIO(got.content))
            sheet = book[trend["name"]]
            assert sheet.cell(1, net_at + 1).value == "Net sales"
            assert float(sheet.cell(2, net_at + 1).value) == trend["rows"][0][net_at] / 100
            # Exports are in the audit log, with what was asked.
            entries = (await client.get("/v1/audit-log")).json()
            exported = [e for e in entries if e["action"] == "report.export"]
            assert len(exported) == 2 and "S002" in exported[0]["reason"]
            # Bad input: a clear error, in the API's shape.
            for bad, code in ((dict(start=str(end), end=str(start)), "period_reversed"),
                              (dict(start=str(start)), "period_unbounded"),
                              (dict(store_id="S999"), "unknown_store"),
                              (dict(region="north"), "unknown_region")):
                refused = await client.get("/v1/reports/sales_trend", params=bad)
                assert refused.json()["error"]["code"] == code, bad
            refused = await client.get("/v1/reports/nope")
            assert refused.status_code == 404
        # A page without a session is a redirect to sign in, not a 401.
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://hub") as anonymous:
            page = await anonymous.get("/console/reports/sales_trend")
            assert page.status_code == 303
            assert page.headers["location"].startswith("/console/sign-in?next=")


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_words_exist_in_both_languages(lang: str) -> None:
    for slug in catalog.KINDS:
        assert i18n.t(lang, f"report_{slug}") != f"report_{slug}"  # type: ignore[arg-type]
        assert i18n.DEFINITIONS[slug], slug  # the Chinese page states what its figures mean


def test_the_authoring_pages_words_are_in_both_languages() -> None:
    """Every word of the authoring pages has its Chinese and its English; every rule kind,
    trigger kind, journey template and role scope the pages name has a word; every refusal
    they meet has its Chinese sentence."""
    for key, (zh, en) in authoring_words.WORDS.items():
        assert zh.strip() and en.strip() and zh != key, key
    names = [f"rule_{k}" for k in campaign_examples.rule_kinds()]
    names += [f"tpl_{k}" for k in journey_examples.EXAMPLES]
    names += [f"scope_{k}" for k in ("all", "regions", "stores", "guide", "none", "fleet",
                                     "region", "store")]
    names += [f"journey_{s}" for s in ("active", "paused", "archived")]
    names += list(authoring._SCRIPT_KEYS)
    assert [n for n in names if not i18n.known(n)] == []
    assert all(i18n.ERRORS[code] for code in authoring_words.ERRORS)

    def kinds(union: Any) -> set[str]:
        return {typing.get_args(m.model_fields["kind"].annotation)[0]
                for m in typing.get_args(typing.get_args(union)[0])}

    assert set(authoring._SCRIPT_KEYS) == ({f"trigger_{k}" for k in kinds(Trigger)}
                                           | {f"step_{k}" for k in kinds(Action)})


async def test_the_console_files_are_named_by_their_content_and_kept_while_it_holds(
        tmp_path: Any) -> None:
    cfg = HubConfig.model_validate({"hub": {"database": str(tmp_path / "hub.db"),
                                            "data_dir": str(tmp_path)},
                                    "broker": {"embedded_port": 0}})
    async with Hub(cfg) as hub:
        app = create_app(hub)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://hub") as client:
            page = (await client.get(f"{console.PREFIX}/sign-in")).text
            named = re.findall(r'(?:href|src)="(/console/static/([\w.]+)\?v=(\w+))"', page)
            assert {name for _u, name, _v in named} == {"console.css", "console.js"}
            for address, name, version in named:
                body = (assets.HERE / name).read_bytes()
                assert version == hashlib.sha256(body).hexdigest()[:12]
                got = await client.get(address)
                assert got.status_code == 200 and got.content == body
                assert got.headers["cache-control"] == assets.KEPT
                # Asked again with the ETag: still the current name, still kept.
                again = await client.get(address, headers={"If-None-Match": got.headers["etag"]})
                assert again.status_code == 304 and again.headers["cache-control"] == assets.KEPT
                # Without the digest or with another (a page from before an upgrade): the
                # browser must ask each time.
                for other in (f"/console/static/{name}", f"/console/static/{name}?v=0123456789ab"):
                    got = await client.get(other)
                    assert got.status_code == 200 and got.content == body
                    assert got.headers["cache-control"] == assets.ASKED_AGAIN
            assert (await client.get("/console/static/nothing.js?v=1")).status_code == 404
