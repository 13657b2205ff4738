"""Checks that must hold on any edge database at any moment, used by many tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from protocol.codec import decode
from protocol.events import Event, points_delta, stored_value_delta


def snapshot(path: Path | str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table: two equal snapshots mean nothing changed."""
    conn = sqlite3.connect(str(path))
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                for t in tables}
    finally:
        conn.close()


def check(path: Path | str) -> dict[str, int]:
    """Assert the ledgers, lots, balances, sales and outbox agree; returns a few counts."""
    conn = sqlite3.connect(str(path))
    conn.row_factory = sqlite3.Row
    try:
        for m in conn.execute("SELECT * FROM members"):
            mid = m["member_id"]
            ledger = conn.execute("SELECT coalesce(sum(delta), 0) FROM points_ledger"
                                  " WHERE member_id = ?", (mid,)).fetchone()[0]
            lots = conn.execute("SELECT coalesce(sum(remaining), 0) FROM point_lots"
                                " WHERE member_id = ?", (mid,)).fetchone()[0]
            # Points of other stores redeemed here are in the ledger, not in local lots.
            assert m["points_balance"] == lots == ledger + m["remote_points_used"], \
                (mid, m["points_balance"], ledger, lots)
            p, b = conn.execute("SELECT coalesce(sum(principal_delta), 0),"
                                " coalesce(sum(bonus_delta), 0) FROM sv_ledger"
                                " WHERE member_id = ?", (mid,)).fetchone()
            # What was spent here of stored value topped up elsewhere is in this ledger but
            # not in the local balance.
            assert (m["sv_principal"] - m["remote_sv_principal_used"],
                    m["sv_bonus"] - m["remote_sv_bonus_used"]) == (p, b), (mid, p, b)
        for s in conn.execute("SELECT * FROM sales"):
            sid = s["sale_id"]
            net = conn.execute("SELECT sum(net), sum(gross), sum(discount) FROM sale_lines"
                               " WHERE sale_id = ?", (sid,)).fetchone()
            assert net[0] == s["total"] and net[1] == s["subtotal"] \
                and net[2] == s["discount_total"], sid
            paid = conn.execute("SELECT sum(amount) FROM sale_tenders WHERE sale_id = ?",
                                (sid,)).fetchone()[0]
            assert paid == s["total"], (sid, paid, s["total"])
            refunded = conn.execute("SELECT coalesce(sum(amount), 0) FROM refunds"
                                    " WHERE sale_id = ?", (sid,)).fetchone()[0]
            assert refunded == s["refunded_total"] <= s["total"], sid
        epochs = [r[0] for r in conn.execute("SELECT DISTINCT epoch FROM outbox")]
        events = 0
        for epoch in epochs:
            seqs = [r[0] for r in conn.execute(
                "SELECT seq FROM outbox WHERE epoch = ? ORDER BY seq", (epoch,))]
            last = conn.execute("SELECT value FROM meta WHERE key = ?",
                                (f"outbox_seq:{epoch}",)).fetchone()
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "gap in outbox seq"
            assert last is not None and int(last[0]) == seqs[-1]
            events += len(seqs)
        return {"members": conn.execute("SELECT count(*) FROM members").fetchone()[0],
                "sales": conn.execute("SELECT count(*) FROM sales").fetchone()[0],
                "events": events}
    finally:
        conn.close()


def outbox_events(path: Path | str) -> list[Event]:
    conn = sqlite3.connect(str(path))
    try:
        return [decode(bytes(r[0]), Event)
                for r in conn.execute("SELECT payload FROM outbox ORDER BY epoch, seq")]
    finally:
        conn.close()


def replayed_balances(path: Path | str) -> dict[str, tuple[int, int, int]]:
    """Per member (points, principal, bonus) rebuilt from outbox events alone, as the hub will.

    Only meaningful for members registered at this store with nothing pruned.
    """
    out: dict[str, list[int]] = {}
    for ev in outbox_events(path):
        mid = getattr(ev.body, "member_id", None)
        if mid is None:
            continue
        acc = out.setdefault(mid, [0, 0, 0])
        acc[0] += points_delta(ev.body)
        p, b = stored_value_delta(ev.body)
        acc[1] += p
        acc[2] += b
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}
