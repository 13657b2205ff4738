"""The hub's link to the stores: the MQTT connection, what arrives on each store's uplink, and
what goes down (acks, directory pages and notices, online replies, retained manifests).

Order of work for a batch: validate (payload store id = topic store id), apply in one database
transaction, commit, then publish the retained ack. An ack is never sent for what is not on
disk, and a batch applied twice changes nothing, so a crash anywhere in between is harmless.
The link only hands batches to ``on_events`` (the ingest pipeline) and publishes the acks it is
given (``acked``); it never touches the ledgers itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TypeVar

from pydantic import BaseModel

from hub.campaigns import bundles
from hub.config import BrokerSection
from hub.core.clock import now_ms
from hub.core.db import HubDatabase, Tx
from hub.ledger import authority, recovery
from hub.ledger.apply import ApplyResult, acked_seq
from hub.members import directory
from hub.stores import registry
from hub.stores.refusals import Refusals
from protocol import tasks, topics
from protocol.codec import CodecError, decode, encode
from protocol.mqtt import Message, MqttClient, MqttError, MqttPublishTimeout
from protocol.sync import (
    Ack,
    DirectoryNotice,
    DirectoryRequest,
    RecoveryRequest,
    RpcRequest,
    StoreStatus,
)

log = logging.getLogger("membergate.hub.link")
PUBLISH_ACK_S = 15.0
M = TypeVar("M", bound=BaseModel)
OnEvents = Callable[[str, bytes], Awaitable[None]]  # (store_id, payload) to the pipeline


class StoreLink:
    """``async with StoreLink(...)``: connected (starting the embedded broker when no broker
    host is configured), consuming every store's uplink until closed."""

    def __init__(self, broker: BrokerSection, tls: ssl.SSLContext | None, db: HubDatabase,
                 refusals: Refusals, on_events: OnEvents, *, directory_page: int,
                 client_id: str = "membergate-hub") -> None:
        self.broker = broker
        self.tls = tls
        self.db = db
        self.refusals = refusals
        self.on_events = on_events
        self.directory_page = directory_page
        self.client_id = client_id
        self.mqtt: MqttClient | None = None
        self.broker_port: int | None = None
        self.received_batches = 0  # uplink event payloads taken off the broker
        self.first_batch_at: float = 0.0  # perf_counter of the first (for the drain bench)
        self._stack = AsyncExitStack()
        self._notice = asyncio.Event()
        # The newest ack per store not yet published; a newer one replaces an older one, since
        # an ack is cumulative.
        self._acks: dict[str, Ack] = {}
        self._acks_ready = asyncio.Event()

    async def __aenter__(self) -> StoreLink:
        async with AsyncExitStack() as stack:
            host, port = self.broker.host, self.broker.port
            if host is None:
                from hub.sync.broker import EmbeddedBroker  # amqtt only where it is used

                embedded = await stack.enter_async_context(
                    EmbeddedBroker(self.broker.embedded_host, self.broker.embedded_port))
                host, port = self.broker.embedded_host, embedded.port
            self.broker_port = port
            mqtt = MqttClient(host, port, client_id=self.client_id,
                              username=self.broker.username, password=self.broker.password,
                              tls=self.tls)
            mqtt.on_connect.append(self._republish)
            # Remembered before connecting, so it is in place before ``connected`` is ever set.
            await mqtt.subscribe(topics.HUB_UPLINK, qos=1)
            self.mqtt = await stack.enter_async_context(mqtt)
            for name, work in (("hub-consume", self._consume), ("hub-acks", self._publish_acks),
                               ("hub-notices", self._notices)):
                stack.push_async_callback(_cancel, asyncio.create_task(work(), name=name))
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    @property
    def is_connected(self) -> bool:
        return self.mqtt is not None and self.mqtt.is_connected

    # -- what a (re)connect owes the fleet -------------------------------------------------------

    async def _republish(self) -> None:
        """Brokers without persistence forget retained messages: put back what the hub owns."""
        def held(tx: Tx) -> tuple[list[Ack], list[tuple[str, bytes]], int]:
            acks = [Ack(store_id=s, epoch=int(e), seq=int(q)) for s, e, q in tx.all(
                "SELECT s.store_id, s.epoch, s.acked_seq FROM store_streams s JOIN stores t"
                " ON t.store_id = s.store_id AND t.epoch = s.epoch")]
            return acks, bundles.held_manifests(tx), directory.head(tx)

        acks, manifests, head = await self.db.read(held, give_way=False)
        assert self.mqtt is not None
        for ack in acks:
            await self.mqtt.publish(topics.ack(ack.store_id), encode(ack), retain=True)
        for topic, payload in manifests:
            await self.mqtt.publish(topic, payload, retain=True)
        await self.mqtt.publish(topics.FLEET_DIRECTORY, encode(DirectoryNotice(head=head)),
                                retain=True)

    async def publish_retained(self, topic: str, payload: bytes) -> None:
        """A retained downlink (a campaign manifest); waits for the connection right after a
        start. Already stored by the caller, so a later (re)connect republishes it anyway."""
        assert self.mqtt is not None
        await self.mqtt.wait_connected(10)
        try:
            # Bounded: a broker that never acknowledges must not hold HQ's request for ever
            # (once seen with the embedded broker under load). The bundle is kept; the broker
            # may still deliver it, and every (re)connect publishes the held bundles again.
            await self.mqtt.publish(topic, payload, retain=True, timeout=PUBLISH_ACK_S)
        except MqttPublishTimeout as exc:
            log.warning("campaign manifest kept, not yet acknowledged by the broker: %s", exc)

    # -- the uplink ----------------------------------------------------------------------------

    async def _consume(self) -> None:
        assert self.mqtt is not None
        async for message in self.mqtt.messages():
            try:
                await self.handle(message)
            except MqttError as exc:
                log.warning("reply not sent (%s); the store will ask again", exc)
            except Exception:
                log.exception("failed to handle a message on %s", message.topic)

    async def handle(self, message: Message) -> None:
        """One message off the broker, by the kind its topic names."""
        parsed = topics.uplink_store(message.topic)
        if parsed is None:
            return
        store_id, kind = parsed
        if registry.is_virtual(store_id):
            # The hub writes these streams itself: a box sending in their name is refused.
            await self.refusals.refuse(store_id, "reserved_store",
                                       f"{store_id} is a stream the hub writes, not a store")
            return
        if kind == "events":
            await self._events(store_id, message.payload)
        elif kind == "directory":
            await self._directory(store_id, message.payload)
        elif kind == "status":
            await self._status(store_id, message.payload)
        elif kind == "rpc":
            await self._rpc(store_id, message.payload)
        elif kind == "recovery":
            await self._recovery(store_id, message.payload)

    async def _events(self, store_id: str, payload: bytes) -> None:
        if not self.received_batches:
            self.first_batch_at = time.perf_counter()
        self.received_batches += 1
        # Validated (a bad payload is refused), applied and committed by the pipeline, in
        # arrival order; acked through ``acked`` only after that.
        await self.on_events(store_id, payload)

    async def acked(self, results: list[ApplyResult]) -> None:
        """A group of batches is committed: only now may the stores prune."""
        for result in results:
            self._acks[result.ack.store_id] = result.ack
            if result.members_changed:
                self._notice.set()
        self._acks_ready.set()

    def directory_moved(self) -> None:
        """Members changed outside a batch (tiers, allowances, HQ): tell the fleet."""
        self._notice.set()

    async def _publish_acks(self) -> None:
        while True:
            await self._acks_ready.wait()
            self._acks_ready.clear()
            acks, self._acks = self._acks, {}
            assert self.mqtt is not None
            for store_id, ack in acks.items():
                try:
                    await self.mqtt.publish(topics.ack(store_id), encode(ack), retain=True)
                except MqttError as exc:
                    # The ack is retained state: the republish on reconnect puts the newest
                    # back, and a store without it resends, which changes nothing.
                    log.warning("ack to %s not sent (%s)", store_id, exc)

    async def _accept(self, store_id: str, payload: bytes, model: type[M]) -> M | None:
        """``payload`` decoded as ``model``, or None after refusing it: malformed, invalid, or
        sent on ``store_id``'s topic in another store's name."""
        try:
            message = decode(payload, model)
        except CodecError as exc:
            await self.refusals.refuse(store_id, exc.code, exc.message)
            return None
        claimed = getattr(message, "store_id", store_id)
        if claimed != store_id:
            await self.refusals.refuse(store_id, "wrong_store",
                                       f"{model.__name__} for {claimed} on the topic of"
                                       f" {store_id}")
            return None
        return message

    async def _directory(self, store_id: str, payload: bytes) -> None:
        req = await self._accept(store_id, payload, DirectoryRequest)
        if req is None:
            return
        limit = min(req.limit, self.directory_page)
        # A page is a consistent snapshot of the directory: a reader's transaction gives that
        # without waiting behind the batches being applied.
        page = await self.db.read(
            lambda tx: directory.page_payload(tx, req.request_id, req.after, limit),
            give_way=False)
        assert self.mqtt is not None
        await self.mqtt.publish(topics.directory_page(store_id), page)

    async def _rpc(self, store_id: str, payload: bytes) -> None:
        req = await self._accept(store_id, payload, RpcRequest)
        if req is None:
            return
        answer = authority.lookup if req.kind == "lookup" else authority.authorize
        # On the writer: an authorisation writes its grant, and must see every batch before it.
        reply = await self.db.transaction(lambda tx: answer(tx, req))
        assert self.mqtt is not None
        # Committed (a grant is on disk) before the store may spend it.
        await self.mqtt.publish(topics.rpc_reply(store_id), encode(reply))

    async def _recovery(self, store_id: str, payload: bytes) -> None:
        req = await self._accept(store_id, payload, RecoveryRequest)
        if req is None:
            return
        page = await self.db.read(lambda tx: recovery.tail_page(tx, req), give_way=False)
        assert self.mqtt is not None
        await self.mqtt.publish(topics.recovery_page(store_id), encode(page))

    async def _status(self, store_id: str, payload: bytes) -> None:
        status = await self._accept(store_id, payload, StoreStatus)
        if status is None:
            return
        def record(tx: Tx) -> int:
            registry.record_status(tx, store_id, status.epoch, payload, now_ms())
            return acked_seq(tx, store_id, status.epoch)

        held = await self.db.transaction(record)
        if status.acked_seq > held and self.mqtt is not None:
            # The store was told more than this hub holds: the hub was restored from a backup.
            # Ask for the rest now rather than at the store's next sale (hub.backup).
            log.warning("store %s epoch %d: acknowledged up to %d, held up to %d; asking again",
                        store_id, status.epoch, status.acked_seq, held)
            with contextlib.suppress(MqttError):
                await self.mqtt.publish(topics.ack(store_id), encode(Ack(
                    store_id=store_id, epoch=status.epoch, seq=held, resend=True)))

    async def _notices(self) -> None:
        """Tell the fleet the directory moved, at most a few times a second."""
        while True:
            await self._notice.wait()
            self._notice.clear()
            head = await self.db.read(directory.head, give_way=False)
            if self.mqtt is not None and self.mqtt.is_connected:
                with contextlib.suppress(MqttError):
                    await self.mqtt.publish(topics.FLEET_DIRECTORY,
                                            encode(DirectoryNotice(head=head)), retain=True)
            await asyncio.sleep(0.2)


async def _cancel(task: asyncio.Task[None]) -> None:
    await tasks.stop(task)
