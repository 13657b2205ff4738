"""The hub's composition root: builds every part once, starts them in order with one
``AsyncExitStack`` and stops them in the reverse order.

    database (writer + readers, migrated) -> validators -> ingest pipeline -> store link
    -> scheduled jobs (tiers, allowances, the projections of the log)

The parts know each other only through what is passed in here: the link hands uplink batches
to the pipeline (``on_events``), the pipeline hands committed results back to the link for the
acks (``on_applied``), jobs and HQ commands tell the link when the directory moved.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import date, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from hub.auth import sessions
from hub.auth.tokens import Principal, TokenBook
from hub.automation import journeys
from hub.automation.engine import JourneyEngine
from hub.campaigns import bundles, coupons
from hub.config import HubConfig
from hub.core import idempotency
from hub.core.clock import now_ms
from hub.core.db import HubDatabase, Tx
from hub.core.idempotency import Answer
from hub.core.projections import ProjectionRunner
from hub.core.scheduler import Job, Scheduler
from hub.core.schema import counter, migrate
from hub.ledger import allowances, hq_events
from hub.ledger.hq_events import Merge
from hub.ledger.pipeline import IngestPipeline, Validators
from hub.members import directory, rfm, segments, tiers
from hub.members.segment_keeper import SegmentKeeper
from hub.notify import outbox
from hub.notify.channel import Channel
from hub.notify.channels.email import EmailChannel
from hub.notify.channels.sms import SmsChannel
from hub.notify.channels.store import StoreChannel
from hub.notify.channels.webhook import WebhookChannel
from hub.notify.dispatcher import Dispatcher
from hub.projections.catalog import projections
from hub.reports import member_search
from hub.stores import fleet, registry
from hub.stores.refusals import Refusals
from hub.stores.registry import HQ
from hub.sync.link import StoreLink
from protocol.campaigns import CampaignBundle
from protocol.errors import ServiceError
from protocol.events import ConsentChanged, CouponKind, EventBody
from protocol.hlc import HybridClock
from protocol.tls import client_context

T = TypeVar("T")

NIGHTLY = (0, 5)  # the daily jobs' local time: just after the chain's midnight
REGISTRY_EVERY_S = 60.0
# The projections catch up when a group's acks are out (``_applied`` wakes them) and, in case
# a wake-up was missed or a page failed, this often anyway.
PROJECTIONS_EVERY_S = 5.0
PROJECTION_YIELD_S = 2.0  # the longest a projection page waits for ingest to go quiet
INGEST_QUIET_S = 0.3  # ingest counts as quiet this long after its last group
READ_YIELD_S = 0.1  # the longest an HQ read waits for the queued batches
ACCESS_EVERY_S = 5.0
# Segments and lifecycle stages follow the merged data: a pass after the projections catch up
# (``project`` wakes it) and, in case a wake-up was missed, this often anyway.
SEGMENTS_EVERY_S = 10.0  # a token revoked with the CLI beside a running hub stops working by then


class Hub:
    """``async with Hub(config) as hub``: the running hub, with the commands HQ gives it."""

    def __init__(self, config: HubConfig, *, client_id: str = "membergate-hub") -> None:
        self.config = config
        # An unusable TLS file stops the start here, before anything runs.
        tls = client_context(config.broker.tls) if config.broker.tls is not None else None
        self.db = HubDatabase(config.database_url)
        self.key = bundles.load_or_create_key(config.hub.data_dir)
        self.refusals = Refusals(self.db)
        self.validators = Validators(config.hub.validate_workers, config.hub.max_payload_bytes)
        self.chain_zone = config.hub.timezone
        # Stores with a time zone of their own (``hub.stores.registry``), read at start and
        # after HQ changes one: each batch's spend counts in its store's calendar months.
        self.zones: dict[str, str] = {}
        self.pipeline = IngestPipeline(self.db, config.tiers, now_ms, self._applied,
                                       allowance=config.allowance, validators=self.validators,
                                       on_refused=self.refusals.refuse,
                                       chain_zone=self.chain_zone, zone_of=self.zone_of)
        # HQ's reads wait a moment while batches are queued: the stores' acks go first.
        self.db.read_gate = functools.partial(self.pipeline.give_way, READ_YIELD_S)
        self.link = StoreLink(config.broker, tls, self.db, self.refusals, self.pipeline.submit,
                              directory_page=config.hub.directory_page, client_id=client_id)
        self.scheduler = Scheduler()
        # The HLC of the hub's own events (``hub.ledger.hq_events`` keeps it ahead of each
        # stream's last event, so a restart never goes back).
        self.clock = HybridClock()
        # Tiers fall with time alone as old months leave the window; allowances follow a
        # policy changed while the hub was down. Both at start and just after the chain's
        # midnight, when a new day (and month) begins on its calendar.
        self.scheduler.add(Job("tiers", self.recompute_tiers, daily_at=NIGHTLY,
                               zone=self.chain_zone))
        if config.allowance.enabled:
            self.scheduler.add(Job("allowances", self.refresh_allowances, daily_at=NIGHTLY,
                                   zone=self.chain_zone))
        # Zones set with ``membergate-hub stores load`` beside a running hub reach it here.
        self.scheduler.add(Job("registry", self.reload_zones, interval_s=REGISTRY_EVERY_S,
                               at_start=False))
        # Who may call the HQ API: tokens and users as the database holds them, reloaded at
        # every change made here and, for changes made with the CLI beside a running hub, often.
        self.tokens = TokenBook(config.api.token)
        self.scheduler.add(Job("access", self.reload_access, interval_s=ACCESS_EVERY_S,
                               at_start=False))
        self.projections = ProjectionRunner(self.db, projections(config.hub.timezone))
        self.scheduler.add(Job("projections", self.project, interval_s=PROJECTIONS_EVERY_S))
        self.keeper = SegmentKeeper(self.db, self.chain_zone, config.lifecycle)
        self.scheduler.add(Job("segments", self.keep_segments, interval_s=SEGMENTS_EVERY_S))
        # Time alone moves members to sleeping and date-relative segments: after midnight.
        self.scheduler.add(Job("segments_nightly", self.nightly_segments, daily_at=NIGHTLY,
                               zone=self.chain_zone))
        if config.rfm.schedule:
            self.scheduler.add(Job("rfm", self.scheduled_rfm, daily_at=NIGHTLY,
                                   zone=self.chain_zone, at_start=False))
        # Journeys (``hub.automation``) after the segments and stages they wait on; their
        # messages leave through the outbox, one loop per configured channel.
        self.journeys = JourneyEngine(self.db, self.chain_zone, lambda: self.zones,
                                      self._merge, now_ms=now_ms,
                                      control_percent=config.automation.control_percent)
        self.scheduler.add(Job("journeys", self.run_journeys,
                               interval_s=config.automation.every_s))
        self.channels = channels(config)
        # The store's own display and receipt: always there (hub.notify.channels.store).
        self.channels["store"] = StoreChannel(self.db, now_ms,
                                              lambda: self.link.directory_moved())
        self.dispatcher = Dispatcher(self.db, self.channels, config.notify, self.chain_zone,
                                     lambda: self.zones, now_ms)
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Hub:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self.db)
            await self.db.transaction(migrate)
            await self.reload_zones()
            await self.reload_access()
            # Spend months counted before stores had calendars are counted again from the log
            # (once, when a migration asks), before any batch is taken.
            await self.db.transaction(lambda tx: tiers.recount_spend(tx, self.zone_of))
            await stack.enter_async_context(self.validators)
            await stack.enter_async_context(self.pipeline)
            await stack.enter_async_context(self.link)
            await stack.enter_async_context(self.dispatcher)
            await stack.enter_async_context(self.scheduler)
            self._stack = stack.pop_all()  # what started is stopped if a later part fails
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def zone_of(self, store_id: str) -> str:
        """The time zone of ``store_id``'s calendar: its own, else the chain's."""
        return self.zones.get(store_id, self.chain_zone)

    async def reload_zones(self) -> None:
        self.zones = await self.db.read(registry.zones)

    async def reload_access(self) -> None:
        await self.db.read(self.tokens.load)

    async def has_users(self) -> bool:
        """Whether anyone can sign in to the console (``membergate-hub users add``)."""
        return bool(await self.db.read(lambda tx: tx.scalar(
            "SELECT count(*) FROM users WHERE disabled = 0", default=0)))

    async def sign_in(self, username: str, password: str, remote: str | None
                      ) -> tuple[Principal, str, str]:
        """A console session (``hub.auth.sessions``): (who, cookie value, CSRF token)."""
        now = now_ms()
        result = await self.db.transaction(
            lambda tx: sessions.sign_in(tx, username, password, now, remote))
        if isinstance(result, ServiceError):
            raise result
        principal, session, _csrf = result
        self.tokens.add_session(session, principal)
        return result

    async def sign_out(self, session: str) -> None:
        now = now_ms()
        await self.db.transaction(lambda tx: sessions.end(tx, session, now))
        self.tokens.drop_session(session)

    async def set_stores(self, records: list[registry.StoreRecord]) -> int:
        """HQ says who its stores are (name, region, zone, legal entity). A changed zone counts
        the spend of batches from now on; projections follow after a rebuild (README)."""
        count = await self.db.transaction(lambda tx: registry.upsert(tx, records))
        await self.reload_zones()
        return count

    async def project(self) -> int:
        """Catch the projections up, a page at a time, giving way to ingest: a page waits
        while uplink batches are queued or were just applied (a store draining its backlog),
        for at most ``PROJECTION_YIELD_S``, so projections do not slow a drain down and still
        move on (a page every two seconds) under load that never lets up."""
        read = await self.projections.catch_up(before_page=functools.partial(
            self.pipeline.give_way, PROJECTION_YIELD_S, INGEST_QUIET_S))
        if read:
            self.scheduler.wake("segments")
        return read

    async def keep_segments(self) -> dict[str, int]:
        """One round of the segment keeper (``hub.members.segment_keeper``); the stores are
        told when it changed what their directory holds (stages, till segments, rule tags)."""
        done = await self._telling_stores(self.keeper.run)
        self.scheduler.wake("journeys")  # members entered segments and stages
        return done

    def _merge(self, now: int) -> Merge:
        return Merge(self.clock, now, self.config.tiers, self.config.allowance,
                     zone=self.chain_zone)

    async def run_journeys(self) -> dict[str, int]:
        """One pass of the journey engine; the stores hear of the coupons and points it gave,
        the channels of the messages it queued."""
        done = await self._telling_stores(self.journeys.run)
        if done["effects"]:
            self.dispatcher.wake()
        return done

    def check_message(self, channel: str, purpose: str, text: str) -> None:
        """A journey's message fits ``channel`` (configured, and the provider takes it)."""
        if channel not in self.channels:
            configured = ", ".join(sorted(self.channels)) or "none"
            raise ValueError(f"channel {channel!r} is not configured (configured: {configured})")
        check = getattr(self.channels[channel], "check", None)
        if check is not None:
            check(purpose, text)

    async def create_journey(self, definition: Any, by: str) -> dict[str, Any]:
        now = now_ms()
        return await self.db.transaction(lambda tx: journeys.create(
            tx, definition, by=by, now_ms=now, today=self.keeper.today(), zone=self.chain_zone,
            check_message=self.check_message))

    async def update_journey(self, journey_id: str, definition: Any, by: str
                             ) -> dict[str, Any]:
        now = now_ms()
        return await self.db.transaction(lambda tx: journeys.update(
            tx, journey_id, definition, by=by, now_ms=now, today=self.keeper.today(),
            zone=self.chain_zone, check_message=self.check_message))

    async def set_journey_state(self, journey_id: str, state: str) -> dict[str, Any]:
        now = now_ms()
        return await self.db.transaction(
            lambda tx: journeys.set_state(tx, journey_id, state, now_ms=now))

    async def record_consents(self, member_id: str, consents: list[dict[str, Any]],
                              actor: str) -> tuple[str, int]:
        """Consents given or withdrawn through HQ: a ``member.consent`` of the HQ stream for
        each that differs from what the hub holds; (the member, how many changed)."""
        now = now_ms()

        def record(tx: Tx) -> tuple[str, int]:
            member = hq_events.live_member(tx, member_id)
            held = {(str(c), str(p)): (bool(g), str(v)) for c, p, g, v in tx.all(
                "SELECT channel, purpose, granted, text_version FROM consents"
                " WHERE member_id = ?", (member,))}
            bodies: list[EventBody] = [
                ConsentChanged(member_id=member, actor=actor, **c) for c in consents
                if held.get((c["channel"], c["purpose"])) != (c["granted"], c["text_version"])]
            if bodies:
                hq_events.append(tx, HQ, bodies, self._merge(now))
            return member, len(bodies)

        done = await self.db.transaction(record)
        if done[1]:
            self.link.directory_moved()
        return done

    async def delivery_reports(self, reports: list[tuple[str, str, bool, str]]) -> int:
        """A provider's receipts (key, provider id, delivered, error): the messages found
        become delivered or failed; returns how many were found."""
        now = now_ms()

        def record(tx: Tx) -> int:
            return sum(outbox.receipt(tx, key, pid, ok, error, now)
                       for key, pid, ok, error in reports)

        return await self.db.transaction(record)

    async def sms_opt_outs(self, phones: list[str]) -> int:
        """Members who replied to opt out (回T退订): SMS marketing consent withdrawn for every
        live member with that number; returns how many consents changed."""
        changed = 0
        numbers = sorted({p for p in (_number(raw) for raw in phones) if p})

        def holders(tx: Tx) -> list[str]:
            return [str(m) for n in numbers for (m,) in tx.all(
                "SELECT member_id FROM members WHERE phone = ? AND merged_into IS NULL"
                " AND erased = 0", (n,))]

        if numbers:
            for member in await self.db.read(holders, give_way=False):
                _m, n = await self.record_consents(
                    member, [{"channel": "sms", "purpose": "marketing", "granted": False,
                              "text_version": "sms-reply"}], actor="sms:reply")
                changed += n
        return changed

    async def resend(self, *, message_id: str | None = None, channel: str | None = None
                     ) -> int:
        """Dead messages out again (``hub.notify.outbox.resend``)."""
        now = now_ms()
        count = await self.db.transaction(
            lambda tx: outbox.resend(tx, message_id=message_id, channel=channel, now_ms=now))
        self.dispatcher.wake(channel)
        return count

    async def _telling_stores(self, work: Callable[[], Awaitable[T]]) -> T:
        """``work()``, then a directory notice to the fleet if it gave members new entries.
        Called here, not by the caller: a stop during the first read leaves no coroutine
        behind that was never awaited."""
        before = await self.db.read(directory.head, give_way=False)
        done = await work()
        if await self.db.read(directory.head, give_way=False) != before:
            self.link.directory_moved()
        return done

    async def nightly_segments(self) -> dict[str, int]:
        """Every member's lifecycle stage and the date-relative segments, once a day (at the
        start too, when today's has not run: a hub down over midnight catches up)."""
        today = self.keeper.today()
        stamp = today.year * 10_000 + today.month * 100 + today.day
        done = await self.db.read(lambda tx: counter(tx, "segments_nightly_day"))
        if done >= stamp:
            return await self.keep_segments()
        out = await self._telling_stores(self.keeper.nightly)
        await self.db.transaction(lambda tx: tx.execute(
            "INSERT INTO counters(name, value) VALUES ('segments_nightly_day', ?)"
            " ON CONFLICT(name) DO UPDATE SET value = excluded.value", (stamp,)))
        return out

    async def _applied(self, results: list[Any]) -> None:
        await self.link.acked(results)
        # After the acks: the projections read the new events on their own time.
        self.scheduler.wake("projections")

    # -- HQ's commands and the daily jobs --------------------------------------------------------

    async def push_campaigns(self, bundle: CampaignBundle) -> str:
        """Sign and keep ``bundle``, then publish it retained; returns its topic."""
        topic, payload = await self.db.transaction(
            lambda tx: bundles.store_bundle(tx, bundle, self.key))
        await self.link.publish_retained(topic, payload)
        return topic

    async def adjust_points(self, member_id: str, *, delta: int, reason: str, actor: str,
                            key: str) -> Answer:
        """HQ changes a member's points (``hub.ledger.hq_events.adjust_points``), once per
        ``key``: a retry gets the first answer."""
        request = {"delta": delta, "reason": reason, "actor": actor}
        return await self._hq_write(key, "points.adjust", member_id, request, functools.partial(
            hq_events.adjust_points, member_id=member_id, delta=delta, reason=reason,
            actor=actor))

    async def issue_coupon(self, member_id: str, *, kind: CouponKind, value: int,
                           min_spend: int, categories: list[str], expires_on: date | None,
                           campaign_id: str | None, key: str) -> Answer:
        """HQ issues a member a coupon any store redeems offline
        (``hub.campaigns.coupons.issue``), once per ``key``."""
        request = {"kind": kind, "value": value, "min_spend": min_spend,
                   "categories": categories, "campaign_id": campaign_id,
                   "expires_on": expires_on.isoformat() if expires_on else None}
        return await self._hq_write(key, "coupon.issue", member_id, request, functools.partial(
            coupons.issue, member_id=member_id, kind=kind, value=value, min_spend=min_spend,
            categories=categories, expires_on=expires_on, campaign_id=campaign_id))

    async def change_profile(self, member_id: str, *, changes: dict[str, Any], actor: str,
                             key: str) -> Answer:
        """HQ changes a member's name or birthday (``hub.ledger.hq_events.change_profile``)."""
        request = {k: v.isoformat() if isinstance(v, date) else v for k, v in changes.items()}
        return await self._hq_write(key, "profile.change", member_id, {**request, "a": actor},
                                    functools.partial(hq_events.change_profile,
                                                      member_id=member_id, changes=changes,
                                                      actor=actor))

    async def set_card_state(self, member_id: str, card_uid: str, *, state: str, reason: str,
                             actor: str, key: str) -> Answer:
        """HQ reports a card lost, lifts the loss or unbinds it
        (``hub.ledger.hq_events.set_card_state``)."""
        request = {"card_uid": card_uid, "state": state, "reason": reason, "a": actor}
        return await self._hq_write(key, "card.state", member_id, request, functools.partial(
            hq_events.set_card_state, member_id=member_id, card_uid=card_uid, state=state,
            reason=reason, actor=actor))

    async def erase_member(self, member_id: str, *, actor: str, reason: str,
                           key: str) -> Answer:
        """Erase a member's personal data on request (``hub.ledger.hq_events.erase_member``)."""
        return await self._hq_write(key, "member.erase", member_id,
                                    {"a": actor, "r": reason}, functools.partial(
                                        hq_events.erase_member, member_id=member_id,
                                        actor=actor, reason=reason))

    async def _hq_write(self, key: str, operation: str, target: str, request: dict[str, Any],
                        write: Callable[..., dict[str, Any]]) -> Answer:
        """``write(tx, merge=...)`` in one transaction with its idempotency key
        (``hub.core.idempotency``); the stores hear of the members it changed."""
        digest = idempotency.request_hash(operation, target, request)
        now = now_ms()
        merge = self._merge(now)

        def run(tx: Tx) -> Answer:
            return idempotency.once(tx, key, digest, now, lambda t: write(t, merge=merge))

        answer = await self.db.transaction(run)
        if answer.status < 400 and not answer.replayed:
            self.link.directory_moved()
        return answer

    async def scheduled_rfm(self, today: date | None = None) -> list[str]:
        """The RFM run due today (the chain's calendar), as of the day before: on the 1st of
        January, April, July and October the quarterly one, on the 1st of the other months the
        monthly one. A quarter's first day has one run, not two identical ones: the quarterly
        run is that month's run as well. Returns its id (none due: empty)."""
        day = today or datetime.now(ZoneInfo(self.chain_zone)).date()
        if day.day != 1:
            return []
        schedule = self.config.rfm.schedule
        quarter = day.month in (1, 4, 7, 10) and "quarterly" in schedule
        due = ["quarterly"] if quarter else [k for k in schedule if k == "monthly"]
        made = []
        for kind in due:
            params = rfm.RfmParams(as_of=day - timedelta(days=1), kind=kind,
                                   window_days=self.config.rfm.window_days,
                                   f_measure=self.config.rfm.f_measure)
            made.append(await self.run_rfm(params))
        return made

    async def run_rfm(self, params: rfm.RfmParams) -> str:
        """One RFM run, projections caught up first (its figures come from them)."""
        await self.project()
        done = await self.db.transaction(lambda tx: rfm.run(tx, params, now_ms()))
        if done["directory_churn"]:  # the members whose group moved go to the stores
            self.link.directory_moved()
        # Segments on RFM scores read the latest run: evaluated whole again.
        await self.db.transaction(lambda tx: segments.mark_due(tx, reads=["rfm"]))
        self.scheduler.wake("segments")
        return str(done["run_id"])

    async def recompute_tiers(self) -> int:
        """Every member's tier from their spend in the window, a page of members a
        transaction (``tiers.TIER_PAGE``); changes go down to the stores."""
        rules, now, count = self.config.tiers, now_ms(), 0
        after: str | None = ""
        while after is not None:
            changed, after = await self.db.transaction(functools.partial(
                tiers.recompute_page, rules=rules, now_ms=now, zone=self.chain_zone,
                after=after))
            count += len(changed)
        if count:
            self.link.directory_moved()
        return count

    async def refresh_allowances(self) -> int:
        """Top up every live member's standing allowances where the policy and balances call
        for it (``hub.ledger.allowances``), a page of members a transaction; returns how many
        moved. Batches top up the members they touch; this reaches the others."""
        policy, count = self.config.allowance, 0
        after: str | None = ""
        while after is not None:
            changed, after = await self.db.transaction(
                functools.partial(allowances.refresh_page, policy=policy, after=after))
            count += len(changed)
        if count:
            self.link.directory_moved()
        return count

    async def status(self) -> dict[str, Any]:
        stores, streams = await self.db.read(
            lambda tx: (fleet.fleet_status(tx, now_ms()), fleet.hub_streams(tx)))
        pipeline = self.pipeline
        sizes = pipeline.group_sizes
        return {"stores": stores, "hub_streams": streams, "applied_events": pipeline.applied_events,
                "duplicate_events": pipeline.duplicate_events, "gaps": pipeline.gaps,
                "refused": dict(self.refusals.counts),
                "ingest": {
                    "received_batches": self.link.received_batches,
                    "validate_workers": self.validators.workers,
                    "validator_restarts": self.validators.restarts,
                    # Accepted only by the pydantic fallback (protocol.fastcodec is stricter
                    # there): each is logged once per kind and cost a slow decode.
                    "validation_fallbacks": pipeline.slow_validations,
                    "commits": len(sizes),
                    "batches_per_commit": round(sum(sizes) / max(1, len(sizes)), 2)},
                "projections": await self.projections.status(),
                "jobs": self.scheduler.status(),
                "messages": await self.db.read(outbox.counts, give_way=False),
                "broker": {"port": self.link.broker_port, "connected": self.link.is_connected}}


def channels(config: HubConfig) -> dict[str, Channel]:
    """The channels ``[channels]`` configures, by name."""
    out: dict[str, Channel] = {}
    c = config.channels
    if c.webhook is not None:
        out["webhook"] = WebhookChannel(c.webhook)
    if c.sms is not None:
        out["sms"] = SmsChannel(c.sms)
    if c.email is not None:
        out["email"] = EmailChannel(c.email)
    return out


def _number(raw: str) -> str | None:
    """A number as a provider gives it (``13800138000``) as the hub keeps it; None if it is
    none (a provider's push is not the caller's to correct)."""
    try:
        return member_search.e164(raw)
    except ServiceError:
        return None
