"""A small asyncio face over paho-mqtt 2.x; nothing else in the project touches paho.

paho runs without a thread of its own: its socket is driven from the event loop with
``add_reader``/``add_writer`` (as aiomqtt does), so every paho callback runs on the loop thread and
needs no locking. Only the blocking TCP connect (and the TLS handshake) runs in the default
executor, on a paho client that nothing else can see yet.

Each connection gets a *fresh* paho client. paho would otherwise keep unacknowledged QoS 1 messages
in memory and resend them after a reconnect, behind the back of the caller's durable outbox (which
resends them itself after ``MqttNotConnected``). Reconnecting is our own loop with jittered
exponential back-off, so a fleet of stores does not hammer the hub in lockstep after an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from paho.mqtt.client import (
    Client,
    ConnectFlags,
    DisconnectFlags,
    MQTTMessage,
    MQTTv311,
    error_string,
)
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from protocol import tasks

if TYPE_CHECKING:
    from paho.mqtt.client import SocketLike  # a typing-only Protocol in paho

log = logging.getLogger(__name__)

OnConnect = Callable[[], Awaitable[None]]

_CONNECT_TIMEOUT = 10.0  # TCP connect + CONNACK + resubscribe
_STABLE_AFTER = 10.0  # a connection that lived this long restarts the back-off from the minimum
_MISC_INTERVAL = 1.0  # how often paho's keepalive bookkeeping runs


class MqttError(Exception):
    """Base for errors raised by MqttClient."""


class MqttNotConnected(MqttError):
    """No connection now, or it was lost before the broker acknowledged; the caller resends."""


class MqttPublishTimeout(MqttError):
    """The broker did not acknowledge in time; the message may still arrive (at least once)."""


class MqttSubscribeError(MqttError):
    """The broker refused a subscription (e.g. denied by its ACL)."""


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    retain: bool
    qos: int


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0-based).

    "Equal jitter": uniform in [c/2, c] with c = min(cap, base * 2**attempt). The random half
    spreads a fleet out; the fixed half means nobody retries with a near-zero delay.
    """
    ceiling = min(cap, base * 2 ** min(attempt, 32))  # no float overflow after weeks offline
    return rng.uniform(ceiling / 2, ceiling)


class _Connection:
    """One TCP connection and the paho client that speaks on it; discarded when it drops."""

    def __init__(self, owner: MqttClient, client: Client, loop: asyncio.AbstractEventLoop) -> None:
        self._owner = owner
        self.client = client
        self._loop = loop
        sock = client.socket()
        if sock is None:
            raise MqttNotConnected("socket closed during connect")
        self._fd = sock.fileno()
        self.connack: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self._publishes: dict[int, asyncio.Future[None]] = {}
        self._subscribes: dict[int, asyncio.Future[None]] = {}
        # Mirrors paho's inflight window, so paho never has to queue a publish of its own.
        self._slots = asyncio.Semaphore(owner.max_inflight)
        self._reading = False
        self._misc = loop.create_task(self._misc_loop())

        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        self.resume_reading()
        if client.want_write():  # CONNECT may not have fitted into the socket in one go
            loop.add_writer(self._fd, self._on_writable)

    # -- socket plumbing (all on the loop thread) --

    def _on_readable(self) -> None:
        self.client.loop_read()  # on error paho closes the socket and calls _on_disconnect
        # TLS: a record may hold more than paho read; those bytes wait decrypted inside the
        # SSL object and the socket will not become readable for them again.
        while self._reading and not self.lost.done() and self._tls_pending():
            self.client.loop_read()

    def _tls_pending(self) -> int:
        sock = self.client.socket()
        pending = getattr(sock, "pending", None)
        return int(pending()) if pending is not None else 0

    def _on_writable(self) -> None:
        self.client.loop_write()
        if not self.client.want_write():
            self._loop.remove_writer(self._fd)

    def _on_register_write(self, _c: Client, _u: Any, _s: SocketLike) -> None:
        if not self.lost.done():
            self._loop.add_writer(self._fd, self._on_writable)

    def _on_unregister_write(self, _c: Client, _u: Any, _s: SocketLike) -> None:
        self._loop.remove_writer(self._fd)

    def _on_socket_close(self, _c: Client, _u: Any, _s: SocketLike) -> None:
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        self._mark_lost()

    def pause_reading(self) -> None:
        # The consumer is behind: stop reading so TCP pushes back on the broker instead of us
        # buffering without limit. (If it stays behind past keepalive, paho drops the connection.)
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def resume_reading(self) -> None:
        if not self._reading and not self.lost.done():
            self._loop.add_reader(self._fd, self._on_readable)
            self._reading = True
            if self._tls_pending():  # read before pausing, no readiness event will come
                self._loop.call_soon(self._on_readable)

    async def _misc_loop(self) -> None:
        while not self.lost.done():
            await asyncio.sleep(_MISC_INTERVAL)
            self.client.loop_misc()  # PINGREQ, and drops the connection if PINGRESP never came

    # -- paho callbacks --

    def _on_connect(
        self, _c: Client, _u: Any, _f: ConnectFlags, rc: ReasonCode, _p: Properties | None
    ) -> None:
        if self.connack.done():
            return
        if rc.is_failure:
            self.connack.set_exception(MqttNotConnected(f"broker refused connection: {rc}"))
        else:
            self.connack.set_result(None)

    def _on_disconnect(
        self, _c: Client, _u: Any, _f: DisconnectFlags, rc: ReasonCode, _p: Properties | None
    ) -> None:
        up = self.connack.done() and not self.connack.cancelled() and not self.connack.exception()
        if up:  # otherwise _open logs why connecting failed
            log.info("mqtt %s: disconnected (%s)", self._owner.client_id, rc)
        self._mark_lost()

    def _on_message(self, _c: Client, _u: Any, msg: MQTTMessage) -> None:
        message = Message(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos)
        self._owner._deliver(message, self)

    def _on_publish(
        self, _c: Client, _u: Any, mid: int, _rc: ReasonCode, _p: Properties | None
    ) -> None:
        fut = self._publishes.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _on_subscribe(
        self, _c: Client, _u: Any, mid: int, codes: list[ReasonCode], _p: Properties | None
    ) -> None:
        fut = self._subscribes.pop(mid, None)
        if fut is None or fut.done():
            return
        refused = [str(c) for c in codes if c.is_failure]
        if refused:
            fut.set_exception(MqttSubscribeError(f"subscription refused: {', '.join(refused)}"))
        else:
            fut.set_result(None)

    def _mark_lost(self) -> None:
        if self.lost.done():
            return
        self.lost.set_result(None)
        self._reading = False
        self._misc.cancel()
        err = MqttNotConnected("connection lost before the broker acknowledged")
        for fut in [*self._publishes.values(), *self._subscribes.values(), self.connack]:
            if not fut.done():
                fut.set_exception(err)
        self._publishes.clear()
        self._subscribes.clear()
        self._owner._connection_lost(self)

    # -- operations --

    async def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        await self._slots.acquire()
        if self.lost.done():
            self._slots.release()
            raise MqttNotConnected("connection lost while waiting for an inflight slot")
        info = self.client.publish(topic, payload, qos, retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._slots.release()
            raise MqttNotConnected(f"publish failed: {error_string(info.rc)}")
        fut: asyncio.Future[None] = self._loop.create_future()
        # The slot is freed when paho is done with the message, not when a caller gives up
        # waiting, so the window keeps matching paho's.
        fut.add_done_callback(self._release_slot)
        self._publishes[info.mid] = fut
        if info.is_published() and not fut.done():  # paho may have finished already
            self._publishes.pop(info.mid, None)
            fut.set_result(None)
        await asyncio.shield(fut)

    def _release_slot(self, fut: asyncio.Future[None]) -> None:
        self._slots.release()
        if not fut.cancelled():
            fut.exception()  # mark retrieved: a caller that timed out no longer awaits it

    async def subscribe(self, topics: list[tuple[str, int]]) -> None:
        rc, mid = self.client.subscribe(topics)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise MqttNotConnected(f"subscribe failed: {error_string(rc)}")
        fut: asyncio.Future[None] = self._loop.create_future()
        self._subscribes[mid] = fut
        await asyncio.shield(fut)

    async def disconnect(self, grace: float) -> None:
        """Send DISCONNECT (the broker then keeps a persistent session) and close."""
        if not self.lost.done():
            self.client.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.lost), grace)
        self.abort()

    def abort(self) -> None:
        """Close the socket without a word to the broker."""
        sock = self.client.socket()
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        if sock is not None:
            sock.close()
        self._mark_lost()


class MqttClient:
    """An MQTT 3.1.1 client that stays connected in the background; use as ``async with``.

    ``publish`` returns once the broker acknowledged (QoS 1) or the bytes were sent (QoS 0) and
    never queues for later: if there is no connection it raises ``MqttNotConnected`` and the
    caller's own durable queue keeps the data. Coroutines appended to ``on_connect`` run after every
    (re)connect, once the remembered subscriptions have been made again.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        clean_session: bool = False,
        keepalive: int = 30,
        max_inflight: int = 20,
        reconnect_min: float = 0.5,
        reconnect_max: float = 30.0,
        max_queued_incoming: int = 1000,
        rng: random.Random | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if not client_id:
            raise ValueError("client_id is required (persistent sessions are keyed by it)")
        self.host = host
        self.port = port
        self.client_id = client_id
        self._username = username
        self._password = password
        self._clean_session = clean_session
        self._keepalive = keepalive
        self.max_inflight = max_inflight
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self._max_incoming = max_queued_incoming
        self._rng = rng if rng is not None else random.Random()  # seeded from os.urandom
        self.tls = tls  # protocol.tls.client_context(...): verifies the broker and its name

        self.connected = asyncio.Event()
        self.on_connect: list[OnConnect] = []
        # Called (plainly, on the loop) when an established connection is lost or closed.
        self.on_disconnect: list[Callable[[], None]] = []
        self.reconnects = 0  # successful connections after the first
        self.published = 0  # publishes the broker acknowledged (or, for QoS 0, that were sent)
        self.received = 0
        self._subscriptions: dict[str, int] = {}
        self._inbox: asyncio.Queue[Message | None] = asyncio.Queue()  # bounded by pausing reads
        self._conn: _Connection | None = None
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle --

    def start(self) -> MqttClient:
        """Connect (and keep reconnecting) in the background until ``close``."""
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name=f"mqtt-{self.client_id}")
        return self

    async def __aenter__(self) -> MqttClient:
        return self.start()

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            await tasks.stop(self._task)
        conn = self._conn
        if conn is not None:
            await conn.disconnect(grace=2.0)
        self.connected.clear()
        self._inbox.put_nowait(None)  # ends messages() iterators

    def backoff_delay(self, attempt: int) -> float:
        return backoff_delay(attempt, self.reconnect_min, self.reconnect_max, self._rng)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        first = True
        while True:
            try:
                conn = await self._open()
            except (OSError, MqttError) as exc:
                log.info("mqtt %s: connect to %s:%s failed: %s", self.client_id, self.host,
                         self.port, exc)
            else:
                if not first:
                    self.reconnects += 1
                first = False
                started = loop.time()
                await self._serve(conn)
                if loop.time() - started >= _STABLE_AFTER:
                    attempt = 0
            await asyncio.sleep(self.backoff_delay(attempt))
            attempt += 1

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=self._clean_session,
            protocol=MQTTv311,  # amqtt speaks nothing newer
            reconnect_on_failure=False,  # else paho may reconnect (blocking) inside loop_read
        )
        client.max_inflight_messages_set(self.max_inflight)
        client.max_queued_messages_set(self.max_inflight)  # a bound, never reached (see _slots)
        if self._username is not None:
            client.username_pw_set(self._username, self._password)
        if self.tls is not None:
            # paho's connect, run in the executor below, does the handshake (blocking, with its
            # connect timeout) before it hands the socket over non-blocking.
            client.tls_set_context(self.tls)

        connecting = loop.run_in_executor(None, client.connect, self.host, self.port,
                                          self._keepalive)
        try:
            rc = await asyncio.shield(connecting)
        except asyncio.CancelledError:
            connecting.add_done_callback(lambda _: _close_socket(client))
            raise
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            _close_socket(client)
            raise MqttNotConnected(f"connect failed: {error_string(rc)}")

        conn = _Connection(self, client, loop)
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT):
                await conn.connack
                await self._resubscribe(conn)
        except TimeoutError:
            conn.abort()
            raise MqttNotConnected("no CONNACK/SUBACK in time") from None
        except BaseException:
            conn.abort()
            raise
        self._conn = conn
        self.connected.set()
        log.info("mqtt %s: connected to %s:%s", self.client_id, self.host, self.port)
        return conn

    async def _resubscribe(self, conn: _Connection) -> None:
        made: set[str] = set()
        # Loop: subscribe() calls made while we wait for SUBACK only remember their topic.
        while todo := [(t, q) for t, q in self._subscriptions.items() if t not in made]:
            made.update(t for t, _ in todo)
            try:
                await conn.subscribe(todo)
            except MqttSubscribeError as exc:  # e.g. ACL changed; keep the connection anyway
                log.warning("mqtt %s: resubscribe %s: %s", self.client_id, todo, exc)

    async def _serve(self, conn: _Connection) -> None:
        callbacks = asyncio.create_task(self._run_on_connect())
        try:
            await asyncio.wait([conn.lost])
        finally:
            # A callback still running belongs to a dead connection; it runs again next time.
            # (``stop``, not a suppressed await: that would swallow a close's cancel of _run.)
            await tasks.stop(callbacks)

    async def _run_on_connect(self) -> None:
        for callback in list(self.on_connect):
            try:
                await callback()
            except MqttNotConnected:
                return
            except Exception:
                log.exception("mqtt %s: on_connect callback failed", self.client_id)

    def _connection_lost(self, conn: _Connection) -> None:
        if self._conn is conn:
            self._conn = None
            self.connected.clear()
            for callback in list(self.on_disconnect):
                callback()

    # -- public operations --

    @property
    def queued_incoming(self) -> int:
        """Received messages not yet taken from ``messages()``."""
        return self._inbox.qsize()

    @property
    def is_connected(self) -> bool:
        return self._conn is not None and self.connected.is_set()

    # A timeout argument (ASYNC109) because callers want one call that raises MqttNotConnected.
    async def wait_connected(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        try:
            await asyncio.wait_for(self.connected.wait(), timeout)
        except TimeoutError:
            where = f"{self.host}:{self.port}"
            raise MqttNotConnected(f"not connected to {where} after {timeout} s") from None

    async def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 - maps to MqttPublishTimeout
    ) -> None:
        conn = self._conn
        if conn is None or conn.lost.done():
            raise MqttNotConnected(f"not connected to {self.host}:{self.port}")
        try:
            async with asyncio.timeout(timeout):
                await conn.publish(topic, payload, qos, retain)
        except TimeoutError:
            raise MqttPublishTimeout(f"no acknowledgement for {topic} within {timeout} s") from None
        self.published += 1

    async def subscribe(self, topic: str, qos: int = 1) -> None:
        """Remember the subscription (it is re-made on every reconnect) and make it now if online.

        Returns after SUBACK when connected; raises MqttSubscribeError if the broker refuses.
        """
        self._subscriptions[topic] = qos
        conn = self._conn
        if conn is None:
            return
        try:
            await conn.subscribe([(topic, qos)])
        except MqttNotConnected:
            pass  # remembered: made again once reconnected
        except MqttSubscribeError:
            self._subscriptions.pop(topic, None)
            raise

    def _deliver(self, message: Message, conn: _Connection) -> None:
        self.received += 1
        self._inbox.put_nowait(message)
        if self._inbox.qsize() >= self._max_incoming:
            conn.pause_reading()

    async def messages(self) -> AsyncIterator[Message]:
        """Incoming messages, in arrival order, until the client is closed."""
        while True:
            message = await self._inbox.get()
            if message is None:
                self._inbox.put_nowait(None)  # let any other iterator end too
                return
            if self._conn is not None and self._inbox.qsize() < self._max_incoming:
                self._conn.resume_reading()
            yield message


def _close_socket(client: Client) -> None:
    sock = client.socket()
    if sock is not None:
        sock.close()
