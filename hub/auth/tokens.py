"""API tokens for integrations and scripts: issued to a user (the token acts as that user,
with that user's role and scope), shown once, kept as a SHA-256 digest, revocable, optionally
expiring. ``TokenBook`` answers the HTTP guard without a database round trip: it is reloaded
whenever a user or a token changes."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from hub.auth import roles, users
from hub.auth.roles import Role
from hub.auth.users import User
from hub.core.clock import now_ms as clock_ms
from hub.core.db import Tx
from protocol.errors import ServiceError
from protocol.http_guard import same_token
from protocol.ids import uuid7

PREFIX = "mgt_"  # tells a membergate token apart in a leaked-secret scan

# The ``[api] token`` of earlier releases keeps working as an HQ admin integration.
LEGACY = User(user_id="legacy-api-token", username="legacy-api-token",
              display_name="[api] token", role=roles.ADMIN, regions=(), stores=(),
              guide_id=None, disabled=False)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def issue(tx: Tx, username: str, name: str, now_ms: int,
          expires_ms: int | None = None) -> tuple[str, str]:
    """A new token for ``username``: (token id, the secret, shown this once)."""
    user = users.get(tx, username)
    if user.disabled:
        raise ServiceError("user_disabled", f"{username} is disabled", 409)
    if not 1 <= len(name) <= 200:
        raise ServiceError("invalid_name", "a token's name has 1 to 200 characters", 422)
    secret = PREFIX + secrets.token_urlsafe(32)
    token_id = uuid7()
    tx.execute("INSERT INTO api_tokens(token_id, user_id, name, token_sha256, created_ms,"
               " expires_ms) VALUES (?, ?, ?, ?, ?, ?)",
               (token_id, user.user_id, name, digest(secret), now_ms, expires_ms))
    return token_id, secret


def revoke(tx: Tx, token_id: str, now_ms: int) -> None:
    """Revoke ``token_id`` (one revoked already stays as it was)."""
    if tx.scalar("SELECT 1 FROM api_tokens WHERE token_id = ?", (token_id,)) is None:
        raise ServiceError("token_not_found", "no such token", 404)
    tx.execute("UPDATE api_tokens SET revoked_ms = ? WHERE token_id = ? AND revoked_ms IS NULL",
               (now_ms, token_id))


def listed(tx: Tx) -> list[dict[str, object]]:
    return [{"token_id": r[0], "username": r[1], "name": r[2], "created_ms": int(r[3]),
             "expires_ms": r[4], "revoked_ms": r[5]}
            for r in tx.all("SELECT t.token_id, u.username, t.name, t.created_ms, t.expires_ms,"
                            " t.revoked_ms FROM api_tokens t JOIN users u USING (user_id)"
                            " ORDER BY t.created_ms")]


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: by an API token, or by a console session (``csrf`` is then the
    digest of the CSRF token its changes must carry)."""

    user: User
    role: Role
    token_id: str | None
    expires_ms: int | None = None
    csrf: str | None = None


class TokenBook:
    """Every live token's digest and who it acts as, for the HTTP guard's synchronous check."""

    def __init__(self, legacy_token: str | None) -> None:
        self.legacy_token = legacy_token
        self._by_digest: dict[str, Principal] = {}
        self._sessions: dict[str, Principal] = {}
        self._legacy: Principal | None = None

    def load(self, tx: Tx) -> None:
        known = roles.load(tx)
        book: dict[str, Principal] = {}
        for token_id, sha, expires, user_id in tx.all(
                "SELECT t.token_id, t.token_sha256, t.expires_ms, t.user_id FROM api_tokens t"
                " JOIN users u USING (user_id) WHERE t.revoked_ms IS NULL AND u.disabled = 0"):
            user = users.by_id(tx, str(user_id))
            if user is not None and user.role in known:
                book[str(sha)] = Principal(user, known[user.role], str(token_id),
                                           int(expires) if expires is not None else None)
        self._by_digest = book
        live: dict[str, Principal] = {}
        for sha, user_id, csrf, expires in tx.all(  # console sessions (``hub.auth.sessions``)
                "SELECT session_sha256, user_id, csrf_sha256, expires_ms FROM sessions"
                " WHERE ended_ms IS NULL AND expires_ms > ?", (clock_ms(),)):
            user_id, expires = str(user_id), int(expires)
            user = users.by_id(tx, user_id)
            if user is not None and not user.disabled and user.role in known:
                live[str(sha)] = Principal(user, known[user.role], None, expires, str(csrf))
        self._sessions = live
        self._legacy = Principal(LEGACY, known[roles.ADMIN], None) if self.legacy_token else None

    def principal(self, secret: str | None, now_ms: int) -> Principal | None:
        if not secret:
            return None
        if self._legacy is not None and same_token(secret, self.legacy_token or ""):
            return self._legacy
        return _unexpired(self._by_digest.get(digest(secret)), now_ms)

    def session(self, secret: str | None, now_ms: int) -> Principal | None:
        return _unexpired(self._sessions.get(digest(secret)), now_ms) if secret else None

    def add_session(self, secret: str, principal: Principal) -> None:
        self._sessions[digest(secret)] = principal

    def drop_session(self, secret: str) -> None:
        self._sessions.pop(digest(secret), None)


def _unexpired(found: Principal | None, now_ms: int) -> Principal | None:
    if found is None or (found.expires_ms is not None and found.expires_ms <= now_ms):
        return None
    return found

