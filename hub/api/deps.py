"""What an HQ route may ask for: the running hub, and proof that the caller is HQ."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from hub.app import Hub
from protocol.errors import ServiceError


def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


def require_hq(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    token = get_hub(request).config.api.token or ""
    given = authorization[7:] if authorization and authorization.startswith("Bearer ") else ""
    # Compared as bytes: a token with characters outside ASCII is simply wrong, not an error.
    if not token or not hmac.compare_digest(given.encode(), token.encode()):
        raise ServiceError("unauthorized", "a valid HQ bearer token is required", 401)


HubDep = Annotated[Hub, Depends(get_hub)]
