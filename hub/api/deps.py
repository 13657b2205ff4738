"""What an HQ route may ask for: the running hub for HQ's commands, and, for every route, the
caller's ``Access`` (``needs(permission)``): who they are, what their role allows, and reads
that take their scope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Header, Request

from hub.app import Hub
from hub.auth import audit_log, sessions
from hub.auth.access import Access
from hub.auth.scope import Scope
from hub.auth.tokens import Principal, digest
from hub.core.clock import now_ms
from protocol.errors import ServiceError
from protocol.http_guard import bearer, same_token


def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


UNAUTHORIZED = "a valid HQ bearer token is required"


def token_valid(hub: Hub, given: str | None) -> bool:
    return hub.tokens.principal(given, now_ms()) is not None


def session_valid(hub: Hub, cookie: str | None) -> bool:
    return hub.tokens.session(cookie, now_ms()) is not None


def principal(request: Request, authorization: str | None) -> Principal:
    """Who the request acts as: its bearer token's user, else its console session's. A change
    made through a session must carry the session's CSRF token (``X-CSRF-Token``)."""
    book = get_hub(request).tokens
    found = book.principal(bearer(authorization), now_ms())
    if found is not None:
        return found
    found = book.session(request.cookies.get(sessions.COOKIE), now_ms())
    if found is None:
        raise ServiceError("unauthorized", UNAUTHORIZED, 401)
    if request.method not in sessions.SAFE_METHODS:
        given = request.headers.get(sessions.CSRF_HEADER)
        if not given or not same_token(digest(given), found.csrf or ""):
            raise ServiceError("csrf_required", f"a change made in the console carries the"
                               f" session's {sessions.CSRF_HEADER}", 403)
    return found


async def grant(hub: Hub, who: Principal, permission: str, remote: str | None) -> Access:
    """``who``'s ``Access`` if their role allows ``permission``; else 403 ``forbidden``,
    written to the audit log (for API routes and console pages alike)."""
    granted = Access(hub.db, Scope(who), remote)
    if not granted.scope.role.allows(permission):
        await granted.audit(permission, outcome="forbidden")
        raise ServiceError("forbidden", f"role {granted.scope.role.name} may not"
                           f" {permission}", 403)
    return granted


def needs(permission: str) -> Callable[..., Awaitable[Access]]:
    """The dependency of a route that needs ``permission``: the caller's ``Access``, or 403
    ``forbidden`` (written to the audit log) when their role does not allow it."""

    async def access(request: Request,
                     authorization: Annotated[str | None, Header()] = None) -> Access:
        hub = get_hub(request)
        remote = request.client.host if request.client is not None else None
        try:
            who = principal(request, authorization)
        except ServiceError as refused:
            if refused.code == "csrf_required":  # a signed-in browser led by another site
                await hub.db.transaction(lambda tx: audit_log.append(
                    tx, at_ms=now_ms(), user_id=None, username="?", action=permission,
                    remote=remote, outcome="csrf_refused"))
            raise
        return await grant(hub, who, permission, remote)

    access.permission = permission  # type: ignore[attr-defined]  # for the route audit test
    return access


HubDep = Annotated[Hub, Depends(get_hub)]
