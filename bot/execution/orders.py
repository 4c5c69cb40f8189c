"""Order state machine and the order manager.

Why a strict state machine: the failure stories this bot is built against (a duplicate
after a lost ack, an order marked cancelled while still live, endless polling of an order
that never arrived, a position the database thinks is open after the exchange closed it)
all start with a local status that the exchange never confirmed. So:

* every status change goes through ``apply_report`` and becomes one ``order_events`` row;
* statuses only move forward (a late "acked" never undoes a "filled");
* ``unknown`` is a real, *open* status: an order whose fate is unknown still counts as live
  for risk, until a lookup (the broker's retry path or reconciliation) settles it;
* nothing is marked cancelled unless the exchange said so.

::

    new -> submitted -> acked -> partially_filled -> filled
             |   \\        \\            \\-> cancelled / expired
             |    \\-> rejected
             \\-> unknown -> (submitted again | acked | ... | rejected)

The manager owns the client ids, the set of orders of this run, the fill deduplication (by
trade id) and the position from fills. It does not call risk: the engine does that first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Iterable
from decimal import Decimal
from typing import Protocol

from bot.clock import Clock
from bot.execution.broker import Broker, ExchangeHalted, Update
from bot.execution.client_ids import ClientIdFactory
from bot.execution.ownership import UNATTRIBUTED, Ownership
from bot.logging import get_logger
from bot.model import (
    ZERO,
    Fill,
    Order,
    OrderEvent,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    ReconcileDifference,
    Side,
)

log = get_logger("execution.orders")

S = OrderStatus

ALLOWED: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.NEW: frozenset({S.SUBMITTED, S.REJECTED}),
    S.SUBMITTED: frozenset(
        {S.ACKED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED, S.REJECTED, S.EXPIRED, S.UNKNOWN}
    ),
    S.UNKNOWN: frozenset(
        {S.SUBMITTED, S.ACKED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED, S.REJECTED, S.EXPIRED}
    ),
    S.ACKED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED, S.EXPIRED, S.UNKNOWN}),
    S.PARTIALLY_FILLED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED, S.EXPIRED, S.UNKNOWN}),
    S.FILLED: frozenset(),
    S.CANCELLED: frozenset(),
    S.REJECTED: frozenset(),
    S.EXPIRED: frozenset(),
}

# How far along an order is; a report with a lower rank than the current status is stale
# (e.g. the REST "acked" response arriving after the websocket's "filled").
_RANK = {
    S.NEW: 0,
    S.SUBMITTED: 1,
    S.UNKNOWN: 1,
    S.ACKED: 2,
    S.PARTIALLY_FILLED: 3,
    S.FILLED: 4,
    S.CANCELLED: 4,
    S.REJECTED: 4,
    S.EXPIRED: 4,
}


class IllegalTransition(ValueError):
    """A status change the state machine forbids (a bug or a corrupted report)."""


def transition(
    order: Order,
    status: OrderStatus,
    ts: int,
    *,
    filled: Decimal | None = None,
    exchange_id: str | None = None,
    reason: str = "",
) -> tuple[Order, OrderEvent]:
    """Move ``order`` to ``status``; returns the new order and its ``order_events`` row."""
    if status not in ALLOWED[order.status]:
        raise IllegalTransition(f"order {order.client_id}: {order.status} -> {status} is not allowed")
    new_filled = order.filled if filled is None else max(filled, order.filled)
    if status is S.PARTIALLY_FILLED and order.status is S.PARTIALLY_FILLED and new_filled == order.filled:
        raise IllegalTransition(f"order {order.client_id}: partially_filled again without a new fill")
    new = dataclasses.replace(
        order,
        status=status,
        filled=new_filled,
        exchange_id=exchange_id or order.exchange_id,
        reason=reason or order.reason,
    )
    event = OrderEvent(
        client_id=order.client_id,
        status=status,
        ts=ts,
        filled=new_filled,
        exchange_id=new.exchange_id,
        reason=reason,
    )
    return new, event


def apply_report(
    order: Order,
    status: OrderStatus,
    ts: int,
    *,
    filled: Decimal | None = None,
    exchange_id: str | None = None,
    reason: str = "",
) -> tuple[Order, OrderEvent | None]:
    """Merge what the exchange (or a fill) says into ``order``, never moving backwards.

    Exchanges skip states (submitted -> filled) and deliver them out of order (websocket
    before REST). A stale report only contributes a larger ``filled`` and the exchange id;
    it produces no event. A partial report that completes the amount becomes ``filled``.
    """
    filled_new = order.filled if filled is None else max(filled, order.filled)
    if status is S.PARTIALLY_FILLED and filled_new >= order.amount:
        status = S.FILLED
    if status is S.ACKED and filled_new > ZERO and not order.status.is_terminal:
        status = S.FILLED if filled_new >= order.amount else S.PARTIALLY_FILLED
    # ``unknown`` is a loss of certainty, not a step back: any open order can become unknown.
    stale = order.status.is_terminal or (
        _RANK[status] < _RANK[order.status] and S.UNKNOWN not in (order.status, status)
    )
    same = status is order.status and (status is not S.PARTIALLY_FILLED or filled_new == order.filled)
    if stale or same:
        quiet = dataclasses.replace(order, filled=filled_new, exchange_id=order.exchange_id or exchange_id)
        return quiet, None
    if status is S.PARTIALLY_FILLED and order.status is S.PARTIALLY_FILLED and filled_new == order.filled:
        return order, None
    return transition(order, status, ts, filled=filled_new, exchange_id=exchange_id, reason=reason)


# --------------------------------------------------------------------------- position


class PositionTracker:
    """Net position in the base currency from fills, with average cost and realised PnL.

    Fees charged in the base currency reduce the position (that is what the exchange's
    balance shows); fees in the quote currency are added to ``fees``; fees in a third
    currency are counted in ``other_fees`` only (no price to convert them).
    """

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.base, self.quote = symbol.split("/")
        self.amount = ZERO
        self.avg_price = ZERO
        self.realized_pnl = ZERO
        self.fees = ZERO
        self.other_fees: dict[str, Decimal] = {}

    def apply(self, fill: Fill) -> Position:
        signed = fill.amount * fill.side.sign
        if fill.fee_currency == self.base:
            base_fee = fill.fee
            self.fees += fill.fee * fill.price
        else:
            base_fee = ZERO
            if fill.fee_currency == self.quote:
                self.fees += fill.fee
            elif fill.fee:
                self.other_fees[fill.fee_currency] = self.other_fees.get(fill.fee_currency, ZERO) + fill.fee
        self._trade(signed, fill.price)
        if base_fee:
            self._trade(-base_fee, fill.price)
        return self.snapshot(fill.ts)

    def _trade(self, signed: Decimal, price: Decimal) -> None:
        pos = self.amount
        if pos == ZERO or (pos > 0) == (signed > 0):
            total = pos + signed
            self.avg_price = (self.avg_price * abs(pos) + price * abs(signed)) / abs(total) if total else ZERO
            self.amount = total
            return
        closing = min(abs(signed), abs(pos))
        direction = 1 if pos > 0 else -1
        self.realized_pnl += (price - self.avg_price) * closing * direction
        total = pos + signed
        if total == ZERO:
            self.avg_price = ZERO
        elif (total > 0) != (pos > 0):
            self.avg_price = price  # flipped: the rest opens at this price
        self.amount = total

    def snapshot(self, ts: int) -> Position:
        return Position(
            symbol=self.symbol,
            amount=self.amount,
            avg_price=self.avg_price,
            realized_pnl=self.realized_pnl,
            fees=self.fees,
            ts=ts,
        )


# --------------------------------------------------------------------------- manager


class RecordSink(Protocol):
    """What the manager needs from the store writer (``bot.store.StoreWriter`` fits)."""

    def put(self, record: object) -> None: ...

    async def durable(self, record: object) -> None: ...


FillCallback = Callable[[Fill], Awaitable[None] | None]
OrderCallback = Callable[[Order], Awaitable[None] | None]


async def _call(cb: Callable[..., Awaitable[None] | None] | None, arg: object) -> None:
    if cb is None:
        return
    res = cb(arg)
    if inspect.isawaitable(res):
        await res


class OrderManager:
    """Submits, cancels and tracks this bot's orders through one ``Broker``.

    Every status change is written (order upsert + ``order_events`` row) through ``sink``.
    A fill is made durable (``await sink.durable(fill)``) before the position changes and
    before ``on_fill`` tells the engine, so a crash can never leave a fill acted on but
    not stored.

    Only the bot's own orders and fills are taken in (``bot.execution.ownership``): an
    order or fill of somebody else on the same account is recorded once as ``foreign_*`` and
    otherwise ignored -- never adopted, never booked, never cancelled from here.
    """

    def __init__(
        self,
        broker: Broker,
        sink: RecordSink,
        clock: Clock,
        ids: ClientIdFactory,
        symbol: str,
        *,
        on_fill: FillCallback | None = None,
        on_order: OrderCallback | None = None,
        seen_trade_ids: Iterable[str] = (),
        orders: Iterable[Order] = (),
        fills: Iterable[Fill] = (),
        own_client_ids: Iterable[str] = (),
    ) -> None:
        self.broker = broker
        self.sink = sink
        self.clock = clock
        self.ids = ids
        self.symbol = symbol
        self.on_fill = on_fill
        self.on_order = on_order
        self.orders: dict[str, Order] = {o.client_id: o for o in orders}
        self.ownership = Ownership(ids, own_client_ids)
        bind = getattr(broker, "bind_ownership", None)
        if callable(bind):
            bind(self.is_own)
        for o in self.orders.values():
            self.ownership.remember(o.client_id, o.exchange_id)
        # Foreign orders / fills seen on the account: counted, reported once each (by client id /
        # trade id), never acted on.
        self.foreign = {"orders": 0, "fills": 0}
        self._foreign_seen: set[str] = set()
        # The open subset, kept beside ``orders`` so the hot path never scans a run's history.
        self._open: dict[str, Order] = {k: o for k, o in self.orders.items() if o.status.is_open}
        self.position = PositionTracker(symbol)
        self._seen: set[str] = set()
        self._fills_by_order: dict[str, Decimal] = {}
        # Orders the exchange reports (partly) filled beyond the trades booked so far: the
        # create/cancel answer or a status update often arrives before the trades themselves.
        self._unbooked: dict[str, Order] = {}
        fills = list(fills)
        for f in fills:  # history from the store: the position as of the last stored fill
            if f.trade_id in self._seen:
                continue
            self.ownership.remember(f.client_id, f.exchange_order_id)
            self._seen.add(f.trade_id)
            self.position.apply(f)
            self._fills_by_order[f.client_id] = self._fills_by_order.get(f.client_id, ZERO) + f.amount
        self._seen.update(seen_trade_ids)
        self.last_fill_ts: int | None = max((f.ts for f in fills), default=None)
        self.busy: set[str] = set()  # client ids with a create/cancel in flight (reconcile skips them)
        # When each order of this run became ``unknown`` (the reconciler waits a settle delay
        # before it closes one the exchange does not know: a late create may still land).
        self.unknown_since: dict[str, int] = {}
        # ``unknown`` orders whose cancel found nothing on the exchange: not re-sent on every
        # decision; the reconciler or the poller settles them (any status change unparks).
        self._cancel_parked: set[str] = set()
        self._lock = asyncio.Lock()
        for o in self.orders.values():
            self._note_unbooked(o)

    # ------------------------------------------------------------------ queries

    @property
    def open_orders(self) -> list[Order]:
        return list(self._open.values())

    def unbooked(self) -> Decimal:
        """Signed base amount the exchange says is filled whose trades are not booked yet.

        Risk and the strategy add it to the booked position: without it, an order reported
        FILLED by the create answer (no longer open) but whose trade has not arrived counts
        nowhere, and the next decision would send the same exposure again.
        """
        total = ZERO
        for cid, o in self._unbooked.items():
            gap = o.filled - self._fills_by_order.get(cid, ZERO)
            if gap > 0:
                total += gap if o.side is Side.BUY else -gap
        return total

    def _note_unbooked(self, order: Order) -> None:
        if order.filled > self._fills_by_order.get(order.client_id, ZERO):
            self._unbooked[order.client_id] = order
        else:
            self._unbooked.pop(order.client_id, None)

    def get(self, client_id: str) -> Order | None:
        return self.orders.get(client_id)

    def has_seen(self, trade_id: str) -> bool:
        return trade_id in self._seen

    def is_own(self, client_id: str | None) -> bool:
        return self.ownership.is_own(client_id)

    def note_foreign(self, kind: str, key: str, detail: str, client_id: str | None) -> bool:
        """Record something on the account that is not the bot's, once per ``key``.

        One log line, one ``reconcile_differences`` row (kind ``foreign_order`` or
        ``foreign_fill``) and a counter; returns False when ``key`` was reported already.
        """
        if f"{kind}:{key}" in self._foreign_seen:
            return False
        self._foreign_seen.add(f"{kind}:{key}")
        self.foreign["orders" if kind == "foreign_order" else "fills"] += 1
        log.warning(kind, client_id=client_id, detail=detail, action="left alone (not the bot's)")
        self.sink.put(ReconcileDifference(self.clock.now_ms(), self.symbol, kind, detail, client_id))
        return True

    # ------------------------------------------------------------------ recording

    def _record(self, order: Order, event: OrderEvent | None) -> None:
        self.orders[order.client_id] = order
        self.ownership.remember(order.client_id, order.exchange_id)
        if order.status is S.UNKNOWN:
            if event is not None:
                self.unknown_since.setdefault(order.client_id, self.clock.mono_ms())  # monotonic: an age
        else:
            self.unknown_since.pop(order.client_id, None)
            self._cancel_parked.discard(order.client_id)
        if order.status.is_open:
            self._open[order.client_id] = order
        else:
            self._open.pop(order.client_id, None)
        self._note_unbooked(order)
        self.sink.put(order)
        if event is not None:
            self.sink.put(event)
            log.info(
                "order_status",
                client_id=order.client_id,
                status=str(event.status),
                filled=str(event.filled),
                exchange_id=event.exchange_id,
                reason=event.reason or None,
            )

    async def _report(
        self,
        client_id: str,
        status: OrderStatus,
        *,
        filled: Decimal | None = None,
        exchange_id: str | None = None,
        reason: str = "",
        ts: int | None = None,
    ) -> Order:
        order = self.orders[client_id]
        new, event = apply_report(
            order,
            status,
            self.clock.now_ms() if ts is None else ts,
            filled=filled,
            exchange_id=exchange_id,
            reason=reason,
        )
        if event is not None or new != order:
            self._record(new, event)
            if event is not None:
                await _call(self.on_order, new)
        return new

    async def merge(self, reported: Order, reason: str = "") -> Order:
        """Fold an order as the exchange reports it into ours (adopting it if new and ours).

        An order that is not the bot's is reported as ``foreign_order`` and returned as the
        exchange reports it, without a row.
        """
        if reported.client_id not in self.orders:
            if not self.is_own(reported.client_id):
                self.note_foreign(
                    "foreign_order", reported.client_id,
                    f"{reported.side} {reported.amount} @ {reported.price} {reported.status}", reported.client_id,
                )
                return reported
            self.adopt(reported, reason or "adopted from the exchange")
            return self.orders[reported.client_id]
        return await self._report(
            reported.client_id,
            reported.status,
            filled=reported.filled,
            exchange_id=reported.exchange_id,
            reason=reason or reported.reason,
        )

    def adopt(self, order: Order, reason: str) -> None:
        """Take over an order this run did not place (a previous run's, found on the exchange)."""
        if not self.is_own(order.client_id):
            raise ValueError(f"order {order.client_id} is not this bot's: it is never adopted")
        ts = self.clock.now_ms()
        event = OrderEvent(order.client_id, order.status, ts, order.filled, order.exchange_id, reason)
        self._record(order, event)

    # ------------------------------------------------------------------ actions

    def new_order(self, req: OrderRequest) -> Order:
        return Order(
            client_id=self.ids.next(),
            symbol=req.symbol,
            side=req.side,
            type=req.type,
            amount=req.amount,
            price=req.price,
            post_only=req.post_only,
            reason=req.reason,
            created_ts=self.clock.now_ms(),
            signal_strength=req.signal_strength,
            mid_price=req.mid_price,
        )

    async def submit(self, req: OrderRequest) -> Order:
        """Place one order (risk has already approved it); returns it in its reported state."""
        if req.type is OrderType.LIMIT and req.price is None:
            raise ValueError("a limit order needs a price")
        order = self.new_order(req)
        self._record(order, OrderEvent(order.client_id, S.NEW, order.created_ts, reason=req.reason))
        sent, event = transition(order, S.SUBMITTED, self.clock.now_ms())
        self._record(sent, event)
        self.busy.add(sent.client_id)
        try:
            reported = await self.broker.create_order(sent)
        except ExchangeHalted as exc:
            # Banned before or while placing: the order may or may not be on the exchange, so it
            # stays open for risk as UNKNOWN until the clean-up after the ban looks it up.
            self.busy.discard(sent.client_id)
            await self._report(sent.client_id, S.UNKNOWN, reason=f"exchange ban: {exc}"[:300])
            raise
        finally:
            self.busy.discard(sent.client_id)
        return await self._report(
            sent.client_id,
            reported.status,
            filled=reported.filled,
            exchange_id=reported.exchange_id,
            reason=reported.reason if reported.status in (S.REJECTED, S.UNKNOWN, S.EXPIRED) else "",
        )

    async def cancel(self, client_id: str) -> Order:
        """Ask the exchange to cancel; the order is cancelled only when the exchange says so."""
        order = self.orders[client_id]
        if order.status.is_terminal or client_id in self._cancel_parked:
            return order
        self.busy.add(client_id)
        try:
            reported = await self.broker.cancel_order(order)
        finally:
            self.busy.discard(client_id)
        if order.status is S.UNKNOWN and reported.status is S.UNKNOWN and order.exchange_id is None:
            self._cancel_parked.add(client_id)
        return await self._report(
            client_id,
            reported.status,
            filled=reported.filled,
            exchange_id=reported.exchange_id,
            reason=reported.reason,
        )

    async def cancel_all(self) -> list[Order]:
        """Cancel every open order of the bot's on the symbol (never anybody else's)."""
        out: list[Order] = []
        reported = await self.broker.cancel_all(self.symbol, self.is_own)
        for r in reported:
            if self.is_own(r.client_id):
                out.append(await self.merge(r, "cancel_all"))
        # Orders we believe open but the exchange did not list: look each one up.
        for o in self.open_orders:
            if o.status in (S.NEW,):
                continue
            out.append(await self.cancel(o.client_id))
        return out

    async def shutdown(self, budget_s: float = 7.0) -> list[Order]:
        """SIGTERM path: cancel every open order within ``budget_s`` (of the 10 s stop budget).

        Returns the orders still open afterwards (empty on success); they are logged, never
        marked cancelled locally.
        """
        try:
            async with asyncio.timeout(budget_s):
                await self.cancel_all()
        except TimeoutError:
            log.error("cancel_all_timeout", budget_s=budget_s)
        except Exception as exc:
            log.error("cancel_all_failed", error=f"{type(exc).__name__}: {exc}"[:300])
        left = self.open_orders
        if left:
            log.error("open_orders_at_shutdown", client_ids=[o.client_id for o in left])
        return left

    # ------------------------------------------------------------------ updates

    async def on_fill_update(self, fill: Fill) -> bool:
        """Store, then count, then tell the engine. Returns False for a duplicate trade id and
        for a fill that is not the bot's (reported once as ``foreign_fill``, never booked)."""
        own = self.ownership.attribute(fill.client_id, fill.exchange_order_id)
        if own is None:
            # ``unknown-<id>``: the broker could not name the order (its lookup failed); not booked
            # now, and not called foreign either: the reconciler's next sweep looks again.
            unnamed = fill.client_id.startswith(UNATTRIBUTED)
            self.note_foreign(
                "unattributed_fill" if unnamed else "foreign_fill", fill.trade_id,
                f"trade {fill.trade_id}: {fill.side} {fill.amount} @ {fill.price} of order "
                f"{fill.exchange_order_id}", fill.client_id,
            )
            return False
        if own != fill.client_id:
            fill = dataclasses.replace(fill, client_id=own)
        async with self._lock:
            if fill.trade_id in self._seen:
                return False
            await self.sink.durable(fill)
            self._seen.add(fill.trade_id)
            if self.last_fill_ts is None or fill.ts > self.last_fill_ts:
                self.last_fill_ts = fill.ts
            pos = self.position.apply(fill)
            self.sink.put(pos)
            log.info(
                "fill",
                trade_id=fill.trade_id,
                client_id=fill.client_id,
                side=str(fill.side),
                price=str(fill.price),
                amount=str(fill.amount),
                fee=str(fill.fee),
                liquidity=str(fill.liquidity),
                position=str(pos.amount),
            )
        done = self._fills_by_order.get(fill.client_id, ZERO) + fill.amount
        self._fills_by_order[fill.client_id] = done
        if fill.client_id in self.orders:
            order = self.orders[fill.client_id]
            self._note_unbooked(order)
            status = S.FILLED if done >= order.amount else S.PARTIALLY_FILLED
            if not order.status.is_terminal:
                await self._report(fill.client_id, status, filled=done, exchange_id=fill.exchange_order_id)
        await _call(self.on_fill, fill)
        return True

    async def process(self, update: Update) -> None:
        if isinstance(update, Fill):
            await self.on_fill_update(update)
            return
        if update.client_id not in self.orders:
            if not self.is_own(update.client_id):
                self.note_foreign("foreign_order", update.client_id,
                                  f"order update {update.status} filled {update.filled}", update.client_id)
                return
            log.warning("update_for_unknown_order", client_id=update.client_id, status=str(update.status))
            return
        await self._report(
            update.client_id,
            update.status,
            filled=update.filled,
            exchange_id=update.exchange_id,
            reason=update.reason,
            ts=update.ts,
        )

    async def drain(self) -> int:
        """Process every update the broker has queued (the replay loop calls this per event)."""
        updates = self.broker.drain_updates()
        for u in updates:
            await self.process(u)
        return len(updates)

    async def run_updates(self) -> None:
        """Consume the broker's update stream forever (a task of the engine's TaskGroup)."""
        async for u in self.broker.updates():
            await self.process(u)
