"""The HQ API: fleet status, coupon conflicts, a member as the hub knows them, campaigns.

Thin over ``HubService`` like the edge's POS API; one bearer token for HQ (from configuration).
"""

import hmac
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from hub import directory
from hub.service import HubService
from protocol.campaigns import CampaignBundle
from protocol.tls import load_server_config


class HubApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def api_server(hub: HubService) -> uvicorn.Server:
    """The HQ API on ``[api] host:port``, over HTTPS when ``[api]`` names a certificate. Raises
    ``TlsError`` here, before serving, when the certificate or key cannot be used."""
    api = hub.config.api
    config = uvicorn.Config(
        create_app(hub), host=api.host, port=api.port, log_level="warning", lifespan="off",
        ssl_certfile=api.tls_cert_file, ssl_keyfile=api.tls_key_file)
    load_server_config(config, "[api]", api.tls_cert_file, api.tls_key_file)
    return uvicorn.Server(config)


def create_app(hub: HubService) -> FastAPI:
    # Swagger UI and ReDoc from files in the package, not a CDN: /docs works without internet.
    app = FastAPIOffline(title="membergate hub HQ API", version="1")
    token = hub.config.api.token or ""

    def auth(authorization: Annotated[str | None, Header()] = None) -> None:
        given = authorization[7:] if authorization and authorization.startswith("Bearer ") else ""
        if not token or not hmac.compare_digest(given, token):
            raise HubApiError(401, "unauthorized", "a valid HQ bearer token is required")

    HQ = Annotated[None, Depends(auth)]

    @app.exception_handler(HubApiError)
    async def error(_: Request, exc: HubApiError) -> JSONResponse:
        return JSONResponse({"error": {"code": exc.code, "message": exc.message}},
                            status_code=exc.status)

    @app.get("/v1/status")
    async def status(_: HQ) -> dict[str, Any]:
        """Per store: last seen, epoch and acked seq, outbox depth, lag, versions, devices."""
        return await hub.status()

    @app.get("/v1/conflicts/coupons")
    async def coupon_conflicts(_: HQ) -> dict[str, Any]:
        """Single-use coupons redeemed in two stores: the later redemption (by HLC) of each."""
        rows = await hub.db.transaction(lambda tx: tx.all(
            "SELECT coupon_code, store_id, sale_id, hlc, amount, kept_store, kept_sale"
            " FROM coupon_conflicts ORDER BY coupon_code, hlc"))
        keys = ("coupon_code", "store_id", "sale_id", "hlc", "amount", "kept_store",
                "kept_sale")
        return {"conflicts": [dict(zip(keys, r, strict=True)) for r in rows]}

    @app.get("/v1/members/{member_id}")
    async def member(member_id: str, _: HQ) -> dict[str, Any]:
        entry = await hub.db.transaction(lambda tx: directory.entry(tx, member_id))
        if entry is None:
            raise HubApiError(404, "member_not_found", "no member with this id")
        out: dict[str, Any] = entry.model_dump(mode="json")
        out["points"] = sum(s.points for s in entry.shares)
        out["stored_value"] = sum(s.sv_principal + s.sv_bonus for s in entry.shares)
        return out

    @app.post("/v1/campaigns", status_code=201)
    async def push(bundle: CampaignBundle, _: HQ) -> dict[str, Any]:
        """Validate, sign and publish a bundle for the fleet, a region or a store."""
        from hub.campaigns import StaleBundle

        try:
            topic = await hub.push_campaigns(bundle)
        except StaleBundle as exc:
            raise HubApiError(409, exc.code, str(exc)) from None
        return {"topic": topic, "version": bundle.version, "scope": bundle.scope}

    @app.get("/v1/rebuild")
    async def rebuild(_: HQ) -> dict[str, Any]:
        """Balances held vs. recomputed from the event log."""
        result = await hub.db.transaction(directory.compare)
        return {"members": result["members"], "events": result["events"],
                "mismatches": result["mismatches"][:100],
                "mismatch_count": len(result["mismatches"])}

    return app
