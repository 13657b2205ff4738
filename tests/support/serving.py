"""A real uvicorn server for a test: started on a free port, stopped when the block ends."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator

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


async def raw_exchange(port: int, data: bytes, limit_s: float = 10.0) -> bytes:
    """Send ``data`` on a plain TCP connection and return all the server sends until it closes
    the connection; fails if it has not closed it within ``limit_s`` (a safety limit)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(limit_s):
            return await reader.read()  # to EOF: the server closed the connection
    finally:
        writer.close()


def chunked(body: bytes, size: int = 1000) -> bytes:
    """``body`` in HTTP/1.1 chunks of ``size`` bytes, without the last (empty) chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
                    for i in range(0, len(body), size))


def status_and_error(response: bytes) -> tuple[int, str]:
    """The status and the error code of a raw HTTP response in the project's error shape."""
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]["code"]


@pytest.fixture
def json_logs() -> Iterator[None]:
    """Puts back the logging a test found, after it ran the process's log setup."""
    names = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
    saved = [(logging.getLogger(n), logging.getLogger(n).handlers[:],
              logging.getLogger(n).propagate, logging.getLogger(n).level) for n in names]
    yield
    for logger, handlers, propagate, level in saved:
        logger.handlers[:], logger.propagate, logger.level = handlers, propagate, level


async def uvicorn_lines_are_json(port: int, capsys: pytest.CaptureFixture[str]) -> None:
    """Something uvicorn itself logs (an invalid request) comes out as one JSON object, with
    the process's log setup made while pytest's capture stands for a non-terminal stderr."""
    assert (await raw_exchange(port, b"NOT HTTP AT ALL\r\n\r\n")).startswith(b"HTTP/1.1 400")
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "Invalid HTTP" in ln]
    assert lines and all(json.loads(ln)["logger"] == "uvicorn.error" for ln in lines)
