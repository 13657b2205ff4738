"""The HQ console's pages, rendered by the hub (Jinja2, autoescaped) from the same functions
the HQ API's routes run, with the caller's scope: a page shows exactly what its API call
would answer the same user, masked the same way.

A page needs a console session (``hub.auth.sessions``): without one it sends the browser to
sign in. It names the permission it needs like every API route; a refusal — no permission, a
filter outside the scope, a reversed period, a member of another store asked for by URL — is
a page in the reader's language with the HTTP status of the refusal, and changes nothing.
Changes (a segment saved) are made by the page's script through the JSON API with the
session's CSRF token, so every change passes the API's checks and audit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from hub.api.console import assets, charts, fleet_view, i18n
from hub.api.deps import get_hub, grant
from hub.api.routes import audit_log as audit_routes
from hub.api.routes import campaign_effect as campaign_effect_routes
from hub.api.routes import consolidated
from hub.api.routes import journey_effect as journey_effect_routes
from hub.api.routes import journeys as journey_routes
from hub.api.routes import reports as search_routes
from hub.api.routes import rfm as rfm_routes
from hub.api.routes import segments as segment_routes
from hub.api.routes import status as status_routes
from hub.api.routes import stores as store_routes
from hub.api.routes import users as user_routes
from hub.auth import sessions
from hub.auth.access import Access
from hub.automation import journeys
from hub.core.clock import now_ms
from hub.reports import catalog
from protocol.errors import ServiceError
from protocol.money import format_amount

HERE = Path(__file__).parent
PREFIX = "/console"
LANG_COOKIE = "mg_lang"
templates = Jinja2Templates(directory=str(HERE / "templates"))


class SignInFirst(Exception):
    """No console session: the page sends the browser to sign in."""


def money(v: Any) -> str:
    return "—" if v is None else "¥" + _grouped(format_amount(int(v), "CNY"))


def _grouped(text: str) -> str:
    sign = "-" if text.startswith("-") else ""
    whole, _, frac = text.lstrip("-").partition(".")
    return f"{sign}{int(whole):,}" + (f".{frac}" if frac else "")


def cell(v: Any, kind: str, lang: i18n.Lang = "zh") -> str:
    """A report's value as the page shows it."""
    if v is None:
        return "—"
    if kind == "money":
        return money(v)
    if kind == "ratio":
        return f"{float(v) * 100:.1f}%"
    if kind in ("int", "points") and isinstance(v, int):
        return f"{v:,}"
    if kind == "text" and isinstance(v, str):
        return i18n.value(lang, v)
    return str(v)


def when(ms: int | None, zone: str = "Asia/Shanghai") -> str:
    if not ms:
        return "—"
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")


templates.env.globals.update(cell=cell, money=money, when=when, t=i18n.t, word=i18n.value,
                             asset=lambda name: assets.url(PREFIX, name))


def page_access(permission: str) -> Callable[..., Awaitable[Access]]:
    """A page's dependency: the signed-in caller's ``Access`` with ``permission``; no session:
    ``SignInFirst``; a role without the permission: 403, written to the audit log."""

    async def access(request: Request) -> Access:
        hub = get_hub(request)
        found = hub.tokens.session(request.cookies.get(sessions.COOKIE), now_ms())
        if found is None:
            raise SignInFirst
        remote = request.client.host if request.client is not None else None
        return await grant(hub, found, permission, remote)

    access.permission = permission  # type: ignore[attr-defined]  # held to by a test
    return access


def lang_of(request: Request) -> i18n.Lang:
    return i18n.pick(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE))


class ConsoleRoute(APIRoute):
    """Refusals as pages: sign-in first as a redirect, anything else the service refuses as a
    page in the reader's language with the refusal's status (never a traceback)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInFirst:
                target = f"{PREFIX}/sign-in?" + urlencode({"next": request.url.path})
                return RedirectResponse(target, status_code=303)
            except ServiceError as refused:
                lang = lang_of(request)
                response = templates.TemplateResponse(request, "error.html", {
                    **_chrome(request, lang, None),
                    "code": refused.code,
                    "message": i18n.error_text(lang, refused.code, refused.message,
                                               refused.details.get("part"))},
                    status_code=refused.status)
            given = request.query_params.get("lang")
            if given in i18n.LANGS:
                response.set_cookie(LANG_COOKIE, given, max_age=365 * 86400, path="/",
                                    samesite="strict")
            return response

        return handle


router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False,
                   default_response_class=HTMLResponse)
Reports = Annotated[Access, Depends(page_access("reports.read"))]
Members = Annotated[Access, Depends(page_access("members.read"))]

NAV = (("dashboard", "nav_dashboard", "reports.read"), ("reports", "nav_reports", "reports.read"),
       ("members", "nav_members", "members.read"), ("segments", "nav_segments", "members.read"),
       ("rfm", "nav_rfm", "rfm.run"), ("journeys", "nav_journeys", "members.read"),
       ("campaigns", "nav_campaigns", "reports.read"), ("fleet", "nav_fleet", "status.read"),
       ("users", "nav_users", "users.manage"), ("audit", "nav_audit", "auditlog.read"))


def _chrome(request: Request, lang: i18n.Lang, access: Access | None) -> dict[str, Any]:
    """What every page's frame shows: language, the user, the menu their role allows."""
    user = access.scope.principal.user if access else None
    role = access.scope.role if access else None
    here = request.url.path
    other: i18n.Lang = "en" if lang == "zh" else "zh"
    return {"lang": lang, "html_lang": i18n.HTML_LANG[lang], "user": user, "role": role,
            "nav": [(f"{PREFIX}/{slug}", key, here.startswith(f"{PREFIX}/{slug}"))
                    for slug, key, perm in NAV if role is not None and role.allows(perm)],
            "switch": f"{here}?" + urlencode({**request.query_params, "lang": other}),
            "masked": bool(role and role.masked), "prefix": PREFIX}


def render(request: Request, access: Access | None, template: str, **context: Any
           ) -> Response:
    lang = lang_of(request)
    zone = get_hub(request).chain_zone  # times are shown on the chain's clock

    def local(ms: int | None) -> str:
        return when(ms, zone)

    return templates.TemplateResponse(request, template,
                                      {**_chrome(request, lang, access), "when": local,
                                       **context})


@router.get("")
@router.get("/")
async def home(request: Request) -> Response:
    """The first page of the menu the caller's role opens: a shopping guide (members only)
    lands on member search, not on a refusal; no session: the dashboard asks to sign in."""
    found = get_hub(request).tokens.session(request.cookies.get(sessions.COOKIE), now_ms())
    first = next((slug for slug, _key, perm in NAV
                  if found is not None and found.role.allows(perm)), "dashboard")
    return RedirectResponse(f"{PREFIX}/{first}", status_code=303)


async def public() -> None:
    """Signing in: the one console page open without a session."""


public.permission = "public"  # type: ignore[attr-defined]


@router.get("/sign-in", dependencies=[Depends(public)])
async def sign_in(request: Request) -> Response:
    return render(request, None, "sign_in.html", next=request.query_params.get("next", ""))


# -- reports ------------------------------------------------------------------------------

def _filters(request: Request) -> dict[str, Any]:
    """The report filters from the page's query string (empty fields are no filter)."""
    p = request.query_params
    out: dict[str, Any] = {k: (p.get(k) or None) for k in (
        "region", "store_id", "category", "tier", "segment_id")}
    for k in ("start", "end"):
        text = p.get(k) or None
        try:
            out[k] = date.fromisoformat(text) if text else None
        except ValueError as exc:
            raise ServiceError("bad_date", f"{k}: not a date: {text!r}", 422,
                               part=k) from exc
    grain = p.get("grain") or "day"
    out["grain"] = grain
    return out


async def _report(request: Request, access: Access, slug: str) -> dict[str, Any]:
    hub = get_hub(request)
    f = _filters(request)
    kind = catalog.kind(slug)
    q = consolidated.query(hub, kind, f["start"], f["end"], f["region"], f["store_id"],
                           f["category"], f["tier"], f["segment_id"])
    return await consolidated.run(hub, access, slug, q, f["grain"], 20)


def _charts(kind: catalog.Kind, done: dict[str, Any], lang: i18n.Lang) -> list[Markup]:
    tables = {t["name"]: t for t in done["tables"]}
    out = []
    for c in kind.charts:
        table = tables.get(c.table)
        if table is None or not table["rows"]:
            continue
        col = {name: i for i, name in enumerate(table["columns"])}
        if c.x not in col or any(v not in col for v in c.values):
            continue
        money_chart = table["kinds"][col[c.values[0]]] == "money"

        def fmt(v: float, money_chart: bool = money_chart) -> str:
            return f"¥{v / 100:,.0f}" if money_chart else f"{v:,.0f}"

        rows = table["rows"]
        labels = [cell(r[col[c.x]], table["kinds"][col[c.x]], lang) for r in rows]
        if c.kind == "line":
            out.append(charts.line(labels, [
                (i18n.t(lang, v), [None if r[col[v]] is None else float(r[col[v]])
                                   for r in rows]) for v in c.values],
                fmt=fmt, label=i18n.t(lang, c.table)))
        else:
            out.append(charts.bars([(labels[i], float(r[col[c.values[0]]] or 0))
                                    for i, r in enumerate(rows[:c.limit])],
                                   fmt=fmt, label=i18n.t(lang, c.table)))
    return out


async def _options(access: Access, request: Request) -> dict[str, Any]:
    """The regions and stores the caller may filter by (their scope's), and the segments."""
    hub = get_hub(request)
    stores = await store_routes.stores(hub, access)
    segments = (await segment_routes.listing(access, "active")
                if access.scope.role.allows("members.read") else [])
    return {"stores": stores, "regions": sorted({s["region"] for s in stores if s["region"]}),
            "segments": segments}


def _totals(done: dict[str, Any], lang: i18n.Lang) -> list[tuple[str, str]]:
    """The report's totals as shown: each formatted as the column of that name is."""
    kinds = {c: k for t in done["tables"] for c, k in zip(t["columns"], t["kinds"],
                                                           strict=True)}
    out = []
    for key, v in done["totals"].items():
        kind = kinds.get(key) or ("ratio" if isinstance(v, float) else "int")
        out.append((key, cell(v, kind, lang) if not isinstance(v, str) else v))
    return out


def _report_page(request: Request, access: Access, slug: str, done: dict[str, Any],
                 options: dict[str, Any]) -> Response:
    lang = lang_of(request)
    kind = catalog.kind(slug)
    params = {k: v for k, v in request.query_params.items() if v and k != "lang"}
    q = done["query"]
    # Chain -> region -> store: a row of the next level down links to the same report
    # filtered to it (a store's rows, where a table has them, link to the store).
    drill = None
    if "region" in kind.drill and not q.get("region") and not q.get("store_id"):
        drill = "region"
    elif "store_id" in kind.drill and not q.get("store_id"):
        drill = "store_id"
    base = {k: v for k, v in params.items() if k != drill}
    return render(request, access, "report.html", slug=slug, kind=kind, report=done,
                  charts=_charts(kind, done, lang), params=params, options=options,
                  totals=_totals(done, lang), definitions=i18n.DEFINITIONS.get(slug, []),
                  export=f"/v1/reports/{slug}/export?" + urlencode({**params, "lang": lang}),
                  drill=drill, drill_base=f"{request.url.path}?" + urlencode(base)
                  + ("&" if base else ""))


@router.get("/dashboard")
async def dashboard(request: Request, access: Reports) -> Response:
    done = await _report(request, access, "dashboard")
    return _report_page(request, access, "dashboard", done, await _options(access, request))


@router.get("/reports")
async def report_list(request: Request, access: Reports) -> Response:
    return render(request, access, "reports.html", kinds=[
        k for k in catalog.KINDS if k != "dashboard"])


@router.get("/reports/{slug}")
async def report_page(slug: str, request: Request, access: Reports) -> Response:
    catalog.kind(slug)
    done = await _report(request, access, slug)
    return _report_page(request, access, slug, done, await _options(access, request))


@router.get("/campaigns")
async def campaigns_page(request: Request, access: Reports) -> Response:
    done = await _report(request, access, "campaigns")
    return _report_page(request, access, "campaigns", done, await _options(access, request))


# -- members ------------------------------------------------------------------------------

@router.get("/members")
async def members_page(request: Request, access: Members) -> Response:
    p = request.query_params
    keys = {k: (p.get(k) or "").strip() or None for k in ("phone", "member_code", "card_uid")}
    found: list[dict[str, Any]] | None = None
    if any(keys.values()):
        found = await search_routes.search(access, **keys)
    return render(request, access, "members.html", found=found, keys=keys)


@router.get("/members/{member_id}")
async def member_page(member_id: str, request: Request, access: Members) -> Response:
    card = await segment_routes.member_card(member_id, get_hub(request), access)
    return render(request, access, "member.html", card=card, money_keys=MONEY_KEYS)


# What the member card's amounts are called (money in minor units, shown in yuan).
MONEY_KEYS = frozenset({"spend_needed", "window_spend", "spend", "amount", "total", "net",
                        "principal", "bonus", "min_spend", "monetary", "discount",
                        "sv_principal", "sv_bonus"})


@router.get("/segments")
async def segments_page(request: Request, access: Members) -> Response:
    listed = await segment_routes.listing(access, None)
    tags = await segment_routes.catalogue(access)
    return render(request, access, "segments.html", segments=listed, tags=tags)


@router.get("/rfm")
async def rfm_page(request: Request, access: Annotated[Access, Depends(page_access("rfm.run"))]
                   ) -> Response:
    runs = await rfm_routes.runs(access, 24)
    run = None
    wanted = request.query_params.get("run") or (runs[0]["run_id"] if runs else None)
    if wanted:
        run = await rfm_routes.one(wanted, access)
    grid = _heat(await rfm_routes.grid(wanted, access)) if wanted else None
    return render(request, access, "rfm.html", runs=runs, run=run, grid=grid)


def _heat(grid: list[list[int]]) -> list[tuple[int, list[tuple[int, float]]]]:
    """The 5×5 R×F grid, R 5 at the top, each cell with its heat (0..1 of the largest)."""
    top = max((grid[r][f] for r in range(1, 6) for f in range(1, 6)), default=0) or 1
    return [(r, [(grid[r][f], grid[r][f] / top) for f in range(1, 6)]) for r in range(5, 0, -1)]


@router.get("/journeys")
async def journeys_page(request: Request, access: Members) -> Response:
    listed = await journey_routes.listing(access)
    # Every journey's versions in the one read, not a read per journey.
    versions = await access.read(lambda tx, _s: {
        j["journey_id"]: journeys.versions(tx, j["journey_id"]) for j in listed})
    return render(request, access, "journeys.html", journeys=listed, versions=versions)


@router.get("/journeys/{journey_id}/effect")
async def journey_effect_page(journey_id: str, request: Request, access: Reports) -> Response:
    found = await journey_routes.one(journey_id, access)
    done = await journey_effect_routes.effect(journey_id, get_hub(request), access, 30)
    return render(request, access, "effect.html", title=found["name"], effect=done,
                  money_keys=MONEY_KEYS)


@router.get("/campaigns/{campaign_id}/effect")
async def campaign_effect_page(campaign_id: str, request: Request, access: Reports
                               ) -> Response:
    done = await campaign_effect_routes.effect(campaign_id, get_hub(request), access, None,
                                               None)
    return render(request, access, "effect.html", title=campaign_id, effect=done,
                  money_keys=MONEY_KEYS)


@router.get("/fleet")
async def fleet_page(request: Request,
                     access: Annotated[Access, Depends(page_access("status.read"))]
                     ) -> Response:
    found = await status_routes.status(get_hub(request), access)
    return render(request, access, "fleet.html",
                  fleet=fleet_view.stores(lang_of(request), found.model_dump()))


@router.get("/users")
async def users_page(request: Request,
                     access: Annotated[Access, Depends(page_access("users.manage"))]
                     ) -> Response:
    return render(request, access, "users.html", users=await user_routes.user_list(access),
                  roles=await user_routes.role_list(access),
                  tokens=await user_routes.token_list(access),
                  stores=await store_routes.stores(get_hub(request), access))


@router.get("/audit")
async def audit_page(request: Request,
                     access: Annotated[Access, Depends(page_access("auditlog.read"))]
                     ) -> Response:
    before = request.query_params.get("before_ms")
    entries = await audit_routes.entries(access, limit=200,
                                         before_ms=int(before) if before and before.isdigit()
                                         else None, subject=None)
    return render(request, access, "audit.html", entries=entries)


