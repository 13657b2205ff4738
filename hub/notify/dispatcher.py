"""Messages leave here: one loop per channel, so a provider that is down holds back no other
channel, each loop taking the channel's due messages a round at a time.

A round, in three steps:

1. **Gates** (one writer transaction), checked at send time (HQ.md, principle 8): an erased or
   merged member, or one without an address on the channel, gets nothing (``suppressed``); a
   marketing message needs the member's consent on the channel (``no_consent``), waits out the
   quiet hours of the member's home store (held, not dropped; not for the store's own
   channel, which only leaves it for the next visit), counts against one frequency
   budget across every channel and journey (``budget``), and against a channel's own quota
   (held until it frees). Transactional messages pass consent, quiet hours and the budget.
   What passes is marked ``sending`` — and counts for the budget from then on.
2. **Send**, up to ``concurrency`` at once, outside any transaction.
3. **Record** (one writer transaction): ``sent`` with the provider's id; a ``Retry`` backs off
   exponentially (``retry_first_s`` doubling to ``retry_max_s``) until ``give_up_after_h``,
   then ``dead``; a ``Refused`` is ``dead`` at once. ``outbox.resend`` brings a dead one back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hub.core.db import HubDatabase, Tx, in_chunks
from hub.notify import outbox
from hub.notify.channel import Channel, Outgoing, Refused, Retry, Sent
from protocol import tasks

log = logging.getLogger("membergate.hub.notify")

# The consent each channel needs for marketing (``protocol.events.ConsentChannel``); the store's
# own display and receipt reach a member standing at the till: no consent to contact them.
CONSENT_OF = {"sms": "sms", "email": "email", "webhook": "wechat", "store": None}
DAY_MS = 86_400_000


class Quota(BaseModel):
    """At most ``messages`` a member on the channel: per ``days`` (held until the window
    frees), or per consent given (``per_consent``: a WeChat one-time subscription allows one
    message each time the member subscribes; suppressed until they give it again)."""

    model_config = ConfigDict(extra="forbid")
    messages: int = Field(ge=1, le=1000)
    days: int = Field(1, ge=1, le=365)
    per_consent: bool = False


class NotifySettings(BaseModel):
    """``[notify]``: the frequency budget, quiet hours, retries."""

    model_config = ConfigDict(extra="forbid")

    budget_messages: int = Field(2, ge=0, le=1000)  # marketing messages a member per window
    budget_days: int = Field(7, ge=1, le=365)
    quiet_from: str = "21:00"  # store-local; equal to quiet_until: no quiet hours
    quiet_until: str = "09:00"
    retry_first_s: float = Field(2.0, gt=0, le=3600)
    retry_max_s: float = Field(300.0, gt=0, le=86_400)
    give_up_after_h: float = Field(48.0, gt=0, le=24 * 30)
    concurrency: int = Field(8, ge=1, le=256)
    round_size: int = Field(200, ge=1, le=10_000)
    # Per channel, e.g. webhook = {messages = 1, days = 1}: WeCom's one group message a
    # customer a day. Transactional messages count too: the provider's limit is for all.
    quotas: dict[str, Quota] = Field(default_factory=dict)

    @field_validator("quiet_from", "quiet_until")
    @classmethod
    def _clock(cls, value: str) -> str:
        time.fromisoformat(value)
        return value


@dataclass
class _Claimed:
    message_id: str
    outgoing: Outgoing
    attempts: int
    created_ms: int


class Dispatcher:
    """``async with Dispatcher(...)``: the loops run until the block ends."""

    def __init__(self, db: HubDatabase, channels: dict[str, Channel], settings: NotifySettings,
                 chain_zone: str, zones: Callable[[], dict[str, str]],
                 now_ms: Callable[[], int]) -> None:
        self.db = db
        self.channels = channels
        self.settings = settings
        self.chain_zone = chain_zone
        self.zones = zones
        self.now_ms = now_ms
        self._wake = {name: asyncio.Event() for name in channels}
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Dispatcher:
        back = await self.db.transaction(outbox.recover)
        if back:
            log.warning("%d messages a stopped hub left half-sent go out again", back)
        self._tasks = [asyncio.create_task(self._loop(name), name=f"notify-{name}")
                       for name in self.channels]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            await tasks.stop(task)  # its loop's ``wait_for`` can swallow one cancel
        for channel in self.channels.values():
            await channel.aclose()

    def wake(self, channel: str | None = None) -> None:
        """New messages are due (a journey's page committed them)."""
        for name, event in self._wake.items():
            if channel in (None, name):
                event.set()

    async def _loop(self, name: str) -> None:
        while True:
            # Cleared before the round: a wake-up during it is not lost.
            self._wake[name].clear()
            try:
                done = await self.round(name)
            except Exception:  # a database hiccup: logged, tried again
                log.exception("the %s channel's round failed", name)
                done = 0
            if done:
                continue
            wait = 5.0
            nxt = await self.db.read(lambda tx: outbox.next_due_ms(tx, name), give_way=False)
            if nxt is not None:
                wait = min(wait, max(0.05, (nxt - self.now_ms()) / 1000))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake[name].wait(), wait)

    async def round(self, name: str) -> int:
        """Gate, send and record one round of the channel's due messages; how many were
        looked at."""
        now = self.now_ms()
        looked, claimed = await self.db.transaction(lambda tx: self._gate(tx, name, now))
        if not claimed:
            return looked
        channel = self.channels[name]
        limit = asyncio.Semaphore(self.settings.concurrency)

        async def one(c: _Claimed) -> Sent | Exception:
            async with limit:
                try:
                    return await channel.send(c.outgoing)
                except (Retry, Refused) as exc:
                    return exc
                except Exception as exc:  # a channel's bug must not stop the others
                    log.exception("the %s channel failed on a message", name)
                    return Retry(f"channel error: {type(exc).__name__}")

        results = await asyncio.gather(*(one(c) for c in claimed))
        done = self.now_ms()
        await self.db.transaction(lambda tx: self._record(tx, claimed, results, done))
        return looked

    # -- gates ----------------------------------------------------------------------------------

    def _gate(self, tx: Tx, name: str, now: int) -> tuple[int, list[_Claimed]]:
        rows = outbox.due(tx, name, now, self.settings.round_size)
        if not rows:
            return 0, []
        members = sorted({str(r["member_id"]) for r in rows})
        info = self._members(tx, members)
        consent = CONSENT_OF.get(name)
        granted = self._consents(tx, members, consent) if consent else set(members)
        s = self.settings
        since = now - s.budget_days * DAY_MS
        budget_used = outbox.sent_since(tx, members, since)
        quota = s.quotas.get(name)
        quota_used = self._quota_used(tx, name, members, quota, now) if quota else {}
        claimed: list[_Claimed] = []
        updates: list[tuple[Any, ...]] = []  # state, reason, next_ms, sent_ms, message_id
        for r in rows:
            member, marketing = str(r["member_id"]), r["purpose"] == "marketing"
            m = info.get(member)
            address = _address(name, member, m)
            if m is None or m["merged_into"] is not None or m["erased"]:
                updates.append(("suppressed", "member_gone", now, None, r["message_id"]))
            elif address is None:
                updates.append(("suppressed", "no_address", now, None, r["message_id"]))
            elif marketing and member not in granted:
                updates.append(("suppressed", "no_consent", now, None, r["message_id"]))
            elif marketing and name != "store" and (
                    until := self._quiet_until(now, str(m["home_store"]))):
                updates.append(("pending", "quiet_hours", until, None, r["message_id"]))
            elif marketing and budget_used.get(member, 0) >= s.budget_messages:
                updates.append(("suppressed", "budget", now, None, r["message_id"]))
            elif quota and quota.per_consent and quota_used.get(member, 0) >= quota.messages:
                updates.append(("suppressed", "consent_used", now, None, r["message_id"]))
            elif quota and quota_used.get(member, 0) >= quota.messages:
                later = self._quota_frees(tx, name, member, quota, now)
                updates.append(("pending", "channel_quota", later, None, r["message_id"]))
            else:
                if marketing:
                    budget_used[member] = budget_used.get(member, 0) + 1
                if quota:
                    quota_used[member] = quota_used.get(member, 0) + 1
                updates.append(("sending", "", now, now, r["message_id"]))
                claimed.append(_Claimed(str(r["message_id"]), Outgoing(
                    key=str(r["key"]), member_id=member, to=address, purpose=r["purpose"],
                    template=str(r["template"]), params=_params(r["params"]),
                    text=str(r["text"])), int(r["attempts"]), int(r["created_ms"])))
        tx.executemany("UPDATE outbox SET state = ?, reason = ?, next_ms = ?,"
                       " sent_ms = ? WHERE message_id = ?", updates)
        return len(rows), claimed

    def _members(self, tx: Tx, members: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        names = ("member_id", "phone", "home_store", "merged_into", "erased", "email")
        for chunk, marks in in_chunks(members):
            for r in tx.all(f"SELECT {', '.join(names)} FROM members"
                            f" WHERE member_id IN ({marks})", chunk):
                out[str(r[0])] = dict(zip(names, r, strict=True))
        return out

    def _consents(self, tx: Tx, members: list[str], channel: str) -> set[str]:
        out: set[str] = set()
        for chunk, marks in in_chunks(members):
            out |= {str(m) for (m,) in tx.all(
                f"SELECT member_id FROM consents WHERE member_id IN ({marks}) AND channel = ?"
                " AND purpose = 'marketing' AND granted = 1", (*chunk, channel))}
        return out

    def _quiet_until(self, now: int, store: str) -> int | None:
        """When the quiet hours at ``store`` end, if ``now`` is in them."""
        s = self.settings
        start, end = time.fromisoformat(s.quiet_from), time.fromisoformat(s.quiet_until)
        if start == end:
            return None
        zone = ZoneInfo(self.zones().get(store, self.chain_zone))
        local = datetime.fromtimestamp(now / 1000, zone)
        t = local.time()
        quiet = (start <= t or t < end) if start > end else (start <= t < end)
        if not quiet:
            return None
        day = local.date() if t < end else local.date() + timedelta(days=1)
        return int(datetime.combine(day, end, zone).timestamp() * 1000)

    def _quota_used(self, tx: Tx, name: str, members: list[str], quota: Quota,
                    now: int) -> dict[str, int]:
        """What each member's quota on the channel has used: messages in the window, or since
        the consent on the channel was last given."""
        if not quota.per_consent:
            return outbox.sent_since(tx, members, now - quota.days * DAY_MS, purpose=None,
                                     channel=name)
        consent = CONSENT_OF.get(name)
        out: dict[str, int] = {}
        for chunk, marks in in_chunks(members):
            for member, n in tx.all(
                    "SELECT o.member_id, count(*) FROM outbox o JOIN consents c ON"
                    " c.member_id = o.member_id AND c.channel = ? AND c.purpose = 'marketing'"
                    f" WHERE o.member_id IN ({marks}) AND o.channel = ? AND o.state IN"
                    f" {outbox.COUNTED} AND o.sent_ms >= c.hlc / 65536 GROUP BY o.member_id",
                    (consent, *chunk, name)):
                out[str(member)] = int(n)
        return out

    def _quota_frees(self, tx: Tx, name: str, member: str, quota: Quota, now: int) -> int:
        """When the oldest message counted in the channel's window leaves it."""
        since = now - quota.days * DAY_MS
        oldest = tx.scalar("SELECT min(sent_ms) FROM outbox WHERE member_id = ? AND channel = ?"
                           f" AND sent_ms > ? AND state IN {outbox.COUNTED}",
                           (member, name, since))
        return int(oldest or now) + quota.days * DAY_MS

    # -- results --------------------------------------------------------------------------------

    def _record(self, tx: Tx, claimed: list[_Claimed], results: list[Sent | Exception],
                now: int) -> None:
        s = self.settings
        rows: list[tuple[Any, ...]] = []
        for c, result in zip(claimed, results, strict=True):
            attempts = c.attempts + 1
            if isinstance(result, Sent):
                rows.append(("sent", "", now, result.provider_id, "", attempts, c.message_id))
            elif isinstance(result, Refused) or now - c.created_ms > s.give_up_after_h * 3.6e6:
                rows.append(("dead", "refused" if isinstance(result, Refused) else "gave_up",
                             now, None, str(result)[:500], attempts, c.message_id))
            else:
                delay = min(s.retry_max_s, s.retry_first_s * 2 ** min(attempts - 1, 30))
                rows.append(("pending", "retry", now + int(delay * 1000), None,
                             str(result)[:500], attempts, c.message_id))
        tx.executemany(
            "UPDATE outbox SET state = ?, reason = ?, next_ms = ?,"
            " provider_id = coalesce(?, provider_id), error = ?, attempts = ?,"
            " sent_ms = CASE WHEN ? = 'sent' THEN sent_ms ELSE NULL END"
            " WHERE message_id = ?",
            [(st, reason, nxt, pid, err, att, st, mid)
             for st, reason, nxt, pid, err, att, mid in rows])


def _address(channel: str, member: str, row: Any) -> str | None:
    if row is None:
        return None
    if channel == "sms":
        return str(row["phone"]) if row["phone"] else None
    if channel == "email":
        return str(row["email"]) if row["email"] else None
    return member  # the bridge and the store's till know the member by id


def _params(text: str) -> dict[str, str]:
    loaded = json.loads(text)
    return {str(k): str(v) for k, v in loaded.items()}
