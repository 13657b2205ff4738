"""The one place that decides what an HQ user sees (HQ.md, principle 6).

A ``Scope`` is made from the signed-in principal's role and places; HQ reads of member data go
through ``member_view`` here (the API's routes get a ``Scope`` from ``hub.api.deps.needs``
and cannot read the hub's database otherwise: ``tests/test_boundaries.py``).

Which members a scope sees: ``all``; ``regions`` and ``stores``: members registered at one of
its stores or who bought at one of them (the ``member_stores`` projection, so a purchase counts
once the projection has it); ``guide``: the members the guide looks after; ``none``: nobody.
A member who shops in two regions is seen by both regions' managers: the profile (masked), the
one chain-wide balance, and of the per-store figures (shares, allowances) only their stores'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hub.auth.roles import Role
from hub.auth.tokens import Principal
from hub.core.db import Tx, in_chunks
from protocol.errors import ServiceError

PERSONAL = ("phone", "name", "birthday", "cards", "email")


@dataclass(frozen=True)
class Scope:
    principal: Principal

    @property
    def role(self) -> Role:
        return self.principal.role

    def require(self, permission: str) -> None:
        if not self.role.allows(permission):
            raise ServiceError("forbidden", f"role {self.role.name} may not {permission}", 403)

    def store_ids(self, tx: Tx) -> frozenset[str] | None:
        """The stores this scope covers; None: every store."""
        user = self.principal.user
        if self.role.scope == "all":
            return None
        if self.role.scope == "stores":
            return frozenset(user.stores)
        if self.role.scope == "regions" and user.regions:
            found: set[str] = set()
            for chunk, marks in in_chunks(list(user.regions)):
                found.update(str(r[0]) for r in tx.all(
                    f"SELECT store_id FROM stores WHERE region IN ({marks})", chunk))
            return frozenset(found)
        return frozenset()

    def member_filter(self, alias: str) -> tuple[str, tuple[object, ...]]:
        """The SQL condition on the ``members`` row ``alias`` that holds for the members this
        scope sees, and its parameters: the one definition every read of members uses, so a
        scoped query is one query (``membergate-hub bench``: ``scoped_vs_unscoped_*``)."""
        user, kind = self.principal.user, self.role.scope
        if kind == "all":
            return "1 = 1", ()
        if kind == "guide":
            return f"{alias}.guide_id = ?", (user.guide_id,)
        if kind == "stores" and user.stores:
            marks = ", ".join("?" * len(user.stores))
            stores, params = f"({marks})", tuple(user.stores)
        elif kind == "regions" and user.regions:
            marks = ", ".join("?" * len(user.regions))
            stores = f"(SELECT store_id FROM stores WHERE region IN ({marks}))"
            params = tuple(user.regions)
        else:
            return "1 = 0", ()
        return (f"({alias}.home_store IN {stores} OR EXISTS (SELECT 1 FROM member_stores ms"
                f" WHERE ms.member_id = {alias}.member_id AND ms.store_id IN {stores}))",
                params + params)

    def store_filter(self, alias: str) -> tuple[str, tuple[object, ...]]:
        """The SQL condition on the ``stores`` row ``alias`` for the stores this scope covers."""
        user, kind = self.principal.user, self.role.scope
        if kind == "all":
            return "1 = 1", ()
        if kind == "stores" and user.stores:
            return (f"{alias}.store_id IN ({', '.join('?' * len(user.stores))})",
                    tuple(user.stores))
        if kind == "regions" and user.regions:
            return (f"{alias}.region IN ({', '.join('?' * len(user.regions))})",
                    tuple(user.regions))
        return "1 = 0", ()

    def row_security(self) -> dict[str, str]:
        """The settings PostgreSQL's row-level security reads (hub schema 13)."""
        user, kind = self.principal.user, self.role.scope
        if kind == "guide":
            return {"membergate.scope": "guide", "membergate.guide": user.guide_id or ""}
        if kind == "stores":
            return {"membergate.scope": "stores", "membergate.stores": ",".join(user.stores)}
        if kind == "regions":
            return {"membergate.scope": "regions", "membergate.regions": ",".join(user.regions)}
        return {"membergate.scope": kind}  # "all", or "none": nothing

    def sees_member(self, tx: Tx, member_id: str) -> bool:
        if self.role.scope == "all":
            return True
        where, params = self.member_filter("m")
        return tx.scalar(f"SELECT 1 FROM members m WHERE m.member_id = ? AND {where}",
                         (member_id, *params)) is not None


def mask_email(email: str | None) -> str | None:
    """wang.fang@example.cn -> w***@example.cn: the first letter and the domain."""
    if not email or "@" not in email:
        return email
    local, domain = email.rsplit("@", 1)
    return f"{local[:1]}***@{domain}"


def mask_phone(phone: str | None) -> str | None:
    """+8613800138000 -> +86138****8000: the country code, three digits, the last four."""
    if not phone:
        return phone
    head = 6 if phone.startswith("+86") else 4
    return phone[:head] + "*" * max(0, len(phone) - head - 4) + phone[-4:]


def mask_name(name: str) -> str:
    return name[:1] + "*" * (len(name) - 1) if len(name) > 1 else ("*" if name else "")


def mask_birthday(birthday: str | None) -> str | None:
    """1990-05-17 -> ****-05-**: the month stays (it decides birthday offers)."""
    return "****-" + str(birthday)[5:7] + "-**" if birthday else birthday


def mask_card(uid: str) -> str:
    return "*" * (len(uid) - 4) + uid[-4:]


def mask_member(view: dict[str, Any], reveal: frozenset[str] = frozenset()) -> dict[str, Any]:
    """``view`` with its personal fields masked, except those in ``reveal``."""
    out = dict(view)
    if "phone" not in reveal:
        out["phone"] = mask_phone(view.get("phone"))
    if "email" not in reveal and "email" in view:
        out["email"] = mask_email(view.get("email"))
    if "name" not in reveal:
        out["name"] = mask_name(view.get("name") or "")
    if "birthday" not in reveal:
        out["birthday"] = mask_birthday(view.get("birthday"))
    if "cards" not in reveal:
        out["cards"] = [mask_card(c) for c in view.get("cards", [])]
        out["card_states"] = [{**c, "card_uid": mask_card(c["card_uid"])}
                              for c in view.get("card_states", [])]
    return out


def in_scope(scope: Scope, tx: Tx, member_id: str) -> None:
    """404 for a member outside the scope, as for one that does not exist: a scope must not
    learn that a member exists elsewhere."""
    if not scope.sees_member(tx, member_id):
        raise ServiceError("member_not_found", "no member with this id", 404)


def per_store(scope: Scope, tx: Tx, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    stores = scope.store_ids(tx)
    return rows if stores is None else [r for r in rows if r.get("store_id") in stores]
