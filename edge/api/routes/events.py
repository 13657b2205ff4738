"""This terminal's events over a WebSocket (``?token=`` or a bearer header)."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from edge.api.deps import terminal_for
from edge.service import EdgeService
from protocol.http_guard import bearer

router = APIRouter()


@router.websocket("/v1/events")
async def events(ws: WebSocket) -> None:
    service: EdgeService = ws.app.state.service
    token = ws.query_params.get("token") or bearer(ws.headers.get("authorization"))
    terminal = terminal_for(service, token)
    if terminal is None:
        # Accept first: a close before accept reaches the client as a bare HTTP 403, while
        # 4401 tells a POS plainly that its token is wrong.
        await ws.accept()
        await ws.close(code=4401, reason="unauthorized")
        return
    await ws.accept()
    await ws.send_json({"type": "hello", "terminal_id": terminal,
                        "store_id": service.config.store.store_id})

    # The sender waits on the bus, so it cannot notice a client that went away or a server
    # shutting down; the receive loop does, and cancels the sender.
    async def forward() -> None:
        async for event in service.bus.subscribe(terminal):
            await ws.send_json(event)

    sender = asyncio.create_task(forward())
    try:
        while not sender.done():
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
            await sender
