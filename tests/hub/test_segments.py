"""Segments, rule-based tags and lifecycle stages, on both backends: conditions as the chain
writes them, materialised whole and then member by member as merged data changes, refused
with a clear error naming the part when malformed, unknown or circular (nothing saved)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.service import EdgeService
from hub.core.db import HubDatabase
from hub.core.projections import ProjectionRunner
from hub.ledger.apply import apply_batch
from hub.members import lifecycle, rfm, segments, tags
from hub.members.conditions import Condition, Context, compile_condition
from hub.members.segment_keeper import SegmentKeeper
from hub.projections.catalog import projections
from protocol.errors import ServiceError
from protocol.hlc import HybridClock
from tests.edge.conftest import register, sell
from tests.hub.test_ingest import _store, batches

TODAY = date(2026, 11, 30)
ZONE = "Asia/Shanghai"
RULES = lifecycle.LifecycleRules()


class Shop:
    """One store whose clock is set to past days (the hub dates a sale by its HLC), synced to
    the hub on demand, projections and keeper run as the hub runs them."""

    def __init__(self, svc: EdgeService, db: HubDatabase) -> None:
        self.svc, self.db, self.ms = svc, db, 0
        svc.context.clock = HybridClock(physical_ms=lambda: self.ms)
        self.keeper = SegmentKeeper(db, ZONE, RULES, today=lambda: TODAY)
        self.ids: dict[str, str] = {}

    def at(self, day: date) -> None:
        self.ms = max(self.ms, int(datetime(day.year, day.month, day.day, 4,
                                            tzinfo=UTC).timestamp() * 1000))
        self.svc.context.today_override = day

    async def sell(self, who: str, amount: int, ago: int, qty: int = 1,
                   category: str = "grocery", sku: str = "A") -> None:
        self.at(TODAY - timedelta(days=ago))
        await sell(self.svc, [(sku, category, qty, amount)], member_id=self.ids[who])

    async def sync(self) -> None:
        for batch in batches(str(self.svc.config.database.path), "S001", 50):
            await self.db.transaction(lambda tx, b=batch: apply_batch(tx, b, 1))
        await ProjectionRunner(self.db, projections(ZONE)).catch_up()


async def _shop(tmp_path: Path, db: HubDatabase) -> Shop:
    """A regular, a big spender, a once-only buyer, one who bought only long ago, one who
    never bought."""
    shop = Shop(await _store(tmp_path, "S001", 1), db)
    shop.at(TODAY - timedelta(days=401))
    for i, who in enumerate(("regular", "big", "once", "old", "never")):
        shop.ids[who] = (await register(shop.svc, f"1380013800{i}", name=who))["member_id"]
    for ago, who, amount, qty in [(400, "old", 50_000, 1), (200, "big", 900_000, 3),
                                  (100, "regular", 5_000, 1), (40, "regular", 5_000, 1),
                                  (5, "once", 1_000, 1), (2, "regular", 5_000, 1)]:
        await shop.sell(who, amount, ago, qty, sku="B" if who == "once" else "A")
    await shop.sync()
    return shop


async def _create(db: HubDatabase, name: str, tree: Any, tag: str | None = None) -> str:
    made = await db.transaction(lambda tx: segments.create(
        tx, name=name, definition=tree, for_tills=False, tag=tag, by="mkt", now_ms=1,
        today=TODAY, zone=ZONE))
    return str(made["segment_id"])


async def _members(db: HubDatabase, segment_id: str, shop: Shop) -> set[str]:
    names = {v: k for k, v in shop.ids.items()}
    rows = await db.read(lambda tx: tx.all(
        "SELECT member_id FROM segment_members WHERE segment_id = ?", (segment_id,)))
    return {names[str(r[0])] for r in rows}


@pytest.fixture
async def shop(tmp_path: Path, hub_db: HubDatabase) -> Any:
    s = await _shop(tmp_path, hub_db)
    yield s
    await s.svc.close()


async def test_segments_hold_exactly_the_members_their_conditions_name(
        shop: Shop, hub_db: HubDatabase) -> None:
    db = hub_db
    await db.transaction(lambda tx: tags.define(tx, "vip", "value", "big spenders", "mkt", 1))
    lapsed = await _create(db, "lapsed", {"field": "days_since_purchase", "gte": 30})
    spenders = await _create(db, "spenders", {"field": "spend", "window_days": 365,
                                              "gte": 10_000})
    repeat = await _create(db, "repeat", {"field": "purchases", "gte": 2})
    vip_rule = await _create(db, "vip rule", {"field": "spend", "gte": 1_000_000}, tag="vip")
    vips = await _create(db, "vips", {"field": "tag", "any": ["vip"]})
    rest = await _create(db, "not lapsed", {"not": {"field": "segment", "in": [lapsed]}})
    sku_b = await _create(db, "bought B", {"all": [{"field": "sku", "in": ["B"],
                                                    "window_days": 30},
                                                   {"field": "registered_store",
                                                    "in": ["S001"]}]})
    both = await _create(db, "lapsed spenders", {"all": [
        {"field": "segment", "in": [lapsed]}, {"field": "segment", "in": [spenders]}]})
    await shop.keeper.run()
    assert await _members(db, lapsed, shop) == {"big", "old"}
    assert await _members(db, spenders, shop) == {"regular", "big"}  # old: before the window
    assert await _members(db, repeat, shop) == {"regular"}
    assert await _members(db, vip_rule, shop) == {"big"}
    assert await _members(db, vips, shop) == {"big"}  # the rule tag, kept before its reader
    assert await _members(db, rest, shop) == {"regular", "once", "never"}
    assert await _members(db, sku_b, shop) == {"once"}
    assert await _members(db, both, shop) == {"big"}
    got = await db.read(lambda tx: segments.get(tx, spenders))
    assert (got["members"], got["due"], got["version"]) == (2, False, 1)
    evals = await db.read(lambda tx: segments.evaluations(tx, spenders))
    assert [(e["kind"], e["members"], e["added"]) for e in evals] == [("whole", 2, 2)]
    big = shop.ids["big"]
    assert {"tag": "vip", "source": "rule"} in [
        {k: t[k] for k in ("tag", "source")} for t in await db.read(
            lambda tx: tags.of_member(tx, big))]

    # A sale merged later: "once" spends, lapsed "old" comes back; only they are looked at.
    await shop.sell("once", 20_000, 1)
    await shop.sell("old", 2_000, 1)
    await shop.sync()
    done = await shop.keeper.run()
    assert done["members"] == 2
    assert await _members(db, spenders, shop) == {"regular", "big", "once"}
    assert await _members(db, lapsed, shop) == {"big"}
    assert await _members(db, rest, shop) == {"regular", "once", "never", "old"}
    assert await _members(db, both, shop) == {"big"}
    evals = await db.read(lambda tx: segments.evaluations(tx, spenders))
    assert (evals[0]["kind"], evals[0]["added"], evals[0]["removed"],
            evals[0]["members"]) == ("members", 1, 0, 3)

    # Previews count what evaluation keeps.
    preview = await db.read(lambda tx: segments.preview(
        tx, Condition.parse({"field": "spend", "window_days": 365, "gte": 10_000}), TODAY,
        ZONE, "1 = 1", ()))
    assert preview["count"] == 3 and len(preview["sample"]) == 3

    # HQ tags: set by hand, a segment on them follows at the next pass.
    await db.transaction(lambda tx: tags.define(tx, "staff", "", "", "mkt", 1))
    on_staff = await _create(db, "staff", {"field": "tag", "all": ["staff"]})
    await shop.keeper.run()
    assert await _members(db, on_staff, shop) == set()
    never = shop.ids["never"]
    await db.transaction(lambda tx: tags.set_hq(tx, [never], ["staff"], [], "boss", 5))
    assert (await shop.keeper.run())["members"] == 1
    assert await _members(db, on_staff, shop) == {"never"}
    with pytest.raises(ServiceError, match="kept by a rule"):
        await db.transaction(lambda tx: tags.set_hq(tx, [never], ["vip"], [], "boss", 5))


async def test_a_gender_hq_sets_is_a_segment_condition_and_erasure_takes_it(
        shop: Shop, hub_db: HubDatabase) -> None:
    """A gender given at registration at the till (member.registered v3) or kept by HQ
    (member.profile_changed v4 of its stream); segments select on it, a member whose gender is
    not known is in no list of them (so under a NOT of one), and erasure takes it from the
    member and from the log."""
    from hub.ledger import hq_events
    from protocol.codec import decode
    from protocol.events import GENDER_REGISTERED, GENDER_VERSION, Event

    shop.at(TODAY)
    shop.ids["new"] = (await shop.svc.register_member(
        terminal_id="POS-1", idem_key="g1", phone="13900139000", name="new",
        gender="female"))["member_id"]
    await shop.sync()
    registered = await hub_db.read(lambda tx: decode(bytes(tx.scalar(
        "SELECT payload FROM events WHERE type = 'member.registered' AND member_id = ?",
        (shop.ids["new"],))), Event).body)
    assert (registered.v, registered.gender) == (  # type: ignore[union-attr]
        GENDER_REGISTERED, "female")

    merge = hq_events.Merge(HybridClock(), int(datetime(2026, 11, 30, tzinfo=UTC).timestamp()
                                               * 1000))
    for who, gender in (("regular", "female"), ("big", "male"), ("once", "female")):
        changed = await hub_db.transaction(lambda tx, w=who, g=gender: hq_events.change_profile(
            tx, shop.ids[w], {"gender": g}, "crm import", merge))
        assert changed["gender"] == gender
    women = await _create(hub_db, "women", {"field": "gender", "in": ["female"]})
    rest = await _create(hub_db, "not women", {"not": {"field": "gender", "in": ["female"]}})
    await shop.keeper.run()
    assert await _members(hub_db, women, shop) == {"regular", "once", "new"}
    assert await _members(hub_db, rest, shop) == {"big", "old", "never"}  # unknown included
    await hub_db.transaction(lambda tx: hq_events.erase_member(
        tx, shop.ids["once"], "dpo", "PIPL", merge))
    await shop.keeper.run()
    assert await _members(hub_db, women, shop) == {"regular", "new"}
    logged = await hub_db.read(lambda tx: [decode(bytes(p), Event).body for (p,) in tx.all(
        "SELECT payload FROM events WHERE type = 'member.profile_changed'"
        " AND member_id = ?", (shop.ids["once"],))])
    assert [(b.v, b.gender) for b in logged] == [  # type: ignore[union-attr]
        (GENDER_VERSION, None)]
    await hub_db.transaction(lambda tx: hq_events.erase_member(
        tx, shop.ids["new"], "dpo", "PIPL", merge))
    scrubbed = await hub_db.read(lambda tx: decode(bytes(tx.scalar(
        "SELECT payload FROM events WHERE type = 'member.registered' AND member_id = ?",
        (shop.ids["new"],))), Event).body)
    assert scrubbed.gender is None  # type: ignore[union-attr]
    assert await hub_db.read(lambda tx: tx.scalar(
        "SELECT count(*) FROM members WHERE gender IS NOT NULL")) == 2  # regular, big


async def test_points_lots_add_up_to_the_balances_and_say_what_expires(
        shop: Shop, hub_db: HubDatabase) -> None:
    """What is left of every member's lots is their points balance (no debts here), whatever
    order the draws came in; and a segment on points expiring finds the members whose lots end
    inside its window."""
    lots = {str(m): int(p) for m, p in await hub_db.read(lambda tx: tx.all(
        "SELECT member_id, sum(remaining) FROM point_lots GROUP BY member_id"))}
    balances = {str(m): int(p) for m, p in await hub_db.read(lambda tx: tx.all(
        "SELECT member_id, sum(points) FROM shares GROUP BY member_id HAVING sum(points) != 0"))}
    assert lots == balances and len(lots) == 4  # every buyer earned
    expiring = await hub_db.read(lambda tx: tx.all(
        "SELECT member_id, min(expires_on) FROM point_lots WHERE remaining > 0"
        " AND expires_on >= ? GROUP BY member_id", (TODAY.isoformat(),)))
    assert len(expiring) >= 2  # the demo's points expire; not all lots end the same day
    soonest = min(str(e) for _m, e in expiring)
    days = (date.fromisoformat(soonest) - TODAY).days + 1
    seg = await _create(hub_db, "expiring", {"field": "points_expiring", "window_days": days,
                                             "gte": 1})
    await shop.keeper.run()
    names = {v: k for k, v in shop.ids.items()}
    assert await _members(hub_db, seg, shop) == {names[str(m)] for m, e in expiring
                                                 if str(e) == soonest}


async def test_a_changed_definition_is_a_new_version_evaluated_whole(
        shop: Shop, hub_db: HubDatabase) -> None:
    seg = await _create(hub_db, "spenders", {"field": "spend", "gte": 10_000})
    await shop.keeper.run()
    assert await _members(hub_db, seg, shop) == {"regular", "big", "old"}
    await hub_db.transaction(lambda tx: segments.update(
        tx, seg, definition={"field": "spend", "gte": 100_000}, name=None, for_tills=None,
        by="mkt", now_ms=2, today=TODAY, zone=ZONE))
    await shop.keeper.run()
    assert await _members(hub_db, seg, shop) == {"big"}
    versions = await hub_db.read(lambda tx: segments.versions(tx, seg))
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[0]["definition"] == {"field": "spend", "gte": 10_000}
    evals = await hub_db.read(lambda tx: segments.evaluations(tx, seg))
    assert [(e["version"], e["kind"], e["members"], e["removed"]) for e in evals][:2] == [
        (2, "whole", 1, 2), (1, "whole", 3, 0)]
    archived = await hub_db.transaction(lambda tx: segments.archive(
        tx, seg, now_ms=3, today=TODAY, zone=ZONE))
    assert archived["state"] == "archived" and await _members(hub_db, seg, shop) == set()


async def test_segments_on_rfm_scores_follow_each_run(shop: Shop, hub_db: HubDatabase) -> None:
    top_m = await _create(hub_db, "top spenders", {"field": "rfm_m", "gte": 4})
    unscored = await _create(hub_db, "no purchase in the window", {"field": "rfm_m", "lte": 0})
    await shop.keeper.run()  # no run yet: every member scores 0
    assert await _members(hub_db, top_m, shop) == set()
    assert len(await _members(hub_db, unscored, shop)) == 5
    await hub_db.transaction(lambda tx: rfm.run(tx, rfm.RfmParams(as_of=TODAY), 1))
    assert await hub_db.transaction(lambda tx: segments.mark_due(tx, reads=["rfm"])) == 2
    await shop.keeper.run()
    # M ranks once (1,000) < regular (15,000) < big (2,700,000): scores 1, 2, 4
    assert await _members(hub_db, top_m, shop) == {"big"}
    assert await _members(hub_db, unscored, shop) == {"old", "never"}


@pytest.mark.parametrize(("tree", "message"), [
    ({"field": "spend", "in": ["x"]}, "condition: field spend takes gte and/or lte"),
    ({"all": [{"field": "tier", "in": ["gold"]}, {"field": "sku", "in": ["A"]}]},
     "all[1]: field sku needs window_days"),
    ({"any": [{"not": {"field": "height", "gte": 1}}]}, "any[0].not.field: unknown field"),
    ({"field": "lifecycle_stage", "in": ["asleep"]}, "unknown value 'asleep'"),
    ({"field": "gender", "in": ["f"]}, "unknown value 'f'"),
    ({"field": "tag", "any": ["nope"]}, "unknown tag 'nope'"),
    ({"field": "segment", "in": ["no-such"]}, "unknown segment 'no-such'"),
    ({"field": "purchases", "gte": 5, "lte": 2}, "nothing can match"),
    ({"field": "spend", "window_days": 99999, "gte": 1}, "window_days"),
])
async def test_bad_definitions_are_refused_naming_the_part(
        hub_db: HubDatabase, tree: Any, message: str) -> None:
    with pytest.raises(ServiceError, match=re.escape(message)) as caught:
        await _create(hub_db, "bad", tree)
    assert caught.value.status == 422
    assert await hub_db.read(lambda tx: tx.scalar("SELECT count(*) FROM segments")) == 0


async def test_a_segment_that_would_contain_itself_is_refused(hub_db: HubDatabase) -> None:
    a = await _create(hub_db, "a", {"field": "tier", "in": ["gold"]})
    b = await _create(hub_db, "b", {"field": "segment", "in": [a]})
    await hub_db.transaction(lambda tx: tags.define(tx, "t", "", "", "mkt", 1))
    await _create(hub_db, "c", {"field": "segment", "in": [b]}, tag="t")
    with pytest.raises(ServiceError, match="contain themselves: a -> c -> b -> a"):
        await hub_db.transaction(lambda tx: segments.update(
            tx, a, definition={"field": "tag", "any": ["t"]}, name=None, for_tills=None,
            by="mkt", now_ms=2, today=TODAY, zone=ZONE))
    got = await hub_db.read(lambda tx: segments.get(tx, a))
    assert got["version"] == 1 and got["definition"] == {"field": "tier", "in": ["gold"]}
    with pytest.raises(ServiceError, match="used by 'b'"):
        await hub_db.transaction(lambda tx: segments.archive(tx, a, now_ms=3, today=TODAY,
                                                             zone=ZONE))
    with pytest.raises(ServiceError, match="deeper than"):
        tree: Any = {"field": "tier", "in": ["gold"]}
        for _ in range(13):
            tree = {"not": tree}
        await _create(hub_db, "deep", tree)


async def test_lifecycle_stages_and_their_changes(shop: Shop, hub_db: HubDatabase) -> None:
    await shop.keeper.nightly()

    async def stages() -> dict[str, str]:
        names = {v: k for k, v in shop.ids.items()}
        return {names[str(m)]: str(s) for m, s in await hub_db.read(lambda tx: tx.all(
            "SELECT member_id, stage FROM member_lifecycle"))}

    assert await stages() == {"regular": "active", "big": "sleeping", "once": "active",
                              "old": "lost", "never": "lost"}
    sleeping = await _create(hub_db, "sleeping", {"field": "lifecycle_stage",
                                                  "in": ["sleeping", "lost"]})
    await shop.keeper.run()
    assert await _members(hub_db, sleeping, shop) == {"big", "old", "never"}
    await shop.sell("big", 1_000, 0)
    await shop.sync()
    await shop.keeper.run()  # the return is seen with the merge, not at midnight
    assert (await stages())["big"] == "reactivated"
    assert await _members(hub_db, sleeping, shop) == {"old", "never"}
    big = shop.ids["big"]
    assert [(c["from_stage"], c["to_stage"]) for c in await hub_db.read(
        lambda tx: lifecycle.history(tx, big))] == [(None, "sleeping"),
                                                   ("sleeping", "reactivated")]


def test_the_stage_rule() -> None:
    reg = date(2026, 1, 1)
    day = date(2026, 11, 30)
    rhythm = lifecycle.LifecycleRules(rhythm=3.0)

    def stage(rules: lifecycle.LifecycleRules, first: int | None, last: int | None, n: int,
              held: tuple[str, date] | None = None, registered: date = reg) -> str:
        f = day - timedelta(days=first) if first is not None else None
        last_day = day - timedelta(days=last) if last is not None else None
        return lifecycle.stage_of(rules, day, registered, f, last_day, n, held)

    assert stage(RULES, None, None, 0, registered=day - timedelta(days=3)) == "new"
    assert stage(RULES, None, None, 0) == "sleeping"
    assert stage(RULES, None, None, 0, registered=date(2025, 1, 1)) == "lost"
    assert stage(RULES, 50, 10, 3) == "active"
    assert stage(RULES, 200, 91, 3) == "sleeping"
    assert stage(RULES, 400, 366, 3) == "lost"
    # weekly buyer (gap 7 days): asleep after 21 silent days with rhythm 3; fixed days: not
    assert stage(rhythm, 78, 22, 9) == "sleeping" and stage(RULES, 78, 22, 9) == "active"
    assert stage(rhythm, 78, 21, 9) == "active"
    assert stage(rhythm, None, None, 0) == stage(RULES, None, None, 0)
    assert stage(rhythm, 30, 30, 1) == "active"  # one purchase: the fixed days
    back = (day - timedelta(days=10))
    assert stage(RULES, 300, 1, 4, ("sleeping", back)) == "reactivated"
    assert stage(RULES, 300, 1, 4, ("reactivated", back)) == "reactivated"
    assert stage(RULES, 300, 1, 4, ("reactivated", day - timedelta(days=90))) == "active"


def test_date_relative_conditions_compile_on_the_chain_calendar() -> None:
    ctx = Context(today=date(2027, 2, 26), zone=ZONE, dialect="sqlite")

    def params(tree: Any) -> list[Any]:
        return compile_condition(Condition.parse(tree), ctx)[1]

    # birthdays on the 26th, 27th, 28th of February and 1 March; 29 February is kept on the
    # 28th in 2027 (no leap day)
    assert params({"field": "birthday_in_days", "lte": 3}) == [
        "02-26", "02-27", "02-28", "02-29", "03-01"]
    assert params({"field": "age", "gte": 18, "lte": 30}) == ["2009-02-26", "1996-02-26"]
    assert params({"field": "days_since_purchase", "gte": 30}) == ["2027-01-27"]
    assert params({"field": "registration_channel", "in": ["store", "online"]}) == [
        "ONLINE", "HQ", "ONLINE"]  # not a virtual store, or the online one
    assert Condition.parse({"field": "tier", "in": ["gold"]}).relative is False
    assert Condition.parse({"field": "spend", "window_days": 7, "gte": 1}).relative is True




async def test_what_the_tills_need_travels_in_the_directory(
        shop: Shop, hub_db: HubDatabase) -> None:
    """Till segments, HQ and rule tags, the RFM group and the stage are in each member's entry;
    a change of any of them gives the member a new change number (stores catching up get it
    again) and nothing else does."""
    from hub.members import directory

    async def head() -> int:
        return int(await hub_db.read(directory.head))

    await shop.keeper.nightly()
    await hub_db.transaction(lambda tx: tags.define(tx, "big", "", "", "mkt", 1))
    lapsed = await _create(hub_db, "lapsed", {"field": "days_since_purchase", "gte": 30})
    big = await _create(hub_db, "big", {"field": "spend", "gte": 1_000_000}, tag="big")
    await hub_db.transaction(lambda tx: segments.update(
        tx, lapsed, definition=None, name=None, for_tills=True, by="mkt", now_ms=2,
        today=TODAY, zone=ZONE))
    before = await head()
    done = await shop.keeper.run()
    assert done["passes"] == 1  # its own new change numbers are not looked at again
    moved = await hub_db.read(lambda tx: directory.page(tx, "r", before, 100))
    names = {v: k for k, v in shop.ids.items()}
    assert {names[e.member_id] for e in moved.members} == {"big", "old"}
    entry = await hub_db.read(lambda tx: directory.entry(tx, shop.ids["big"]))
    assert entry is not None
    assert [(s.segment_id, s.name) for s in entry.segments] == [(lapsed, "lapsed")]
    assert (entry.hq_tags, entry.stage, entry.rfm_group) == (["big"], "sleeping", None)
    assert (await shop.keeper.run())["members"] == 0  # quiet: nothing to look at

    # An RFM run sends the members whose group changed: all of them the first time, then
    # only those who moved.
    first = await hub_db.transaction(lambda tx: rfm.run(tx, rfm.RfmParams(as_of=TODAY), 1))
    assert first["directory_churn"] == 5
    entry = await hub_db.read(lambda tx: directory.entry(tx, shop.ids["big"]))
    assert entry is not None and entry.rfm_group == "LLH"  # R 1, F 1 (one sale), M 4
    second = await hub_db.transaction(lambda tx: rfm.run(tx, rfm.RfmParams(as_of=TODAY), 2))
    assert second["directory_churn"] == 0
    assert (await shop.keeper.run())["members"] == 0  # RFM reads no segment here
    del big


async def test_a_big_difference_is_written_in_pages_and_counted_whole(
        shop: Shop, hub_db: HubDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    from hub.members import segment_keeper

    monkeypatch.setattr(segment_keeper, "WRITE_PAGE", 2)
    everyone = await _create(hub_db, "everyone", {"field": "purchases", "gte": 0})
    done = await shop.keeper.run()
    assert done["added"] == 5
    assert await _members(hub_db, everyone, shop) == set(shop.ids)
    evals = await hub_db.read(lambda tx: segments.evaluations(tx, everyone))
    assert [(e["members"], e["added"]) for e in evals] == [(5, 5)]
