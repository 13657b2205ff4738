"""What the store's domain service needs from the parts wired around it, as narrow interfaces.

``EdgeService`` never imports the sync client or the lanes' device manager: the composition
root (``edge.gateway``) builds them around a started service and hands them in through these
shapes, so imports flow one way (gateway -> sync, devices -> service -> ports).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from drivers.base import DeviceStatus
from protocol.sync import RpcReply, RpcRequest


class HubLink(Protocol):
    """The store's link to the hub, for what must be asked online."""

    @property
    def connected(self) -> bool: ...

    @property
    def refused(self) -> Mapping[str, int]: ...  # what the store refused from the hub

    async def rpc(self, request: RpcRequest, wait_s: float = 2.0) -> RpcReply: ...


class Lanes(Protocol):
    """The tills' devices: receipts to print, displays to update, health to report."""

    @property
    def by_terminal(self) -> Mapping[str, Any]: ...

    def statuses(self) -> Sequence[DeviceStatus]: ...

    def enqueue_receipt(self, conn: sqlite3.Connection, terminal_id: str,
                        receipt: dict[str, Any]) -> None: ...

    async def after_finalize(self, terminal_id: str, receipt: dict[str, Any]) -> None: ...

    async def reprint(self, terminal_id: str, sale_id: str) -> str: ...
