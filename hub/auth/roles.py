"""Roles are rows (``roles``): what a role's users may do, which members and stores they see,
and whether personal data is masked for them. Code asks ``Role.allows(permission)``; it never
branches on a role's name."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal, cast

from hub.core.db import Tx

ScopeKind = Literal["all", "regions", "stores", "guide", "none"]

# What every signed-in user may do: see who they are, sign out.
SIGNED_IN = "signed_in"

# What the HQ API's routes ask for (``hub.api.deps.needs``).
PERMISSIONS = frozenset({
    "status.read", "stores.read", "stores.write", "members.read", "members.write",
    "pii.reveal", "campaigns.push", "conflicts.read", "books.check", "metrics.read",
    "users.manage", "auditlog.read", "pii.export", "pii.erase", "reports.read",
    "members.export", "exports.approve", "rfm.run", "segments.write",
    "journeys.write", "messages.manage",
})


@dataclass(frozen=True)
class Role:
    name: str
    permissions: frozenset[str]
    scope: ScopeKind
    masked: bool

    def allows(self, permission: str) -> bool:
        return (permission == SIGNED_IN or "*" in self.permissions
                or permission in self.permissions)


# The role of the configured ``[api] token`` of earlier releases: an integration acting as HQ.
ADMIN = "hq_admin"


def load(tx: Tx) -> dict[str, Role]:
    return {str(name): Role(str(name), frozenset(json.loads(perms)), cast(ScopeKind, scope),
                            bool(masked))
            for name, perms, scope, masked in tx.all(
                "SELECT role, permissions, scope, masked FROM roles ORDER BY role")}
