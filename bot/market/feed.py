"""The live market feed: ccxt pro order book and trades, normalised into MarketEvents.

Why it is built this way:

* ccxt pro already does the exchange-specific sync (REST snapshot + buffered diffs,
  sequence checks) and hands back WHOLE books. The rest of the bot speaks in
  snapshot/delta events (the same stream a recording replays), so the feed turns
  consecutive ccxt books into deltas with ``BookDiffer``.
* The diff rule: the feed's book IS ccxt's top-``levels`` window of each side. A delta
  carries every price whose size differs between the previous window and the current one;
  a price that left the window (cancelled, traded away, or merely pushed below the N-th
  level) is emitted with size 0. Applying the emitted events to an ``OrderBook`` therefore
  reproduces ccxt's top N exactly, at every step (a property test checks this). Levels
  beyond N are not tracked: the signals read at most ``levels`` levels.
* Deltas carry ``first_seq = previous nonce + 1`` and ``seq = nonce`` (ccxt's last applied
  exchange update id): one delta may cover several exchange messages, so the OrderBook's
  gap check sees a continuous chain. A new ``BookSnapshot`` is emitted first and after
  every resync (an error, a nonce going backwards, or ``request_resync``).
* Validation: ccxt applies whatever the exchange sends (a "NaN" price becomes a NaN level at
  the top of its book, "-1" a level at -1.0, "1e300" a best bid of 1e300). ``BookDiffer``
  checks every level of the window it takes (price a finite number in (0, MAX_PRICE], size
  in [0, MAX_AMOUNT], see ``bot.market.sanity``; the window not crossed) and ``parse_trade``
  every trade (side, price, amount > 0, timestamp), raising ``BadMessage`` with the field.
  The feed never queues such an event: a bad book is logged once (``feed_bad_message``),
  counted (``bad_messages``) and resynced (``request_resync``: the feed goes unhealthy, so
  the pre-trade check places no order, and the next good book is a snapshot; a second bad
  book in a row means ccxt's copy holds the bad level, so the stream is reconnected); a bad
  trade is skipped (``feed_bad_trade``, ``bad_trades``). A book or trade of another symbol
  is ignored (``other_symbol``). Exchange times may step back a few ms between messages
  (accepted as they are); ``last_ts`` and the ``recv`` the feed stamps never go backwards.
  Book events also carry ``recv_mono``, the receive time on the monotonic clock: the stale
  check compares it with monotonic now, so a wall-clock step neither hides nor fakes a stale book.
* Errors: ccxt raises ``ChecksumError``/``InvalidNonce`` (both ``NetworkError``s) on a
  sequence gap and then re-subscribes on the next call, and other ``NetworkError``s on
  disconnects. Both are retried with exponential backoff and full jitter. A ``TypeError``/
  ``ValueError`` (...) from ``watch_order_book`` is ccxt failing on a malformed depth message
  (it drops its book and re-subscribes): a bad message, resynced the same way. Anything
  else (bad symbol, authentication) is fatal and leaves ``run()``. A message that makes ccxt
  raise inside its receive callback (invalid JSON, a trade price it cannot read) never
  reaches the feed: that connection stops delivering, the stale-book guard asks for a
  resync, and ``_stall_loop`` fails the connection after ``stall_reconnect_s``. Every health
  transition is logged and passed to ``on_health(healthy, reason)``.

Delivery: ``run()`` is the producer (start it as a task); events go to ``self.queue``
(an ``asyncio.Queue``, bounded: a slow consumer slows the feed rather than losing data),
and ``async for ev in feed`` consumes them until ``stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from bot.clock import Clock
from bot.logging import get_logger
from bot.market.sanity import MAX_AMOUNT, MAX_PRICE, MAX_TS_MS
from bot.model import BookDelta, BookSnapshot, Level, MarketEvent, Side, Trade

log = get_logger("market.feed")

HealthCallback = Callable[[bool, str | None], None]

_SIDES = {"buy": Side.BUY, "sell": Side.SELL}
_INF = math.inf
_MAX_NONCE = 2**63 - 1  # exchange update ids are 64-bit
# What ccxt raises (or rejects a watch with) when a message's content is malformed, as opposed
# to its own errors: not a reason to stop the feed (see MarketFeed.on_book_error).
_DATA_ERRORS = (TypeError, ValueError, KeyError, IndexError, ArithmeticError)


def _show(value: Any) -> str:
    """A short repr for a log line (market data holds no secrets, but it can be huge)."""
    s = repr(value)
    return s if len(s) <= 80 else s[:77] + "..."


class BadMessage(ValueError):
    """A market message the feed will not use: which ``field``, its ``value``, and why.

    Raised by ``BookDiffer.update`` and ``parse_trade``; ``MarketFeed`` counts and logs it
    (``feed_bad_message`` for a book, which is then resynced; ``feed_bad_trade`` for a trade,
    which is skipped). Nothing it rejects reaches the queue.
    """

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}: {reason}, got {_show(value)}")


class OtherSymbol(BadMessage):
    """A book or trade of another symbol than the feed's: ignored and counted, not resynced."""


def _out_of_range(v: float | int, limit: float) -> str:
    if v != v or v <= 0 or v == _INF:  # NaN, <= 0, +inf
        return "must be positive and finite"
    return f"is too large (limit {limit:g})"


def _price(v: Any, field: str) -> float:
    """``v`` as a price: an int or float (not bool) with 0 < v <= MAX_PRICE."""
    t = type(v)
    if t is not float and t is not int:
        raise BadMessage(field, v, "missing" if v is None else "must be a number")
    if 0 < v <= MAX_PRICE:  # False for NaN; an int is compared before float() could overflow
        return float(v)
    raise BadMessage(field, v, _out_of_range(v, MAX_PRICE))


def _amount(v: Any, field: str, zero_ok: bool) -> float:
    """``v`` as a size: a number with 0 < v <= MAX_AMOUNT (or 0 <= v with ``zero_ok``)."""
    t = type(v)
    if t is not float and t is not int:
        raise BadMessage(field, v, "missing" if v is None else "must be a number")
    if (0 <= v if zero_ok else 0 < v) and v <= MAX_AMOUNT:
        return float(v)
    if zero_ok and (v != v or v < 0 or v == _INF):
        raise BadMessage(field, v, "must be non-negative and finite")
    raise BadMessage(field, v, _out_of_range(v, MAX_AMOUNT))


def _int_field(v: Any, field: str, limit: int) -> int:
    """``v`` as an integer in [0, ``limit``] (an integral float is accepted, a bool is not)."""
    t = type(v)
    if t is int:
        if 0 <= v <= limit:
            return int(v)
    elif t is float:
        if 0.0 <= v <= limit and v.is_integer():
            return int(v)
    else:
        raise BadMessage(field, v, "must be an integer")
    raise BadMessage(field, v, f"must be an integer in [0, {limit}]")


def _ts(v: Any, field: str = "timestamp") -> int:
    """An exchange time in epoch ms (``MAX_TS_MS`` at most)."""
    if v is None:
        raise BadMessage(field, v, "missing")
    return _int_field(v, field, MAX_TS_MS)


def book_time(ob: Any, default: int) -> int:
    """The exchange time of a ccxt book (``default``, the receive time, when ccxt has none)."""
    v = ob.get("timestamp") if isinstance(ob, dict) else None
    return default if v is None else _ts(v)


def _window_slow(side: Any, n: int, name: str) -> dict[float, float]:
    """``_window`` level by level: a precise ``BadMessage``, or the rare int-valued level."""
    if not isinstance(side, list | tuple):
        raise BadMessage(name, side, "must be a list of [price, size]")
    out: dict[float, float] = {}
    for i, lv in enumerate(side[:n]):
        if not isinstance(lv, list | tuple) or len(lv) < 2:
            raise BadMessage(f"{name}[{i}]", lv, "must be [price, size]")
        p = _price(lv[0], f"{name}[{i}].price")
        q = _amount(lv[1], f"{name}[{i}].size", zero_ok=True)
        if q > 0.0:
            out[p] = q
    return out


def _window(side: Any, n: int, name: str = "bids") -> dict[float, float]:
    """The top ``n`` levels of one ccxt book side as price -> size (ccxt sides are sorted best first).

    Every level in the window is checked: a price in (0, MAX_PRICE], a size in [0, MAX_AMOUNT]
    (size-0 levels are left out), both numbers; anything else raises ``BadMessage``. The
    all-floats case is one tight loop; any other shape goes through ``_window_slow``.
    """
    out: dict[float, float] = {}
    try:
        for lv in side[:n]:
            p = lv[0]
            q = lv[1]
            if type(p) is float and type(q) is float and 0.0 < p <= MAX_PRICE and 0.0 <= q <= MAX_AMOUNT:
                if q > 0.0:
                    out[p] = q
                continue
            return _window_slow(side, n, name)
    except (TypeError, IndexError, KeyError):
        return _window_slow(side, n, name)
    return out


def diff_window(prev: dict[float, float], cur: dict[float, float], descending: bool) -> list[Level]:
    """Levels that turn window ``prev`` into ``cur``: changed or new sizes, and 0 for gone prices.

    Sorted best first (bids descending, asks ascending), like an exchange message.
    """
    out: list[Level] = [(p, q) for p, q in cur.items() if prev.get(p) != q]
    out.extend((p, 0.0) for p in prev if p not in cur)
    out.sort(reverse=descending)
    return out


class BookDiffer:
    """Turns a sequence of whole books (ccxt ``OrderBook`` dicts) into snapshot + delta events.

    ``update`` validates the book's top window first (``BadMessage``: a level that is not a
    positive finite price and a non-negative finite size within the sanity limits, a crossed
    window, a bad nonce or time; ``OtherSymbol``: the book of another symbol) and changes
    nothing when it raises, so the next good book continues from the last good one.
    """

    def __init__(self, levels: int, symbol: str | None = None) -> None:
        if levels < 1:
            raise ValueError("levels must be >= 1")
        self.levels = levels
        self.symbol = symbol
        self._bids: dict[float, float] | None = None
        self._asks: dict[float, float] = {}
        self._nonce: int | None = None

    def reset(self) -> None:
        """Forget the previous book: the next ``update`` emits a snapshot."""
        self._bids = None
        self._nonce = None

    @property
    def has_snapshot(self) -> bool:
        return self._bids is not None

    def update(
        self, ob: Any, ts: int, recv: int | None = None, recv_mono: int | None = None
    ) -> BookSnapshot | BookDelta | None:
        """The event that moves our view to ``ob``'s top window (``None`` if nothing changed).

        ``recv`` is the wall-clock receive time (a stamp), ``recv_mono`` the monotonic one (what
        the stale-book check measures); both go on the event as they are.
        """
        if not isinstance(ob, dict):
            raise BadMessage("book", ob, "must be an order book (a dict)")
        if self.symbol is not None:
            sym = ob.get("symbol")
            if sym is not None and sym != self.symbol:
                raise OtherSymbol("symbol", sym, f"not the feed's symbol {self.symbol}")
        if "bids" not in ob or "asks" not in ob:
            raise BadMessage("bids" if "bids" not in ob else "asks", None, "missing")
        bids = _window(ob["bids"], self.levels, "bids")
        asks = _window(ob["asks"], self.levels, "asks")
        if bids and asks:
            bb, ba = max(bids), min(asks)
            if bb >= ba:
                raise BadMessage("bids[0].price", bb, f"crossed book: best bid >= best ask {ba!r}")
        nonce = ob.get("nonce")
        nonce = None if nonce is None else _int_field(nonce, "nonce", _MAX_NONCE)
        ts = _ts(ts, "ts")
        if recv is not None:
            recv = _ts(recv, "recv")
        prev_nonce = self._nonce
        if self._bids is None or (nonce is not None and prev_nonce is not None and nonce < prev_nonce):
            self._bids, self._asks, self._nonce = bids, asks, nonce
            return BookSnapshot(
                ts=ts,
                bids=sorted(bids.items(), reverse=True),
                asks=sorted(asks.items()),
                seq=nonce,
                recv=recv,
                recv_mono=recv_mono,
            )
        if nonce is not None and prev_nonce is not None and nonce == prev_nonce:
            return None  # the same book again
        db = diff_window(self._bids, bids, True)
        da = diff_window(self._asks, asks, False)
        self._bids, self._asks, self._nonce = bids, asks, nonce
        if not db and not da and nonce is None:
            return None
        return BookDelta(
            ts=ts,
            bids=db,
            asks=da,
            seq=nonce,
            first_seq=None if nonce is None or prev_nonce is None else prev_nonce + 1,
            recv=recv,
            recv_mono=recv_mono,
        )


def parse_trade(t: Any, recv: int | None, symbol: str | None = None) -> Trade:
    """A ccxt public trade (side = taker side) as a validated ``Trade``.

    Raises ``BadMessage`` naming the field (side not buy/sell; price not in (0, MAX_PRICE];
    amount not in (0, MAX_AMOUNT]; a missing or non-integer timestamp; an id that is neither
    a string nor an integer) and ``OtherSymbol`` for a trade of another symbol than ``symbol``.
    """
    if not isinstance(t, dict):
        raise BadMessage("trade", t, "must be a trade (a dict)")
    if symbol is not None:
        sym = t.get("symbol")
        if sym is not None and sym != symbol:
            raise OtherSymbol("symbol", sym, f"not the feed's symbol {symbol}")
    raw_side = t.get("side")
    side = _SIDES.get(raw_side) if type(raw_side) is str else None
    if side is None:
        raise BadMessage("side", raw_side, "must be 'buy' or 'sell'")
    price = _price(t.get("price"), "price")
    amount = _amount(t.get("amount"), "amount", zero_ok=False)
    ts = _ts(t.get("timestamp"))
    tid = t.get("id")
    if tid is not None and type(tid) is not str:
        if type(tid) is not int:
            raise BadMessage("id", tid, "must be a string or an integer")
        tid = str(tid)
    if recv is not None:
        recv = _ts(recv, "recv")
    return Trade(ts, price, amount, side, tid, recv)


def trade_from_ccxt(t: Any, recv: int | None, symbol: str | None = None) -> Trade | None:
    """``parse_trade``, with ``None`` for a trade that is unusable (``BadMessage``) or of another symbol."""
    try:
        return parse_trade(t, recv, symbol)
    except BadMessage:
        return None


class Backoff:
    """Exponential backoff with full jitter: attempt k waits uniform(0, min(cap, base * 2**k))."""

    def __init__(self, base_s: float = 0.5, cap_s: float = 30.0, rng: random.Random | None = None) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * (2**self.attempt))
        self.attempt += 1
        return self._rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class MarketFeed:
    """Book + trades of one symbol from a ccxt pro exchange, as MarketEvents on ``self.queue``."""

    def __init__(
        self,
        exchange: Any,
        symbol: str,
        levels: int,
        clock: Clock,
        on_health: HealthCallback | None = None,
        *,
        queue_size: int = 10_000,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        trades: bool = True,
        rng: random.Random | None = None,
        stall_reconnect_s: float = 5.0,
        trades_stall_s: float = 60.0,
    ) -> None:
        self.exchange = exchange
        self.symbol = symbol
        self.levels = levels
        self.clock = clock
        self.on_health = on_health
        self.with_trades = trades
        self.queue: asyncio.Queue[MarketEvent | None] = asyncio.Queue(maxsize=queue_size)
        self.differ = BookDiffer(levels, symbol)
        self.healthy = False
        self.reason: str | None = "starting"
        self.snapshots = 0
        self.deltas = 0
        self.trades = 0
        self.errors = 0
        self.bad_messages = 0  # book messages rejected (``feed_bad_message``; each one resyncs the book)
        self.bad_trades = 0  # trades skipped (``feed_bad_trade``)
        self.other_symbol = 0  # books/trades of another symbol, ignored (``feed_other_symbol``)
        self.last_ts = 0  # the largest exchange ``ts`` emitted: never goes backwards
        self.clock_ms = 0  # the receive time stamped on events (``recv``): never goes backwards
        self._bad_book_pending = False  # a bad book asked for the resync that has not come yet
        self._other_seen: set[str] = set()
        self._book_backoff = Backoff(backoff_base_s, backoff_cap_s, rng)
        self._trade_backoff = Backoff(backoff_base_s, backoff_cap_s, rng)
        self._seen_ids: deque[str] = deque(maxlen=2048)
        self._seen_set: set[str] = set()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self.stall_reconnect_s = stall_reconnect_s
        self._resync_since: float | None = None  # monotonic time of a resync request not yet served
        self.reconnects = 0
        # a trade stream that went silent while the book flows (ccxt stuck on a frame it could not
        # parse keeps that connection open but reads nothing) is reconnected after this long
        self.trades_stall_s = trades_stall_s
        self.trade_stalls = 0
        self._last_trade_mono: float | None = None
        self._last_book_mono: float | None = None

    # ------------------------------------------------------------------ health

    def _set_health(self, healthy: bool, reason: str | None) -> None:
        if healthy == self.healthy and (healthy or reason == self.reason):
            return
        self.healthy, self.reason = healthy, reason
        if healthy:
            log.info("feed_healthy", symbol=self.symbol)
        else:
            log.warning("feed_unhealthy", symbol=self.symbol, reason=reason)
        if self.on_health is not None:
            try:
                self.on_health(healthy, reason)
            except Exception:  # a broken callback must not stop the market data
                log.exception("feed_health_callback_failed", symbol=self.symbol)

    def request_resync(self, reason: str) -> None:
        """Emit a fresh snapshot with the next book (e.g. the engine found the book stale/crossed)."""
        self.differ.reset()
        if self._resync_since is None:
            self._resync_since = time.monotonic()
        self._set_health(False, f"resync requested: {reason}")

    def _force_reconnect(self, why: str, stream: str | None = None) -> int:
        """Fail this symbol's market-data websocket(s) as a network error would.

        Why: a stream that stalls without closing (ccxt stuck on a message it could not
        handle, a half-open TCP connection) never delivers the book a resync waits for. A
        NetworkError on the client makes ccxt drop it; the book loop then subscribes again and
        the new subscription starts with a snapshot. Only clients subscribed to this symbol
        are touched (the user-data stream of the broker is another client).
        """
        import ccxt

        try:
            market_id = str(self.exchange.market(self.symbol)["id"]).lower()
        except Exception:
            market_id = self.symbol.replace("/", "").lower()
        n = 0
        for client in list((getattr(self.exchange, "clients", None) or {}).values()):
            subs = getattr(client, "subscriptions", None) or {}
            # ccxt keys subscriptions by unified symbol ("orderbook::BTC/USDT") or by stream name
            if not any(self.symbol in str(k) or market_id in str(k).lower() for k in subs):
                continue
            if stream == "trades" and not any("trade" in str(k).lower() for k in subs):
                continue  # only the connection that carries the trades
            log.warning("feed_reconnect", symbol=self.symbol, reason=why)
            client.on_error(ccxt.NetworkError(f"market stream stalled: {why}"))
            n += 1
        self.reconnects += n
        return n

    # ------------------------------------------------------------------ normalisation

    def _now(self) -> int:
        """The local receive time for the next event; never earlier than the last one (NTP steps)."""
        now = self.clock.now_ms()
        if now > self.clock_ms:
            self.clock_ms = now
        return self.clock_ms

    def _bad_book(self, field: str, value: Any, reason: str, *, ccxt_dropped: bool = False) -> None:
        """A book message we cannot use: one log line, a count, and a resync (no order on it)."""
        self.bad_messages += 1
        log.warning("feed_bad_message", symbol=self.symbol, stream="book", field=field, value=_show(value),
                    reason=reason, action="resync")
        again = self._bad_book_pending and not ccxt_dropped
        self._bad_book_pending = not ccxt_dropped
        self.request_resync(f"bad message: {field} {reason}")
        if again:
            # The book ccxt handed over after a bad one is bad again: ccxt's own copy holds the
            # bad level and only a new subscription (which starts with a snapshot) clears it.
            self._force_reconnect(f"bad message: {field} {reason}")

    def _ignore_other_symbol(self, exc: OtherSymbol, stream: str) -> None:
        self.other_symbol += 1
        key = f"{stream}:{_show(exc.value)}"
        if key not in self._other_seen and len(self._other_seen) < 64:
            self._other_seen.add(key)  # one line per stream and symbol, then only the count
            log.warning("feed_other_symbol", symbol=self.symbol, stream=stream, other=_show(exc.value),
                        action="ignored")

    def on_book(self, ob: Any) -> BookSnapshot | BookDelta | None:
        """Normalise one whole book from ccxt into the event to queue.

        ``None`` when nothing changed, or when the book is rejected: a ``BadMessage`` is
        logged (``feed_bad_message``), counted (``bad_messages``) and resyncs the book (the
        feed goes unhealthy, so no order is placed until the next snapshot); a book of another
        symbol is ignored (``other_symbol``). Events already queued are untouched.
        """
        now = self._now()
        try:
            ev = self.differ.update(ob, book_time(ob, now), now, self.clock.mono_ms())
        except OtherSymbol as exc:
            self._ignore_other_symbol(exc, "book")
            return None
        except BadMessage as exc:
            self._bad_book(exc.field, exc.value, exc.reason)
            return None
        if ev is None:
            return None
        self._book_backoff.reset()
        if type(ev) is BookSnapshot:
            self.snapshots += 1
            self._resync_since = None
            self._bad_book_pending = False
            log.info("feed_snapshot", symbol=self.symbol, seq=ev.seq, bids=len(ev.bids), asks=len(ev.asks))
        else:
            self.deltas += 1
        if ev.ts > self.last_ts:
            self.last_ts = ev.ts
        return ev

    def on_book_error(self, exc: Exception) -> None:
        """What the feed does when ``watch_order_book`` raises ``exc`` (the book loop then backs off).

        ``InvalidNonce``/``ChecksumError`` (a sequence gap in ccxt's book) and other
        ``NetworkError``s: the book is resynced with the next one ccxt delivers. A data error
        (``TypeError``, ``ValueError``, ...) is ccxt failing on a malformed depth message (a
        price it cannot read): it has already dropped its copy of the book and subscribes again
        on the next call, so it is a bad message like the ones ``on_book`` rejects. Anything
        else (bad symbol, authentication) is re-raised: fatal.
        """
        import ccxt

        if isinstance(exc, ccxt.InvalidNonce):  # ChecksumError is one: a sequence gap in ccxt's book
            self.errors += 1
            self.differ.reset()
            self._set_health(False, f"resync: {type(exc).__name__}: {exc}")
        elif isinstance(exc, ccxt.NetworkError):
            self.errors += 1
            self.differ.reset()
            self._set_health(False, f"network error: {type(exc).__name__}: {exc}")
        elif isinstance(exc, _DATA_ERRORS):
            self.errors += 1
            self._bad_book("message", f"{type(exc).__name__}: {exc}", "ccxt could not apply it", ccxt_dropped=True)
        else:
            raise exc

    def on_trades(self, trades: Any) -> list[Trade]:
        """Normalise a batch from ``watch_trades``: the new, valid trades in order.

        A bad trade is skipped with a ``feed_bad_trade`` line and counted (``bad_trades``); a
        trade of another symbol is ignored (``other_symbol``); a repeated id is dropped.
        Timestamps may step back a little between trades (the exchange's order); ``last_ts``
        keeps the largest.
        """
        now = self._now()
        if not isinstance(trades, list | tuple):
            trades = [trades]
        out: list[Trade] = []
        for t in trades:
            try:
                tr = parse_trade(t, now, self.symbol)
            except OtherSymbol as exc:
                self._ignore_other_symbol(exc, "trades")
                continue
            except BadMessage as exc:
                self.bad_trades += 1
                tid = t.get("id") if isinstance(t, dict) else None
                log.warning("feed_bad_trade", symbol=self.symbol, field=exc.field, value=_show(exc.value),
                            reason=exc.reason, id=None if tid is None else _show(tid), action="skipped")
                continue
            tid = tr.trade_id
            if tid is not None:
                if tid in self._seen_set:
                    continue
                if len(self._seen_ids) == self._seen_ids.maxlen:
                    self._seen_set.discard(self._seen_ids[0])
                self._seen_ids.append(tid)
                self._seen_set.add(tid)
            self.trades += 1
            if tr.ts > self.last_ts:
                self.last_ts = tr.ts
            out.append(tr)
        return out

    async def _stall_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(min(1.0, self.stall_reconnect_s))
            since = self._resync_since
            if since is not None and time.monotonic() - since >= self.stall_reconnect_s:
                self._force_reconnect(f"no book for {time.monotonic() - since:.1f} s after a resync request")
                self._resync_since = time.monotonic()
            self._check_trades_stalled(time.monotonic())

    def _check_trades_stalled(self, now: float) -> None:
        """Reconnect a trade stream that has been silent ``trades_stall_s`` while books arrive."""
        last_trade, last_book = self._last_trade_mono, self._last_book_mono
        if not self.with_trades or last_trade is None or last_book is None:
            return
        if now - last_book > 2.0 or now - last_trade < self.trades_stall_s:
            return  # the whole feed is quiet (the book guards handle that), or trades are recent
        self.trade_stalls += 1
        log.warning("feed_trades_stalled", symbol=self.symbol, silent_s=round(now - last_trade, 1),
                    action="reconnect")
        self._force_reconnect(f"no trade for {now - last_trade:.0f} s while the book updates", stream="trades")
        self._last_trade_mono = now

    # ------------------------------------------------------------------ producer

    async def run(self) -> None:
        """Produce events until ``stop()``; a non-network error from ccxt propagates."""
        loops = [self._book_loop(), self._stall_loop()]
        if self.with_trades:
            loops.append(self._trade_loop())
        try:
            async with asyncio.TaskGroup() as tg:
                self._tasks = [tg.create_task(c) for c in loops]
        except BaseExceptionGroup as eg:  # one loop failed fatally: raise its error itself
            raise eg.exceptions[0] from None
        finally:
            self._tasks = []
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(None)  # wake consumers

    async def _book_loop(self) -> None:
        while not self._stopping:
            try:
                ob = await self.exchange.watch_order_book(self.symbol)
            except Exception as exc:
                self.on_book_error(exc)  # re-raises a fatal error
                await asyncio.sleep(self._book_backoff.next_delay())
                continue
            self._last_book_mono = time.monotonic()
            ev = self.on_book(ob)
            if ev is None:
                continue
            await self.queue.put(ev)
            if not self.healthy:
                self._set_health(True, None)

    async def _trade_loop(self) -> None:
        import ccxt

        self._last_trade_mono = time.monotonic()
        while not self._stopping:
            try:
                trades = await self.exchange.watch_trades(self.symbol)
            except (ccxt.NetworkError, *_DATA_ERRORS) as exc:  # a data error: a message ccxt could not parse
                self.errors += 1
                log.warning("feed_trades_error", symbol=self.symbol, error=f"{type(exc).__name__}: {exc}"[:300])
                await asyncio.sleep(self._trade_backoff.next_delay())
                continue
            self._trade_backoff.reset()
            self._last_trade_mono = time.monotonic()
            for tr in self.on_trades(trades):
                await self.queue.put(tr)

    async def stop(self) -> None:
        """Stop producing; consumers see the end of the stream."""
        self._stopping = True
        for t in list(self._tasks):
            t.cancel()
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)

    # ------------------------------------------------------------------ consumer

    def __aiter__(self) -> AsyncIterator[MarketEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[MarketEvent]:
        while True:
            ev = await self.queue.get()
            if ev is None:
                if self._stopping or not self._tasks:
                    return
                continue
            yield ev


# --------------------------------------------------------------------------- recording


def market_tick(exchange: Any, symbol: str) -> float | None:
    """The price tick of ``symbol`` from ccxt's loaded markets (``None`` when unknown)."""
    from ccxt.base.decimal_to_precision import TICK_SIZE

    market = (getattr(exchange, "markets", None) or {}).get(symbol)
    if not market:
        return None
    prec = (market.get("precision") or {}).get("price")
    if prec is None:
        return None
    if getattr(exchange, "precisionMode", None) == TICK_SIZE:
        return float(prec)
    return float(10.0 ** -float(prec))


ProgressCallback = Callable[[float, "MarketFeed", int], None]


async def record_to_file(
    exchange: Any,
    symbol: str,
    seconds: float,
    out: Any,
    levels: int,
    clock: Clock,
    *,
    exchange_id: str = "",
    progress: ProgressCallback | None = None,
    progress_every_s: float = 1.0,
) -> tuple[int, list[Any]]:
    """Record ``seconds`` of book + trades from ``exchange`` into a bot-recording/1 file.

    Returns (events written, files written). Loads the markets first (for the header's tick).
    A fatal feed error (unknown symbol, ...) propagates after the file is closed; everything
    received until then is in the file.
    """
    from bot.market.recorder import RecordingWriter

    await exchange.load_markets()
    if symbol not in exchange.markets:
        raise ValueError(f"unknown symbol {symbol!r} on {exchange_id or exchange.id}")
    tick = market_tick(exchange, symbol)
    feed = MarketFeed(exchange, symbol, levels, clock)
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + seconds
    next_progress = start + progress_every_s
    written = 0
    with RecordingWriter(out, exchange_id or exchange.id, symbol, tick) as writer:
        task = asyncio.create_task(feed.run())
        try:
            while True:
                now = loop.time()
                if now >= deadline:
                    break
                if progress is not None and now >= next_progress:
                    progress(now - start, feed, written)
                    next_progress = now + progress_every_s
                try:
                    ev = await asyncio.wait_for(feed.queue.get(), timeout=min(deadline, next_progress) - now)
                except TimeoutError:
                    continue
                if ev is None:  # the feed stopped: a fatal error, re-raised below
                    break
                writer.write(ev)
                written += 1
        finally:
            await feed.stop()
            try:
                await task
            finally:
                if progress is not None:
                    progress(loop.time() - start, feed, written)
    return written, list(writer.files)
