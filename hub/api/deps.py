"""What an HQ route may ask for: the running hub for HQ's commands, and, for every route, the
caller's ``Access`` (``needs(permission)``): who they are, what their role allows, and reads
that take their scope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Header, Request

from hub.app import Hub
from hub.auth.access import Access
from hub.auth.scope import Scope
from hub.auth.tokens import Principal
from hub.core.clock import now_ms
from protocol.errors import ServiceError
from protocol.http_guard import bearer


def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


UNAUTHORIZED = "a valid HQ bearer token is required"


def token_valid(hub: Hub, given: str | None) -> bool:
    return hub.tokens.principal(given, now_ms()) is not None


def principal(request: Request, authorization: str | None) -> Principal:
    found = get_hub(request).tokens.principal(bearer(authorization), now_ms())
    if found is None:
        raise ServiceError("unauthorized", UNAUTHORIZED, 401)
    return found


def needs(permission: str) -> Callable[..., Awaitable[Access]]:
    """The dependency of a route that needs ``permission``: the caller's ``Access``, or 403
    ``forbidden`` (written to the audit log) when their role does not allow it."""

    async def access(request: Request,
                     authorization: Annotated[str | None, Header()] = None) -> Access:
        hub = get_hub(request)
        remote = request.client.host if request.client is not None else None
        granted = Access(hub.db, Scope(principal(request, authorization)), remote)
        if not granted.scope.role.allows(permission):
            await granted.audit(permission, outcome="forbidden")
            raise ServiceError("forbidden", f"role {granted.scope.role.name} may not"
                               f" {permission}", 403)
        return granted

    access.permission = permission  # type: ignore[attr-defined]  # for the route audit test
    return access


HubDep = Annotated[Hub, Depends(get_hub)]
