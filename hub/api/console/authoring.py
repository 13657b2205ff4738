"""The console's authoring pages: the campaign bundles held and an editor that previews and
publishes one, and an editor that previews and saves a journey (new, or a new version).

Pages read through the HQ API's own route functions with the caller's ``Access``, so what a
page shows is what the API answers that user. Nothing here writes: the pages' script
(``static/authoring.js``) posts JSON to the API routes with the session's CSRF token, so a
publish or a save passes the very checks, scope and audit an API client's does, and a refused
one changes nothing. The users page's controls live on ``/console/users`` (``pages.py``).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, cast
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from hub.api.console import i18n
from hub.api.console.pages import PREFIX, ConsoleRoute, lang_of, page_access, render, templates
from hub.api.deps import get_hub
from hub.api.routes import campaigns as campaign_routes
from hub.api.routes import journeys as journey_routes
from hub.api.routes import stores as store_routes
from hub.auth.access import Access
from hub.automation import examples as journey_examples
from hub.campaigns import examples as campaign_examples
from hub.campaigns.held import FLEET_ID
from protocol.errors import ServiceError

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False,
                   default_response_class=HTMLResponse)
Reports = Annotated[Access, Depends(page_access("reports.read"))]
Pusher = Annotated[Access, Depends(page_access("campaigns.push"))]
JourneyWriter = Annotated[Access, Depends(page_access("journeys.write"))]

# A basket the editor prices by default: two lines of the chain's everyday goods, for a gold
# member (money in minor units, as everywhere).
SAMPLE_BASKET = {"lines": [{"sku": "6901234567892", "category": "dairy", "qty": 2,
                            "unit_price": 1_250},
                           {"sku": "6905555000017", "category": "fresh", "qty": 3,
                            "unit_price": 800}],
                 "tier": "gold"}


def script_words(lang: i18n.Lang) -> dict[str, Any]:
    """What ``authoring.js`` says itself: a refusal's sentence by its code and the part at
    fault (Chinese; in English the service's own message says it), and a few words."""
    zh = lang == "zh"
    return {"errors": i18n.ERRORS if zh else {}, "parts": i18n.PARTS if zh else {},
            "json_error": i18n.t(lang, "json_error"),
            "not_counted": i18n.t(lang, "not_counted"), "yes": i18n.t(lang, "yes"),
            "no": i18n.t(lang, "no"), "segment_size": i18n.t(lang, "segment_size"),
            "words": {k: i18n.t(lang, k) for k in _SCRIPT_KEYS}}


# Trigger and step kinds as the journey preview names them.
_SCRIPT_KEYS = (*(f"trigger_{k}" for k in ("birthday", "after_purchase", "registered",
                                            "topped_up", "stage", "segment", "tier",
                                            "points_expiring", "scheduled")),
                *(f"step_{k}" for k in ("coupon", "points", "tag", "message", "wait")))


def script_json(value: Any) -> Markup:
    """``value`` as JSON inside a ``<script type="application/json">``: in its own key order
    (Jinja's ``tojson`` sorts keys, and a template shows HQ its fields in the order written),
    with nothing that could end the element."""
    text = json.dumps(value, ensure_ascii=False)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e")
                  .replace("&", "\\u0026"))


templates.env.globals.update(script_words=script_words, script_json=script_json)


def _pretty(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


# -- campaign bundles -------------------------------------------------------------------------

@router.get("/campaigns/bundles")
async def bundles_page(request: Request, access: Reports) -> Response:
    listed = await campaign_routes.listing(access)
    return render(request, access, "bundles.html", bundles=listed, fleet_id=FLEET_ID)


def _draft(found: dict[str, Any] | None, scope: str, scope_id: str | None, zone: str
           ) -> dict[str, Any]:
    """The bundle the editor opens with: the one held, at the next version and issued now, or
    an empty one at version 1."""
    order = (campaign_routes.next_order(found["generation"], found["version"]) if found
             else {"next_generation": 0, "next_version": 1})
    issued = datetime.now(ZoneInfo(zone)).replace(microsecond=0).isoformat()
    return {"version": order["next_version"], "generation": order["next_generation"],
            "scope": scope, "scope_id": scope_id, "issued_at": issued,
            "campaigns": found["campaigns"] if found else []}


@router.get("/campaigns/edit")
async def bundle_editor(request: Request, access: Pusher) -> Response:
    hub = get_hub(request)
    lang = lang_of(request)
    targets = await access.read(campaign_routes.targets)
    p = request.query_params
    first: tuple[str, str | None] = targets[0] if targets else ("fleet", None)
    scope = p.get("scope") or first[0]
    if scope not in ("fleet", "region", "store"):
        raise ServiceError("bad_request", "scope is fleet, region or store", 422, part="scope")
    scope_id = None if scope == "fleet" else (p.get("scope_id") or (
        first[1] if not p.get("scope") else None))
    if (scope, scope_id) not in targets:  # says why: no such region or store, or not theirs
        await access.read(lambda tx, s: campaign_routes.check_target(tx, s, scope, scope_id))
    try:
        found = await campaign_routes.one(cast(campaign_routes.BundleScope, scope),
                                          scope_id or FLEET_ID, access)
    except ServiceError as refused:
        if refused.code != "bundle_not_found":
            raise
        found = None
    names = {s["store_id"]: s["name"] for s in await store_routes.stores(hub, access)}
    picker = []
    for kind, target in targets:
        label = (i18n.t(lang, "scope_fleet") if kind == "fleet" else
                 f"{i18n.t(lang, 'scope_' + kind)} {target} {names.get(target or '', '')}")
        url = f"{PREFIX}/campaigns/edit?" + urlencode(
            {"scope": kind, **({"scope_id": target} if target else {})})
        picker.append((url, label.strip(), (kind, target) == (scope, scope_id)))
    draft = _draft(found, scope, scope_id, hub.chain_zone)
    return render(request, access, "bundle_edit.html", draft=_pretty(draft), held=found,
                  picker=picker, kinds=campaign_examples.rule_kinds(),
                  examples=campaign_examples.EXAMPLES, basket=_pretty(SAMPLE_BASKET))


# -- journeys ---------------------------------------------------------------------------------

@router.get("/journeys/new")
async def journey_new(request: Request, access: JourneyWriter) -> Response:
    examples = journey_examples.checked()
    return render(request, access, "journey_edit.html", journey=None, versions=[],
                  draft=_pretty(examples["birthday"]), examples=examples)


@router.get("/journeys/{journey_id}/edit")
async def journey_edit(journey_id: str, request: Request, access: JourneyWriter) -> Response:
    found = await journey_routes.one(journey_id, access)
    versions = [{**v, "text": _pretty(v["definition"])}
                for v in await journey_routes.versions(journey_id, access)]
    return render(request, access, "journey_edit.html", journey=found, versions=versions,
                  draft=_pretty(found["definition"]), examples={})
