"""A store's offline allowance follows the hub's grants (``edge.allowance``): the directory entry
and the reply to an online authorisation carry the store's cumulative grant, folded in
idempotently and monotonically in whatever order they arrive; the configured default holds
until the hub has granted anything, and entries from an older hub leave it in force."""

from __future__ import annotations

import sqlite3
from itertools import accumulate
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge import allowance
from edge.context import StoreContext
from edge.db import connect_sync, migrate
from edge.directory import apply_authorization, apply_entry, apply_page
from edge.errors import EdgeError
from protocol.codec import decode, encode
from protocol.hlc import HybridClock
from protocol.sync import DirectoryPage, MemberEntry, RpcReply, StoreGrant
from tests.edge.conftest import make_config

DEFAULT_POINTS, DEFAULT_SV = 20_000, 100_000


def _context(tmp_path: Path) -> StoreContext:
    cfg = make_config(tmp_path, store={"store_id": "S001", "store_number": 1},
                      allowance={"points": DEFAULT_POINTS, "stored_value": DEFAULT_SV})
    return StoreContext(cfg, HybridClock(), 1)


def _store(tmp_path: Path) -> tuple[sqlite3.Connection, StoreContext]:
    conn = connect_sync(tmp_path / "edge.db")
    migrate(conn)
    return conn, _context(tmp_path)


def entry(mid: str, *grants: tuple[str, int, int]) -> MemberEntry:
    return MemberEntry(member_id=mid, member_code=f"C{mid}", home_store="S001",
                       grants=[StoreGrant(store_id=s, points_granted=p, sv_granted=v)
                               for s, p, v in grants])


def row(conn: sqlite3.Connection, mid: str) -> sqlite3.Row | None:
    r: sqlite3.Row | None = conn.execute("SELECT * FROM allowances WHERE member_id = ?",
                                         (mid,)).fetchone()
    return r


def test_the_limit_follows_this_stores_grant_in_the_directory(tmp_path: Path) -> None:
    conn, ctx = _store(tmp_path)
    assert allowance.remaining(conn, ctx, "m1") == (DEFAULT_POINTS, DEFAULT_SV)
    apply_entry(conn, ctx, entry("m1", ("S002", 700, 900)))  # another store's grant
    assert allowance.remaining(conn, ctx, "m1") == (DEFAULT_POINTS, DEFAULT_SV)
    assert row(conn, "m1") is None
    # The hub's first grant here: points follow it, stored value (nothing granted) keeps the
    # configured default.
    apply_entry(conn, ctx, entry("m1", ("S001", 700, 0), ("S002", 5, 5)))
    assert allowance.remaining(conn, ctx, "m1") == (700, DEFAULT_SV)
    allowance.consume(conn, ctx, "m1", 300, 0)
    assert allowance.remaining(conn, ctx, "m1") == (400, DEFAULT_SV)
    with pytest.raises(EdgeError) as err:
        allowance.consume(conn, ctx, "m1", 401, 0)
    assert err.value.details["allowed"] == 400 and err.value.details["online_request"] == 1
    # A top-up (the hub saw the 300 spent) raises the limit; an older entry changes nothing.
    apply_entry(conn, ctx, entry("m1", ("S001", 1_000, 50_000)))
    assert allowance.remaining(conn, ctx, "m1") == (700, 50_000)
    apply_entry(conn, ctx, entry("m1", ("S001", 700, 0)))
    assert allowance.remaining(conn, ctx, "m1") == (700, 50_000)
    r = row(conn, "m1")
    assert r is not None and (r["hub_points_granted"], r["hub_sv_granted"]) == (1_000, 50_000)
    # A refund gives back what it returns to the member (the hub takes it off ``spent`` too).
    allowance.give_back(conn, ctx, "m1", 100, 0)
    assert allowance.remaining(conn, ctx, "m1") == (800, 50_000)


def test_entries_without_grants_keep_the_default(tmp_path: Path) -> None:
    conn, ctx = _store(tmp_path)
    page = DirectoryPage(request_id="r", after=0, upto=1, snapshot=True,
                         members=[entry("m1", ("S001", 700, 0))])
    # What a hub that predates standing allowances sends: no ``grants`` at all.
    data = msgpack.unpackb(encode(page), raw=False)
    del data["members"][0]["grants"]
    old = decode(msgpack.packb(data, use_bin_type=True), DirectoryPage)
    assert old.members[0].grants == []
    assert apply_page(conn, ctx, old) == 1
    assert conn.execute("SELECT 1 FROM members WHERE member_id = 'm1'").fetchone() is not None
    assert allowance.remaining(conn, ctx, "m1") == (DEFAULT_POINTS, DEFAULT_SV)
    allowance.consume(conn, ctx, "m1", 1_000, 0)
    assert allowance.remaining(conn, ctx, "m1") == (DEFAULT_POINTS - 1_000, DEFAULT_SV)
    # An older hub's authorisation reply decodes too, without cumulative totals.
    reply = decode(msgpack.packb({"v": 1, "request_id": "q", "ok": True, "granted_points": 5},
                                 use_bin_type=True), RpcReply)
    assert (reply.points_granted_total, reply.sv_granted_total) == (0, 0)


def _deliver(conn: sqlite3.Connection, ctx: StoreContext, road: str, total: int, *,
             online_points: int) -> int:
    """The hub's cumulative points grant ``total`` for m1 here, reaching the store by an online
    reply (``rpc``) or the directory (``dir``); returns the store's points limit after it."""
    if road == "rpc":
        allowance.grant(conn, ctx, "m1", online_points, 0, points_total=total, sv_total=0)
    else:
        apply_entry(conn, ctx, entry("m1", ("S001", total, 0)))
    r = row(conn, "m1")
    assert r is not None
    return int(r["points_limit"])


def test_an_online_grant_before_or_after_the_directory_ends_the_same(tmp_path: Path) -> None:
    # The hub stands 500 points here, then authorises 300 more online (cumulative 800). The
    # directory built before the authorisation says 500, the one after says 800.
    def run(name: str, steps: list[tuple[str, int]]) -> list[int]:
        conn = connect_sync(tmp_path / f"{name}.db")
        migrate(conn)
        ctx = _context(tmp_path)
        allowance.consume(conn, ctx, "m1", 200, 0)  # spent under the default first
        limits = []
        for road, total in steps:
            limits.append(_deliver(conn, ctx, road, total, online_points=300))
        return limits

    assert run("a", [("dir", 500), ("rpc", 800), ("dir", 800), ("dir", 500)]) == [
        500, 800, 800, 800]
    assert run("b", [("rpc", 800), ("dir", 500), ("dir", 800), ("rpc", 800)]) == [
        800, 800, 800, 800]
    assert run("c", [("dir", 800), ("rpc", 800), ("dir", 500)]) == [800, 800, 800]


@settings(max_examples=80, deadline=None)
@given(data=st.data(), steps=st.lists(st.integers(1, 5_000), min_size=1, max_size=8))
def test_grants_fold_in_monotonically_in_any_order(tmp_path_factory: pytest.TempPathFactory,
                                                   data: st.DataObject,
                                                   steps: list[int]) -> None:
    # The hub's cumulative grant here rises by ``steps``; each figure reaches the store by the
    # directory or an online reply, some twice, in any order.
    totals = list(accumulate(steps))
    deliveries = [(road, t) for t in totals
                  for road in data.draw(st.lists(st.sampled_from(["dir", "rpc"]), min_size=1,
                                                 max_size=2))]
    order = data.draw(st.permutations(deliveries))
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.row_factory = sqlite3.Row
    migrate(conn)
    ctx = _context(tmp_path_factory.getbasetemp())
    seen: list[int] = []
    for road, total in order:
        seen.append(_deliver(conn, ctx, road, total, online_points=1))
        assert seen[-1] == max(t for _, t in order[:len(seen)])  # the largest figure seen
    assert seen == sorted(seen)  # never down
    assert seen[-1] == totals[-1]


def test_the_first_grant_replaces_the_default_and_the_online_request_covers_it(
        tmp_path: Path) -> None:
    conn, ctx = _store(tmp_path)
    allowance.consume(conn, ctx, "m1", 15_000, 0)  # under the default of 20,000
    with pytest.raises(EdgeError) as err:
        allowance.consume(conn, ctx, "m1", 8_000, 0)
    d = err.value.details
    assert (d["allowed"], d["requested"]) == (5_000, 8_000)
    # Once the hub grants, the limit is its grant: what is left of the default is gone, so the
    # store asks for all 8,000, not for the 3,000 beyond the default. The hub, which saw the
    # 15,000 spent here with nothing granted, grows the grant past them, then by the 8,000.
    assert d["online_request"] == 8_000
    hub_total = 15_000 + 8_000  # hub.ledger.allowances.Ledger.hold_more
    allowance.grant(conn, ctx, "m1", d["online_request"], 0, points_total=hub_total)
    assert allowance.remaining(conn, ctx, "m1") == (8_000, DEFAULT_SV)
    allowance.consume(conn, ctx, "m1", 8_000, 0)
    assert allowance.remaining(conn, ctx, "m1") == (0, DEFAULT_SV)
    # Had it asked for the 3,000 beyond the default, the sale would not fit after the grant.
    conn2 = connect_sync(tmp_path / "other.db")
    migrate(conn2)
    allowance.consume(conn2, ctx, "m1", 15_000, 0)
    allowance.grant(conn2, ctx, "m1", 3_000, 0, points_total=15_000 + 3_000)
    assert allowance.remaining(conn2, ctx, "m1") == (3_000, DEFAULT_SV)


def test_a_reply_without_totals_adds_to_the_limit_as_before(tmp_path: Path) -> None:
    conn, ctx = _store(tmp_path)
    allowance.grant(conn, ctx, "m1", 300, 40)
    assert allowance.remaining(conn, ctx, "m1") == (DEFAULT_POINTS + 300, DEFAULT_SV + 40)
    r = row(conn, "m1")
    assert r is not None and r["granted_by"] == "hub" and r["hub_points_granted"] == 0
    # The directory's figure then takes over.
    apply_entry(conn, ctx, entry("m1", ("S001", 900, 0)))
    assert allowance.remaining(conn, ctx, "m1") == (900, DEFAULT_SV + 40)


def test_spending_under_the_default_before_v8_is_not_counted_against_hub_grants(
        tmp_path: Path) -> None:
    conn = connect_sync(tmp_path / "old.db")
    migrate(conn, target=7)
    rows: list[tuple[Any, ...]] = [("m1", 20_000, 300, 100_000, 1_000, "config"),
                                   ("m2", 20_300, 50, 100_000, 0, "hub")]
    conn.executemany("INSERT INTO allowances(member_id, points_limit, points_used, sv_limit,"
                     " sv_used, granted_by) VALUES (?, ?, ?, ?, ?, ?)", rows)
    migrate(conn)
    ctx = _context(tmp_path)
    # Nothing changes until the hub grants.
    assert allowance.remaining(conn, ctx, "m1") == (19_700, 99_000)
    apply_entry(conn, ctx, entry("m1", ("S001", 1_000, 2_000)))
    apply_entry(conn, ctx, entry("m2", ("S001", 1_000, 2_000)))
    # m1 spent under the default only, which the hub's books never counted: the whole grant
    # is left. m2 had an online grant before, whose spending the hub did count.
    assert allowance.remaining(conn, ctx, "m1") == (1_000, 2_000)
    assert allowance.remaining(conn, ctx, "m2") == (950, 2_000)


def merged_entry(alias: str, survivor: str) -> MemberEntry:
    return MemberEntry(member_id=alias, member_code=f"C{alias}", home_store="S001",
                       merged_into=survivor)


def survivor_entry(mid: str, aliases: list[str], *grants: tuple[str, int, int]) -> MemberEntry:
    return entry(mid, *grants).model_copy(update={"aliases": aliases})


@pytest.mark.parametrize("first", ["alias", "survivor"])
def test_a_merged_ids_allowance_joins_the_members_whichever_entry_comes_first(
        tmp_path: Path, first: str) -> None:
    """The hub merged m-old into m-new and moved m-old's grants here (700 points, 400 spent of
    them) onto m-new's (300): m-new's entry now says 1,000. The store folds m-old's row into
    m-new's, so the 400 it spent under m-old count against the 1,000. Without the fold the
    store would let the member spend 1,000 - 100 here, 400 more than the hub holds for it."""
    conn, ctx = _store(tmp_path)
    apply_entry(conn, ctx, entry("m-old", ("S001", 700, 0)))
    apply_entry(conn, ctx, entry("m-new", ("S001", 300, 5_000)))
    allowance.consume(conn, ctx, "m-old", 400, 0)
    allowance.consume(conn, ctx, "m-new", 100, 1_000)
    combined = survivor_entry("m-new", ["m-old"], ("S001", 1_000, 5_000))
    if first == "alias":
        apply_entry(conn, ctx, merged_entry("m-old", "m-new"))
        assert row(conn, "m-old") is None
        assert allowance.remaining(conn, ctx, "m-new") == (1_000 - 500, 4_000)
    apply_entry(conn, ctx, combined)
    apply_entry(conn, ctx, merged_entry("m-old", "m-new"))
    apply_entry(conn, ctx, combined)  # again: nothing changes
    r = row(conn, "m-new")
    assert r is not None and row(conn, "m-old") is None
    assert (r["points_used"], r["hub_points_granted"], r["points_limit"]) == (500, 1_000, 1_000)
    assert allowance.remaining(conn, ctx, "m-new") == (500, 4_000)
    # A cart opened under the old id before the merge was heard spends from the member's row.
    assert allowance.remaining(conn, ctx, "m-old") == (500, 4_000)
    allowance.consume(conn, ctx, "m-old", 500, 0)
    with pytest.raises(EdgeError):
        allowance.consume(conn, ctx, "m-new", 1, 0)
    allowance.give_back(conn, ctx, "m-old", 200, 0)  # a refund of a sale under the old id
    assert allowance.remaining(conn, ctx, "m-new") == (200, 4_000)
    assert row(conn, "m-old") is None


def test_a_merge_of_two_members_on_the_default_keeps_the_default_with_both_spendings(
        tmp_path: Path) -> None:
    conn, ctx = _store(tmp_path)
    for mid in ("m-old", "m-new"):
        apply_entry(conn, ctx, entry(mid))
    allowance.consume(conn, ctx, "m-old", 1_500, 10_000)
    allowance.consume(conn, ctx, "m-new", 500, 0)
    apply_entry(conn, ctx, survivor_entry("m-new", ["m-old"]))
    assert allowance.remaining(conn, ctx, "m-new") == (DEFAULT_POINTS - 2_000,
                                                       DEFAULT_SV - 10_000)
    r = row(conn, "m-new")
    assert r is not None and r["granted_by"] == "config" and row(conn, "m-old") is None


def test_an_online_grant_that_tells_of_a_merge_folds_the_merged_id_first(
        tmp_path: Path) -> None:
    """The hub merged m-old into m-new before this store heard of it, and moved m-old's grant
    here (700, 400 of it spent) into m-new's (300, 100 spent). An online authorisation of 200
    more for m-new answers with the combined total, 1,200, and m-new's entry as it now stands.
    The store folds m-old's row in before it takes the total: 1,200 - 500 spent = 700 left.
    Taking the total alone would leave 1,100 under m-new and 300 more under m-old."""
    conn, ctx = _store(tmp_path)
    apply_entry(conn, ctx, entry("m-old", ("S001", 700, 0)))
    apply_entry(conn, ctx, entry("m-new", ("S001", 300, 0)))
    allowance.consume(conn, ctx, "m-old", 400, 0)
    allowance.consume(conn, ctx, "m-new", 100, 0)
    reply = RpcReply(request_id="q", ok=True, granted_points=200, points_granted_total=1_200,
                     member=survivor_entry("m-new", ["m-old"], ("S001", 1_200, 0)))
    apply_authorization(conn, ctx, "m-new", reply)
    assert row(conn, "m-old") is None
    assert allowance.remaining(conn, ctx, "m-new")[0] == 700
    assert allowance.remaining(conn, ctx, "m-old")[0] == 700  # the same row now
    # A reply from a hub that sends no entry still takes the totals.
    apply_authorization(conn, ctx, "m-new", RpcReply(
        request_id="q2", ok=True, granted_points=100, points_granted_total=1_300))
    assert allowance.remaining(conn, ctx, "m-new")[0] == 800
