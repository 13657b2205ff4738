"""The embedded single-box/demo broker: amqtt inside the hub's event loop.

amqtt speaks MQTT 3.1.1 only and keeps sessions in memory; that is enough here because the
application acknowledges end to end. For scale, point the stores at Mosquitto/EMQX instead.
amqtt is imported only in this module (it is an optional dependency of the hub).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from typing import Any

from amqtt.broker import Broker

log = logging.getLogger(__name__)
# How long the hub waits for amqtt to stop. Its shutdown can wait on a client's task that never
# ends (seen once in the suite, under load: the hub's exit hung for minutes); a hub that is
# stopping must stop — systemd would kill it anyway, and the next start binds a fresh broker.
SHUTDOWN_S = 10.0


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (another process could still take it before us)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class BrokerPortBusy(OSError):
    """The embedded broker's port is taken: most often by the running hub's own broker."""


def check_port_free(host: str, port: int) -> None:
    """Raise ``BrokerPortBusy`` if ``host:port`` cannot be bound (as the broker binds it), so
    the caller says so in one line instead of amqtt logging a traceback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise BrokerPortBusy(exc.errno, f"the embedded broker's port {host}:{port} is"
                                 " already in use (a running hub's broker?)") from None


class EmbeddedBroker:
    """``async with EmbeddedBroker() as broker:`` serves anonymous MQTT on ``broker.url``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._broker: Any = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("broker not started")
        return self._port

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def _config(self, port: int) -> dict[str, Any]:
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{port}"}},
            # Only anonymous auth: no $SYS publisher and no per-packet logging plugins.
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }

    async def start(self) -> None:
        if self._broker is not None:
            raise RuntimeError("broker already started")
        if self._requested_port:
            check_port_free(self.host, self._requested_port)
        port = self._requested_port or free_port(self.host)
        broker = Broker(self._config(port))
        await broker.start()
        self._broker, self._port = broker, port

    async def stop(self, within_s: float = SHUTDOWN_S) -> None:
        broker, self._broker = self._broker, None
        if broker is None:
            return
        stopping = asyncio.ensure_future(broker.shutdown())
        # asyncio.wait, not wait_for: wait_for would wait for a stuck shutdown to take its
        # cancellation, which is the very wait this bounds.
        done, _ = await asyncio.wait({stopping}, timeout=within_s)
        if not done:
            stopping.cancel()
            log.warning("the embedded broker did not stop within %.0f s; left behind",
                        within_s)
            return
        stopping.result()  # its own error, if it had one

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()
