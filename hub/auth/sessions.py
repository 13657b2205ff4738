"""Console sign-in: a session cookie (random, kept as its SHA-256, HttpOnly, SameSite=Strict,
Secure over HTTPS) and a CSRF token the console sends back in ``X-CSRF-Token`` with every
change, so another site cannot make a signed-in browser change anything."""

from __future__ import annotations

import secrets

from hub.auth import audit_log, roles, users
from hub.auth.tokens import Principal, digest
from hub.auth.users import User
from hub.core.db import Tx
from protocol.errors import ServiceError

COOKIE = "mg_session"
CSRF_HEADER = "X-CSRF-Token"
LIFETIME_MS = 8 * 3600 * 1000  # a working day; signing in again starts a new one
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def start(tx: Tx, user: User, now_ms: int, remote: str | None) -> tuple[str, str]:
    """A new session for ``user``: (the cookie's value, the CSRF token), both shown once."""
    session, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    tx.execute("INSERT INTO sessions(session_sha256, user_id, csrf_sha256, created_ms,"
               " expires_ms, remote) VALUES (?, ?, ?, ?, ?, ?)",
               (digest(session), user.user_id, digest(csrf), now_ms, now_ms + LIFETIME_MS,
                remote))
    return session, csrf


def end(tx: Tx, session: str, now_ms: int) -> None:
    tx.execute("UPDATE sessions SET ended_ms = ? WHERE session_sha256 = ? AND ended_ms IS NULL",
               (now_ms, digest(session)))



def sign_in(tx: Tx, username: str, password: str, now_ms: int, remote: str | None
            ) -> tuple[Principal, str, str] | ServiceError:
    """(who, the cookie's value, the CSRF token), or the refusal: returned, so that the count
    of wrong passwords and the audit entry commit with it."""
    outcome = users.sign_in(tx, username, password, now_ms)
    if isinstance(outcome, ServiceError):
        audit_log.append(tx, at_ms=now_ms, user_id=None, username=username, action="sign_in",
                         remote=remote, outcome=outcome.code)
        return outcome
    session, csrf = start(tx, outcome, now_ms, remote)
    audit_log.append(tx, at_ms=now_ms, user_id=outcome.user_id, username=outcome.username,
                     action="sign_in", remote=remote)
    role = roles.load(tx)[outcome.role]
    return Principal(outcome, role, None, now_ms + LIFETIME_MS, digest(csrf)), session, csrf
