"""What every HTTP API of ours holds a client to before a handler runs: the store's POS API and
the hub's HQ API are served through the same uvicorn protocol and middleware from here.

A security review measured what an unbounded server costs: a 200 MB chunked body sent without
a token took an edge from 74 to 666 MB (a size limit read from ``Content-Length`` sees no
chunked body, and the body was read before the token was checked), and ~1,100 connections that
trickled their request heads held every file descriptor of the unit, locking the tills out.

- ``HttpGuard`` (ASGI middleware) refuses a request without a valid bearer token before one
  byte of its body is received, and counts the body bytes actually received, chunked or not,
  answering 413 as soon as they pass the limit (whatever ``Content-Length`` says).
- ``guarded_protocol`` (uvicorn's httptools protocol, with deadlines) closes a connection whose
  request head is not complete within ``head_timeout_s`` or whose body stalls for
  ``body_stall_timeout_s``, and answers 503 to a connection beyond ``max_connections``.

Each refusal closes the connection: nothing more is read from a client that was refused.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Callable, Collection
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, Field
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from protocol import errors
from protocol.tls import load_server_config

TokenCheck = Callable[[str | None], bool]


class ConnectionLimits(BaseModel):
    """The ``[api]`` fields (edge and hub) that bound what a connection may hold. The defaults
    suit a store LAN, where a till sends a request head in milliseconds."""

    head_timeout_s: float = Field(5.0, gt=0, le=300)
    body_stall_timeout_s: float = Field(10.0, gt=0, le=300)
    # Open connections (WebSockets included); one beyond gets 503 ``too_many_connections``.
    max_connections: int = Field(200, ge=1, le=50_000)


def same_token(given: str, known: str) -> bool:
    """Compared as bytes: ``hmac.compare_digest`` refuses ``str`` outside ASCII with a
    ``TypeError``, and a header may carry any byte."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"),
                               known.encode("utf-8", "surrogatepass"))


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` value, None without one."""
    if authorization and authorization.startswith("Bearer "):
        return authorization[7:] or None
    return None


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> bytes:
    """The shared error shape (``protocol.errors``), as the bytes of a response body."""
    return json.dumps(errors.error_body(code, message, details)).encode()


async def _refuse(send: Send, status: int, code: str, message: str,
                  details: dict[str, Any] | None = None) -> None:
    body = error_body(code, message, details)
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    """Raised into the app from ``receive`` once the 413 has been sent in its place."""


class HttpGuard:
    """Token first, then a counted body. WebSocket and lifespan scopes pass untouched (the
    event stream checks its own token, given as a query parameter too)."""

    def __init__(self, app: ASGIApp, *, token_valid: TokenCheck, max_body_bytes: int,
                 token_message: str, open_paths: Collection[str],
                 open_prefixes: Collection[str] = (),
                 session: tuple[str, TokenCheck] | None = None) -> None:
        self.app = app
        self.token_valid = token_valid
        # A browser's session: (cookie name, its check). A request with neither a valid token
        # nor a valid session cookie is refused before its body is read.
        self.session = session
        self.max_body_bytes = max_body_bytes
        self.token_message = token_message
        self.open_paths = frozenset(open_paths)
        self.open_prefixes = tuple(open_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        path = scope["path"]
        if path not in self.open_paths and not path.startswith(self.open_prefixes or ("\0",)):
            authorization = headers.get(b"authorization")
            token = bearer(authorization.decode("latin-1") if authorization else None)
            if not self.token_valid(token) and not self._session_valid(headers):
                await _refuse(send, 401, "unauthorized", self.token_message)
                return
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(send)
            return
        await self._counted(scope, receive, send)

    def _session_valid(self, headers: dict[bytes, bytes]) -> bool:
        raw = headers.get(b"cookie")
        if self.session is None or raw is None:
            return False
        name, check = self.session
        return check(session_cookie(raw.decode("latin-1"), name))

    async def _too_large(self, send: Send) -> None:
        await _refuse(send, 413, "payload_too_large",
                      f"request bodies are limited to {self.max_body_bytes} bytes",
                      {"limit_bytes": self.max_body_bytes})

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0
        started = refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    if not started:
                        refused = True
                        await self._too_large(send)
                    raise _BodyTooLarge
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the app's answer to the error it was given; the 413 went instead
            started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, watched_send)
        except Exception:
            if not refused:
                raise


def session_cookie(header: str | None, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` header, None without it."""
    if not header:
        return None
    jar = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None and morsel.value else None


def guard(app: FastAPI, *, token_valid: TokenCheck, max_body_bytes: int, token_message: str,
          open_paths: Collection[str] = (), open_prefixes: Collection[str] = (),
          session: tuple[str, TokenCheck] | None = None) -> None:
    """Put ``HttpGuard`` in front of ``app``'s routes; its docs stay open without a token, with
    the files they load (the app's static mounts: Swagger UI and ReDoc served locally), and so
    do paths under ``open_prefixes`` (pages that check their caller themselves)."""
    docs = [app.docs_url, app.redoc_url, app.openapi_url, app.swagger_ui_oauth2_redirect_url,
            # Docs pages an app serves itself (fastapi-offline's): routes kept out of OpenAPI.
            *(getattr(r, "path", None) for r in app.routes
              if getattr(r, "include_in_schema", True) is False)]
    assets = [f"{r.path}/" for r in app.routes if isinstance(r, Mount)]
    app.add_middleware(HttpGuard, token_valid=token_valid, max_body_bytes=max_body_bytes,
                       token_message=token_message,
                       open_paths={*open_paths, *(p for p in docs if p)},
                       open_prefixes=[*assets, *open_prefixes], session=session)


class _GuardedProtocol(HttpToolsProtocol):
    """One deadline per connection: for the whole request head (from the connection, or from
    the first byte of the next request on a kept-alive one), then for each stretch of the body
    without data. Between requests uvicorn's keep-alive timeout applies."""

    limits = ConnectionLimits()
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self.app = _too_many_connections  # answered once its head is in, then closed
        self._arm(self.limits.head_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # the connection's own head deadline is still running
            self._arm(self.limits.head_timeout_s)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self.limits.body_stall_timeout_s)

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._arm(self.limits.body_stall_timeout_s)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def on_response_complete(self) -> None:
        answered = self.cycle  # the current request's (a pipelined one's would not be done)
        if answered.response_complete and answered.more_body and not self.transport.is_closing():
            # Answered before its body ended (a refusal, or a body the route does not read):
            # the rest of the body is not wanted, and a client could trickle it for ever.
            self.transport.close()
        super().on_response_complete()

    def handle_websocket_upgrade(self) -> None:
        self._disarm()  # the WebSocket protocol takes the connection over, with its own pings
        if self.app is _too_many_connections:
            self.transport.write(_TOO_MANY_RAW)
            self.transport.close()
            return
        super().handle_websocket_upgrade()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, seconds)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, seconds: float) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused:
            # The app has not taken what was already sent (or a pipelined request waits): not
            # the client's stall.
            self._arm(seconds)
            return
        self.transport.close()


_TOO_MANY = ("too_many_connections",
             "the server has all the connections it takes open; try again shortly")
_TOO_MANY_BODY = error_body(*_TOO_MANY)
# For a WebSocket handshake, which never reaches the ASGI app as an HTTP request.
_TOO_MANY_RAW = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                 b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                 % (len(_TOO_MANY_BODY), _TOO_MANY_BODY))


async def _too_many_connections(scope: Scope, receive: Receive, send: Send) -> None:
    await _refuse(send, 503, *_TOO_MANY)


def guarded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's ``http`` protocol class for a server held to ``limits``."""
    return type("GuardedHttpProtocol", (_GuardedProtocol,), {"limits": limits})


def server_config(app: FastAPI, *, host: str, port: int, limits: ConnectionLimits,
                  tls_cert_file: Path | None, tls_key_file: Path | None,
                  lifespan: Literal["on", "off"]) -> uvicorn.Config:
    """A uvicorn configuration for one of our APIs: held to ``limits``, logging through the
    process's own handlers (JSON off a terminal, see ``protocol.logs``), over HTTPS when given a
    certificate. Loaded here, so an unusable certificate is a ``TlsError`` before serving."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", log_config=None, access_log=False,
        lifespan=lifespan,
        ssl_certfile=tls_cert_file, ssl_keyfile=tls_key_file, http=guarded_protocol(limits))
    load_server_config(config, "[api]", tls_cert_file, tls_key_file)
    return config
