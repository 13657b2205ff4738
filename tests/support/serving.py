"""A real uvicorn server for a test: started on a free port, stopped when the block ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn

from edge.api import create_app
from edge.service import EdgeService


def pos_server(service: EdgeService) -> uvicorn.Server:
    """The POS API of a service the test starts and closes itself, plain HTTP, a free port."""
    return uvicorn.Server(uvicorn.Config(create_app(service, manage_lifetime=False),
                                         host="127.0.0.1", port=0, log_level="warning",
                                         lifespan="off"))


@contextlib.asynccontextmanager
async def serving(server: uvicorn.Server, limit_s: float = 10.0) -> AsyncIterator[int]:
    """Serve ``server`` (configured with port 0) for the block; yields the port it got. An open
    connection (a WebSocket) must not hold the shutdown up beyond ``limit_s``."""
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(limit_s):
            while not server.started:
                if task.done():
                    await task  # raises what stopped it
                    raise AssertionError("uvicorn stopped before it started")
                await asyncio.sleep(0.01)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, limit_s)


async def refuses_plain_http_and_public_trust(port: int, path: str,
                                              headers: dict[str, str]) -> None:
    """What an HTTPS-only API on ``port`` must do: no answer to plain HTTP, and a certificate
    that a client trusting only the system's CAs refuses."""
    async with httpx.AsyncClient(headers=headers) as plain:
        with pytest.raises(httpx.HTTPError):
            await plain.get(f"http://127.0.0.1:{port}{path}")
    async with httpx.AsyncClient(headers=headers) as public:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await public.get(f"https://127.0.0.1:{port}{path}")
