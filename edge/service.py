"""The edge gateway's domain service: what the POS API, the tests and the tools call.

Every mutating operation that touches money, points, coupons or members is one SQLite
transaction that also writes its outbox rows and its idempotency record, committed before the
method returns: an answer the POS got is never lost to a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from datetime import date
from typing import Any, TypeVar

from edge import (
    campaign_store,
    cards,
    checkout,
    coupons,
    idempotency,
    member_changes,
    members,
    outbox,
    payment_pin,
    points,
    refunds,
    status,
    stored_value,
)
from edge import consents as consent_book
from edge.bus import EventBus
from edge.cart import Cart, CartBook
from edge.config import EdgeConfig
from edge.consents import Consent
from edge.context import StoreContext
from edge.db import Database
from edge.errors import EdgeError, invalid
from edge.members import IdentifyBy
from edge.ports import HubLink, Lanes
from protocol import pricing
from protocol.campaigns import Campaign, CampaignBundle, parse_bundle
from protocol.events import Gender
from protocol.hlc import HybridClock
from protocol.ids import uuid7
from protocol.sync import DeviceHealth

T = TypeVar("T")
P = TypeVar("P")
log = logging.getLogger("membergate.edge")
ONLINE_WAIT_S = 2.0  # what a POS waits for online authorisation before a clear refusal


class EdgeService:
    def __init__(self, config: EdgeConfig, db: Database | None = None) -> None:
        self.config = config
        self.db = db or Database(config.database.path)
        self.bus = EventBus()
        self.carts = CartBook(config.limits)
        # Re-read whenever the campaign table changed, by this process or another one
        # (``membergate-edge apply-campaigns`` while the edge runs): no restart needed.
        self.campaigns = campaign_store.ActiveCampaigns()
        self.ctx: StoreContext | None = None
        self._cart_lock = asyncio.Lock()
        # Called after every committed write: the sync client wakes to send new outbox rows.
        self.on_outbox: list[Callable[[], None]] = []
        # Wired around the service by the composition root (edge.gateway), never imported.
        self.sync: HubLink | None = None
        self.devices: Lanes | None = None
        self._around = AsyncExitStack()  # the parts started around this service
        self.last_till_write = float("-inf")  # time.monotonic() of the tills' last write

    # --- lifetime -----------------------------------------------------------------------------

    async def start(self) -> EdgeService:
        await self.db.open()
        try:
            self.ctx = await self.db.write(self._init_store)
            if self.config.campaigns_file is not None:
                await self.apply_campaign_file(self.config.campaigns_file)
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

    async def around(self, part: AbstractAsyncContextManager[P]) -> P:
        """Start ``part`` (the sync client, the lanes) as part of this service: it is closed
        with the service, before the database, in the reverse order of starting."""
        return await self._around.enter_async_context(part)

    async def close(self) -> None:
        try:
            await self._around.aclose()
        finally:
            self.sync = None
            self.devices = None
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

    async def active_campaigns(self) -> list[Campaign]:
        return await self._read(lambda conn, ctx: self.campaigns.current(conn))

    async def apply_bundle(self, bundle: CampaignBundle) -> campaign_store.Outcome:
        return await self._write(lambda conn, ctx: campaign_store.apply_bundle(conn, ctx, bundle))

    async def apply_campaign_file(self, path: Any) -> campaign_store.Outcome:
        from pathlib import Path

        text = await asyncio.to_thread(Path(path).read_text, encoding="utf-8")
        return await self.apply_bundle(parse_bundle(text, str(path)))

    # --- members ------------------------------------------------------------------------------

    async def register_member(
        self, *, terminal_id: str, idem_key: str | None, phone: str | None, name: str = "",
        birthday: date | None = None, card_uid: str | None = None, tags: list[str] | None = None,
        guide_id: str | None = None, consents: list[Consent] | None = None,
        cashier_id: str | None = None, gender: Gender | None = None,
    ) -> dict[str, Any]:
        """Register a member, with the consents they gave at the till."""
        request = {"phone": phone, "name": name, "birthday": birthday, "card_uid": card_uid,
                   "tags": tags, "guide_id": guide_id, "gender": gender,
                   "consents": [c.__dict__ for c in consents or []], "by": cashier_id}

        def tx(conn: sqlite3.Connection, ctx: StoreContext) -> dict[str, Any]:
            mid = members.register(conn, ctx, phone=phone, name=name, birthday=birthday,
                                   card_uid=card_uid, tags=tags, guide_id=guide_id,
                                   gender=gender)
            if consents:
                consent_book.record(conn, ctx, mid, consents, terminal_id=terminal_id,
                                    cashier_id=cashier_id)
            return members.member_view(conn, ctx, mid)

        view: dict[str, Any] = await self._idempotent(idem_key, terminal_id, "register", request,
                                                      tx)
        self.bus.publish("member.registered", terminal_id, member_id=view["member_id"])
        return view

    async def lookup_member(self, by: IdentifyBy, value: str) -> dict[str, Any]:
        member_id = await self.find_member_id(by, value)
        return await self.member(member_id)

    async def member(self, member_id: str) -> dict[str, Any]:
        return await self._read(lambda conn, ctx: members.member_view(conn, ctx, member_id))

    async def find_member_id(self, by: IdentifyBy, value: str) -> str:
        """The member a card, code, phone or QR names: here, else at the hub. Not known here
        and the hub could not be asked: ``hub_unreachable`` (503), never a plain not-found,
        since the member may well exist (registering them again would make a duplicate)."""
        try:
            return await self._read(lambda conn, ctx: members.identify(conn, ctx, by, value))
        except EdgeError as exc:
            if exc.code not in ("unknown_card", "member_not_found") or self.sync is None:
                raise  # a store without a hub: its directory is the whole answer
            # Registered in another store and not in our directory yet: ask the hub online.
            online = await self._lookup_online(by, value)
            if online == "not_found":
                raise
            if online != "found":
                raise EdgeError(
                    "hub_unreachable", "not a member of this store's directory, and the hub"
                    " could not be asked: the member may exist elsewhere", 503,
                    by=by, local_code=exc.code, online=online) from None
        return await self._read(lambda conn, ctx: members.identify(conn, ctx, by, value))

    async def _lookup_online(self, by: IdentifyBy, value: str) -> str:
        """``found`` (now in our directory), ``not_found`` (the hub knows no such member),
        ``unreachable``, ``timeout`` or the hub's error code."""
        from edge import directory
        from edge.phone import normalise_phone
        from protocol.ids import MEMBER_QR_PREFIX
        from protocol.sync import RpcRequest

        sync = self.sync
        if sync is None or not sync.connected:
            return "unreachable"
        if by == "qr":
            by, value = "member_code", value.removeprefix(MEMBER_QR_PREFIX)
        elif by == "phone":
            value = normalise_phone(value, self.config.store.phone_region)
        elif by == "card_uid":
            value = members.normalise_card_uid(value)
        request = RpcRequest(request_id=uuid7(), store_id=self.context.store_id, kind="lookup",
                             by=by, value=value)
        try:
            reply = await sync.rpc(request, wait_s=ONLINE_WAIT_S)
        except Exception:  # no answer in time, or the connection went meanwhile
            return "timeout"
        entry = reply.member
        if not reply.ok or entry is None:
            return "not_found" if reply.error in (None, "member_not_found") else str(reply.error)
        await self._write(lambda conn, ctx: directory.apply_entry(conn, ctx, entry))
        return "found"

    async def points_history(self, member_id: str, *, limit: int,
                             before: int | None) -> dict[str, Any]:
        from edge import points_history

        return await self._read(lambda conn, ctx: points_history.history(
            conn, ctx, member_id, limit=limit, before=before))

    async def bind_card(self, *, terminal_id: str, idem_key: str | None, member_id: str,
                        card_uid: str) -> dict[str, Any]:
        def tx(conn: sqlite3.Connection, ctx: StoreContext) -> dict[str, Any]:
            members.bind_card(conn, ctx, member_id, card_uid)
            return members.member_view(conn, ctx, member_id)

        result: dict[str, Any] = await self._idempotent(
            idem_key, terminal_id, "bind_card", {"m": member_id, "c": card_uid}, tx)
        return result

    async def update_profile(self, *, terminal_id: str, idem_key: str | None, member_id: str,
                             changes: dict[str, Any], cashier_id: str | None = None
                             ) -> dict[str, Any]:
        def tx(conn: sqlite3.Connection, ctx: StoreContext) -> dict[str, Any]:
            members.update_profile(conn, ctx, member_id, changes, terminal_id=terminal_id,
                                   cashier_id=cashier_id)
            return members.member_view(conn, ctx, member_id)

        result: dict[str, Any] = await self._idempotent(
            idem_key, terminal_id, "profile", {"m": member_id, "c": changes}, tx)
        return result

    async def set_card_state(self, *, terminal_id: str, idem_key: str | None, member_id: str,
                             card_uid: str, state: cards.Requested, reason: str = "",
                             cashier_id: str | None = None) -> dict[str, Any]:
        """Report a card lost, lift the loss, or unbind it (``edge.cards``)."""
        return await self._member_change(
            terminal_id, idem_key, "card_state", member_id,
            {"c": card_uid, "s": state, "r": reason, "by": cashier_id},
            lambda conn, ctx, mid: cards.set_state(conn, ctx, mid, card_uid, state,
                                                   reason=reason, terminal_id=terminal_id,
                                                   cashier_id=cashier_id))

    async def replace_card(self, *, terminal_id: str, idem_key: str | None, member_id: str,
                           card_uid: str, new_card_uid: str, reason: str = "",
                           cashier_id: str | None = None) -> dict[str, Any]:
        return await self._member_change(
            terminal_id, idem_key, "card_replace", member_id,
            {"c": card_uid, "n": new_card_uid, "r": reason, "by": cashier_id},
            lambda conn, ctx, mid: cards.replace(conn, ctx, mid, card_uid, new_card_uid,
                                                 reason=reason, terminal_id=terminal_id,
                                                 cashier_id=cashier_id))

    async def _member_change(
        self, terminal_id: str, idem_key: str | None, operation: str, member_id: str,
        request: dict[str, Any],
        change: Callable[[sqlite3.Connection, StoreContext, str], None],
    ) -> dict[str, Any]:
        """``change`` the member ``member_id`` is now (404 for none), once per key; answers the
        member as the till shows them."""
        def tx(conn: sqlite3.Connection, ctx: StoreContext) -> dict[str, Any]:
            mid = members.resolve(conn, member_id)
            members.get_member(conn, mid)
            change(conn, ctx, mid)
            return members.member_view(conn, ctx, mid)

        result: dict[str, Any] = await self._idempotent(
            idem_key, terminal_id, operation, {"m": member_id, **request}, tx)
        return result

    async def set_payment_pin(self, *, terminal_id: str, idem_key: str | None, member_id: str,
                              pin: str, current_pin: str | None = None, reset: bool = False,
                              cashier_id: str | None = None) -> dict[str, Any]:
        """Set, change or (staff, after checking who the member is) reset a payment PIN."""
        cfg = self.config.payment_pin
        payment_pin.check_format(pin)
        if reset and cashier_id is None:
            raise invalid("cashier_required", "a PIN reset names the cashier who checked who"
                          " the member is")
        held, locked = await self._read(lambda conn, ctx: payment_pin.state(conn, member_id))
        if held is not None and not reset:
            if locked:
                raise payment_pin.locked_error()
            if current_pin is None:
                raise invalid("current_pin_required", "changing a PIN needs the current one"
                              " (or a reset by staff)")
            await self._check_pin(member_id, held, current_pin, terminal_id)
        new_hash = await asyncio.to_thread(payment_pin.hash_pin, cfg, pin)

        def tx(conn: sqlite3.Connection, ctx: StoreContext) -> dict[str, Any]:
            payment_pin.set_pin(conn, ctx, member_id, new_hash, reset=reset,
                                terminal_id=terminal_id, cashier_id=cashier_id)
            mid = members.resolve(conn, member_id)
            return {"member_id": mid,
                    "payment_pin": members.member_view(conn, ctx, mid)["payment_pin"]}

        # The PIN is not part of the request a retry is compared by: its digest would sit in
        # the database, one of a million to try.
        result: dict[str, Any] = await self._idempotent(
            idem_key, terminal_id, "pin", {"m": member_id, "reset": reset, "by": cashier_id}, tx)
        return result

    async def _check_pin(self, member_id: str, pin_hash: str, pin: str,
                         terminal_id: str) -> None:
        """Verify ``pin`` off the event loop; a wrong one is counted (and may lock)."""
        if await asyncio.to_thread(payment_pin.matches, pin_hash, pin):
            await self._write(lambda conn, ctx: payment_pin.record_success(conn, member_id))
            return
        cfg = self.config.payment_pin
        left = await self._write(lambda conn, ctx: payment_pin.record_failure(
            conn, ctx, member_id, cfg, terminal_id))
        if left == 0:
            raise payment_pin.locked_error()
        raise EdgeError("wrong_pin", f"wrong PIN: {left} more tries before balances lock", 409,
                        attempts_left=left)

    async def set_consents(self, *, terminal_id: str, idem_key: str | None, member_id: str,
                           consents: list[Consent], cashier_id: str | None = None
                           ) -> dict[str, Any]:
        """Consents given or withdrawn at the till (``edge.consents``)."""
        return await self._member_change(
            terminal_id, idem_key, "consents", member_id,
            {"c": [c.__dict__ for c in consents], "by": cashier_id},
            lambda conn, ctx, mid: consent_book.record(conn, ctx, mid, consents,
                                                       terminal_id=terminal_id,
                                                       cashier_id=cashier_id))

    async def member_changes(self, member_id: str, *, limit: int,
                             before: int | None) -> dict[str, Any]:
        def read(conn: sqlite3.Connection, ctx: StoreContext) -> dict[str, Any]:
            members.get_member(conn, member_id)
            return member_changes.history(conn, member_id, limit=limit, before=before)

        return await self._read(read)

    async def top_up(self, *, terminal_id: str, idem_key: str | None, member_id: str,
                     amount: int, paid_by: str = "cash") -> dict[str, Any]:
        limit = self.config.limits.max_topup
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise invalid("invalid_amount", "top-up amount must be whole minor units above zero")
        if amount > limit:
            raise invalid("amount_out_of_range", f"top-up above the limit of {limit}")
        if paid_by not in ("cash", "bank_card", "external"):
            raise invalid("invalid_tender", "a top-up is paid by cash, bank_card or external")
        def tx(conn: sqlite3.Connection, ctx: StoreContext) -> dict[str, Any]:
            m = members.get_member(conn, member_id)
            bonus, campaign_id = pricing.topup_bonus(
                amount, self.campaigns.current(conn), checkout.member_context(m), ctx.today())
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
        """A change to an open basket; a retried key changes nothing and gets the sale as it
        stands (its first attempt's change included)."""
        k = idempotency.check_key(idem_key)
        async with self._cart_lock:
            cart = self.carts.get_open(sale_id, terminal_id)
            if k in cart.done_keys:
                return await self.sale_view(sale_id, terminal_id)  # done the first time
            op(cart)
            view = await self.sale_view(sale_id, terminal_id)
            cart.remember(k)
        self.bus.publish("sale.changed", terminal_id, sale_id=sale_id, total=view["total"],
                         lines=len(view["lines"]))
        return view

    async def open_sale(self, terminal_id: str, *, cashier_id: str | None = None,
                        guide_id: str | None = None) -> dict[str, Any]:
        """A new basket on ``terminal_id``; the cashier at the till and the sale's shopping
        guide may be named now or at finalize."""
        cart = self.carts.open(terminal_id)
        cart.cashier_id, cart.guide_id = cashier_id, guide_id
        self.bus.publish("sale.opened", terminal_id, sale_id=cart.sale_id)
        return await self.sale_view(cart.sale_id, terminal_id)

    async def sale_view(self, sale_id: str, terminal_id: str | None = None) -> dict[str, Any]:
        cart = self.carts.get(sale_id, terminal_id)
        if cart.state != "open":
            raise EdgeError("sale_closed", f"this sale is {cart.state}", 409, sale_id=sale_id)
        view = await self._read(lambda conn, ctx: checkout.quote_view(
            conn, ctx, cart, self.campaigns.current(conn)))
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
                       qty: int, name: str | None = None, category: str | None = None,
                       unit_price: int | None = None) -> dict[str, Any]:
        """A line of ``qty`` × ``sku``; what is not given (name, category, price) is the
        catalogue's, and a sku not in it then is ``unknown_sku``."""
        if name is None or category is None or unit_price is None:
            from edge import products

            try:
                found = await self.db.read(lambda conn: products.get(conn, sku))
            except EdgeError as exc:
                if exc.code != "unknown_product":
                    raise
                raise invalid("unknown_sku", f"{sku} is not in the catalogue: give its name,"
                              " category and unit_price", sku=sku) from None
            name = name if name is not None else str(found["name"])
            category = category if category is not None else str(found["category"])
            unit_price = unit_price if unit_price is not None else int(found["unit_price"])

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
                       tenders: list[checkout.TenderRequest], *, cashier_id: str | None = None,
                       guide_id: str | None = None, pin: str | None = None) -> dict[str, Any]:
        """Pay the sale; a ``cashier_id`` or ``guide_id`` given here replaces the one named
        when the sale was opened. ``pin``: the member's payment PIN, when paying with balances
        asks for it."""
        if cashier_id is not None or guide_id is not None:
            with contextlib.suppress(EdgeError):  # a retry finds no basket: its answer stands
                cart = self.carts.get_open(sale_id, terminal_id)
                cart.cashier_id = cashier_id or cart.cashier_id
                cart.guide_id = guide_id or cart.guide_id
        pin_ok = await self._sale_pin(sale_id, terminal_id, pin)
        try:
            receipt, fresh = await self._finalize_once(sale_id, terminal_id, idem_key, tenders,
                                                       pin_ok)
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
                                                               tenders, pin_ok)
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

    async def _sale_pin(self, sale_id: str, terminal_id: str, pin: str | None) -> bool | None:
        """Verify the PIN given for the sale's member before the sale's transaction (argon2 is
        slow by design): True when it matches; None when none was given or there is no open
        sale or member to check it for (the finalize that follows says what is missing)."""
        if pin is None:
            return None
        try:
            member_id = self.carts.get_open(sale_id, terminal_id).member_id
        except EdgeError:
            return None
        if member_id is None:
            return None
        held, locked = await self._read(lambda conn, ctx: payment_pin.state(conn, member_id))
        if locked:
            raise payment_pin.locked_error()
        if held is None:
            return None  # nothing to check it against: the sale needs none, or says pin_not_set
        await self._check_pin(member_id, held, pin, terminal_id)
        return True

    async def _finalize_once(self, sale_id: str, terminal_id: str, idem_key: str | None,
                             tenders: list[checkout.TenderRequest], pin_ok: bool | None = None
                             ) -> tuple[dict[str, Any], bool]:
        k = idempotency.check_key(idem_key)
        request = {"sale_id": sale_id, "tenders": [t.__dict__ for t in tenders]}
        h = idempotency.request_hash("finalize", request)
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
                # Paid already under another key (a POS that timed out and retried with a
                # new one): say so, with the receipt, instead of "no open sale".
                done = await self._read(lambda conn, ctx: checkout.finalized_receipt(
                    conn, ctx, sale_id))
                if done is not None:
                    raise EdgeError("sale_already_finalized", "this sale is already paid;"
                                    " its receipt is in details", 409,
                                    receipt=done) from None
                raise

            devices = self.devices

            def tx(conn: sqlite3.Connection, ctx: StoreContext) -> dict[str, Any]:
                receipt = checkout.finalize(conn, ctx, cart, tenders, self.campaigns.current(conn),
                                            pin_ok=pin_ok)
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

    async def day_receipts(self, on: date, *, limit: int, offset: int) -> dict[str, Any]:
        from edge import day_receipts

        return await self._read(lambda conn, ctx: day_receipts.day(
            conn, ctx, on, limit=limit, offset=offset))

    async def refund(self, *, terminal_id: str, idem_key: str | None, sale_id: str,
                     lines: list[tuple[int, int]] | None, cashier_id: str | None = None
                     ) -> dict[str, Any]:
        request = {"sale_id": sale_id, "lines": lines, "cashier_id": cashier_id}

        def tx(conn: sqlite3.Connection, ctx: StoreContext) -> dict[str, Any]:
            return refunds.refund(conn, ctx, sale_id=sale_id, refund_id=uuid7(),
                                  terminal_id=terminal_id, lines=lines, cashier_id=cashier_id)

        result: dict[str, Any] = await self._idempotent(idem_key, terminal_id, "refund", request,
                                                        tx)
        self.bus.publish("refund.completed", terminal_id, sale_id=sale_id,
                         refund_id=result["refund_id"], amount=result["amount"])
        return result

    # --- status -------------------------------------------------------------------------------

    async def status(self, *, live: bool = True) -> dict[str, Any]:
        """The store's figures (``edge.status.read``); ``live`` adds what only this process
        knows (open baskets, event subscribers): off for a one-off command, which has none."""
        out = await self._read(lambda conn, ctx: status.read(conn, ctx, self.campaigns))
        if live:
            out["live"] = {"open_sales": self.carts.open_count(),
                           "subscribers": self.bus.subscribers}
        return out
