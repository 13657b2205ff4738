"""Files holding members' personal data or the hub's signing key are private (0600) from the
moment they exist, whatever the umask: the store's and the hub's databases (with their WAL and
shared-memory files) and the signing key."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from edge.gateway import StoreGateway
from hub.app import Hub
from hub.config import HubConfig
from tests.edge.conftest import make_config, register


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_databases_and_the_signing_key_are_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask: files would be 0644
    try:
        async with StoreGateway(make_config(tmp_path / "edge")) as svc:
            await register(svc)
            edge_db = Path(svc.config.database.path)
            files = [edge_db, Path(f"{edge_db}-wal"), Path(f"{edge_db}-shm")]
            assert all(p.exists() for p in files)
            assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}
        cfg = HubConfig.model_validate({
            "hub": {"database": str(tmp_path / "hub" / "hub.db"),
                    "data_dir": str(tmp_path / "hub"), "validate_workers": 0},
            "broker": {"embedded_port": 0}})
        async with Hub(cfg):
            hub_files = [tmp_path / "hub" / n for n in ("hub.db", "hub.db-wal",
                                                       "hub_signing_key.pem")]
            assert {p.name: _mode(p) for p in hub_files} == {p.name: 0o600 for p in hub_files}
    finally:
        os.umask(old)
