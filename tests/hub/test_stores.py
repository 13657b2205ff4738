"""The store registry (name, region, time zone, issuing legal entity) through the HQ API and
the command line, and every store's spend counted in its own calendar months."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from hub.api.app import create_app
from hub.app import Hub
from hub.cli import main as hub_main
from hub.config import HubConfig
from hub.core.db import HubDatabase, Tx
from hub.core.scheduler import Job
from hub.core.schema import migrate
from hub.ledger.apply import apply_batch
from hub.ledger.pipeline import IngestPipeline, Validators
from hub.members import tiers
from protocol.codec import encode
from provisioning.broker import load_fleet
from tests.hub.test_projections import Store, registered, sale
from tests.support.mosquitto import Mosquitto, mosquitto_fixture  # noqa: F401

TOKEN = "hq-test-token-0001"
FLEET = """
[hub]
username = "membergate-hub"

[[stores]]
store_id = "S001"
region = "east"
name = "南京路店"

[[stores]]
store_id = "S002"
region = "west"
name = "Kashgar"
timezone = "Asia/Urumqi"
legal_entity = "West Co."
"""


def hub_config(tmp_path: Path, **over: object) -> HubConfig:
    return HubConfig.model_validate({
        "hub": {"database": str(tmp_path / "hub.db"), "data_dir": str(tmp_path),
                "validate_workers": 0, "legal_entity": "Chain Co."},
        "broker": {"embedded_port": 0}, "api": {"token": TOKEN}, **over})


async def test_hq_reads_and_sets_stores_and_regions(tmp_path: Path) -> None:
    async with Hub(hub_config(tmp_path)) as hub, httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(hub)), base_url="http://hq",
            headers={"Authorization": f"Bearer {TOKEN}"}) as hq:
        assert (await hq.get("/v1/stores")).json() == []
        r = await hq.put("/v1/stores/S001", json={"name": "南京路店", "region": "east"})
        assert r.status_code == 200, r.text
        assert r.json() == {"store_id": "S001", "name": "南京路店", "region": "east",
                            "timezone": "Asia/Shanghai", "own_timezone": False,
                            "legal_entity": "Chain Co.", "seen": False}
        r = await hq.put("/v1/stores/S002", json={"name": "Kashgar", "region": "west",
                                                  "timezone": "Asia/Urumqi",
                                                  "legal_entity": "West Co."})
        assert r.json()["timezone"] == "Asia/Urumqi" and r.json()["own_timezone"]
        assert hub.zone_of("S002") == "Asia/Urumqi" and hub.zone_of("S001") == "Asia/Shanghai"
        assert (await hq.get("/v1/regions")).json() == [
            {"region": "east", "stores": ["S001"]}, {"region": "west", "stores": ["S002"]}]
        before = (await hq.get("/v1/stores")).json()
        for store_id, body, code in (
                ("S001", {"timezone": "Mars/Olympus"}, "invalid_store"),
                ("S001", {"region": "east/evil"}, "validation_error"),
                ("HQ", {"name": "not a store"}, "invalid_store"),
                ("S001", {"name": "x", "colour": "red"}, "validation_error")):
            r = await hq.put(f"/v1/stores/{store_id}", json=body)
            assert r.status_code == 422 and r.json()["error"]["code"] == code, r.text
        assert (await hq.get("/v1/stores")).json() == before  # refusals changed nothing
        r = await hq.get("/v1/stores/S999")
        assert r.status_code == 404 and r.json()["error"]["code"] == "store_not_found"
        fleet = (await hq.get("/v1/status")).json()["stores"]
        assert [(s["store_id"], s["region"], s["name"]) for s in fleet] == [
            ("S001", "east", "南京路店"), ("S002", "west", "Kashgar")]


def test_the_provisioning_fleet_file_loads_into_the_registry(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(FLEET, encoding="utf-8")
    load_fleet(fleet)  # the same file provisioning takes, timezone and legal_entity included
    config = tmp_path / "hub.toml"
    config.write_text(f'[hub]\ndatabase = "{tmp_path / "hub.db"}"\ndata_dir = "{tmp_path}"\n'
                      'legal_entity = "Chain Co."\n', encoding="utf-8")
    assert hub_main(["--config", str(config), "stores", "load", str(fleet)]) == 0
    assert hub_main(["--config", str(config), "stores", "load", str(fleet)]) == 0  # again
    capsys.readouterr()
    assert hub_main(["--config", str(config), "stores", "list", "--json"]) == 0
    stores = json.loads(capsys.readouterr().out)
    assert [(s["store_id"], s["region"], s["timezone"], s["legal_entity"]) for s in stores] == [
        ("S001", "east", "Asia/Shanghai", "Chain Co."),
        ("S002", "west", "Asia/Urumqi", "West Co.")]
    bad = tmp_path / "bad.toml"
    bad.write_text(FLEET.replace("Asia/Urumqi", "Asia/Nowhere"), encoding="utf-8")
    assert hub_main(["--config", str(config), "stores", "load", str(bad)]) == 2
    assert "Asia/Nowhere" in capsys.readouterr().err
    assert hub_main(["--config", str(config), "stores", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == stores  # nothing of the bad file written


NEW_YEAR_UTC = "2026-01-31T17:30:00"  # 2026-02-01 01:30 in Shanghai, 23:30 in Urumqi (UTC+6)


async def _spend(db: HubDatabase) -> dict[tuple[str, str], int]:
    return {(r[0], r[1]): int(r[2]) for r in await db.read(lambda tx: tx.all(
        "SELECT member_id, month, amount FROM spend_months"))}


async def test_each_store_counts_spend_in_its_own_calendar_months(hub_url: str) -> None:
    """A sale at 17:30 UTC on 31 January is February's in Shanghai, January's in Urumqi."""
    east, west = Store("S001"), Store("S002")
    zones = {"S002": "Asia/Urumqi"}
    async with HubDatabase(hub_url) as db:
        await db.transaction(migrate)
        applied: list[object] = []

        async def done(results: list[object]) -> None:
            applied.extend(results)

        async with Validators(0, 1 << 20) as validators, IngestPipeline(
                db, tiers.TierRules(), lambda: 0, done, validators=validators,
                chain_zone="Asia/Shanghai",
                zone_of=lambda s: zones.get(s, "Asia/Shanghai")) as pipeline:
            await pipeline.submit("S001", encode(east.batch(
                (NEW_YEAR_UTC, registered("m1", "+8613900000001")),
                (NEW_YEAR_UTC, sale("m1", ("dairy", 1, 1_000))))))
            await pipeline.submit("S002", encode(west.batch(
                (NEW_YEAR_UTC, registered("m2", "+8613900000002")),
                (NEW_YEAR_UTC, sale("m2", ("dairy", 1, 2_000))))))
            await pipeline.drained()
        assert len(applied) == 2
        assert await _spend(db) == {("m1", "2026-02"): 1_000, ("m2", "2026-01"): 2_000}


async def test_spend_months_counted_in_utc_are_counted_again_on_store_calendars(
        hub_url: str) -> None:
    east = Store("S001")

    def flag(tx: Tx) -> int:
        return int(tx.scalar("SELECT value FROM counters WHERE name = ?", (tiers.RECOUNT_FLAG,),
                             default=0))

    async with HubDatabase(hub_url) as db:
        assert await db.transaction(lambda tx: (migrate(tx, target=8), flag(tx))[1]) == 0
        assert await db.transaction(lambda tx: (migrate(tx), flag(tx))[1]) == 1  # schema 9 asks
        # The books as a hub before schema 9 kept them: the sale in its UTC month.
        await db.transaction(lambda tx: apply_batch(
            tx, east.batch((NEW_YEAR_UTC, registered("m1", "+8613900000001")),
                           (NEW_YEAR_UTC, sale("m1", ("dairy", 1, 1_000)))), 1,
            tiers.TierRules(), zone="UTC"))
        assert await _spend(db) == {("m1", "2026-01"): 1_000}
        assert await db.transaction(
            lambda tx: tiers.recount_spend(tx, lambda _s: "Asia/Shanghai")) == 1
        assert await _spend(db) == {("m1", "2026-02"): 1_000}
        assert await db.transaction(  # asked once: the next start leaves them alone
            lambda tx: tiers.recount_spend(tx, lambda _s: "UTC")) is None
        assert await _spend(db) == {("m1", "2026-02"): 1_000}


def test_the_daily_jobs_run_just_after_the_chains_midnight() -> None:
    job = Job("tiers", lambda: None, daily_at=(0, 5), zone="Asia/Shanghai")  # type: ignore
    late = datetime.fromisoformat("2026-02-28T15:59:00").replace(tzinfo=UTC).timestamp()
    assert job.seconds_to_next(late) == 6 * 60  # 23:59 in Shanghai: next run at 00:05
    utc = Job("tiers", lambda: None, daily_at=(0, 5), zone="UTC")  # type: ignore
    assert utc.seconds_to_next(late) == 8 * 3600 + 6 * 60
