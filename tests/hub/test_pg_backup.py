"""The hub on PostgreSQL is backed up with ``pg_dump`` and restored with ``pg_restore`` (README,
*Backups*): the procedure run once against a real server — the restored database holds the same
events and balances, passes ``rebuild``, and keeps its row-level security."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hub.core.db import HubDatabase, Tx
from hub.core.schema import migrate
from hub.ledger import audit
from hub.ledger.apply import apply_batch
from tests.edge.conftest import register, sell
from tests.hub.conftest import fresh_pg
from tests.hub.test_ingest import _store, batches


@pytest.fixture
def second_pg() -> Iterator[str]:
    """The database the dump is restored into."""
    yield from fresh_pg("mg_restore")


def _held(tx: Tx) -> dict[str, Any]:
    return {
        "events": tx.scalar("SELECT count(*) FROM events"),
        "balances": audit.balances(tx),
        "schema": tx.scalar("SELECT max(version) FROM schema_version"),
        "forced": sorted(r[0] for r in tx.all(
            "SELECT relname FROM pg_class WHERE relforcerowsecurity AND relkind = 'r'")),
        "policies": sorted(tuple(r) for r in tx.all(
            "SELECT tablename, policyname, permissive, roles::text FROM pg_policies")),
    }


async def test_pg_dump_and_pg_restore_bring_the_hub_back_whole(
        tmp_path: Path, pg_url: str, second_pg: str) -> None:
    svc = await _store(tmp_path, "S001", 1)
    try:
        for i in range(3):
            mid = (await register(svc, f"1370000000{i}", name=f"会员{i}"))["member_id"]
            await sell(svc, [("A", "grocery", 1, 10_000 * (i + 1))], member_id=mid)
    finally:
        await svc.close()
    async with HubDatabase(pg_url) as db:
        await db.transaction(migrate)
        for batch in batches(str(svc.config.database.path), "S001", 7):
            await db.transaction(lambda tx, b=batch: apply_batch(tx, b, 1))
        before = await db.transaction(_held)
    assert before["events"] > 0 and before["policies"] and before["forced"]

    dump = tmp_path / "hub.dump"
    for command in (["pg_dump", "--format=custom", f"--file={dump}", pg_url],
                    ["pg_restore", "--exit-on-error", "--no-owner", f"--dbname={second_pg}",
                     str(dump)]):
        await asyncio.to_thread(subprocess.run, command, check=True, capture_output=True,
                                timeout=120)

    async with HubDatabase(second_pg) as db:
        await db.transaction(migrate)  # already at the latest: changes nothing
        after = await db.transaction(_held)
        assert (await db.transaction(audit.compare))["mismatches"] == []
        # HQ's reads still run as the role that owns nothing, bound by the same policies.
        assert await db.read(lambda tx: tx.scalar("SELECT current_user")) == "membergate_hq"
    assert after == before
