from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from hub.core.db import HubDatabase
from hub.core.schema import migrate

PG_ADMIN = "postgresql://postgres@127.0.0.1/postgres"


def fresh_pg(prefix: str = "mg_test") -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards (the body of a fixture)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://postgres@127.0.0.1/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    yield from fresh_pg()


@pytest.fixture(params=["sqlite", "postgres"])
def hub_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def hub_db(hub_url: str) -> AsyncIterator[HubDatabase]:
    async with HubDatabase(hub_url) as db:
        await db.transaction(migrate)
        yield db
