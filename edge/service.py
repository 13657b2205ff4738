"""The edge gateway's domain service: what the POS API, the tests and the tools call.

Every mutating operation that touches money, points, coupons or members is one SQLite
transaction that also writes its outbox rows and its idempotency record, committed before the
method returns: an answer the POS got is never lost to a crash.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Any, TypeVar

from edge import (
    campaign_store,
    checkout,
    coupons,
    idempotency,
    members,
    outbox,
    points,
    refunds,
    stored_value,
)
from edge.bus import EventBus
from edge.cart import Cart, CartBook
from edge.config import EdgeConfig
from edge.context import StoreContext
from edge.db import Database
from edge.errors import EdgeError, invalid
from edge.members import IdentifyBy
from protocol import pricing
from protocol.campaigns import Campaign, CampaignBundle, parse_bundle
from protocol.hlc import HybridClock
from protocol.ids import uuid7
from protocol.sync import DeviceHealth

if TYPE_CHECKING:
    from edge.devices import DeviceManager
    from edge.sync import SyncClient

T = TypeVar("T")
log = logging.getLogger("membergate.edge")
ONLINE_WAIT_S = 2.0  # what a POS waits for online authorisation before a clear refusal


class EdgeService:
    def __init__(self, config: EdgeConfig, db: Database | None = None) -> None:
        self.config = config
        self.db = db or Database(config.database.path)
        self.bus = EventBus()
        self.carts = CartBook(config.limits)
        self.campaigns: list[Campaign] = []
        self.ctx: StoreContext | None = None
        self._cart_lock = asyncio.Lock()
        # Called after every committed write: the sync client wakes to send new outbox rows.
        self.on_outbox: list[Callable[[], None]] = []
        self.sync: SyncClient | None = None
        self.devices: DeviceManager | None = None
        self.last_till_write = float("-inf")  # time.monotonic() of the tills' last write

    # --- lifetime -----------------------------------------------------------------------------

    async def start(self) -> EdgeService:
        await self.db.open()
        try:
            self.ctx = await self.db.write(self._init_store)
            await self.reload_campaigns()
            if self.config.campaigns_file is not None:
                await self.apply_campaign_file(self.config.campaigns_file)
            if self.config.sync.broker_host is not None:
                from edge.sync import SyncClient

                self.sync = await SyncClient(self, self.config.sync).start()
            if self.config.lanes:
                from edge.devices import DeviceManager

                self.devices = await DeviceManager(self).start()
        except BaseException:
            # What started is stopped: the database's thread would otherwise keep a process
            # whose start failed (another store's database, a TLS file missing) alive for good.
            await self.close()
            raise
        return self

    def device_health(self) -> list[DeviceHealth]:
        if self.devices is None:
            return []
        return [DeviceHealth(device_id=s.device_id, kind=str(s.kind), health=str(s.health),
                             detail=s.detail[:200]) for s in self.devices.statuses()]

    def _init_store(self, conn: sqlite3.Connection) -> StoreContext:
        store = outbox.meta_get(conn, "store_id")
        if store is None:
            outbox.meta_set(conn, "store_id", self.config.store.store_id)
            outbox.meta_set(conn, "epoch", 1)
        elif store != self.config.store.store_id:
            raise RuntimeError(
                f"database belongs to store {store}, configuration says"
                f" {self.config.store.store_id}: refusing to mix two stores' ledgers"
            )
        epoch = int(outbox.meta_get(conn, "epoch", "1") or 1)
        last = int(outbox.meta_get(conn, "hlc_last", "0") or 0)
        return StoreContext(self.config, HybridClock(last=last), epoch)

    async def close(self) -> None:
        if self.devices is not None:
            await self.devices.close()
            self.devices = None
        if self.sync is not None:
            await self.sync.close()
            self.sync = None
        await self.db.close()

    async def __aenter__(self) -> EdgeService:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def context(self) -> StoreContext:
        if self.ctx is None:
            raise RuntimeError("service not started")
        return self.ctx

    async def _write(self, fn: Callable[[sqlite3.Connection, StoreContext], T]) -> T:
        ctx = self.context
        result = await self.db.write(lambda conn: fn(conn, ctx))
        for wake in self.on_outbox:
            wake()
        return result

    async def _read(self, fn: Callable[[sqlite3.Connection, StoreContext], T]) -> T:
        ctx = self.context
        return await self.db.read(lambda conn: fn(conn, ctx))

    async def _idempotent(
        self, key: str | None, terminal_id: str, operation: str, request: Any,
        fn: Callable[[sqlite3.Connection, StoreContext], Any],
    ) -> Any:
        """Run ``fn`` once per key: a retry gets the stored answer, from the same transaction."""
        k = idempotency.check_key(key)
        h = idempotency.request_hash(operation, request)

        self.last_till_write = time.monotonic()  # every till's change comes through here

        def tx(conn: sqlite3.Connection, ctx: StoreContext) -> Any:
            previous = idempotency.replay(conn, k, terminal_id, operation, h)
            if previous is not None:
                return previous
            result = fn(conn, ctx)
            idempotency.remember(conn, k, terminal_id, operation, h, result)
            return result

        return await self._write(tx)

    # --- campaigns ----------------------------------------------------------------------------

    async def reload_campaigns(self) -> None:
        bundles = await self._read(lambda conn, ctx: campaign_store.stored_bundles(conn))
        self.campaigns = campaign_store.active_campaigns(bundles)

    async def apply_bundle(self, bundle: CampaignBundle) -> bool:
        applied = await self._write(
            lambda conn, ctx: campaign_store.apply_bundle(conn, ctx, bundle)
        )
        if applied:
            await self.reload_campaigns()
        return applied

    async def apply_campaign_file(self, path: Any) -> bool:
        from pathlib import Path

        text = await asyncio.to_thread(Path(path).read_text, encoding="utf-8")
        return await self.apply_bundle(parse_bundle(text, str(path)))

    # --- members ------------------------------------------------------------------------------

    async def register_member(
        self, *, terminal_id: str, idem_key: str | None, phone: str | None, name: str = "",
        birthday: date | None = None, card_uid: str | None = None, tags: list[str] | None = None,
    ) -> dict[str, Any]:
        request = {"phone": phone, "name": name, "birthday": birthday, "card_uid": card_uid,
                   "tags": tags}

        def tx(conn: sqlite3.Connection, ctx: StoreContext) -> dict[str, Any]:
            mid = members.register(conn, ctx, phone=phone, name=name, birthday=birthday,
                                   card_uid=card_uid, tags=tags)
            return members.member_view(conn, ctx, mid)

        view: dict[str, Any] = await self._idempotent(idem_key, terminal_id, "register", request,
                                                      tx)
        self.bus.publish("member.registered", terminal_id, member_id=view["member_id"])
        return view

    async def lookup_member(self, by: IdentifyBy, value: str) -> dict[str, Any]:
        def rd(conn: sqlite3.Connection, ctx: StoreContext) -> dict[str, Any]:
            return members.member_view(conn, ctx, members.identify(conn, ctx, by, value))

        return await self._read(rd)

    async def member(self, member_id: str) -> dict[str, Any]:
        return await self._read(lambda conn, ctx: members.member_view(conn, ctx, member_id))

    async def find_member_id(self, by: IdentifyBy, value: str) -> str:
        try:
            return await self._read(lambda conn, ctx: members.identify(conn, ctx, by, value))
        except EdgeError as exc:
            if exc.code not in ("unknown_card", "member_not_found") or self.sync is None \
                    or not self.sync.connected:
                raise
            # Registered in another store and not in our directory yet: ask the hub online.
            if not await self._lookup_online(by, value):
                raise
        return await self._read(lambda conn, ctx: members.identify(conn, ctx, by, value))

    async def _lookup_online(self, by: IdentifyBy, value: str) -> bool:
        from edge import directory
        from edge.phone import normalise_phone
        from protocol.ids import MEMBER_QR_PREFIX
        from protocol.sync import RpcRequest

        assert self.sync is not None
        if by == "qr":
            by, value = "member_code", value.removeprefix(MEMBER_QR_PREFIX)
        elif by == "phone":
            value = normalise_phone(value, self.config.store.phone_region)
        elif by == "card_uid":
            value = members.normalise_card_uid(value)
        request = RpcRequest(request_id=uuid7(), store_id=self.context.store_id, kind="lookup",
                             by=by, value=value)
        try:
            reply = await self.sync.rpc(request)
        except Exception:  # the hub is away: the local answer (not found) stands
            return False
        entry = reply.member
        if not reply.ok or entry is None:
            return False
        await self._write(lambda conn, ctx: directory.apply_entry(conn, ctx, entry))
        return True

    async def bind_card(self, *, terminal_id: str, idem_key: str | None, member_id: str,
                        card_uid: str) -> dict[str, Any]:
        def tx(conn: sqlite3.Connection, ctx: StoreContext) -> dict[str, Any]:
            members.bind_card(conn, ctx, member_id, card_uid)
            return members.member_view(conn, ctx, member_id)

        result: dict[str, Any] = await self._idempotent(
            idem_key, terminal_id, "bind_card", {"m": member_id, "c": card_uid}, tx)
        return result

    async def update_profile(self, *, terminal_id: str, idem_key: str | None, member_id: str,
                             changes: dict[str, Any]) -> dict[str, Any]:
        def tx(conn: sqlite3.Connection, ctx: StoreContext) -> dict[str, Any]:
            members.update_profile(conn, ctx, member_id, changes)
            return members.member_view(conn, ctx, member_id)

        result: dict[str, Any] = await self._idempotent(
            idem_key, terminal_id, "profile", {"m": member_id, "c": changes}, tx)
        return result

    async def top_up(self, *, terminal_id: str, idem_key: str | None, member_id: str,
                     amount: int, paid_by: str = "cash") -> dict[str, Any]:
        limit = self.config.limits.max_topup
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise invalid("invalid_amount", "top-up amount must be whole minor units above zero")
        if amount > limit:
            raise invalid("amount_out_of_range", f"top-up above the limit of {limit}")
        if paid_by not in ("cash", "bank_card", "external"):
            raise invalid("invalid_tender", "a top-up is paid by cash, bank_card or external")
        campaigns = self.campaigns

        def tx(conn: sqlite3.Connection, ctx: StoreContext) -> dict[str, Any]:
            m = members.get_member(conn, member_id)
            bonus, campaign_id = pricing.topup_bonus(
                amount, campaigns, checkout.member_context(m), ctx.today())
            topup_id = uuid7()
            stored_value.top_up(conn, ctx, member_id, topup_id, terminal_id, amount, bonus,
                                campaign_id, paid_by)
            p, b = stored_value.balances(conn, member_id)
            return {"topup_id": topup_id, "member_id": member_id, "principal": amount,
                    "bonus": bonus, "campaign_id": campaign_id, "currency": ctx.currency,
                    "balance": {"principal": p, "bonus": b, "total": p + b}}

        result: dict[str, Any] = await self._idempotent(
            idem_key, terminal_id, "topup", {"m": member_id, "a": amount, "p": paid_by}, tx)
        return result

    async def expire_points(self) -> int:
        total = 0
        while True:
            n = await self._write(lambda conn, ctx: points.expire_due(conn, ctx))
            total += n
            if n == 0:
                return total

    # --- sales --------------------------------------------------------------------------------

    async def _cart_op(
        self, sale_id: str, terminal_id: str, idem_key: str | None, op: Callable[[Cart], None],
        member_event: bool = False,
    ) -> dict[str, Any]:
        """A change to an open basket; a retried key gets the answer it got the first time."""
        k = idempotency.check_key(idem_key)
        async with self._cart_lock:
            cart = self.carts.get_open(sale_id, terminal_id)
            if k in cart.replies:
                replay: dict[str, Any] = cart.replies[k]
                return replay
            op(cart)
            view = await self.sale_view(sale_id, terminal_id)
            cart.replies[k] = view
        self.bus.publish("sale.changed", terminal_id, sale_id=sale_id, total=view["total"],
                         lines=len(view["lines"]))
        return view

    async def open_sale(self, terminal_id: str) -> dict[str, Any]:
        cart = self.carts.open(terminal_id)
        self.bus.publish("sale.opened", terminal_id, sale_id=cart.sale_id)
        return await self.sale_view(cart.sale_id, terminal_id)

    async def sale_view(self, sale_id: str, terminal_id: str | None = None) -> dict[str, Any]:
        cart = self.carts.get(sale_id, terminal_id)
        if cart.state != "open":
            raise EdgeError("sale_closed", f"this sale is {cart.state}", 409, sale_id=sale_id)
        campaigns = self.campaigns
        view = await self._read(lambda conn, ctx: checkout.quote_view(conn, ctx, cart, campaigns))
        view["state"] = cart.state
        view["terminal_id"] = cart.terminal_id
        return view

    async def identify_on_sale(self, sale_id: str, terminal_id: str, idem_key: str | None,
                               by: IdentifyBy, value: str) -> dict[str, Any]:
        member_id = await self.find_member_id(by, value)

        def op(cart: Cart) -> None:
            cart.member_id = member_id

        view = await self._cart_op(sale_id, terminal_id, idem_key, op)
        self.bus.publish("member.identified", terminal_id, sale_id=sale_id, member_id=member_id,
                         by=by)
        return view

    async def add_line(self, sale_id: str, terminal_id: str, idem_key: str | None, *, sku: str,
                       name: str, category: str, qty: int, unit_price: int) -> dict[str, Any]:
        def op(cart: Cart) -> None:
            self.carts.add_line(cart, sku=sku, name=name, category=category, qty=qty,
                                unit_price=unit_price)

        return await self._cart_op(sale_id, terminal_id, idem_key, op)

    async def set_qty(self, sale_id: str, terminal_id: str, idem_key: str | None, line_no: int,
                      qty: int) -> dict[str, Any]:
        return await self._cart_op(sale_id, terminal_id, idem_key,
                                   lambda cart: self.carts.set_qty(cart, line_no, qty))

    async def remove_line(self, sale_id: str, terminal_id: str, idem_key: str | None,
                          line_no: int) -> dict[str, Any]:
        return await self._cart_op(sale_id, terminal_id, idem_key,
                                   lambda cart: self.carts.remove_line(cart, line_no))

    async def add_coupon(self, sale_id: str, terminal_id: str, idem_key: str | None,
                         code: str) -> dict[str, Any]:
        parsed = coupons.parse_code(code)
        cart = self.carts.get_open(sale_id, terminal_id)
        await self._read(lambda conn, ctx: coupons.usable(conn, parsed, cart.member_id,
                                                           ctx.today()))

        def op(c: Cart) -> None:
            if parsed in c.coupons:
                raise EdgeError("coupon_already_applied", "coupon is already on this sale", 409)
            c.coupons.append(parsed)

        return await self._cart_op(sale_id, terminal_id, idem_key, op)

    async def remove_coupon(self, sale_id: str, terminal_id: str, idem_key: str | None,
                            code: str) -> dict[str, Any]:
        parsed = coupons.parse_code(code)

        def op(c: Cart) -> None:
            if parsed not in c.coupons:
                raise EdgeError("coupon_not_on_sale", "coupon is not on this sale", 404)
            c.coupons.remove(parsed)

        return await self._cart_op(sale_id, terminal_id, idem_key, op)

    async def void_sale(self, sale_id: str, terminal_id: str) -> dict[str, Any]:
        async with self._cart_lock:
            cart = self.carts.get_open(sale_id, terminal_id)
            cart.state = "voided"
            self.carts.drop(sale_id)
        self.bus.publish("sale.voided", terminal_id, sale_id=sale_id)
        return {"sale_id": sale_id, "state": "voided"}

    async def finalize(self, sale_id: str, terminal_id: str, idem_key: str | None,
                       tenders: list[checkout.TenderRequest]) -> dict[str, Any]:
        try:
            receipt, fresh = await self._finalize_once(sale_id, terminal_id, idem_key, tenders)
        except EdgeError as exc:
            # Beyond the offline allowance: ask the hub (outside the cart lock, at most ~2 s in
            # all), and on a grant try again. Nothing was written by a refused attempt.
            if exc.code != "allowance_exceeded":
                raise
            deadline = asyncio.get_running_loop().time() + ONLINE_WAIT_S
            for round_ in (1, 2):
                await self._authorize_online(sale_id, terminal_id, exc, deadline)
                try:
                    receipt, fresh = await self._finalize_once(sale_id, terminal_id, idem_key,
                                                               tenders)
                    break
                except EdgeError as short:
                    # A store still on its configured default, with spending the hub has not
                    # acknowledged yet, cannot tell which part of its spending the hub has
                    # seen: it asks for the sale's need alone, and the hub's first grant covers
                    # only what it saw. The second request is the exact rest.
                    if short.code != "allowance_exceeded" or round_ == 2:
                        raise
                    exc = short
        if not fresh:
            return receipt  # a retry: the sale and its events happened the first time

        self.bus.publish("sale.finalized", terminal_id, sale_id=sale_id, total=receipt["total"],
                         member_id=(receipt["member"] or {}).get("member_id"),
                         points_earned=receipt["points_earned"])
        if self.devices is not None:
            try:
                await self.devices.after_finalize(terminal_id, receipt)
            except Exception:  # the sale is committed; a display hiccup must not turn it into
                log.exception("devices after finalize")  # an error for the POS
        return receipt

    async def _finalize_once(self, sale_id: str, terminal_id: str, idem_key: str | None,
                             tenders: list[checkout.TenderRequest]
                             ) -> tuple[dict[str, Any], bool]:
        k = idempotency.check_key(idem_key)
        request = {"sale_id": sale_id, "tenders": [t.__dict__ for t in tenders]}
        h = idempotency.request_hash("finalize", request)
        campaigns = self.campaigns
        async with self._cart_lock:
            try:
                cart = self.carts.get_open(sale_id, terminal_id)
            except EdgeError:
                # A retry after the first answer (or after a crash) finds no open basket in
                # memory but its answer on disk. Looked up only here, off the common path.
                prior = await self._read(
                    lambda conn, ctx: idempotency.replay(conn, k, terminal_id, "finalize", h))
                if prior is not None:
                    return prior, False
                raise

            devices = self.devices

            def tx(conn: sqlite3.Connection, ctx: StoreContext) -> dict[str, Any]:
                receipt = checkout.finalize(conn, ctx, cart, tenders, campaigns)
                if devices is not None:
                    devices.enqueue_receipt(conn, terminal_id, receipt)
                return receipt

            receipt: dict[str, Any] = await self._idempotent(k, terminal_id, "finalize", request,
                                                             tx)
            cart.state = "finalized"
            self.carts.drop(sale_id)
        return receipt, True

    async def _authorize_online(self, sale_id: str, terminal_id: str, exc: EdgeError,
                                deadline: float) -> None:
        """Get more allowance for the sale's member from the hub by ``deadline`` (the loop's
        clock), or raise a clear refusal."""
        from edge import directory
        from protocol.sync import RpcRequest

        cart = self.carts.get_open(sale_id, terminal_id)
        member_id = cart.member_id
        what = exc.details.get("what")
        # What to ask the hub for (``edge.allowance.consume``): beyond what is left here, and
        # while the store still runs on its default, the whole request (the hub's grant then
        # replaces the default).
        extra = int(exc.details.get("online_request", 0))
        sync = self.sync
        if member_id is None or extra <= 0 or sync is None or not sync.connected:
            raise EdgeError("allowance_exceeded", f"{exc.message}; the hub is not reachable",
                            409, **exc.details, online="unreachable") from None
        request = RpcRequest(request_id=uuid7(), store_id=self.context.store_id,
                             kind="authorize", member_id=member_id,
                             points=extra if what == "points" else 0,
                             stored_value=extra if what == "stored_value" else 0)
        try:
            reply = await sync.rpc(
                request, wait_s=max(0.0, deadline - asyncio.get_running_loop().time()))
        except Exception:  # timeout or a lost connection: the POS gets its answer now
            raise EdgeError("allowance_exceeded", f"{exc.message}; the hub did not answer in"
                            " time", 409, **exc.details, online="timeout") from None
        if not reply.ok:
            raise EdgeError("allowance_exceeded", f"{exc.message}; the hub refused:"
                            f" {reply.message}", 409, **exc.details, online=reply.error)
        await self._write(lambda conn, ctx: directory.apply_authorization(
            conn, ctx, member_id, reply))

    async def receipt(self, sale_id: str) -> dict[str, Any]:
        return await self._read(lambda conn, ctx: checkout.receipt_view(conn, ctx, sale_id))

    async def refund(self, *, terminal_id: str, idem_key: str | None, sale_id: str,
                     lines: list[tuple[int, int]] | None) -> dict[str, Any]:
        request = {"sale_id": sale_id, "lines": lines}

        def tx(conn: sqlite3.Connection, ctx: StoreContext) -> dict[str, Any]:
            return refunds.refund(conn, ctx, sale_id=sale_id, refund_id=uuid7(),
                                  terminal_id=terminal_id, lines=lines)

        result: dict[str, Any] = await self._idempotent(idem_key, terminal_id, "refund", request,
                                                        tx)
        self.bus.publish("refund.completed", terminal_id, sale_id=sale_id,
                         refund_id=result["refund_id"], amount=result["amount"])
        return result

    # --- status -------------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        def rd(conn: sqlite3.Connection, ctx: StoreContext) -> dict[str, Any]:
            st = outbox.stats(conn, ctx.epoch)
            n = conn.execute("SELECT count(*) FROM members").fetchone()[0]
            return {"store_id": ctx.store_id, "epoch": ctx.epoch, "members": n,
                    "outbox": {"depth": st.depth, "oldest_seq": st.oldest_seq,
                               "newest_seq": st.newest_seq},
                    "last_seq": int(outbox.meta_get(conn, f"outbox_seq:{ctx.epoch}", "0") or 0)}

        out = await self._read(rd)
        out["open_sales"] = self.carts.open_count()
        out["campaigns"] = [c.campaign_id for c in self.campaigns]
        out["subscribers"] = self.bus.subscribers
        return out
