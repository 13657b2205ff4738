"""What an HQ route holds instead of the database: the caller's ``Scope`` and reads that take
it. Routes never see the hub's database (``tests/test_boundaries.py`` holds them to it), so a
read without a scope cannot be written."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from hub.auth import audit_log
from hub.auth.scope import Scope
from hub.core.clock import now_ms
from hub.core.db import HubDatabase, Tx

T = TypeVar("T")


@dataclass(frozen=True)
class Access:
    db: HubDatabase
    scope: Scope
    remote: str | None

    async def read(self, fn: Callable[[Tx, Scope], T]) -> T:
        """``fn(tx, scope)`` on a reader connection; on PostgreSQL bound by row-level security
        to the scope as well (the second lock: a query that forgot the scope still sees only
        what the caller may)."""
        scope = self.scope
        return await self.db.read(lambda tx: fn(tx, scope), row_scope=scope.row_security())

    async def write(self, fn: Callable[[Tx, Scope], T]) -> T:
        """``fn(tx, scope)`` in a transaction on the writer (user management, audited reads)."""
        scope = self.scope
        return await self.db.transaction(lambda tx: fn(tx, scope))

    async def audit(self, action: str, *, subject: str | None = None,
                    fields: list[str] | None = None, reason: str = "",
                    outcome: str = "ok") -> None:
        user = self.scope.principal.user
        at = now_ms()
        await self.db.transaction(lambda tx: audit_log.append(
            tx, at_ms=at, user_id=user.user_id, username=user.username, action=action,
            subject=subject, fields=fields, reason=reason, remote=self.remote,
            outcome=outcome))
