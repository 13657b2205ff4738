"""The store's link to the hub over MQTT.

Uplink: outbox rows go up in consecutive batches, a few in flight; the outbox is pruned only up
to the hub's retained cumulative ack, and after any reconnect, a gap report or a silent hub,
sending starts again right after the ack. The outbox on disk is the only queue.

Downlink: the member directory is caught up page by page from a checkpoint (each page applied
with its checkpoint in one transaction); campaign manifests are verified against the hub's key
and applied only when newer. Anything malformed, forged or stale is refused, logged and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge import directory, outbox, recovery, status, uplink
from edge.config import SyncSection
from protocol import signing, tasks, topics
from protocol.campaigns import CampaignBundle
from protocol.codec import CodecError, decode, encode
from protocol.ids import uuid7
from protocol.mqtt import Message, MqttClient, MqttError
from protocol.sync import (
    Ack,
    CampaignManifest,
    DirectoryNotice,
    DirectoryRequest,
    RecoveryPage,
    RecoveryRequest,
    RpcReply,
    RpcRequest,
    StoreStatus,
)
from protocol.tls import client_context

if TYPE_CHECKING:
    from edge.service import EdgeService

log = logging.getLogger("membergate.edge.sync")
SELLING_WINDOW_S = 60.0  # a till wrote this recently: the store is selling (page_size)
# A quiet store applies a directory page in one transaction (no till waits behind it); a
# selling one in steps of ``edge.directory.STEP`` entries.
MAX_STEP = 5000
# Kept acknowledged events past keep_acked_days are swept this often, not with every ack.
SWEEP_EVERY_S = 300.0


class ManifestRefused(ValueError):
    """A campaign manifest the store does not use: ``code`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def open_manifest(topic: str, payload: bytes, public_key: Ed25519PublicKey | None
                  ) -> CampaignBundle:
    """The bundle of a retained manifest received on ``topic``, once its signature verifies
    with the hub key the store was provisioned with and it was published on its own scope's
    topic; ``ManifestRefused`` otherwise (``CodecError`` for bytes that are no manifest)."""
    bundle = decode(payload, CampaignManifest).bundle
    if public_key is None:
        raise ManifestRefused("no_hub_key",
                              "no hub public key configured: campaigns not accepted")
    try:
        signing.verify(bundle, public_key)
    except signing.SignatureError as exc:
        raise ManifestRefused(exc.code, f"{topic}: {exc}") from None
    if topics.campaign_topic(bundle.scope, bundle.scope_id) != topic:
        raise ManifestRefused("wrong_scope", f"a {bundle.scope} bundle on {topic}")
    return bundle


class SyncClient:
    def __init__(self, service: EdgeService, config: SyncSection) -> None:
        if config.broker_host is None:
            raise ValueError("sync needs a broker host")
        self.service = service
        self._closed = False
        self.config = config
        ctx = service.context
        self.store_id = ctx.store_id
        self.epoch = ctx.epoch  # the epoch being sent: an older one first after a restore
        self.region = service.config.store.region
        self.public_key = (signing.load_public_b64(config.hub_public_key)
                           if config.hub_public_key else None)
        self.mqtt = MqttClient(config.broker_host, config.broker_port,
                               client_id=f"edge-{self.store_id}", username=config.username,
                               password=config.password,
                               tls=client_context(config.tls) if config.tls else None)
        self.acked = 0
        self.cursor = 0  # the last seq sent since the last (re)start of sending
        self.checkpoint = 0
        self.refused: Counter[str] = Counter()
        self.sent_batches = 0
        self._wake = asyncio.Event()
        self._ack_moved = asyncio.Event()
        self._last_progress = time.monotonic()
        self._directory_pending: str | None = None
        self._directory_asked = 0.0
        self._rpc_waiting: dict[str, asyncio.Future[RpcReply]] = {}
        self._recovery_waiting: dict[str, asyncio.Future[RecoveryPage]] = {}
        self._caught_up = asyncio.Event()  # the directory answered with its last page
        self._head_seen = 0
        self._swept = float("-inf")  # the last sweep of kept events (monotonic)
        self._tasks: list[asyncio.Task[None]] = []
        self.broker = f"{config.broker_host}:{config.broker_port}"
        # The link as last seen (connected, since when): kept in meta by _link_writer, so a
        # status read by another process (membergate-edge status) shows it too.
        self._link = (False, service.context.now().isoformat())
        self._link_changed = asyncio.Event()

    # -- lifetime ------------------------------------------------------------------------------

    async def start(self) -> SyncClient:
        await self._record_link()
        self.checkpoint = await self.service.db.read(directory.checkpoint)
        await self._send_epoch()
        self.mqtt.on_connect.append(self._connected)
        self.mqtt.on_disconnect.append(self._disconnected)
        for topic in (topics.ack(self.store_id), topics.directory_page(self.store_id),
                      topics.rpc_reply(self.store_id), topics.recovery_page(self.store_id),
                      topics.FLEET_CAMPAIGNS, topics.region_campaigns(self.region),
                      topics.store_campaigns(self.store_id), topics.FLEET_DIRECTORY):
            await self.mqtt.subscribe(topic, qos=1)
        self.mqtt.start()
        self.service.on_outbox.append(self._wake.set)
        self._tasks = [asyncio.create_task(self._uplink(), name="sync-uplink"),
                       asyncio.create_task(self._downlink(), name="sync-downlink"),
                       asyncio.create_task(self._status_loop(), name="sync-status"),
                       asyncio.create_task(self._directory_watch(), name="sync-directory"),
                       asyncio.create_task(self._link_writer(), name="sync-link"),
                       asyncio.create_task(self._recover(), name="sync-recovery")]
        return self

    async def __aenter__(self) -> SyncClient:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed:  # closed by hand (a test, the demo) and then with the service
            return
        self._closed = True
        with contextlib.suppress(ValueError):
            self.service.on_outbox.remove(self._wake.set)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            await tasks.stop(task)
        await self.mqtt.close()
        self._link = (False, self.service.context.now().isoformat())
        await self._record_link()

    async def _send_epoch(self) -> None:
        """Send from the oldest epoch with events unsent: a restored box first finishes what
        its backup held under the old epoch (the hub takes it once), then goes on with the
        new one."""
        current = self.service.context.epoch

        def read(conn: Any) -> tuple[int, int]:
            epoch = outbox.oldest_epoch(conn, current)
            key = status.ACK_KEY.format(epoch=epoch)
            return epoch, int(outbox.meta_get(conn, key, "0") or 0)

        self.epoch, self.acked = await self.service.db.read(read)
        self.cursor = self.acked
        if self.epoch != current:
            log.info("sending epoch %d's unsent events before epoch %d's", self.epoch, current)

    @property
    def connected(self) -> bool:
        return self.mqtt.is_connected

    def _disconnected(self) -> None:
        self._link = (False, self.service.context.now().isoformat())
        self._link_changed.set()

    async def _record_link(self) -> None:
        connected, since = self._link
        await self.service.db.write(lambda conn: status.record_link(
            conn, broker=self.broker, connected=connected, since=since))

    async def _link_writer(self) -> None:
        while True:
            await self._link_changed.wait()
            self._link_changed.clear()
            await self._record_link()

    async def _connected(self) -> None:
        self._link = (True, self.service.context.now().isoformat())
        self._link_changed.set()
        # Whatever was in flight may be lost with the old connection: resend from the ack.
        self.cursor = self.acked
        self._wake.set()
        await self._request_directory()
        await self.publish_status()

    # -- uplink --------------------------------------------------------------------------------

    async def _uplink(self) -> None:
        cfg = self.config
        while True:
            if not self.mqtt.is_connected:
                await self.mqtt.connected.wait()
                continue
            in_flight = self.cursor - self.acked
            if in_flight > 0 and time.monotonic() - self._last_progress > cfg.ack_timeout_s:
                log.info("no ack for %.0f s; resending from %d", cfg.ack_timeout_s, self.acked)
                self.cursor = self.acked
                self._last_progress = time.monotonic()
                continue
            if in_flight >= cfg.window_batches * cfg.batch_max_events:
                await self._wait(self._ack_moved, 0.5)
                continue
            after = self.cursor
            batch = await self.service.db.read(functools.partial(
                uplink.build, store_id=self.store_id, epoch=self.epoch, after_seq=after,
                max_events=cfg.batch_max_events, max_bytes=cfg.batch_max_bytes))
            if batch is None:
                await self._wait(self._wake, 1.0)
                continue
            if in_flight == 0:
                self._last_progress = time.monotonic()
            try:
                await self.mqtt.publish(topics.events(self.store_id), batch.payload, qos=1,
                                        timeout=cfg.ack_timeout_s)
            except MqttError as exc:
                log.info("uplink paused: %s", exc)
                await asyncio.sleep(0.2)
                continue
            self.sent_batches += 1
            if self.cursor == after:  # an ack with "resend" may have moved it meanwhile
                self.cursor = batch.last_seq

    @staticmethod
    async def _wait(event: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)
        event.clear()

    async def _on_ack(self, ack: Ack) -> None:
        if ack.store_id != self.store_id or ack.epoch != self.epoch:
            return
        if ack.seq > self.acked:
            seq, epoch = ack.seq, self.epoch
            ctx = self.service.context
            keep_ms = int(self.config.keep_acked_days * 86_400_000)
            sweep = time.monotonic() - self._swept > SWEEP_EVERY_S
            if sweep:
                self._swept = time.monotonic()
            # An epoch before a restore: the hub may hold more of it than this box wrote (the
            # lost box's sales after the backup); all of what the backup held is then there.
            restored = epoch < ctx.epoch

            def prune(conn: Any) -> tuple[int, int]:
                written = int(outbox.meta_get(conn, f"outbox_seq:{epoch}", "0") or 0)
                if seq <= written or restored:  # no hub can hold more than this store wrote
                    status.record_ack(conn, ctx, min(seq, written), epoch)
                    outbox.prune(conn, epoch, seq, keep=keep_ms > 0)
                    if sweep:
                        outbox.expire_sent(conn, keep_ms)
                # Counted only for an old epoch (a count of a long outbox costs a scan).
                return written, outbox.stats(conn, epoch).depth if restored else -1

            written, left = await self.service.db.write(prune)
            if seq > written and not restored:
                # Forged, or a hub that kept another incarnation of this store and epoch:
                # acting on it would drop unsent events and park the uplink beyond them.
                self._refuse("ack_ahead", f"ack for seq {seq}; this store wrote {written}")
                return
            self.acked = min(seq, written)
            self._last_progress = time.monotonic()
            self._ack_moved.set()
            if restored and left == 0:  # the old epoch is all at the hub: on to the next
                await self._send_epoch()
                self._wake.set()
                return
        elif ack.resend and ack.seq < self.acked:
            await self._hub_behind(ack.seq)
            return
        if ack.resend or self.cursor < self.acked:
            self.cursor = max(self.acked, ack.seq)
            self._wake.set()

    async def _hub_behind(self, held: int) -> None:
        """The hub holds less than it once acknowledged: it was restored from a backup. The
        events it lost go up again from what this store kept (``keep_acked_days``)."""
        epoch, upto, ctx = self.epoch, self.acked, self.service.context

        def reopen(conn: Any) -> bool:
            if not outbox.reopen(conn, epoch, held, upto):
                return False
            status.record_ack(conn, ctx, held, epoch)
            return True

        if not await self.service.db.write(reopen):
            self._refuse("hub_behind_retention", f"the hub holds epoch {epoch} up to seq {held},"
                         f" it acknowledged {upto}; this store no longer keeps all between")
            return
        log.warning("the hub lost epoch %d's events %d..%d (restored?): sending them again",
                    epoch, held + 1, upto)
        self.acked = self.cursor = held
        self._last_progress = time.monotonic()
        self._wake.set()

    # -- downlink ------------------------------------------------------------------------------

    async def _downlink(self) -> None:
        async for message in self.mqtt.messages():
            try:
                await self._handle(message)
            except MqttError as exc:
                log.info("downlink reply not sent: %s", exc)
            except Exception:
                log.exception("failed to handle %s", message.topic)

    async def _handle(self, message: Message) -> None:
        topic = message.topic
        try:
            if topic == topics.ack(self.store_id):
                await self._on_ack(decode(message.payload, Ack))
            elif topic == topics.directory_page(self.store_id):
                await self._on_page(message.payload)
            elif topic == topics.rpc_reply(self.store_id):
                reply = decode(message.payload, RpcReply)
                waiter = self._rpc_waiting.pop(reply.request_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(reply)
            elif topic == topics.recovery_page(self.store_id):
                page = decode(message.payload, RecoveryPage)
                pending = self._recovery_waiting.pop(page.request_id, None)
                if pending is not None and not pending.done():
                    pending.set_result(page)
            elif topic == topics.FLEET_DIRECTORY:
                notice = decode(message.payload, DirectoryNotice)
                self._head_seen = max(self._head_seen, notice.head)
                stuck = time.monotonic() - self._directory_asked > self.config.ack_timeout_s
                if notice.head > self.checkpoint and (self._directory_pending is None or stuck):
                    await self._request_directory()
            elif topic.endswith("/campaigns"):
                await self._on_manifest(topic, message.payload)
        except CodecError as exc:
            self._refuse(exc.code, f"{topic}: {exc.message}")

    def _refuse(self, reason: str, detail: str) -> None:
        self.refused[reason] += 1
        log.warning("refused from the hub: %s (%s)", reason, detail)

    async def _request_directory(self) -> None:
        request_id = uuid7()
        self._directory_pending = request_id
        self._directory_asked = time.monotonic()
        req = DirectoryRequest(store_id=self.store_id, after=self.checkpoint,
                               limit=self.page_size(), request_id=request_id)
        try:
            await self.mqtt.publish(topics.directory_request(self.store_id), encode(req), qos=1)
        except MqttError:
            self._directory_pending = None

    def page_size(self) -> int:
        """Directory entries to ask for: small pages while the tills are writing (a checkout
        waits behind each page's transaction), large ones while the store is quiet."""
        selling = time.monotonic() - self.service.last_till_write < SELLING_WINDOW_S
        return self.config.directory_page if selling else self.config.directory_page_idle

    async def rpc(self, request: RpcRequest, wait_s: float = 2.0) -> RpcReply:
        """Ask the hub online; raises ``TimeoutError`` or ``MqttError`` when it cannot answer
        within ``wait_s`` (the POS is waiting: it gets a clear refusal instead)."""
        waiter: asyncio.Future[RpcReply] = asyncio.get_running_loop().create_future()
        self._rpc_waiting[request.request_id] = waiter
        try:
            async with asyncio.timeout(wait_s):
                await self.mqtt.publish(topics.rpc_request(self.store_id), encode(request), qos=1)
                return await waiter
        finally:
            self._rpc_waiting.pop(request.request_id, None)

    async def _recover(self) -> None:
        """After a restore: take back what the lost box did after the backup (``edge.recovery``),
        once the directory has caught up (it brings the members those events name)."""
        ctx = self.service.context
        while (at := await self.service.db.read(recovery.pending)) is not None:
            await self._caught_up.wait()
            if not self.mqtt.is_connected:
                await self.mqtt.connected.wait()
                continue
            req = RecoveryRequest(request_id=uuid7(), store_id=self.store_id, epoch=at[0],
                                  after_seq=at[1])
            waiter: asyncio.Future[RecoveryPage] = asyncio.get_running_loop().create_future()
            self._recovery_waiting[req.request_id] = waiter
            try:
                async with asyncio.timeout(self.config.ack_timeout_s):
                    await self.mqtt.publish(topics.recovery_request(self.store_id), encode(req),
                                            qos=1)
                    page = await waiter
            except (TimeoutError, MqttError) as exc:
                log.info("recovery page not answered (%s); asking again", exc or "timeout")
                continue
            finally:
                self._recovery_waiting.pop(req.request_id, None)
            replayed = await self.service.db.write(
                functools.partial(recovery.apply_page, ctx=ctx, page=page))
            log.info("recovered epoch %d up to seq %d: %d events replayed", page.epoch,
                     page.upto, replayed)

    async def _directory_watch(self) -> None:
        """A request or its answer can be lost with a connection (a broker restart forgets
        sessions): ask again when one has been unanswered too long or the head moved on."""
        while True:
            await asyncio.sleep(1.0)
            if not self.mqtt.is_connected:
                continue
            pending = self._directory_pending is not None
            lost = pending and time.monotonic() - self._directory_asked > self.config.ack_timeout_s
            behind = not pending and self._head_seen > self.checkpoint
            if lost or behind:
                await self._request_directory()

    async def _on_page(self, payload: bytes) -> None:
        expected = self._directory_pending  # None: nothing asked for; still checked below
        ctx = self.service.context
        # A malformed page: CodecError, refused. A well-formed one is applied a step at a time,
        # the tills served between steps.
        selling = time.monotonic() - self.service.last_till_write < SELLING_WINDOW_S
        done = await directory.apply_in_steps(self.service.db, ctx, payload, expected,
                                              directory.STEP if selling else MAX_STEP)
        if done is None:
            return  # an answer to a request we gave up on, or a duplicate
        self.checkpoint, more = done
        if self._directory_pending == expected:
            self._directory_pending = None
        if not more:
            self._caught_up.set()
        # A notice that came while this page was on its way was not acted on: catch up now.
        if (more or self._head_seen > self.checkpoint) and self._directory_pending is None:
            await self._request_directory()

    async def _on_manifest(self, topic: str, payload: bytes) -> None:
        if not payload:
            return  # a cleared retained message
        try:
            bundle = open_manifest(topic, payload, self.public_key)
        except ManifestRefused as exc:
            self._refuse(exc.code, str(exc))
            return
        outcome = await self.service.apply_bundle(bundle)
        if outcome == "held":
            return  # the retained bundle again, after a reconnect: nothing to refuse
        if outcome == "stale":
            self._refuse("stale_version", f"{bundle.scope} version {bundle.version} not newer")
            return
        log.info("campaigns applied: %s version %d", bundle.scope, bundle.version)

    # -- status --------------------------------------------------------------------------------

    async def status(self) -> StoreStatus:
        epoch = self.service.context.epoch  # the box's own, even while an older one drains

        def read(conn: Any) -> tuple[int, int, int, dict[str, int]]:
            depth = int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
            last = int(outbox.meta_get(conn, f"outbox_seq:{epoch}", "0") or 0)
            acked = int(outbox.meta_get(conn, status.ACK_KEY.format(epoch=epoch), "0") or 0)
            return depth, last, acked, status.campaign_versions(conn)

        depth, last, acked, versions = await self.service.db.read(read)
        return StoreStatus(
            store_id=self.store_id, epoch=epoch, last_seq=last, acked_seq=acked,
            outbox_depth=depth, directory_checkpoint=self.checkpoint,
            campaign_versions=versions, software="membergate-edge", refused=dict(self.refused),
            devices=self.service.device_health(), at_ms=int(time.time() * 1000))

    async def publish_status(self) -> None:
        with contextlib.suppress(MqttError):
            await self.mqtt.publish(topics.status(self.store_id), encode(await self.status()),
                                    qos=1, retain=True)

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.status_interval_s)
            if self.mqtt.is_connected:
                await self.publish_status()
