"""Signing in to the console: a session cookie and a CSRF token (``hub.auth.sessions``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from hub.api.deps import HubDep, needs
from hub.api.models import SignedIn, SignIn, UserView
from hub.auth import roles, sessions
from hub.auth.access import Access
from protocol.http_errors import StrictJsonRoute

router = APIRouter(tags=["sign-in"], route_class=StrictJsonRoute)
SIGN_IN = "/v1/auth/sign-in"


async def public() -> None:
    """The one route open without a token: signing in."""


public.permission = "public"  # type: ignore[attr-defined]


@router.post(SIGN_IN, response_model=SignedIn, dependencies=[Depends(public)])
async def sign_in(body: SignIn, request: Request, response: Response, hub: HubDep) -> Any:
    """Check the password; on success the session cookie is set (HttpOnly, SameSite=Strict,
    Secure over HTTPS) and the answer carries the CSRF token every change must send back in
    ``X-CSRF-Token``. Wrong passwords in a row lock the account for a while; every refusal is
    in the audit log."""
    remote = request.client.host if request.client is not None else None
    principal, session, csrf = await hub.sign_in(body.username, body.password, remote)
    response.set_cookie(sessions.COOKIE, session, max_age=sessions.LIFETIME_MS // 1000,
                        httponly=True, samesite="strict",
                        secure=hub.config.api.scheme == "https", path="/")
    return {"user": principal.user.public(), "csrf_token": csrf,
            "expires_ms": principal.expires_ms}


@router.post("/v1/auth/sign-out", response_model=UserView)
async def sign_out(request: Request, response: Response, hub: HubDep,
                   access: Annotated[Access, Depends(needs(roles.SIGNED_IN))]) -> Any:
    """End this browser's session (its cookie stops working at once)."""
    cookie = request.cookies.get(sessions.COOKIE)
    if cookie:
        await hub.sign_out(cookie)
    response.delete_cookie(sessions.COOKIE, path="/")
    return access.scope.principal.user.public()


@router.get("/v1/auth/me", response_model=UserView)
async def me(access: Annotated[Access, Depends(needs(roles.SIGNED_IN))]) -> Any:
    """Who the request acts as."""
    return access.scope.principal.user.public()
