"""The HQ API: a FastAPI app over the running ``Hub``, one router per resource
(``hub.api.routes``), every answer a declared model, every refusal the shared error shape
(``protocol.errors``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import Depends, FastAPI

from hub.api.deps import require_hq
from hub.api.routes import audit, campaigns, conflicts, hq_events, members, status
from hub.app import Hub
from protocol.errors import ERROR_RESPONSES
from protocol.http_errors import install_error_handlers
from protocol.tls import load_server_config

ROUTERS = (status.router, conflicts.router, members.router, hq_events.router, campaigns.router,
           audit.router)


def create_app(hub: Hub) -> FastAPI:
    app = FastAPI(title="membergate hub HQ API", version="1", responses=ERROR_RESPONSES)
    app.state.hub = hub
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router, dependencies=[Depends(require_hq)])
    return app


def api_server(hub: Hub) -> uvicorn.Server:
    """The HQ API on ``[api] host:port``, over HTTPS when ``[api]`` names a certificate. Raises
    ``TlsError`` here, before serving, when the certificate or key cannot be used."""
    api = hub.config.api
    config = uvicorn.Config(
        create_app(hub), host=api.host, port=api.port, log_level="warning", lifespan="off",
        ssl_certfile=api.tls_cert_file, ssl_keyfile=api.tls_key_file)
    load_server_config(config, "[api]", api.tls_cert_file, api.tls_key_file)
    return uvicorn.Server(config)


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
