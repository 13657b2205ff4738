"""A run's members and a member's RFM history, inside the caller's scope (``hub.members.rfm``
computes and keeps the runs; these only read them)."""

from __future__ import annotations

from typing import Any

from hub.auth.scope import Scope, in_scope
from hub.core.db import Tx
from hub.members import rfm
from hub.members.identity import canonical

_COLUMNS = ("s.member_id, s.recency_days, s.frequency, s.monetary, s.r, s.f, s.m, s.grp,"
            " s.was_r, s.was_f, s.was_m, s.was_grp")


def _row(r: Any, names: dict[str, str]) -> dict[str, Any]:
    """A member's scores in a run, and where they were in the run before it (0 and no group:
    not in it)."""
    return {"member_id": r[0], "recency_days": r[1], "frequency": r[2], "monetary": r[3],
            "r": int(r[4]), "f": int(r[5]), "m": int(r[6]), "group": r[7],
            "group_name": names.get(str(r[7]), str(r[7])), "was_r": int(r[8]),
            "was_f": int(r[9]), "was_m": int(r[10]), "was_group": r[11]}


def members(tx: Tx, scope: Scope, run_id: str, *, scores: dict[str, int], group: str | None,
            after: str, limit: int, was_group: str | None = None) -> list[dict[str, Any]]:
    """The run's members in the scope, by member id from ``after``; ``scores`` filters r/f/m,
    ``was_group`` the group they were in at the run before (those who fell from HHH …)."""
    rfm.get(tx, run_id)  # 404 for no such run
    where, params = scope.member_filter("mm")
    conds, values = ["s.run_id = ?", "s.member_id > ?", where], [run_id, after, *params]
    for dim, value in sorted(scores.items()):
        conds.append(f"s.{dim} = ?")  # dim is one of r, f, m (the route's parameters)
        values.append(value)
    if group is not None:
        conds.append("s.grp = ?")
        values.append(group)
    if was_group is not None:
        conds.append("s.was_grp = ?")
        values.append(was_group)
    names = rfm.group_names(tx)
    return [_row(r, names) for r in tx.all(
        f"SELECT {_COLUMNS} FROM rfm_scores s JOIN members mm ON mm.member_id = s.member_id"
        f" WHERE {' AND '.join(conds)} ORDER BY s.member_id LIMIT ?", (*values, limit))]


def history(tx: Tx, scope: Scope, member_id: str) -> list[dict[str, Any]]:
    """The member's scores in every kept run, oldest first."""
    member = canonical(tx, member_id)
    in_scope(scope, tx, member)
    names = rfm.group_names(tx)
    # By key, run by run: the runs' ids as a list the key is searched with. Joined from the
    # runs instead, SQLite (no statistics) read every score of every run to find the
    # member's: ~95 ms of a member's card at a million members.
    return [{"run_id": r[12], "as_of": r[13], **_row(r, names)} for r in tx.all(
        f"SELECT {_COLUMNS}, s.run_id, u.as_of FROM rfm_scores s JOIN rfm_runs u"
        " ON u.run_id = s.run_id WHERE s.run_id IN (SELECT run_id FROM rfm_runs)"
        " AND s.member_id = ? ORDER BY u.created_ms, u.run_id", (member,))]
