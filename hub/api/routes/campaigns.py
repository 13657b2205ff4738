"""Campaign bundles: validated, signed and published for the fleet, a region or a store; the
bundles held, and a preview of one being written.

Who may do what: pushing and previewing need ``campaigns.push`` (HQ admins and marketing), and
a role with it whose scope is not the whole chain may target only what lies inside it — its
regions and their stores, or its stores; never the fleet. Reading the bundles held needs
``reports.read``: marketing and admins see every bundle, a store or region manager the bundles
that reach a store they cover (the fleet's, their region's, their stores') — what their tills
run, which their reports already show the effect of.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends

from hub.api.bundle_models import BundlePreview, BundlePreviewRequest, HeldBundle
from hub.api.deps import HubDep, needs
from hub.api.models import PushedBundle
from hub.auth.access import Access
from hub.auth.scope import Scope
from hub.campaigns import bundles, held, preview
from hub.campaigns.bundles import StaleBundle
from hub.core.clock import now_ms
from hub.core.db import Tx
from protocol import topics
from protocol.campaigns import MAX_BUNDLE_VERSION, CampaignBundle
from protocol.errors import ServiceError
from protocol.http_errors import StrictJsonRoute
from protocol.pricing import BasketLine

router = APIRouter(tags=["campaigns"], route_class=StrictJsonRoute)
Pusher = Annotated[Access, Depends(needs("campaigns.push"))]
Reader = Annotated[Access, Depends(needs("reports.read"))]
BundleScope = Literal["fleet", "region", "store"]


def may_target(tx: Tx, scope: Scope, bundle_scope: str, scope_id: str | None) -> None:
    """403 unless the caller's scope holds all a bundle of this scope reaches, now and as stores
    are added: a scope over the whole chain anything; a regions scope its regions and their
    stores; a stores scope its stores. A region's stores change, so a region is targeted only
    by a scope over the region, never by one that happens to list each of its stores today."""
    kind = scope.role.scope
    if kind == "all":
        return
    regions = scope.principal.user.regions if kind == "regions" else ()
    allowed = ((bundle_scope == "region" and scope_id in regions)
               or (bundle_scope == "store" and scope_id in (scope.store_ids(tx) or ())))
    if not allowed:
        raise ServiceError("bundle_out_of_scope", f"a {bundle_scope} bundle"
                           f"{' for ' + scope_id if scope_id else ''} reaches stores outside"
                           " your scope", 403, part="scope")


def check_target(tx: Tx, scope: Scope, bundle_scope: str, scope_id: str | None) -> list[str]:
    """The stores a bundle for this scope reaches, once the scope is known (a region with no
    store or an unknown store: 422) and the caller may target it (403)."""
    reached = preview.reach(tx, bundle_scope, scope_id)
    may_target(tx, scope, bundle_scope, scope_id)
    return reached


def targets(tx: Tx, scope: Scope) -> list[tuple[str, str | None]]:
    """The scopes the caller may push a bundle for: the fleet, each region, each store (of
    those their scope covers)."""
    out: list[tuple[str, str | None]] = [("fleet", None)]
    regions = sorted({str(r) for (r,) in tx.all(
        "SELECT DISTINCT region FROM stores WHERE region IS NOT NULL")})
    out += [("region", r) for r in regions]
    out += [("store", s) for s in preview.reach(tx, "fleet", None)]
    found = []
    for kind, scope_id in out:
        try:
            may_target(tx, scope, kind, scope_id)
        except ServiceError:
            continue
        found.append((kind, scope_id))
    return found


def _reaches_mine(tx: Tx, mine: frozenset[str] | None, h: held.Held) -> bool:
    """Whether ``h`` reaches one of the stores ``mine`` (the caller's; None: every store)."""
    if mine is None:
        return True
    try:
        reached = preview.reach(tx, h.scope, h.scope_id)
    except ServiceError:
        return False
    return not mine.isdisjoint(reached)


def next_order(generation: int, version: int) -> dict[str, int]:
    """The order the scope's next bundle takes: the next version, or version 1 of the next
    generation when the held version leaves no room above it."""
    if version >= MAX_BUNDLE_VERSION:
        return {"next_generation": generation + 1, "next_version": 1}
    return {"next_generation": generation, "next_version": version + 1}


@router.post("/v1/campaigns", status_code=201, response_model=PushedBundle)
async def push(bundle: CampaignBundle, hub: HubDep, access: Pusher) -> PushedBundle:
    """Validate, sign and publish a bundle for the fleet, a region or a store. It replaces the
    one held for its scope, so it must be newer by ``(generation, version)`` (409 if not)."""
    what = f"generation {bundle.generation} version {bundle.version}"
    subject = topics.campaign_topic(bundle.scope, bundle.scope_id)
    try:
        await access.read(lambda tx, scope: may_target(tx, scope, bundle.scope,
                                                       bundle.scope_id))
        topic = await hub.push_campaigns(bundle)
    except StaleBundle as exc:
        await access.audit("bundle.push", subject=subject, reason=what, outcome=exc.code)
        raise ServiceError(exc.code, str(exc), 409) from None
    except ServiceError as exc:
        await access.audit("bundle.push", subject=subject, reason=what, outcome=exc.code)
        raise
    await access.audit("bundle.push", subject=topic, reason=what)
    return PushedBundle(topic=topic, version=bundle.version, generation=bundle.generation,
                        scope=bundle.scope)


@router.get("/v1/campaigns", response_model=list[HeldBundle])
async def listing(access: Reader) -> Any:
    """Every bundle held that reaches a store the caller covers, with its campaigns."""
    def read(tx: Tx, scope: Scope) -> list[dict[str, Any]]:
        mine = scope.store_ids(tx)  # once, not once per bundle
        return [h.view() for h in held.listing(tx) if _reaches_mine(tx, mine, h)]

    return await access.read(read)


@router.get("/v1/campaigns/{scope}/{scope_id}", response_model=HeldBundle)
async def one(scope: BundleScope, scope_id: str, access: Reader) -> Any:
    """The bundle held for a scope; the fleet's is ``/v1/campaigns/fleet/-``. 404 when none is
    held or it reaches no store the caller covers."""
    if scope == "fleet" and scope_id != held.FLEET_ID:
        raise ServiceError("bundle_not_found", f"the fleet's bundle is at"
                           f" /v1/campaigns/fleet/{held.FLEET_ID}", 404)
    wanted = None if scope == "fleet" else scope_id

    def read(tx: Tx, s: Scope) -> dict[str, Any]:
        found = held.one(tx, scope, wanted)
        if found is None or not _reaches_mine(tx, s.store_ids(tx), found):
            raise ServiceError("bundle_not_found", f"no {scope} bundle held for"
                               f" {scope_id}", 404)
        return found.view()

    return await access.read(read)


@router.post("/v1/campaigns/preview", response_model=BundlePreview)
async def preview_bundle(body: BundlePreviewRequest, hub: HubDep, access: Pusher) -> Any:
    """What publishing the bundle would do, without signing or publishing it: the next
    version to use, why a push would be refused, the campaigns it adds, removes and changes,
    the stores it reaches and, given a basket, its price at one of them as the till would
    price it. An invalid bundle is 422 naming each part; a region with no store or an unknown
    store 422; a scope the caller may not target 403."""
    bundle = body.bundle
    now = now_ms()

    def read(tx: Tx, scope: Scope) -> dict[str, Any]:
        reached = check_target(tx, scope, bundle.scope, bundle.scope_id)
        before = held.one(tx, bundle.scope, bundle.scope_id)
        gen, version = (before.generation, before.version) if before else (0, 0)
        try:
            bundles.check_newer(tx, bundle)
            refusal = None
        except StaleBundle as exc:
            refusal = {"code": exc.code, "message": str(exc)}
        basket = None
        if body.basket is not None:
            b = body.basket
            sample = preview.Sample(
                lines=[BasketLine(line_no=i, sku=ln.sku, category=ln.category, qty=ln.qty,
                                  unit_price=ln.unit_price)
                       for i, ln in enumerate(b.lines, start=1)],
                store_id=b.store_id, day=b.day, tier=b.tier, birthday=b.birthday)
            basket = preview.price(tx, bundle, sample, reached, now_ms=now,
                                   chain_zone=hub.chain_zone)
        return {"scope": bundle.scope, "scope_id": bundle.scope_id,
                "topic": topics.campaign_topic(bundle.scope, bundle.scope_id),
                "held_generation": gen if before else None,
                "held_version": version if before else None,
                **next_order(gen, version), "refusal": refusal,
                "changes": preview.changes(before.bundle if before else None, bundle),
                "stores": reached, "basket": basket}

    return await access.read(read)
