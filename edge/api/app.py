"""The POS API: HTTP JSON plus a WebSocket event stream, over ``EdgeService``.

Thin on purpose: a router per resource (``edge.api.routes``), each route checks the terminal's
token (``edge.api.deps``), maps the body to a service call and answers a declared model
(``edge.api.responses``). Refusals are ``{"error": {"code", "message", "details"}}`` with a 4xx
status, the shape every membergate API shares (``protocol.errors``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry

from edge.api.deps import UNAUTHORIZED, terminal_for
from edge.api.routes import (
    devices,
    events,
    members,
    metrics,
    products,
    receipts,
    refunds,
    sales,
    status,
)
from edge.gateway import wire
from edge.service import EdgeService
from protocol.errors import ERROR_RESPONSES
from protocol.http_errors import install_error_handlers
from protocol.http_guard import guard, server_config
from protocol.metrics import RequestTimer

ROUTERS = (status.router, devices.router, products.router, members.router, sales.router,
           receipts.router, refunds.router, events.router, metrics.router)


def api_server(service: EdgeService) -> uvicorn.Server:
    """The POS API on ``[api] host:port`` for a service that ``membergate-edge run`` starts
    and closes itself, over HTTPS when ``[api]`` names a certificate, held to ``[api]``'s
    connection limits. Raises ``TlsError`` here, before anything starts, when the certificate
    or key cannot be used."""
    api = service.config.api
    return uvicorn.Server(server_config(
        create_app(service, manage_lifetime=False), host=api.host, port=api.port, limits=api,
        tls_cert_file=api.tls_cert_file, tls_key_file=api.tls_key_file, lifespan="on"))


def create_app(service: EdgeService, *, manage_lifetime: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_lifetime:
            await wire(await service.start())
        try:
            yield
        finally:
            if manage_lifetime:
                await service.close()

    # Swagger UI and ReDoc from files in the package, not a CDN: a store is often offline.
    app = FastAPIOffline(
        title="membergate edge POS API",
        version="1",
        lifespan=lifespan,
        description="Members, sales, points, stored value and coupons at one store.",
        responses=ERROR_RESPONSES,
    )
    app.state.service = service
    # Before any route: no body is read without a terminal's token, and a body is counted as
    # it arrives (chunked too) against [limits] max_request_bytes.
    guard(app, token_valid=lambda token: terminal_for(service, token) is not None,
          max_body_bytes=service.config.limits.max_request_bytes, token_message=UNAUTHORIZED,
          open_paths={"/v1/health"})
    install_error_handlers(app)
    app.state.metrics = CollectorRegistry()  # POS request latency, observed as requests go by
    app.add_middleware(RequestTimer, registry=app.state.metrics, prefix="membergate_edge")
    for router in ROUTERS:
        app.include_router(router)
    return app
