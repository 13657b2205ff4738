"""What an HQ route may ask for: the running hub, and proof that the caller is HQ."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from hub.app import Hub
from protocol.errors import ServiceError
from protocol.http_guard import bearer, same_token


def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


UNAUTHORIZED = "a valid HQ bearer token is required"


def hq_token_valid(hub: Hub, given: str | None) -> bool:
    token = hub.config.api.token
    # Compared as bytes (same_token): a token outside ASCII is simply wrong, not an error.
    return bool(token) and given is not None and same_token(given, token or "")


def require_hq(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    if not hq_token_valid(get_hub(request), bearer(authorization)):
        raise ServiceError("unauthorized", UNAUTHORIZED, 401)


HubDep = Annotated[Hub, Depends(get_hub)]
