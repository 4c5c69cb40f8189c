"""PaperBroker: simulated fills against the live book, deterministic in event time.

Why it lives beside the real broker behind one protocol: paper and replay must run the
very order manager that trades live, so the simulation is only as far from reality as
this module's documented assumptions:

* **Latency in event time.** An order placed at ``t`` reaches the "exchange" at
  ``t + latency_ms``: it becomes active when the next market event with ``ts >= t +
  latency`` arrives (``on_book``/``on_trade``), and is matched against the book as it is
  *after* that event. ``t`` is the simulated exchange's own time, the largest event ``ts``
  seen (in replay exactly the simulated clock). No local clock decides anything here, so a
  replay is reproducible and a wall-clock step in a live paper run changes nothing (the
  wall clock only stamps balances).
* **Marketable orders** (market, or limit crossing the opposite best) walk the visible
  book level by level at the levels' prices, taker fee, and *consume* what they take: the
  broker remembers how much it took from each level (and the size the level showed) until
  the feed next changes that level's size, so a second order in the same event cannot take
  it again and a resting remainder cannot trade against it. A limit order's remainder rests
  at its price; a market order's remainder expires (as on Binance: a market order takes
  what the book has and the rest expires). A post-only order that would cross is rejected.
  No fill is ever larger than the size the book showed (less what was already taken).
* **Resting orders** keep a queue position: ``ahead`` = visible size at our price on our
  side when the order became active (after its own taking part, if any). A trade at our
  price by the opposite aggressor reduces ``ahead``; volume beyond ``ahead`` fills us
  (maker). A decrease of the level not explained by trades is cancels, assumed spread
  evenly over the queue, so ``ahead`` shrinks pro rata (``ahead *= 1 - cancelled /
  level_size``), and ``ahead`` never exceeds the level (``ahead = min(ahead, now)``). A
  trade *through* our price (a sell below our bid) means the queue at our price was gone:
  ``ahead`` becomes 0 and the trade's volume fills us. One print's volume is shared by all
  our orders it reaches (best price first, then in placement order), never counted twice.
  The opposite book reaching our price (the market moving across our order) fills us with
  the liquidity that crossed, at our price, and consumes it, like a taker would (the
  emulator's rule).
* **Balances** are checked and locked at placement (quote for buys incl. the fee, base for
  sells); insufficient funds are rejected with the numbers.
* Cancels take effect immediately (no cancel latency).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Literal, Protocol

from bot.clock import Clock
from bot.config import PaperSettings
from bot.execution.broker import Update
from bot.logging import get_logger
from bot.model import (
    ZERO,
    Balance,
    Fill,
    Liquidity,
    Order,
    OrderEvent,
    OrderStatus,
    OrderType,
    Side,
    Trade,
)

log = get_logger("execution.paper")

S = OrderStatus
_BPS = Decimal(10_000)
_WALK_DEPTH = 1000
_WALK_FIRST = 8  # levels read before the whole depth


class BookView(Protocol):
    """The part of ``bot.market.book.OrderBook`` the paper broker reads."""

    def top_bids(self, n: int) -> list[tuple[float, float]]: ...

    def top_asks(self, n: int) -> list[tuple[float, float]]: ...

    def bid_size(self, price: float) -> float: ...

    def ask_size(self, price: float) -> float: ...


def _d(x: float) -> Decimal:
    return Decimal(repr(x))


def _fmt(x: Decimal) -> str:
    """Plain notation without trailing zeros (``50``, not ``5E+1``)."""
    return f"{x.normalize():f}"


@dataclass(slots=True)
class _Live:
    order: Order
    active_ts: int
    locked: Decimal  # funds locked for the not-yet-filled part (quote for buys, base for sells)
    lock_ccy: str
    active: bool = False
    ahead: float = 0.0  # visible size ahead of us at our price
    level_size: float = 0.0  # visible size at our price at the last book look
    traded: float = 0.0  # traded at our price since the last book look


# (book side, price) -> (size the level showed when we took from it, total we took from it);
# book side BUY = the bids, SELL = the asks
_Taken = dict[tuple[Side, float], tuple[float, Decimal]]


class PaperBroker:
    """``Broker`` implementation for paper and replay; call ``on_book``/``on_trade`` per event."""

    name = "paper"

    def __init__(
        self,
        clock: Clock,
        settings: PaperSettings,
        symbol: str,
        *,
        fee_currency: Literal["quote", "received"] = "quote",
        amount_step: Decimal = Decimal("1e-8"),
        fee_step: Decimal = Decimal("1e-8"),
        id_prefix: str = "paper",
    ) -> None:
        self.clock = clock
        # exchange order ids and trade ids are "<id_prefix>-<n>" / "<id_prefix>-t<n>": a live paper
        # run passes its run id in the prefix, because the counters restart with the process and
        # a reused trade id would be dropped as a duplicate of a stored fill (a lost fill)
        self.id_prefix = id_prefix
        self.symbol = symbol
        self.base, self.quote = symbol.split("/")
        self.latency_ms = round(settings.latency_ms)
        self.taker_bps = Decimal(repr(settings.taker_fee_bps))
        self.maker_bps = Decimal(repr(settings.maker_fee_bps))
        self.fee_currency = fee_currency
        self.amount_step = amount_step  # queue-model partial fills are rounded down to this
        self.fee_step = fee_step  # exchanges report commissions to 8 decimals (half-even)
        self._free: dict[str, Decimal] = {k: Decimal(v) for k, v in settings.balances.items()}
        self._locked: dict[str, Decimal] = dict.fromkeys(self._free, ZERO)
        for ccy in (self.base, self.quote):
            self._free.setdefault(ccy, ZERO)
            self._locked.setdefault(ccy, ZERO)
        self._orders: dict[str, Order] = {}
        self._live: dict[str, _Live] = {}
        self._fills: list[Fill] = []
        self._book: BookView | None = None
        self._taken: _Taken = {}  # liquidity consumed from the book until the feed changes the level
        self._queue: deque[Update] = deque()
        self._wakeup: asyncio.Event | None = None
        self._order_seq = 0
        self._trade_seq = 0
        self._closed = False
        self._event_ms = 0  # the simulated exchange's time: the largest event ts seen

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._closed = True
        if self._wakeup is not None:
            self._wakeup.set()

    # ------------------------------------------------------------------ updates

    def _emit(self, update: Update) -> None:
        self._queue.append(update)
        if self._wakeup is not None:
            self._wakeup.set()

    def drain_updates(self) -> list[Update]:
        out = list(self._queue)
        self._queue.clear()
        return out

    async def updates(self) -> AsyncIterator[Update]:
        self._wakeup = asyncio.Event()
        while not self._closed:
            while self._queue:
                yield self._queue.popleft()
            self._wakeup.clear()
            if not self._queue:
                await self._wakeup.wait()

    # ------------------------------------------------------------------ orders

    def _fee_rate(self, liq: Liquidity) -> Decimal:
        return (self.taker_bps if liq is Liquidity.TAKER else self.maker_bps) / _BPS

    def _set(self, order: Order) -> Order:
        self._orders[order.client_id] = order
        return order

    def _reject(self, order: Order, reason: str) -> Order:
        log.info("paper_reject", client_id=order.client_id, reason=reason)
        return self._set(dataclasses.replace(order, status=S.REJECTED, reason=reason))

    async def create_order(self, order: Order) -> Order:
        """Accept (status ``submitted``: in flight for ``latency_ms``) or reject at once."""
        if order.client_id in self._orders:
            return self._orders[order.client_id]  # idempotent by client id, like the exchange
        if order.symbol != self.symbol:
            return self._reject(order, f"unknown symbol {order.symbol}")
        if order.amount <= 0:
            return self._reject(order, f"amount must be > 0 (got {order.amount})")
        self._order_seq += 1
        order = dataclasses.replace(order, exchange_id=f"{self.id_prefix}-{self._order_seq}")
        if order.side is Side.BUY:
            ccy = self.quote
            if order.price is not None:
                need = order.price * order.amount
            else:
                est = self._estimate_cost(order.amount)
                if est is None:
                    return self._reject(order, "no order book to price a market buy")
                need = est
            need += need * self.taker_bps / _BPS
        else:
            ccy = self.base
            need = order.amount
        free = self._free.get(ccy, ZERO)
        if need > free:
            return self._reject(
                order, f"insufficient balance: needs {_fmt(need)} {ccy}, free {_fmt(free)} {ccy}"
            )
        self._free[ccy] = free - need
        self._locked[ccy] = self._locked.get(ccy, ZERO) + need
        self._live[order.client_id] = _Live(order, self._event_ms + self.latency_ms, need, ccy)
        return self._set(dataclasses.replace(order, status=S.SUBMITTED))

    def _estimate_cost(self, amount: Decimal) -> Decimal | None:
        if self._book is None:
            return None
        left, cost = amount, ZERO
        for p, q in self._book.top_asks(_WALK_DEPTH):
            take = min(left, self._available(Side.SELL, p, q))
            cost += take * _d(p)
            left -= take
            if left <= 0:
                return cost
        return None if cost == 0 else cost

    def _release(self, live: _Live) -> None:
        ccy = live.lock_ccy
        self._locked[ccy] -= live.locked
        self._free[ccy] += live.locked
        live.locked = ZERO

    def _finish(self, live: _Live, status: OrderStatus, ts: int, reason: str = "") -> Order:
        self._release(live)
        self._live.pop(live.order.client_id, None)
        order = self._set(dataclasses.replace(live.order, status=status, reason=reason or live.order.reason))
        live.order = order
        return order

    async def cancel_order(self, order: Order) -> Order:
        live = self._live.get(order.client_id)
        if live is None:
            known = self._orders.get(order.client_id)
            if known is None:
                return dataclasses.replace(order, status=S.EXPIRED, reason="not found on the exchange")
            return known
        return self._finish(live, S.CANCELLED, self.clock.now_ms())

    async def cancel_all(self, symbol: str, owned: Callable[[str], bool] | None = None) -> list[Order]:
        # every paper order is the bot's own: ``owned`` never excludes one here
        return [
            await self.cancel_order(lv.order) for lv in list(self._live.values()) if lv.order.symbol == symbol
        ]

    async def fetch_order(self, client_id: str, symbol: str) -> Order | None:
        return self._orders.get(client_id)

    async def fetch_open_orders(self, symbol: str) -> list[Order]:
        return [self._orders[c] for c, lv in self._live.items() if lv.order.symbol == symbol]

    async def fetch_my_trades(self, symbol: str, since_ms: int | None = None) -> list[Fill]:
        return [f for f in self._fills if f.symbol == symbol and (since_ms is None or f.ts >= since_ms)]

    async def fetch_balance(self) -> dict[str, Balance]:
        ts = self.clock.now_ms()
        return {c: Balance(c, self._free[c], self._locked.get(c, ZERO), ts) for c in sorted(self._free)}

    # ------------------------------------------------------------------ matching

    def _fill(self, live: _Live, price: Decimal, amount: Decimal, liq: Liquidity, ts: int) -> None:
        order = live.order
        amount = min(amount, order.remaining)
        if amount <= 0:
            return
        notional = price * amount
        rate = self._fee_rate(liq)
        if self.fee_currency == "received" and order.side is Side.BUY:
            fee, fee_ccy = amount * rate, self.base
        else:
            fee, fee_ccy = notional * rate, self.quote
        fee = fee.quantize(self.fee_step)
        # release the lock share of this amount, then book the real movement
        share = live.locked if amount >= order.remaining else live.locked * amount / order.remaining
        self._locked[live.lock_ccy] -= share
        self._free[live.lock_ccy] += share
        live.locked -= share
        self._settle(order.side, amount, notional, fee, fee_ccy)
        self._trade_seq += 1
        fill = Fill(
            trade_id=f"{self.id_prefix}-t{self._trade_seq}",
            client_id=order.client_id,
            symbol=order.symbol,
            side=order.side,
            price=price,
            amount=amount,
            fee=fee,
            fee_currency=fee_ccy,
            liquidity=liq,
            ts=ts,
            exchange_order_id=order.exchange_id,
        )
        self._fills.append(fill)
        filled = order.filled + amount
        status = S.FILLED if filled >= order.amount else S.PARTIALLY_FILLED
        live.order = self._set(dataclasses.replace(order, filled=filled, status=status))
        self._emit(fill)
        self._emit(OrderEvent(order.client_id, status, ts, filled, order.exchange_id))
        if status is S.FILLED:
            self._finish(live, S.FILLED, ts)

    def restore(self, fills: list[Fill]) -> None:
        """Apply the fills of earlier runs (from the store) to the simulated balances.

        A restarted paper bot must hold what its fills say it holds, exactly as a real account
        would, or the paper balances and the engine's position part ways after every restart.
        """
        for f in fills:
            if f.symbol == self.symbol:
                self._settle(f.side, f.amount, f.notional, f.fee, f.fee_currency)

    def _settle(self, side: Side, amount: Decimal, notional: Decimal, fee: Decimal, fee_ccy: str) -> None:
        """Move the free balances for one execution: base against quote, then the fee."""
        if side is Side.BUY:
            self._free[self.quote] -= notional
            self._free[self.base] += amount
        else:
            self._free[self.base] -= amount
            self._free[self.quote] += notional
        self._free[fee_ccy] = self._free.get(fee_ccy, ZERO) - fee
        self._locked.setdefault(fee_ccy, ZERO)

    # ------------------------------------------------------------------ liquidity

    def _available(self, book_side: Side, price: float, shown: float) -> Decimal:
        """What is left at a level that shows ``shown``: the shown size less what we took from
        it, as long as the feed has not changed the level since."""
        taken = self._taken.get((book_side, price))
        if taken is None:
            return _d(shown)
        if taken[0] != shown:  # the feed changed the level: its new size is what is there
            del self._taken[(book_side, price)]
            return _d(shown)
        return max(ZERO, _d(shown) - taken[1])

    def _consume(self, book_side: Side, price: float, shown: float, amount: Decimal) -> None:
        taken = self._taken.get((book_side, price))
        before = taken[1] if taken is not None and taken[0] == shown else ZERO
        self._taken[(book_side, price)] = (shown, before + amount)

    def _forget_changed(self, book: BookView) -> None:
        """Drop what we took from levels the feed has changed since (a new size replaces it)."""
        for key, (shown, _) in list(self._taken.items()):
            book_side, price = key
            now = book.bid_size(price) if book_side is Side.BUY else book.ask_size(price)
            if float(now) != shown:
                del self._taken[key]

    @staticmethod
    def _opposite(book: BookView, side: Side) -> Iterator[tuple[float, float]]:
        """The levels an order of ``side`` trades against, best first (asks for a buy): the top
        few first (the book serves them from its cache), deeper ones only if the walk gets there."""
        top = book.top_asks if side is Side.BUY else book.top_bids
        first = top(_WALK_FIRST)
        yield from first
        if len(first) == _WALK_FIRST:
            yield from top(_WALK_DEPTH)[_WALK_FIRST:]

    def _best_available(self, book: BookView, side: Side) -> float | None:
        """The best opposite price for ``side`` with liquidity left after our own takes."""
        book_side = side.opposite
        top = book.top_asks(1) if side is Side.BUY else book.top_bids(1)
        if not top:
            return None
        if self._available(book_side, float(top[0][0]), float(top[0][1])) > 0:
            return float(top[0][0])  # the usual case: the best level is untouched
        for p, q in self._opposite(book, side):
            if self._available(book_side, float(p), float(q)) > 0:
                return float(p)
        return None

    def _crosses(self, order: Order, book: BookView) -> bool:
        if order.type is OrderType.MARKET or order.price is None:
            return True
        opp = self._best_available(book, order.side)
        if opp is None:
            return False
        return (order.side is Side.BUY and _d(opp) <= order.price) or (
            order.side is Side.SELL and _d(opp) >= order.price
        )

    def _take(self, live: _Live, book: BookView, ts: int, liq: Liquidity) -> None:
        """Trade ``live`` against the opposite levels up to its limit (all of them for a market
        order), taking at most what each level has left, and consume it. A taker pays the
        levels' prices; a resting order the book moved across (maker) gets its own price."""
        order = live.order
        book_side = order.side.opposite
        for p, q in self._opposite(book, order.side):
            price = _d(p)
            if order.price is not None and (
                (order.side is Side.BUY and price > order.price)
                or (order.side is Side.SELL and price < order.price)
            ):
                break
            shown = float(q)
            avail = self._available(book_side, float(p), shown)
            if liq is Liquidity.MAKER:
                avail = avail.quantize(self.amount_step, rounding=ROUND_DOWN)
            amount = min(avail, live.order.remaining)
            if amount <= 0:
                continue
            self._consume(book_side, float(p), shown, amount)
            at = price if liq is Liquidity.TAKER or order.price is None else order.price
            self._fill(live, at, amount, liq, ts)
            if live.order.status is S.FILLED:
                return

    def _activate(self, live: _Live, book: BookView, ts: int) -> None:
        order = live.order
        live.active = True
        if order.post_only and self._crosses(order, book):
            self._emit(OrderEvent(order.client_id, S.REJECTED, ts, reason="post-only order would cross"))
            self._finish(live, S.REJECTED, ts, "post-only order would cross")
            return
        live.order = self._set(dataclasses.replace(order, status=S.ACKED))
        self._emit(OrderEvent(order.client_id, S.ACKED, ts, exchange_id=order.exchange_id))
        if self._crosses(order, book):
            self._take(live, book, ts, Liquidity.TAKER)
            if live.order.status is S.FILLED:
                return
            if order.type is OrderType.MARKET or order.price is None:
                self._emit(
                    OrderEvent(order.client_id, S.EXPIRED, ts, live.order.filled, reason="book exhausted")
                )
                self._finish(live, S.EXPIRED, ts, "book exhausted")
                return
        # the remainder rests behind what our side of the book shows at our price
        assert live.order.price is not None
        size = self._level(book, live.order.side, float(live.order.price))
        live.ahead = size
        live.level_size = size
        live.traded = 0.0

    @staticmethod
    def _level(book: BookView, side: Side, price: float) -> float:
        return float(book.bid_size(price) if side is Side.BUY else book.ask_size(price))

    def _activate_due(self, ts: int) -> None:
        if self._book is None:
            return
        for live in list(self._live.values()):
            if not live.active and live.active_ts <= ts:
                self._activate(live, self._book, ts)

    def on_book(self, book: BookView, ts: int) -> list[Update]:
        """Call after every book change (snapshot or delta), with the event's ``ts``."""
        start = len(self._queue)
        self._book = book
        if ts > self._event_ms:
            self._event_ms = ts
        if self._taken:
            self._forget_changed(book)
        self._activate_due(ts)
        for live in list(self._live.values()):
            if not live.active or live.order.price is None:
                continue
            price = float(live.order.price)
            now = self._level(book, live.order.side, price)
            cancelled = live.level_size - now - live.traded
            if cancelled > 0 and live.level_size > 0:
                live.ahead = max(0.0, live.ahead * (1.0 - cancelled / live.level_size))
            live.ahead = min(live.ahead, now)
            live.level_size = now
            live.traded = 0.0
            top = book.top_asks(1) if live.order.side is Side.BUY else book.top_bids(1)
            if top and (
                (live.order.side is Side.BUY and top[0][0] <= price)
                or (live.order.side is Side.SELL and top[0][0] >= price)
            ):  # the market moved across us: we trade with what crossed and is not taken yet
                self._take(live, book, ts, Liquidity.MAKER)
        return list(self._queue)[start:]

    def on_trade(self, trade: Trade) -> list[Update]:
        """Call for every print on the tape.

        The print's volume is what an aggressor traded; had our orders been in the book, it
        would have met them first where they are better than its price (through: the queue
        at our price was gone) and after the queue ahead of us where they are at its price.
        So it fills our orders it reaches best price first, then in placement order, and one
        print never fills more than its own volume beyond the queue ahead.
        """
        start = len(self._queue)
        if trade.ts > self._event_ms:
            self._event_ms = trade.ts
        self._activate_due(trade.ts)
        reached: list[_Live] = []
        for live in self._live.values():
            order = live.order
            if not live.active or order.price is None or trade.side is order.side:
                continue
            price = float(order.price)
            if trade.price < price if order.side is Side.BUY else trade.price > price:
                live.ahead = 0.0  # traded through: everything at our price went
                reached.append(live)
            elif trade.price == price:
                live.traded += trade.amount
                reached.append(live)
        if not reached:
            return list(self._queue)[start:]  # activations of this event, if any
        # a sell aggressor meets our bids highest first, a buy aggressor our asks lowest first;
        # the sort is stable, so placement order within a price
        reached.sort(key=lambda lv: lv.order.price or ZERO, reverse=trade.side is Side.SELL)
        used = ZERO  # of this print's volume, what our orders got
        for live in reached:
            order = live.order
            assert order.price is not None  # only limit orders rest
            beyond = trade.amount - live.ahead
            live.ahead = max(0.0, live.ahead - trade.amount)
            if beyond <= 0:
                continue
            part = Decimal(repr(beyond)).quantize(self.amount_step, rounding=ROUND_DOWN) - used
            part = min(part, order.remaining)
            if part > 0:
                used += part
                self._fill(live, order.price, part, Liquidity.MAKER, trade.ts)
        return list(self._queue)[start:]
