"""The emulator's exchange core: symbol rules, the account, and one matching engine per symbol.

Why it is modelled this way: the market (synthetic or recorded) is an outside process the
bot cannot change, so the engine keeps the *market's* levels (``mkt_bids``/``mkt_asks``,
floats, overwritten by each market delta) apart from the *bot's* resting orders (Decimal).
The book the exchange publishes is their sum per price, rounded to 8 decimals; every change
to it becomes one depth diff with consecutive update ids, so the public stream, the REST
snapshot and :meth:`SymbolEngine.book` always agree.

Fills: a marketable order walks the market's levels (partial fills, price by price) and
takes that liquidity away until the market rewrites the level. A resting order fills when
the tape trades through its price, or at its price once the queue that was ahead of it
(the market size at that price when it arrived, shrunk by cancels) has traded; and when the
market's book moves across it. Balances are locked on placement and settled on each fill
with the fee charged, like Binance, in the asset received.

Everything here is synchronous and single-threaded (the event loop); the server drains
``outbox`` after each call and sends what is in it.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any

from bot.emulator import errors
from bot.model import BookDelta, BookSnapshot, Level, MarketEvent, Side, Trade

D0 = Decimal(0)
E8 = Decimal("0.00000001")


def fmt(d: Decimal | float) -> str:
    """Binance's number format: 8 decimals, as a string."""
    if isinstance(d, float):
        return f"{d:.8f}"
    return f"{d.quantize(E8):f}" if d == d.quantize(E8) else f"{d:f}"


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """One spot market with Binance's real filters (tick, step, min notional)."""

    symbol: str
    base: str
    quote: str
    tick: Decimal
    step: Decimal
    min_qty: Decimal
    max_qty: Decimal
    min_notional: Decimal
    min_price: Decimal
    max_price: Decimal
    start_price: float
    market_step: Decimal  # MARKET_LOT_SIZE step

    @property
    def id(self) -> str:
        return self.base + self.quote


SPECS: dict[str, SymbolSpec] = {
    "BTC/USDT": SymbolSpec(
        "BTC/USDT",
        "BTC",
        "USDT",
        Decimal("0.01"),
        Decimal("0.00001"),
        Decimal("0.00001"),
        Decimal("9000"),
        Decimal("5"),
        Decimal("0.01"),
        Decimal("1000000"),
        60000.0,
        Decimal("0"),
    ),
    "ETH/USDT": SymbolSpec(
        "ETH/USDT",
        "ETH",
        "USDT",
        Decimal("0.01"),
        Decimal("0.0001"),
        Decimal("0.0001"),
        Decimal("9000"),
        Decimal("5"),
        Decimal("0.01"),
        Decimal("1000000"),
        3000.0,
        Decimal("0"),
    ),
}


def spec_for(symbol: str) -> SymbolSpec:
    """The rules of ``symbol``; unknown X/USDT symbols get BTC-like rules."""
    if symbol in SPECS:
        return SPECS[symbol]
    base, _, quote = symbol.partition("/")
    b = SPECS["BTC/USDT"]
    return SymbolSpec(
        symbol,
        base,
        quote or "USDT",
        b.tick,
        b.step,
        b.min_qty,
        b.max_qty,
        b.min_notional,
        b.min_price,
        b.max_price,
        100.0,
        b.market_step,
    )


# --------------------------------------------------------------------------- account


class Account:
    """Free and locked balance per asset (the exchange's truth)."""

    def __init__(self, balances: dict[str, Decimal | float | int | str] | None = None) -> None:
        start = balances if balances is not None else {"USDT": 100000, "BTC": 1, "ETH": 10}
        self.free: dict[str, Decimal] = {k: Decimal(str(v)) for k, v in start.items()}
        self.locked: dict[str, Decimal] = {k: D0 for k in start}
        self.update_ms = 0

    def ensure(self, asset: str) -> None:
        self.free.setdefault(asset, D0)
        self.locked.setdefault(asset, D0)

    def lock(self, asset: str, amount: Decimal) -> None:
        self.ensure(asset)
        if self.free[asset] < amount:
            raise errors.insufficient_balance()
        self.free[asset] -= amount
        self.locked[asset] += amount

    def unlock(self, asset: str, amount: Decimal) -> None:
        self.locked[asset] -= amount
        self.free[asset] += amount

    def as_dict(self) -> dict[str, dict[str, str]]:
        return {a: {"free": fmt(self.free[a]), "locked": fmt(self.locked[a])} for a in sorted(self.free)}


# --------------------------------------------------------------------------- orders


@dataclass(slots=True)
class EmuOrder:
    order_id: int
    client_id: str
    symbol: str
    side: str  # BUY | SELL
    type: str  # LIMIT | MARKET | LIMIT_MAKER
    price: Decimal  # 0 for market
    qty: Decimal
    time: int
    tif: str = "GTC"
    executed: Decimal = D0
    quote: Decimal = D0  # cummulativeQuoteQty
    status: str = "NEW"
    update_time: int = 0
    queue_ahead: float = 0.0
    locked: Decimal = D0  # what is still locked for it (quote for buys, base for sells)
    cancel_id: str = ""  # the client id of the cancel request (Binance answers with it)
    fills: list[EmuFill] = field(default_factory=list)

    @property
    def remaining(self) -> Decimal:
        return self.qty - self.executed

    @property
    def is_open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")

    def rest_json(self) -> dict[str, Any]:
        """As ``GET /api/v3/order`` answers."""
        return {
            "symbol": self.symbol.replace("/", ""),
            "orderId": self.order_id,
            "orderListId": -1,
            "clientOrderId": self.client_id,
            "price": fmt(self.price),
            "origQty": fmt(self.qty),
            "executedQty": fmt(self.executed),
            "cummulativeQuoteQty": fmt(self.quote),
            "status": self.status,
            "timeInForce": self.tif,
            "type": self.type,
            "side": self.side,
            "stopPrice": "0.00000000",
            "icebergQty": "0.00000000",
            "time": self.time,
            "updateTime": self.update_time or self.time,
            "isWorking": True,
            "workingTime": self.time,
            "origQuoteOrderQty": "0.00000000",
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }

    def admin_json(self) -> dict[str, Any]:
        d = self.rest_json()
        d["unifiedSymbol"] = self.symbol
        d["fills"] = [f.trade_id for f in self.fills]
        return d


@dataclass(slots=True)
class EmuFill:
    trade_id: int
    order_id: int
    client_id: str
    symbol: str
    side: str
    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str
    time: int
    maker: bool

    @property
    def quote(self) -> Decimal:
        return self.price * self.qty

    def rest_json(self) -> dict[str, Any]:
        """As ``GET /api/v3/myTrades`` answers."""
        return {
            "symbol": self.symbol.replace("/", ""),
            "id": self.trade_id,
            "orderId": self.order_id,
            "orderListId": -1,
            "price": fmt(self.price),
            "qty": fmt(self.qty),
            "quoteQty": fmt(self.quote),
            "commission": fmt(self.commission),
            "commissionAsset": self.commission_asset,
            "time": self.time,
            "isBuyer": self.side == "BUY",
            "isMaker": self.maker,
            "isBestMatch": True,
        }

    def admin_json(self) -> dict[str, Any]:
        d = self.rest_json()
        d["clientOrderId"] = self.client_id
        d["unifiedSymbol"] = self.symbol
        d["side"] = self.side
        return d


@dataclass(slots=True)
class PublicTrade:
    trade_id: int
    price: float
    qty: float
    time: int
    buyer_maker: bool  # True when the aggressor sold


# --------------------------------------------------------------------------- engine


_ORDER_IDS = itertools.count(1)


class SymbolEngine:
    """Book, orders and matching of one symbol. See the module docstring."""

    def __init__(
        self,
        spec: SymbolSpec,
        account: Account,
        now_ms: Callable[[], int],
        *,
        maker_fee: Decimal = Decimal("0.001"),
        taker_fee: Decimal = Decimal("0.001"),
        order_ids: Iterable[int] | None = None,
    ) -> None:
        self.spec = spec
        self.account = account
        self.now_ms = now_ms
        self.maker_fee = maker_fee
        self.taker_fee = taker_fee
        self._ids = iter(order_ids) if order_ids is not None else _ORDER_IDS
        self._trade_ids = itertools.count(1)
        self._pdec = max(0, -spec.tick.as_tuple().exponent)  # type: ignore[operator]
        self.mkt_bids: dict[float, float] = {}
        self.mkt_asks: dict[float, float] = {}
        self.pub_bids: dict[float, float] = {}
        self.pub_asks: dict[float, float] = {}
        self.own_bids: dict[float, list[EmuOrder]] = {}
        self.own_asks: dict[float, list[EmuOrder]] = {}
        self.update_id = 1_000_000
        self.orders: dict[int, EmuOrder] = {}
        self.by_client: dict[str, EmuOrder] = {}
        self.fills: list[EmuFill] = []
        self.tape: deque[PublicTrade] = deque(maxlen=1000)
        self.last_price: float | None = None
        # what the server sends: ("depth", U, u, E, bids, asks) | ("trade", PublicTrade) | ("exec", dict)
        self.outbox: list[tuple[Any, ...]] = []
        self._changed_b: set[float] = set()
        self._changed_a: set[float] = set()

    # ------------------------------------------------------------------ public book

    def book(self) -> tuple[list[Level], list[Level]]:
        """The published book: bids best first, asks best first."""
        bids = [(p, self.pub_bids[p]) for p in sorted(self.pub_bids, reverse=True)]
        asks = [(p, self.pub_asks[p]) for p in sorted(self.pub_asks)]
        return bids, asks

    def depth_json(self, limit: int) -> dict[str, Any]:
        bids, asks = self.book()
        return {
            "lastUpdateId": self.update_id,
            "bids": [[fmt(p), fmt(q)] for p, q in bids[:limit]],
            "asks": [[fmt(p), fmt(q)] for p, q in asks[:limit]],
        }

    def mid(self) -> float | None:
        if not self.pub_bids or not self.pub_asks:
            return self.last_price
        return (max(self.pub_bids) + min(self.pub_asks)) / 2

    def _key(self, price: float) -> float:
        return round(price, self._pdec)

    def _flush(self) -> None:
        """Publish every changed level as one diff with the next update ids."""
        if not self._changed_b and not self._changed_a:
            return
        b_out: list[list[str]] = []
        a_out: list[list[str]] = []
        for changed, mkt, own, pub, out in (
            (self._changed_b, self.mkt_bids, self.own_bids, self.pub_bids, b_out),
            (self._changed_a, self.mkt_asks, self.own_asks, self.pub_asks, a_out),
        ):
            for p in changed:
                size = mkt.get(p, 0.0)
                ours = own.get(p)
                if ours:
                    size += float(sum(o.remaining for o in ours))
                size = round(size, 8)
                old = pub.get(p, 0.0)
                if size == old:
                    continue
                if size > 0:
                    pub[p] = size
                else:
                    del pub[p]
                out.append([fmt(p), fmt(size)])
            changed.clear()
        n = len(b_out) + len(a_out)
        if not n:
            return
        first = self.update_id + 1
        self.update_id += n
        self.outbox.append(("depth", first, self.update_id, self.now_ms(), b_out, a_out))

    # ------------------------------------------------------------------ market input

    def on_market(self, ev: MarketEvent) -> None:
        """Apply one market event (snapshot, delta or trade) and match what it reaches."""
        if isinstance(ev, Trade):
            self._on_trade(ev)
        elif isinstance(ev, BookDelta):
            self._set_levels(self.mkt_bids, self._changed_b, self.own_bids, ev.bids)
            self._set_levels(self.mkt_asks, self._changed_a, self.own_asks, ev.asks)
            self._uncross()
        elif isinstance(ev, BookSnapshot):
            self._changed_b.update(self.mkt_bids)
            self._changed_a.update(self.mkt_asks)
            self.mkt_bids.clear()
            self.mkt_asks.clear()
            self._set_levels(self.mkt_bids, self._changed_b, self.own_bids, ev.bids)
            self._set_levels(self.mkt_asks, self._changed_a, self.own_asks, ev.asks)
            self._uncross()
        self._flush()

    def _set_levels(
        self,
        mkt: dict[float, float],
        changed: set[float],
        own: dict[float, list[EmuOrder]],
        levels: list[Level],
    ) -> None:
        for price, size in levels:
            p = self._key(price)
            if size > 0:
                mkt[p] = size
            else:
                mkt.pop(p, None)
            changed.add(p)
            ours = own.get(p)
            if ours:
                for o in ours:  # cancels ahead of us shorten the queue
                    if o.queue_ahead > size:
                        o.queue_ahead = size

    def _on_trade(self, t: Trade) -> None:
        price = self._key(t.price)
        self._publish_trade(price, t.amount, buyer_maker=t.side is Side.SELL)
        remaining = t.amount
        if t.side is Side.SELL:  # sellers hit bids: our buys at >= price
            levels = sorted((p for p in self.own_bids if p >= price), reverse=True)
            own, changed = self.own_bids, self._changed_b
        else:
            levels = sorted(p for p in self.own_asks if p <= price)
            own, changed = self.own_asks, self._changed_a
        for p in levels:
            for o in list(own.get(p, ())):
                if p != price:  # traded through: everything at our price went
                    self._fill(o, o.remaining, Decimal(str(p)), maker=True, printed=False)
                    continue
                if remaining <= 0:
                    break
                if o.queue_ahead >= remaining:
                    o.queue_ahead -= remaining
                    remaining = 0.0
                    break
                remaining -= o.queue_ahead
                o.queue_ahead = 0.0
                qty = min(self._qty_floor(remaining), o.remaining)
                if qty > 0:
                    self._fill(o, qty, Decimal(str(p)), maker=True, printed=False)
                    remaining -= float(qty)
            changed.add(p)

    def _uncross(self) -> None:
        """The market's book moved across our resting orders: they trade, as makers."""
        if self.own_bids and self.mkt_asks:
            for p in sorted(self.own_bids, reverse=True):
                if not self.mkt_asks or min(self.mkt_asks) > p:
                    break
                for o in list(self.own_bids.get(p, ())):
                    self._take_market_levels(o, self.mkt_asks, self._changed_a, maker_price=p)
                self._changed_b.add(p)
        if self.own_asks and self.mkt_bids:
            for p in sorted(self.own_asks):
                if not self.mkt_bids or max(self.mkt_bids) < p:
                    break
                for o in list(self.own_asks.get(p, ())):
                    self._take_market_levels(o, self.mkt_bids, self._changed_b, maker_price=p)
                self._changed_a.add(p)

    def _take_market_levels(
        self, o: EmuOrder, book: dict[float, float], changed: set[float], maker_price: float
    ) -> None:
        buy = o.side == "BUY"
        for lp in sorted(book, reverse=not buy):
            if o.remaining <= 0 or (lp > maker_price if buy else lp < maker_price):
                break
            qty = min(self._qty_floor(book[lp]), o.remaining)
            if qty <= 0:
                continue
            self._fill(o, qty, Decimal(str(maker_price)), maker=True)
            left = round(book[lp] - float(qty), 8)
            if left > 0:
                book[lp] = left
            else:
                del book[lp]
            changed.add(lp)

    # ------------------------------------------------------------------ helpers

    def _qty_floor(self, q: float) -> Decimal:
        return Decimal(repr(q)).quantize(self.spec.step, rounding=ROUND_DOWN)

    def _publish_trade(self, price: float, qty: float, *, buyer_maker: bool) -> None:
        t = PublicTrade(next(self._trade_ids), price, qty, self.now_ms(), buyer_maker)
        self.tape.append(t)
        self.last_price = price
        self.outbox.append(("trade", t))

    def _fill(
        self, o: EmuOrder, qty: Decimal, price: Decimal, *, maker: bool, printed: bool = True
    ) -> EmuFill:
        """Execute ``qty`` of ``o`` at ``price``: settle balances, record, report."""
        spec, acct = self.spec, self.account
        now = self.now_ms()
        fee_rate = self.maker_fee if maker else self.taker_fee
        cost = price * qty
        acct.ensure(spec.base)
        acct.ensure(spec.quote)
        if o.side == "BUY":
            commission, asset = (qty * fee_rate).quantize(E8), spec.base
            if o.type == "MARKET":
                acct.free[spec.quote] -= cost
            else:
                reserved = o.price * qty
                acct.locked[spec.quote] -= reserved
                o.locked -= reserved
                acct.free[spec.quote] += reserved - cost
            acct.free[spec.base] += qty - commission
        else:
            commission, asset = (cost * fee_rate).quantize(E8), spec.quote
            if o.type == "MARKET":
                acct.free[spec.base] -= qty
            else:
                acct.locked[spec.base] -= qty
                o.locked -= qty
            acct.free[spec.quote] += cost - commission
        acct.update_ms = now
        o.executed += qty
        o.quote += cost
        o.update_time = now
        o.status = "FILLED" if o.remaining <= 0 else "PARTIALLY_FILLED"
        f = EmuFill(
            next(self._trade_ids),
            o.order_id,
            o.client_id,
            o.symbol,
            o.side,
            price,
            qty,
            commission,
            asset,
            now,
            maker,
        )
        self.fills.append(f)
        o.fills.append(f)
        if printed:  # a print on the public tape, with our fill's trade id
            t = PublicTrade(f.trade_id, float(price), float(qty), now, (o.side == "BUY") == maker)
            self.tape.append(t)
            self.outbox.append(("trade", t))
        if maker and o.status == "FILLED":
            self._unrest(o)
        self.last_price = float(price)
        self.outbox.append(("exec", self.exec_report(o, "TRADE", f)))
        return f

    def _rest(self, o: EmuOrder) -> None:
        p = float(o.price)
        own, mkt, changed = (
            (self.own_bids, self.mkt_bids, self._changed_b)
            if o.side == "BUY"
            else (self.own_asks, self.mkt_asks, self._changed_a)
        )
        o.queue_ahead = mkt.get(p, 0.0)
        own.setdefault(p, []).append(o)
        changed.add(p)

    def _unrest(self, o: EmuOrder) -> None:
        p = float(o.price)
        own, changed = (
            (self.own_bids, self._changed_b) if o.side == "BUY" else (self.own_asks, self._changed_a)
        )
        lst = own.get(p)
        if lst and o in lst:
            lst.remove(o)
            if not lst:
                del own[p]
        changed.add(p)

    # ------------------------------------------------------------------ reports

    def exec_report(self, o: EmuOrder, exec_type: str, f: EmuFill | None = None) -> dict[str, Any]:
        """A spot ``executionReport`` event for the user data stream."""
        now = f.time if f else self.now_ms()
        return {
            "e": "executionReport",
            "E": now,
            "s": self.spec.id,
            "c": o.cancel_id if exec_type == "CANCELED" and o.cancel_id else o.client_id,
            "S": o.side,
            "o": o.type,
            "f": o.tif,
            "q": fmt(o.qty),
            "p": fmt(o.price),
            "P": "0.00000000",
            "F": "0.00000000",
            "g": -1,
            "C": o.client_id if exec_type == "CANCELED" else "",
            "x": exec_type,
            "X": o.status,
            "r": "NONE",
            "i": o.order_id,
            "l": fmt(f.qty) if f else "0.00000000",
            "z": fmt(o.executed),
            "L": fmt(f.price) if f else "0.00000000",
            "n": fmt(f.commission) if f else "0",
            "N": f.commission_asset if f else None,
            "T": now,
            "t": f.trade_id if f else -1,
            "I": o.order_id * 2,
            "w": o.is_open and o.type != "MARKET",
            "m": f.maker if f else False,
            "M": False,
            "O": o.time,
            "Z": fmt(o.quote),
            "Y": fmt(f.quote) if f else "0.00000000",
            "Q": "0.00000000",
            "W": o.time,
            "V": "EXPIRE_MAKER",
        }

    # ------------------------------------------------------------------ bot orders

    def _check_filters(self, price: Decimal | None, qty: Decimal, market: bool) -> None:
        s = self.spec
        if price is not None:
            if price < s.min_price or price > s.max_price or price % s.tick != 0:
                raise errors.filter_failure("PRICE_FILTER")
        if qty < s.min_qty or qty > s.max_qty or qty % s.step != 0:
            raise errors.filter_failure("MARKET_LOT_SIZE" if market and qty > s.max_qty else "LOT_SIZE")
        ref = price if price is not None else (Decimal(repr(m)) if (m := self.mid()) else None)
        if ref is not None and ref * qty < s.min_notional:
            raise errors.filter_failure("NOTIONAL")

    def place(
        self,
        *,
        side: str,
        type_: str,
        qty: Decimal,
        price: Decimal | None,
        client_id: str,
        tif: str = "GTC",
    ) -> EmuOrder:
        """Validate, lock, match and (for a limit remainder) rest a new order."""
        spec = self.spec
        if side not in ("BUY", "SELL"):
            raise errors.ApiError(400, -1117, "Invalid side.")
        if type_ not in ("LIMIT", "MARKET", "LIMIT_MAKER"):
            raise errors.ApiError(400, -1116, "Invalid orderType.")
        if type_ != "MARKET" and price is None:
            raise errors.mandatory("price")
        if type_ == "LIMIT" and tif not in ("GTC", "IOC", "FOK"):
            raise errors.ApiError(400, -1115, "Invalid timeInForce.")
        existing = self.by_client.get(client_id)
        if existing is not None and existing.is_open:
            raise errors.duplicate_client_id()
        self._check_filters(price if type_ != "MARKET" else None, qty, type_ == "MARKET")
        buy = side == "BUY"
        opp = self.mkt_asks if buy else self.mkt_bids
        if type_ == "LIMIT_MAKER" and opp:
            best = min(opp) if buy else max(opp)
            assert price is not None
            if (buy and float(price) >= best) or (not buy and float(price) <= best):
                raise errors.would_take()
        acct = self.account
        acct.ensure(spec.base)
        acct.ensure(spec.quote)
        locked = D0
        if type_ == "MARKET":
            if buy:
                cost = self._walk_cost(qty)
                if cost is None or cost > acct.free[spec.quote]:
                    raise errors.insufficient_balance()
            elif acct.free[spec.base] < qty:
                raise errors.insufficient_balance()
        else:
            assert price is not None
            locked = price * qty if buy else qty
            acct.lock(spec.quote if buy else spec.base, locked)
        now = self.now_ms()
        o = EmuOrder(
            next(self._ids),
            client_id,
            spec.symbol,
            side,
            type_,
            price or D0,
            qty,
            now,
            tif="GTC",
            locked=locked,
            update_time=now,
        )
        if type_ == "LIMIT":
            o.tif = tif
        self.orders[o.order_id] = o
        self.by_client[client_id] = o
        self.outbox.append(("exec", self.exec_report(o, "NEW")))
        self._self_trade_prevention(o)
        if type_ != "LIMIT_MAKER":
            self._take(o)
        if o.is_open:
            if type_ == "MARKET" or tif in ("IOC", "FOK"):
                o.status = "EXPIRED"
                self._release(o)
            else:
                self._rest(o)
        self._flush()
        return o

    def _walk_cost(self, qty: Decimal) -> Decimal | None:
        left, cost = qty, D0
        for p in sorted(self.mkt_asks):
            take = min(self._qty_floor(self.mkt_asks[p]), left)
            cost += Decimal(str(p)) * take
            left -= take
            if left <= 0:
                return cost
        return None

    def _market_reach(self, o: EmuOrder) -> float | None:
        """The worst price a market order reaches walking the market's levels (None: beyond them)."""
        buy = o.side == "BUY"
        book = self.mkt_asks if buy else self.mkt_bids
        left = o.qty
        for p in sorted(book, reverse=not buy):
            left -= self._qty_floor(book[p])
            if left <= 0:
                return p
        return None

    def _self_trade_prevention(self, o: EmuOrder) -> None:
        """EXPIRE_MAKER: the account's own resting orders the new one would cross are expired.

        A market order crosses only the levels it would reach: a resting order far from the
        touch (a person's hedge on the bot's account) is not touched by a small market order,
        as on Binance.
        """
        buy = o.side == "BUY"
        own = self.own_asks if buy else self.own_bids
        limit = float(o.price) if o.type != "MARKET" else self._market_reach(o)
        for p in list(own):
            if limit is None or (p <= limit if buy else p >= limit):
                for m in list(own[p]):
                    m.status = "EXPIRED"
                    self._release(m)
                    self._unrest(m)
                    self.outbox.append(("exec", self.exec_report(m, "EXPIRED")))

    def _take(self, o: EmuOrder) -> None:
        """Walk the market's opposite levels up to the limit price."""
        buy = o.side == "BUY"
        book, changed = (self.mkt_asks, self._changed_a) if buy else (self.mkt_bids, self._changed_b)
        limit = float(o.price) if o.type != "MARKET" else None
        for p in sorted(book, reverse=not buy):
            if o.remaining <= 0:
                break
            if limit is not None and (p > limit if buy else p < limit):
                break
            qty = min(self._qty_floor(book[p]), o.remaining)
            if qty <= 0:
                continue
            self._fill(o, qty, Decimal(str(p)), maker=False)
            left = round(book[p] - float(qty), 8)
            if left > 0:
                book[p] = left
            else:
                del book[p]
            changed.add(p)

    def _release(self, o: EmuOrder) -> None:
        if o.locked > 0:
            spec = self.spec
            self.account.unlock(spec.quote if o.side == "BUY" else spec.base, o.locked)
            o.locked = D0

    def find(self, order_id: int | None, client_id: str | None) -> EmuOrder | None:
        if order_id is not None:
            return self.orders.get(order_id)
        if client_id is not None:
            return self.by_client.get(client_id)
        return None

    def cancel(self, o: EmuOrder, cancel_id: str = "") -> EmuOrder:
        if not o.is_open:
            raise errors.unknown_order()
        o.cancel_id = cancel_id or f"cancel-{o.order_id}"
        o.status = "CANCELED"
        o.update_time = self.now_ms()
        self._release(o)
        self._unrest(o)
        self.outbox.append(("exec", self.exec_report(o, "CANCELED")))
        self._flush()
        return o

    def can_fill_partially(self, o: EmuOrder) -> bool:
        """A resting limit order with at least two lot steps left (the ``partial_fill`` fault)."""
        return o.is_open and o.type in ("LIMIT", "LIMIT_MAKER") and o.remaining >= 2 * self.spec.step

    def fill_resting(self, o: EmuOrder, qty: Decimal | None = None) -> EmuFill:
        """A counterparty trades ``qty`` against the resting order ``o`` at its own price.

        ``qty`` defaults to half the remainder (down to the lot step; the ``partial_fill``
        fault) and is capped at the remainder. A maker fill, printed on the tape; the order is
        ``PARTIALLY_FILLED`` and keeps resting with the rest, or ``FILLED``.
        """
        if not (o.is_open and o.type in ("LIMIT", "LIMIT_MAKER")):
            raise ValueError(f"order {o.order_id} is not a resting limit order ({o.status})")
        if qty is None:
            qty = o.remaining / 2
        qty = min(qty, o.remaining).quantize(self.spec.step, rounding=ROUND_DOWN)
        if qty <= 0:
            raise ValueError(f"order {o.order_id}: nothing to fill ({o.remaining} left)")
        f = self._fill(o, qty, o.price, maker=True)
        (self._changed_b if o.side == "BUY" else self._changed_a).add(float(o.price))
        self._flush()
        return f

    def open_orders(self) -> list[EmuOrder]:
        return [o for o in self.orders.values() if o.is_open]
