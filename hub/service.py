"""The hub process: takes every store's uplink off the broker, merges it, answers and pushes down.

Order of work for a batch: validate (payload store id = topic store id), apply in one database
transaction, commit, then publish the retained ack. An ack is never sent for what is not on
disk, and a batch applied twice changes nothing, so a crash anywhere in between is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
import time
from collections import Counter
from typing import Any, TypeVar

from pydantic import BaseModel

from hub import allowances, authority, campaigns, directory
from hub.config import HubConfig
from hub.db import HubDatabase, Tx
from hub.ingest import ApplyResult, record_refusal
from hub.pipeline import IngestPipeline, Validators
from hub.schema import migrate, next_counter
from hub.tiers import recompute
from protocol import topics
from protocol.campaigns import CampaignBundle
from protocol.codec import CodecError, decode, encode
from protocol.mqtt import Message, MqttClient, MqttError
from protocol.sync import Ack, DirectoryNotice, DirectoryRequest, RpcRequest, StoreStatus
from protocol.tls import client_context

log = logging.getLogger("membergate.hub")
M = TypeVar("M", bound=BaseModel)


def now_ms() -> int:
    return int(time.time() * 1000)


class HubService:
    def __init__(self, config: HubConfig, *, client_id: str = "membergate-hub") -> None:
        self.config = config
        self.db = HubDatabase(config.database_url)
        self.key = campaigns.load_or_create_key(config.hub.data_dir)
        self.client_id = client_id
        self.mqtt: MqttClient | None = None
        self.broker: Any = None
        self.broker_port: int | None = None
        self.refused: Counter[str] = Counter()
        self.applied_events = 0
        self.duplicate_events = 0
        self.gaps = 0
        self.received_batches = 0  # uplink event payloads taken off the broker
        self.first_batch_at: float = 0.0  # perf_counter of the first (for the drain bench)
        self._tasks: list[asyncio.Task[None]] = []
        self._notice = asyncio.Event()
        self.validators = Validators(config.hub.validate_workers, config.hub.max_payload_bytes)
        self.pipeline = IngestPipeline(self.db, config.tiers, now_ms, self._applied,
                                       allowance=config.allowance, validators=self.validators,
                                       on_refused=self._refuse)
        # The newest ack per store not yet published; a newer one replaces an older one, since
        # an ack is cumulative.
        self._acks: dict[str, Ack] = {}
        self._acks_ready = asyncio.Event()

    # -- lifetime ------------------------------------------------------------------------------

    async def start(self) -> HubService:
        tls = self.config.broker.tls  # an unusable file stops the start before anything runs
        tls_context = client_context(tls) if tls is not None else None
        await self.db.open()
        try:
            await self._start(tls_context)
        except BaseException:
            await self.close()  # what started is stopped (a busy embedded port, say)
            raise
        return self

    async def _start(self, tls_context: ssl.SSLContext | None) -> None:
        await self.db.transaction(migrate)
        host, port = self.config.broker.host, self.config.broker.port
        if host is None:
            from hub.broker import EmbeddedBroker

            self.broker = EmbeddedBroker(self.config.broker.embedded_host,
                                         self.config.broker.embedded_port)
            await self.broker.__aenter__()
            host, port = self.config.broker.embedded_host, self.broker.port
        self.broker_port = port
        self.mqtt = MqttClient(host, port, client_id=self.client_id,
                               username=self.config.broker.username,
                               password=self.config.broker.password, tls=tls_context)
        self.mqtt.on_connect.append(self._republish)
        # Remembered before connecting, so it is in place before ``connected`` is ever set.
        await self.mqtt.subscribe(topics.HUB_UPLINK, qos=1)
        await self.mqtt.__aenter__()
        await self.validators.start()
        self.pipeline.start()
        self._tasks = [asyncio.create_task(self._consume(), name="hub-consume"),
                       asyncio.create_task(self._publish_acks(), name="hub-acks"),
                       asyncio.create_task(self._notices(), name="hub-notices"),
                       asyncio.create_task(self._daily(), name="hub-daily")]

    async def close(self) -> None:
        await self.pipeline.close()
        self.validators.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.mqtt is not None:
            await self.mqtt.close()
        if self.broker is not None:
            await self.broker.__aexit__(None, None, None)
        await self.db.close()

    async def __aenter__(self) -> HubService:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- what a (re)connect owes the fleet -------------------------------------------------------

    async def _republish(self) -> None:
        """Brokers without persistence forget retained messages: put back what the hub owns."""
        def held(tx: Tx) -> tuple[list[Ack], list[tuple[str, bytes]], int]:
            acks = [Ack(store_id=s, epoch=int(e), seq=int(q)) for s, e, q in tx.all(
                "SELECT s.store_id, s.epoch, s.acked_seq FROM store_streams s JOIN stores t"
                " ON t.store_id = s.store_id AND t.epoch = s.epoch")]
            return acks, campaigns.held_manifests(tx), directory.head(tx)

        acks, manifests, head = await self.db.transaction(held)
        assert self.mqtt is not None
        for ack in acks:
            await self.mqtt.publish(topics.ack(ack.store_id), encode(ack), retain=True)
        for topic, payload in manifests:
            await self.mqtt.publish(topic, payload, retain=True)
        await self.mqtt.publish(topics.FLEET_DIRECTORY, encode(DirectoryNotice(head=head)),
                                retain=True)

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
        parsed = topics.uplink_store(message.topic)
        if parsed is None:
            return
        store_id, kind = parsed
        if kind == "events":
            await self._events(store_id, message.payload)
        elif kind == "directory":
            await self._directory(store_id, message.payload)
        elif kind == "status":
            await self._status(store_id, message.payload)
        elif kind == "rpc":
            await self._rpc(store_id, message.payload)

    async def _refuse(self, store_id: str, reason: str, detail: str) -> None:
        self.refused[reason] += 1
        log.warning("refused from store %s: %s (%s)", store_id, reason, detail)
        await self.db.transaction(lambda tx: record_refusal(tx, store_id, reason, detail))

    async def _events(self, store_id: str, payload: bytes) -> None:
        if not self.received_batches:
            self.first_batch_at = time.perf_counter()
        self.received_batches += 1
        # Validated (a bad payload is refused), applied and committed by the pipeline, in
        # arrival order; acked by ``_applied`` only after that.
        await self.pipeline.submit(store_id, payload)

    async def _applied(self, results: list[ApplyResult]) -> None:
        """A group of batches is committed: count it, and only now let the stores prune."""
        for result in results:
            self.applied_events += result.applied
            self.duplicate_events += result.duplicates
            if result.gap:
                self.gaps += 1
                log.info("gap from %s: have %d; asking to resend", result.ack.store_id,
                         result.ack.seq)
            self._acks[result.ack.store_id] = result.ack
            if result.members_changed:
                self._notice.set()
        self._acks_ready.set()

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
            await self._refuse(store_id, exc.code, exc.message)
            return None
        claimed = getattr(message, "store_id", store_id)
        if claimed != store_id:
            await self._refuse(store_id, "wrong_store",
                               f"{model.__name__} for {claimed} on the topic of {store_id}")
            return None
        return message

    async def _directory(self, store_id: str, payload: bytes) -> None:
        req = await self._accept(store_id, payload, DirectoryRequest)
        if req is None:
            return
        limit = min(req.limit, self.config.hub.directory_page)
        page = await self.db.transaction(
            lambda tx: directory.page_payload(tx, req.request_id, req.after, limit))
        assert self.mqtt is not None
        await self.mqtt.publish(topics.directory_page(store_id), page)

    async def _rpc(self, store_id: str, payload: bytes) -> None:
        req = await self._accept(store_id, payload, RpcRequest)
        if req is None:
            return
        answer = authority.lookup if req.kind == "lookup" else authority.authorize
        reply = await self.db.transaction(lambda tx: answer(tx, req))
        assert self.mqtt is not None
        # Committed (a grant is on disk) before the store may spend it.
        await self.mqtt.publish(topics.rpc_reply(store_id), encode(reply))

    async def _status(self, store_id: str, payload: bytes) -> None:
        status = await self._accept(store_id, payload, StoreStatus)
        if status is None:
            return
        await self.db.transaction(lambda tx: tx.execute(
            "INSERT INTO stores(store_id, last_seen_ms, epoch, status) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(store_id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms,"
            " status = excluded.status, epoch = CASE WHEN excluded.epoch > stores.epoch"
            " THEN excluded.epoch ELSE stores.epoch END",
            (store_id, now_ms(), status.epoch, payload)))

    async def _notices(self) -> None:
        """Tell the fleet the directory moved, at most a few times a second."""
        while True:
            await self._notice.wait()
            self._notice.clear()
            head = await self.db.transaction(directory.head)
            if self.mqtt is not None and self.mqtt.is_connected:
                with contextlib.suppress(MqttError):
                    await self.mqtt.publish(topics.FLEET_DIRECTORY,
                                            encode(DirectoryNotice(head=head)), retain=True)
            await asyncio.sleep(0.2)

    async def recompute_tiers(self) -> int:
        """Every member's tier from their spend in the window; changes go down to the stores."""
        rules = self.config.tiers

        def run(tx: Tx) -> int:
            changed = recompute(tx, rules, now_ms())
            if changed:
                last = next_counter(tx, "member_change", len(changed))
                tx.executemany("UPDATE members SET change_no = ? WHERE member_id = ?",
                               [(last - i, m) for i, m in enumerate(changed)])
            return len(changed)

        count = await self.db.transaction(run)
        if count:
            self._notice.set()
        return count

    async def refresh_allowances(self) -> int:
        """Top up every live member's standing allowances where the policy and balances call
        for it (``hub.allowances``), a page of members a transaction; returns how many moved.
        Batches top up the members they touch; this reaches the others: after a change of
        ``[allowance]`` (the hub runs it at start) and daily."""
        policy, count = self.config.allowance, 0
        after: str | None = ""
        while after is not None:
            changed, after = await self.db.transaction(
                functools.partial(allowances.refresh_page, policy=policy, after=after))
            count += len(changed)
        if count:
            self._notice.set()
        return count

    async def _daily(self) -> None:
        # Tiers also fall with time alone, as old months leave the window; allowances follow
        # a policy changed while the hub was down.
        while True:
            await self.recompute_tiers()
            if self.config.allowance.enabled:
                await self.refresh_allowances()
            await asyncio.sleep(24 * 3600)

    # -- HQ's commands -------------------------------------------------------------------------

    async def push_campaigns(self, bundle: CampaignBundle) -> str:
        topic, payload = await self.db.transaction(
            lambda tx: campaigns.store_bundle(tx, bundle, self.key))
        if self.mqtt is not None:
            # Right after start (``membergate-hub push-campaigns``) the connection is still
            # being made: wait for it rather than fail. Stored above either way, so a later
            # (re)connect republishes it.
            await self.mqtt.wait_connected(10)
            await self.mqtt.publish(topic, payload, retain=True)
        return topic

    async def status(self) -> dict[str, Any]:
        stores = await self.db.transaction(lambda tx: directory.fleet_status(tx, now_ms()))
        return {"stores": stores, "applied_events": self.applied_events,
                "duplicate_events": self.duplicate_events, "gaps": self.gaps,
                "refused": dict(self.refused),
                "ingest": {
                    "received_batches": self.received_batches,
                    "validate_workers": self.validators.workers,
                    "validator_restarts": self.validators.restarts,
                    # Accepted only by the pydantic fallback (protocol.fastcodec is stricter
                    # there): each is logged once per kind and cost a slow decode.
                    "validation_fallbacks": self.pipeline.slow_validations,
                    "commits": len(self.pipeline.group_sizes),
                    "batches_per_commit": round(sum(self.pipeline.group_sizes)
                                                / max(1, len(self.pipeline.group_sizes)), 2)},
                "broker": {"port": self.broker_port,
                           "connected": bool(self.mqtt and self.mqtt.is_connected)}}
