"""What a POS route may ask for: the store's service, and the terminal a bearer token names."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Query, Request

from edge import paging
from edge.errors import EdgeError
from edge.service import EdgeService
from protocol.http_guard import bearer, same_token

UNAUTHORIZED = "a valid terminal bearer token is required"
IdemKey = Annotated[str | None, Header(alias="Idempotency-Key")]
Limit = Annotated[int, Query(ge=1, le=paging.MAX_LIMIT)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
Prefix = Annotated[str, Query(max_length=64)]


def get_service(request: Request) -> EdgeService:
    service: EdgeService = request.app.state.service
    return service


def terminal_for(service: EdgeService, token: str | None) -> str | None:
    """The terminal whose token this is (compared as bytes, in constant time)."""
    if not token:
        return None
    for terminal, known in service.config.api.tokens.items():
        if same_token(token, known):
            return terminal
    return None


def require_terminal(request: Request,
                     authorization: Annotated[str | None, Header()] = None) -> str:
    terminal = terminal_for(get_service(request), bearer(authorization))
    if terminal is None:
        raise EdgeError("unauthorized", UNAUTHORIZED, 401)
    return terminal


Service = Annotated[EdgeService, Depends(get_service)]
Terminal = Annotated[str, Depends(require_terminal)]
