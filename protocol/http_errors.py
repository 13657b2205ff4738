"""FastAPI glue for the shared error shape (``protocol.errors``): every refusal, validation
failure and unknown route answers ``{"error": {...}}`` on both APIs."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from protocol.errors import ServiceError, error_body


def error_response(status: int, code: str, message: str,
                   details: dict[str, object] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"]} for e in exc.errors()]
        return error_response(422, "validation_error",
                              "the request body or parameters are invalid", {"errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))


class StrictJsonRoute(APIRoute):
    """A route whose JSON body must be UTF-8 (RFC 8259): Python's JSON reader would also take
    UTF-16 and UTF-32, which a POS or HQ client never means to send. 400 ``invalid_encoding``,
    before anything else looks at the body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def strict(request: Request) -> Response:
            if request.method in ("POST", "PUT", "PATCH"):
                body = await request.body()  # kept: the route reads it again from the cache
                try:
                    body.decode("utf-8")
                    utf8 = b"\x00" not in body  # UTF-16/32 without a BOM: NULs between ASCII
                except UnicodeDecodeError:
                    utf8 = False
                if not utf8:
                    return error_response(400, "invalid_encoding",
                                          "a request body is JSON in UTF-8")
            return await handle(request)

        return strict
