"""The store gateway's composition root: a started ``EdgeService`` with the parts around it.

    database and service -> sync client (when [sync] names a broker) -> lanes' devices

Each part is entered into the service's own exit stack (``EdgeService.around``), so closing the
service closes them first, in reverse order, and a part that fails to start stops what started
before it. The POS API (``edge.api``) is served over the wired service by the CLI.
"""

from __future__ import annotations

from edge.config import EdgeConfig
from edge.db import Database
from edge.devices import DeviceManager
from edge.service import EdgeService
from edge.sync import SyncClient


async def open_gateway(config: EdgeConfig, db: Database | None = None) -> EdgeService:
    """The service started, with its sync client and lanes as ``config`` asks."""
    return await wire(await EdgeService(config, db).start())


async def wire(service: EdgeService) -> EdgeService:
    """Start the parts a started ``service``'s configuration asks for around it."""
    config = service.config
    try:
        if config.sync.broker_host is not None:
            sync = await service.around(SyncClient(service, config.sync))
            service.sync = sync
        if config.lanes:
            devices = await service.around(DeviceManager(service))
            service.devices = devices
    except BaseException:
        await service.close()  # what started is stopped
        raise
    return service


class StoreGateway:
    """``async with StoreGateway(config) as service``: ``open_gateway`` for a block."""

    def __init__(self, config: EdgeConfig, db: Database | None = None) -> None:
        self.config = config
        self.db = db
        self.service: EdgeService | None = None

    async def __aenter__(self) -> EdgeService:
        self.service = await open_gateway(self.config, self.db)
        return self.service

    async def __aexit__(self, *exc: object) -> None:
        if self.service is not None:
            await self.service.close()
            self.service = None
