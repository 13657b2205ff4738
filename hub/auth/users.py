"""HQ users: who they are, their role and where their scope lies (regions, stores, or the
shopping guide whose members they are), their password and its lock-out."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from hub.auth import passwords, roles
from hub.core.db import Tx
from protocol.errors import ServiceError
from protocol.ids import uuid7

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{2,63}$")
MAX_FAILURES = 5  # wrong passwords in a row before the account waits
LOCK_MS = 15 * 60 * 1000


@dataclass(frozen=True)
class User:
    user_id: str
    username: str
    display_name: str
    role: str
    regions: tuple[str, ...]
    stores: tuple[str, ...]
    guide_id: str | None
    disabled: bool

    def public(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "username": self.username,
                "display_name": self.display_name, "role": self.role,
                "regions": list(self.regions), "stores": list(self.stores),
                "guide_id": self.guide_id, "disabled": self.disabled}


_COLUMNS = ("SELECT user_id, username, display_name, role, regions, stores, guide_id, disabled"
            " FROM users")


def _user(row: Any) -> User:
    return User(str(row[0]), str(row[1]), str(row[2]), str(row[3]),
                tuple(json.loads(row[4])), tuple(json.loads(row[5])), row[6], bool(row[7]))


def get(tx: Tx, username: str) -> User:
    row = tx.one(f"{_COLUMNS} WHERE username = ?", (username,))
    if row is None:
        raise ServiceError("user_not_found", f"no HQ user {username!r}", 404)
    return _user(row)


def by_id(tx: Tx, user_id: str) -> User | None:
    row = tx.one(f"{_COLUMNS} WHERE user_id = ?", (user_id,))
    return _user(row) if row is not None else None


def list_all(tx: Tx) -> list[User]:
    return [_user(r) for r in tx.all(f"{_COLUMNS} ORDER BY username")]


def _check_scope(tx: Tx, role: roles.Role, regions: list[str], stores: list[str],
                 guide_id: str | None) -> None:
    """The places a role's scope names must exist, and only the kind it needs is given."""
    given = {"regions": bool(regions), "stores": bool(stores), "guide": guide_id is not None}
    needed = role.scope if role.scope in given else None
    for kind, present in given.items():
        if present and kind != needed:
            raise ServiceError("invalid_scope", f"role {role.name} has no {kind} to name", 422)
    if needed is not None and not given[needed]:
        raise ServiceError("invalid_scope", f"role {role.name} needs its {needed}", 422)
    known_regions = {r[0] for r in tx.all("SELECT DISTINCT region FROM stores"
                                          " WHERE region IS NOT NULL")}
    for region in regions:
        if region not in known_regions:
            raise ServiceError("unknown_region", f"no store is in region {region!r}", 422,
                               region=region)
    for store in stores:
        if tx.scalar("SELECT 1 FROM stores WHERE store_id = ?", (store,)) is None:
            raise ServiceError("unknown_store", f"no store {store!r}", 422, store_id=store)


def add(tx: Tx, *, username: str, role: str, password_hash: str | None, now_ms: int,
        regions: list[str] | None = None, stores: list[str] | None = None,
        guide_id: str | None = None, display_name: str = "") -> User:
    if not USERNAME.match(username):
        raise ServiceError("invalid_username", "a username is 3 to 64 of a-z 0-9 . _ @ -,"
                           " starting with a letter or digit", 422)
    known = roles.load(tx)
    if role not in known:
        raise ServiceError("unknown_role", f"no role {role!r}; roles: {', '.join(known)}", 422)
    regions, stores = sorted(set(regions or [])), sorted(set(stores or []))
    _check_scope(tx, known[role], regions, stores, guide_id)
    if tx.scalar("SELECT 1 FROM users WHERE username = ?", (username,)) is not None:
        raise ServiceError("username_taken", f"an HQ user {username!r} exists", 409)
    user_id = uuid7()
    tx.execute(
        "INSERT INTO users(user_id, username, display_name, role, regions, stores, guide_id,"
        " password_hash, created_ms, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (user_id, username, display_name, role, json.dumps(regions), json.dumps(stores),
         guide_id, password_hash, now_ms, now_ms))
    return get(tx, username)


def set_disabled(tx: Tx, username: str, disabled: bool, now_ms: int) -> User:
    """Disable or enable a user. The last enabled HQ admin is never disabled: nobody would be
    left to enable anyone again (an admin disabling themselves by a slip included)."""
    user = get(tx, username)
    if disabled and not user.disabled and user.role == roles.ADMIN and int(tx.scalar(
            "SELECT count(*) FROM users WHERE role = ? AND disabled = 0", (roles.ADMIN,))) <= 1:
        raise ServiceError("last_admin", f"{username} is the last enabled HQ admin: enable or"
                           " add another admin first", 409)
    tx.execute("UPDATE users SET disabled = ?, updated_ms = ? WHERE username = ?",
               (int(disabled), now_ms, username))
    return get(tx, username)


def set_password(tx: Tx, username: str, password_hash: str, now_ms: int) -> User:
    """A new password (a reset by an admin too): it also lifts a lock-out."""
    get(tx, username)
    tx.execute("UPDATE users SET password_hash = ?, failed_logins = 0, locked_until_ms = 0,"
               " updated_ms = ? WHERE username = ?", (password_hash, now_ms, username))
    return get(tx, username)


def sign_in(tx: Tx, username: str, password: str, now_ms: int) -> User | ServiceError:
    """The user if ``password`` is theirs, else the refusal, returned (not raised) so that the
    count of wrong passwords commits with it; wrong ones in a row lock the account a while.
    The answer for an unknown user, a disabled one and a wrong password is the same."""
    row = tx.one("SELECT password_hash, failed_logins, locked_until_ms FROM users"
                 " WHERE username = ? AND disabled = 0", (username,))
    refused = ServiceError("sign_in_refused", "wrong username or password", 401)
    if row is None:
        return refused
    if int(row[2]) > now_ms:
        return ServiceError("account_locked", "too many wrong passwords: try again later or"
                           " ask an admin to reset the password", 423,
                           retry_after_s=(int(row[2]) - now_ms + 999) // 1000)
    if not passwords.matches(row[0], password):
        failures = int(row[1]) + 1
        locked = now_ms + LOCK_MS if failures >= MAX_FAILURES else 0
        tx.execute("UPDATE users SET failed_logins = ?, locked_until_ms = ? WHERE username = ?",
                   (0 if locked else failures, locked, username))
        return refused
    tx.execute("UPDATE users SET failed_logins = 0, locked_until_ms = 0 WHERE username = ?",
               (username,))
    return get(tx, username)
