"""HQ users, their roles and API tokens: HQ admins only (``users.manage``). Every change takes
effect at once: the hub reloads who may call it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends

from hub.api.deps import HubDep, needs
from hub.api.models import (
    IssuedToken,
    RoleView,
    TokenIn,
    TokenView,
    UserChange,
    UserIn,
    UserView,
)
from hub.auth import passwords, roles, tokens, users
from hub.auth.access import Access
from hub.auth.scope import Scope
from hub.core.clock import now_ms
from hub.core.db import Tx
from protocol.errors import ServiceError
from protocol.http_errors import StrictJsonRoute

T = TypeVar("T")

router = APIRouter(tags=["users"], route_class=StrictJsonRoute)
Admin = Annotated[Access, Depends(needs("users.manage"))]
DAY_MS = 86_400_000


async def _audited(access: Access, action: str, subject: str,
                   fn: Callable[[Tx, Scope], T], reason: str = "") -> T:
    """``fn`` on the writer, and the change in the audit log — a refused one too (an unknown
    role, region or store, a taken name: nothing changed, the attempt recorded)."""
    try:
        done = await access.write(fn)
    except ServiceError as exc:
        await access.audit(action, subject=subject, reason=reason, outcome=exc.code)
        raise
    await access.audit(action, subject=subject, reason=reason)
    return done


@router.get("/v1/roles", response_model=list[RoleView])
async def role_list(access: Admin) -> Any:
    found = await access.read(lambda tx, _scope: roles.load(tx))
    return [{"role": r.name, "permissions": sorted(r.permissions), "scope": r.scope,
             "masked": r.masked} for r in found.values()]


@router.get("/v1/users", response_model=list[UserView])
async def user_list(access: Admin) -> Any:
    return [u.public() for u in await access.read(lambda tx, _scope: users.list_all(tx))]


@router.post("/v1/users", status_code=201, response_model=UserView)
async def add_user(body: UserIn, hub: HubDep, access: Admin) -> Any:
    """A user with a role and its scope; a region or store the hub does not know is 422."""
    digest = passwords.hash_password(body.password)
    now = now_ms()
    user = await _audited(access, "user.add", body.username, lambda tx, _scope: users.add(
        tx, username=body.username, role=body.role, password_hash=digest, now_ms=now,
        regions=body.regions, stores=body.stores, guide_id=body.guide_id,
        display_name=body.display_name), f"role {body.role}")
    await hub.reload_access()
    return user.public()


@router.patch("/v1/users/{username}", response_model=UserView)
async def change_user(username: str, body: UserChange, hub: HubDep, access: Admin) -> Any:
    """Disable (its tokens stop working at once) or enable a user, or set a new password
    (which also lifts a lock-out)."""
    digest = passwords.hash_password(body.password) if body.password is not None else None
    now = now_ms()

    def change(tx: Any, _scope: Any) -> users.User:
        user = users.get(tx, username)
        if body.disabled is not None:
            user = users.set_disabled(tx, username, body.disabled, now)
        if digest is not None:
            user = users.set_password(tx, username, digest, now)
        return user

    what = ", ".join(k for k, v in (("disabled", body.disabled), ("password", body.password))
                     if v is not None)
    user = await _audited(access, "user.change", username, change, what)
    await hub.reload_access()
    return user.public()


@router.get("/v1/tokens", response_model=list[TokenView])
async def token_list(access: Admin) -> Any:
    return await access.read(lambda tx, _scope: tokens.listed(tx))


@router.post("/v1/users/{username}/tokens", status_code=201, response_model=IssuedToken)
async def issue_token(username: str, body: TokenIn, hub: HubDep, access: Admin) -> Any:
    """A token that acts as ``username`` (its role, its scope), for an integration."""
    now = now_ms()
    expires = now + body.expires_in_days * DAY_MS if body.expires_in_days else None
    token_id, secret = await _audited(access, "token.issue", username, lambda tx, _scope: (
        tokens.issue(tx, username, body.name, now, expires)), body.name)
    await hub.reload_access()
    return {"token_id": token_id, "username": username, "name": body.name, "token": secret}


@router.delete("/v1/tokens/{token_id}", response_model=TokenView)
async def revoke_token(token_id: str, hub: HubDep, access: Admin) -> Any:
    """Revoke a token: it stops working at once. Answers the token as it now stands."""
    now = now_ms()

    def revoke(tx: Any, _scope: Any) -> dict[str, object]:
        tokens.revoke(tx, token_id, now)
        return next(t for t in tokens.listed(tx) if t["token_id"] == token_id)

    revoked = await _audited(access, "token.revoke", token_id, revoke)
    await hub.reload_access()
    return revoked
