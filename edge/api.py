"""The POS API: HTTP JSON plus a WebSocket event stream, over ``EdgeService``.

Thin on purpose: every route checks the terminal's token, maps the body to a service call and
returns its answer. Errors are ``{"error": {"code", "message", "details"}}`` with a 4xx status.
"""


import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Header, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge import api_models as m
from edge.checkout import TenderRequest
from edge.errors import EdgeError
from edge.members import IdentifyBy
from edge.service import EdgeService
from protocol.tls import load_server_config

IdemKey = Annotated[str | None, Header(alias="Idempotency-Key")]


def _error(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status)


def api_server(service: EdgeService) -> uvicorn.Server:
    """The POS API on ``[api] host:port`` for a service that ``membergate-edge run`` starts
    and closes itself, over HTTPS when ``[api]`` names a certificate. Raises ``TlsError`` here,
    before anything starts, when the certificate or key cannot be used."""
    api = service.config.api
    config = uvicorn.Config(
        create_app(service, manage_lifetime=False), host=api.host, port=api.port,
        log_level="warning", access_log=False, lifespan="on",
        ssl_certfile=api.tls_cert_file, ssl_keyfile=api.tls_key_file)
    load_server_config(config, "[api]", api.tls_cert_file, api.tls_key_file)
    return uvicorn.Server(config)


def create_app(service: EdgeService, *, manage_lifetime: bool = True) -> FastAPI:
    tokens = {token: terminal for terminal, token in service.config.api.tokens.items()}
    max_body = service.config.limits.max_request_bytes

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_lifetime:
            await service.start()
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
    )

    def terminal_for(token: str | None) -> str | None:
        if not token:
            return None
        for known, terminal in tokens.items():
            if hmac.compare_digest(known, token):
                return terminal
        return None

    def auth(authorization: Annotated[str | None, Header()] = None) -> str:
        token = authorization[7:] if authorization and authorization.startswith("Bearer ") else None
        terminal = terminal_for(token)
        if terminal is None:
            raise EdgeError("unauthorized", "a valid terminal bearer token is required", 401)
        return terminal

    Terminal = Annotated[str, Depends(auth)]

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body):
            return _error(413, "payload_too_large",
                          f"request bodies are limited to {max_body} bytes")
        return await call_next(request)

    @app.exception_handler(EdgeError)
    async def edge_error(_: Request, exc: EdgeError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"]} for e in exc.errors()]
        return _error(422, "validation_error", "the request body or parameters are invalid",
                      {"errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    # --- health and status ----------------------------------------------------------------

    @app.get("/v1/health", tags=["status"])
    async def health() -> dict[str, Any]:
        return {"ok": True, "store_id": service.config.store.store_id}

    @app.get("/v1/status", tags=["status"])
    async def status(_: Terminal) -> dict[str, Any]:
        return await service.status()

    @app.get("/v1/devices", tags=["devices"])
    async def devices(_: Terminal) -> dict[str, Any]:
        """Every device of every lane with its health (connected, error, paper low / out)."""
        return {"devices": [h.model_dump() for h in service.device_health()]}

    @app.post("/v1/devices/simulated/scan", tags=["devices"])
    async def simulated_scan(body: m.SimulatedScan, terminal: Terminal) -> dict[str, Any]:
        """Type a scan on this terminal's simulated scanner (lanes with ``simulated = true``)."""
        lane = service.devices.by_terminal.get(terminal) if service.devices else None
        if lane is None or lane.sim_scanner is None:
            raise EdgeError("no_simulated_scanner", "this terminal has no simulated scanner", 409)
        await lane.sim_scanner.scan(body.code)
        return {"ok": True}

    @app.post("/v1/devices/simulated/tap", tags=["devices"])
    async def simulated_tap(body: m.SimulatedTap, terminal: Terminal) -> dict[str, Any]:
        """Put a card on this terminal's simulated reader."""
        lane = service.devices.by_terminal.get(terminal) if service.devices else None
        if lane is None or lane.sim_reader is None:
            raise EdgeError("no_simulated_reader", "this terminal has no simulated reader", 409)
        await lane.sim_reader.tap(body.card_uid, member_number=body.member_number)
        return {"ok": True}

    @app.post("/v1/scan", tags=["sales"])
    async def scan(body: m.ScanIn, terminal: Terminal) -> dict[str, Any]:
        """A code read at this terminal: a member QR identifies, a coupon QR applies, a product
        barcode adds the product to the terminal's open sale (opening one if needed)."""
        from edge.scan import apply_scan

        return await apply_scan(service, terminal, body.code)

    @app.put("/v1/products", tags=["products"])
    async def put_products(body: m.ProductsIn, _: Terminal) -> dict[str, Any]:
        """Add or update catalogue entries (all or nothing)."""
        from edge import products

        rows = [p.model_dump() for p in body.products]
        currency = service.config.store.currency
        count = await service.db.write(lambda conn: products.upsert(conn, rows, currency))
        return {"upserted": count}

    @app.get("/v1/products/{sku}", tags=["products"])
    async def get_product(sku: str, _: Terminal) -> dict[str, Any]:
        from edge import products

        found: dict[str, Any] = await service.db.read(lambda conn: products.get(conn, sku))
        return found

    @app.post("/v1/sales/{sale_id}/reprint", tags=["devices"], status_code=202)
    async def reprint(sale_id: str, terminal: Terminal) -> dict[str, Any]:
        """Print a finalized sale's receipt again (marked REPRINT) on this terminal's printer.
        The only way a receipt prints twice."""
        if service.devices is None:
            raise EdgeError("no_printer", "this terminal has no receipt printer", 409)
        return {"job_id": await service.devices.reprint(terminal, sale_id)}

    # --- members --------------------------------------------------------------------------

    @app.post("/v1/members", tags=["members"], status_code=201)
    async def register(body: m.RegisterMember, terminal: Terminal, key: IdemKey = None) -> Any:
        return await service.register_member(
            terminal_id=terminal, idem_key=key, phone=body.phone, name=body.name,
            birthday=body.birthday, card_uid=body.card_uid, tags=body.tags)

    @app.get("/v1/members/lookup", tags=["members"])
    async def lookup(_: Terminal, card_uid: str | None = None, member_code: str | None = None,
                     phone: str | None = None, qr: str | None = None) -> Any:
        by, value = _one_identifier(card_uid=card_uid, member_code=member_code, phone=phone,
                                    qr=qr)
        return await service.lookup_member(by, value)

    @app.get("/v1/members/{member_id}", tags=["members"])
    async def member(member_id: str, _: Terminal) -> Any:
        return await service.member(member_id)

    @app.patch("/v1/members/{member_id}", tags=["members"])
    async def profile(member_id: str, body: m.ProfileChange, terminal: Terminal,
                      key: IdemKey = None) -> Any:
        return await service.update_profile(terminal_id=terminal, idem_key=key,
                                            member_id=member_id,
                                            changes=body.model_dump(exclude_unset=True))

    @app.post("/v1/members/{member_id}/cards", tags=["members"])
    async def bind_card(member_id: str, body: m.BindCard, terminal: Terminal,
                        key: IdemKey = None) -> Any:
        return await service.bind_card(terminal_id=terminal, idem_key=key, member_id=member_id,
                                       card_uid=body.card_uid)

    @app.post("/v1/members/{member_id}/topups", tags=["stored value"])
    async def top_up(member_id: str, body: m.TopUp, terminal: Terminal,
                     key: IdemKey = None) -> Any:
        return await service.top_up(terminal_id=terminal, idem_key=key, member_id=member_id,
                                    amount=body.amount, paid_by=body.paid_by)

    # --- sales ----------------------------------------------------------------------------

    @app.post("/v1/sales", tags=["sales"], status_code=201)
    async def open_sale(terminal: Terminal) -> Any:
        return await service.open_sale(terminal)

    @app.get("/v1/sales/{sale_id}", tags=["sales"])
    async def sale(sale_id: str, terminal: Terminal) -> Any:
        return await service.sale_view(sale_id, terminal)

    @app.get("/v1/sales/{sale_id}/quote", tags=["sales"])
    async def quote(sale_id: str, terminal: Terminal) -> Any:
        return await service.sale_view(sale_id, terminal)

    @app.post("/v1/sales/{sale_id}/member", tags=["sales"])
    async def identify(sale_id: str, body: m.Identify, terminal: Terminal,
                       key: IdemKey = None) -> Any:
        by, value = _one_identifier(**body.model_dump())
        return await service.identify_on_sale(sale_id, terminal, key, by, value)

    @app.post("/v1/sales/{sale_id}/lines", tags=["sales"])
    async def add_line(sale_id: str, body: m.AddLine, terminal: Terminal,
                       key: IdemKey = None) -> Any:
        return await service.add_line(sale_id, terminal, key, sku=body.sku, name=body.name,
                                      category=body.category, qty=body.qty,
                                      unit_price=body.unit_price)

    @app.patch("/v1/sales/{sale_id}/lines/{line_no}", tags=["sales"])
    async def change_line(sale_id: str, line_no: int, body: m.ChangeLine, terminal: Terminal,
                          key: IdemKey = None) -> Any:
        return await service.set_qty(sale_id, terminal, key, line_no, body.qty)

    @app.delete("/v1/sales/{sale_id}/lines/{line_no}", tags=["sales"])
    async def remove_line(sale_id: str, line_no: int, terminal: Terminal,
                          key: IdemKey = None) -> Any:
        return await service.remove_line(sale_id, terminal, key, line_no)

    @app.post("/v1/sales/{sale_id}/coupons", tags=["sales"])
    async def add_coupon(sale_id: str, body: m.ApplyCoupon, terminal: Terminal,
                         key: IdemKey = None) -> Any:
        return await service.add_coupon(sale_id, terminal, key, body.code)

    @app.delete("/v1/sales/{sale_id}/coupons/{code}", tags=["sales"])
    async def remove_coupon(sale_id: str, code: str, terminal: Terminal,
                            key: IdemKey = None) -> Any:
        return await service.remove_coupon(sale_id, terminal, key, code)

    @app.post("/v1/sales/{sale_id}/void", tags=["sales"])
    async def void(sale_id: str, terminal: Terminal) -> Any:
        return await service.void_sale(sale_id, terminal)

    @app.post("/v1/sales/{sale_id}/finalize", tags=["sales"])
    async def finalize(sale_id: str, body: m.Finalize, terminal: Terminal,
                       key: IdemKey = None) -> Any:
        tenders = [TenderRequest(kind=t.kind, amount=t.amount, points=t.points,
                                 sv_order=t.sv_order, reference=t.reference)
                   for t in body.tenders]
        return await service.finalize(sale_id, terminal, key, tenders)

    @app.get("/v1/receipts/{sale_id}", tags=["sales"])
    async def receipt(sale_id: str, _: Terminal) -> Any:
        return await service.receipt(sale_id)

    @app.post("/v1/refunds", tags=["refunds"], status_code=201)
    async def refund(body: m.RefundIn, terminal: Terminal, key: IdemKey = None) -> Any:
        lines = None if body.lines is None else [(ln.line_no, ln.qty) for ln in body.lines]
        return await service.refund(terminal_id=terminal, idem_key=key, sale_id=body.sale_id,
                                    lines=lines)

    # --- events ---------------------------------------------------------------------------

    @app.websocket("/v1/events")
    async def events(ws: WebSocket) -> None:
        token = ws.query_params.get("token")
        header = ws.headers.get("authorization", "")
        if not token and header.startswith("Bearer "):
            token = header[7:]
        terminal = terminal_for(token)
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

    return app


def _one_identifier(**given: str | None) -> tuple[IdentifyBy, str]:
    present = [(k, v) for k, v in given.items() if v]
    if len(present) != 1:
        raise EdgeError("identifier_required",
                        "give exactly one of card_uid, member_code, phone, qr", 422)
    key, value = present[0]
    assert value is not None
    return key, value  # type: ignore[return-value]
