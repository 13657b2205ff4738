"""The HQ API: a FastAPI app over the running ``Hub``, one router per resource
(``hub.api.routes``), every answer a declared model, every refusal the shared error shape
(``protocol.errors``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry

from hub.api.console import assets, authoring
from hub.api.console import pages as console
from hub.api.deps import UNAUTHORIZED, session_valid, token_valid
from hub.api.routes import (
    audit,
    audit_log,
    auth,
    campaign_effect,
    campaigns,
    conflicts,
    consolidated,
    exports,
    hq_events,
    journey_effect,
    journeys,
    members,
    metrics,
    providers,
    reports,
    rfm,
    segments,
    status,
    stores,
    users,
)
from hub.api.routes.auth import SIGN_IN
from hub.app import Hub
from hub.auth import sessions
from protocol.errors import ERROR_RESPONSES
from protocol.http_errors import install_error_handlers
from protocol.http_guard import guard, server_config
from protocol.metrics import RequestTimer

# ``/v1/campaigns/{campaign_id}/effect`` before ``/v1/campaigns/{scope}/{scope_id}``: the
# first route whose path matches takes a request, and a campaign's id is anything HQ named it.
ROUTERS = (status.router, conflicts.router, members.router, hq_events.router,
           campaign_effect.router, campaigns.router, audit.router, stores.router,
           metrics.router, users.router, audit_log.router, auth.router, reports.router,
           exports.router, rfm.router, segments.router, journeys.router, providers.router,
           journey_effect.router, consolidated.router)


def create_app(hub: Hub) -> FastAPI:
    # Swagger UI and ReDoc from files in the package: /docs works without internet.
    app = FastAPIOffline(title="membergate hub HQ API", version="1", responses=ERROR_RESPONSES)
    app.state.hub = hub
    # The console: its pages (each checks its caller's session itself and sends a browser
    # without one to sign in) and their files, all served from the package (no internet).
    app.include_router(console.router)
    app.include_router(authoring.router)
    app.mount(f"{console.PREFIX}/static", assets.Files(), name="console-static")
    # No body is read without HQ's token, and bodies are counted as they arrive against
    # ``[api] max_request_bytes`` (protocol.http_guard, as on the POS API).
    guard(app, token_valid=lambda given: token_valid(hub, given),
          session=(sessions.COOKIE, lambda cookie: session_valid(hub, cookie)),
          # Sign-in, and the providers' pushes (their own secret: hub.api.routes.providers).
          open_paths={SIGN_IN, providers.RECEIPTS, providers.REPLIES},
          open_prefixes=(console.PREFIX,),
          max_body_bytes=hub.config.api.max_request_bytes, token_message=UNAUTHORIZED)
    app.state.metrics = CollectorRegistry()  # request latency, observed as requests go by
    app.add_middleware(RequestTimer, registry=app.state.metrics, prefix="membergate_hub")
    install_error_handlers(app)
    # Every route names the permission it needs (``hub.api.deps.needs``), which also gives it
    # the caller's scope: tests/hub/test_access.py checks that none is left out.
    for router in ROUTERS:
        app.include_router(router)
    return app


def api_server(hub: Hub) -> uvicorn.Server:
    """The HQ API on ``[api] host:port``, over HTTPS when ``[api]`` names a certificate, held to
    ``[api]``'s connection limits. Raises ``TlsError`` here, before serving, when the
    certificate or key cannot be used."""
    api = hub.config.api
    return uvicorn.Server(server_config(
        create_app(hub), host=api.host, port=api.port, limits=api,
        tls_cert_file=api.tls_cert_file, tls_key_file=api.tls_key_file, lifespan="off"))


@asynccontextmanager
async def serving(hub: Hub) -> AsyncIterator[str]:
    """The HQ API served while the block runs; yields the URL of its docs."""
    server = api_server(hub)
    task = asyncio.create_task(server.serve(), name="hq-api")
    try:
        while not server.started and not task.done():  # noqa: ASYNC110 - a flag only
            await asyncio.sleep(0.05)
        if task.done():
            task.result()  # the reason it could not serve (a port in use), raised here
            raise RuntimeError("the HQ API stopped before it started")
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"{hub.config.api.scheme}://{hub.config.api.host}:{port}/docs"
    finally:
        server.should_exit = True
        await task
