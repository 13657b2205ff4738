"""A hub over the demo chain's history, its HQ API and console served in-process, and an HTTP
client signed in as one of the demo users (the console's pages without a browser)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from hub.api.app import create_app
from hub.app import Hub
from hub.config import HubConfig
from provisioning import demo_history
from provisioning.demo_history import PASSWORD, Chain


@dataclass
class DemoConsole:
    hub: Hub
    chain: Chain
    client: httpx.AsyncClient

    async def sign_in(self, username: str) -> None:
        signed = await self.client.post("/v1/auth/sign-in", json={"username": username,
                                                                   "password": PASSWORD})
        assert signed.status_code == 200, signed.text


@asynccontextmanager
async def demo_console(tmp_path: Path, username: str, *, members: int = 30, days: int = 60
                       ) -> AsyncIterator[DemoConsole]:
    cfg = HubConfig.model_validate({"hub": {"database": str(tmp_path / "hub.db"),
                                            "data_dir": str(tmp_path), "validate_workers": 0},
                                    "broker": {"embedded_port": 0}})
    async with Hub(cfg) as hub:
        chain = await demo_history.seed(hub.db, members=members, days=days)
        await hub.reload_access()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(hub)),
                                     base_url="http://hub") as client:
            found = DemoConsole(hub, chain, client)
            await found.sign_in(username)
            yield found
