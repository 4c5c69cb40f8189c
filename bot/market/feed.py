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
* Errors: ccxt raises ``ChecksumError``/``InvalidNonce`` (both ``NetworkError``s) on a
  sequence gap and then re-subscribes on the next call, and other ``NetworkError``s on
  disconnects. Both are retried with exponential backoff and full jitter; anything else
  (bad symbol, authentication) is fatal and leaves ``run()``. Every health transition is
  logged and passed to ``on_health(healthy, reason)``.

Delivery: ``run()`` is the producer (start it as a task); events go to ``self.queue``
(an ``asyncio.Queue``, bounded: a slow consumer slows the feed rather than losing data),
and ``async for ev in feed`` consumes them until ``stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from bot.clock import Clock
from bot.logging import get_logger
from bot.model import BookDelta, BookSnapshot, Level, MarketEvent, Side, Trade

log = get_logger("market.feed")

HealthCallback = Callable[[bool, str | None], None]

_SIDES = {"buy": Side.BUY, "sell": Side.SELL}


def _window(side: Sequence[Sequence[Any]], n: int) -> dict[float, float]:
    """The top ``n`` levels of one ccxt book side as price -> size (ccxt sides are sorted best first)."""
    out: dict[float, float] = {}
    for lv in side[:n]:
        q = float(lv[1])
        if q > 0.0:
            out[float(lv[0])] = q
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
    """Turns a sequence of whole books (ccxt ``OrderBook`` dicts) into snapshot + delta events."""

    def __init__(self, levels: int) -> None:
        if levels < 1:
            raise ValueError("levels must be >= 1")
        self.levels = levels
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

    def update(self, ob: Any, ts: int, recv: int | None = None) -> BookSnapshot | BookDelta | None:
        """The event that moves our view to ``ob``'s top window (``None`` if nothing changed)."""
        bids = _window(ob["bids"], self.levels)
        asks = _window(ob["asks"], self.levels)
        nonce = ob.get("nonce")
        nonce = int(nonce) if nonce is not None else None
        prev_nonce = self._nonce
        if self._bids is None or (nonce is not None and prev_nonce is not None and nonce < prev_nonce):
            self._bids, self._asks, self._nonce = bids, asks, nonce
            return BookSnapshot(
                ts=ts,
                bids=sorted(bids.items(), reverse=True),
                asks=sorted(asks.items()),
                seq=nonce,
                recv=recv,
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
        )


def trade_from_ccxt(t: dict[str, Any], recv: int | None) -> Trade | None:
    """A ccxt public trade (side = taker side) as a ``Trade``; ``None`` if it is unusable."""
    side = _SIDES.get(t.get("side") or "")
    price, amount, ts = t.get("price"), t.get("amount"), t.get("timestamp")
    if side is None or price is None or amount is None or ts is None:
        return None
    tid = t.get("id")
    return Trade(int(ts), float(price), float(amount), side, None if tid is None else str(tid), recv)


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
    ) -> None:
        self.exchange = exchange
        self.symbol = symbol
        self.levels = levels
        self.clock = clock
        self.on_health = on_health
        self.with_trades = trades
        self.queue: asyncio.Queue[MarketEvent | None] = asyncio.Queue(maxsize=queue_size)
        self.differ = BookDiffer(levels)
        self.healthy = False
        self.reason: str | None = "starting"
        self.snapshots = 0
        self.deltas = 0
        self.trades = 0
        self.errors = 0
        self._book_backoff = Backoff(backoff_base_s, backoff_cap_s, rng)
        self._trade_backoff = Backoff(backoff_base_s, backoff_cap_s, rng)
        self._seen_ids: deque[str] = deque(maxlen=2048)
        self._seen_set: set[str] = set()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self.stall_reconnect_s = stall_reconnect_s
        self._resync_since: float | None = None  # monotonic time of a resync request not yet served
        self.reconnects = 0

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

    def _force_reconnect(self, why: str) -> int:
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
            log.warning("feed_reconnect", symbol=self.symbol, reason=why)
            client.on_error(ccxt.NetworkError(f"market stream stalled: {why}"))
            n += 1
        self.reconnects += n
        return n

    async def _stall_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(min(1.0, self.stall_reconnect_s))
            since = self._resync_since
            if since is not None and time.monotonic() - since >= self.stall_reconnect_s:
                self._force_reconnect(f"no book for {time.monotonic() - since:.1f} s after a resync request")
                self._resync_since = time.monotonic()

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
        import ccxt

        while not self._stopping:
            try:
                ob = await self.exchange.watch_order_book(self.symbol)
            except ccxt.InvalidNonce as exc:  # ChecksumError is one: a sequence gap in ccxt's book
                self.errors += 1
                self.differ.reset()
                self._set_health(False, f"resync: {type(exc).__name__}: {exc}")
                await asyncio.sleep(self._book_backoff.next_delay())
                continue
            except ccxt.NetworkError as exc:
                self.errors += 1
                self.differ.reset()
                self._set_health(False, f"network error: {type(exc).__name__}: {exc}")
                await asyncio.sleep(self._book_backoff.next_delay())
                continue
            now = self.clock.now_ms()
            ts = ob.get("timestamp")
            ev = self.differ.update(ob, int(ts) if ts is not None else now, now)
            if ev is None:
                continue
            self._book_backoff.reset()
            if type(ev) is BookSnapshot:
                self.snapshots += 1
                self._resync_since = None
                log.info("feed_snapshot", symbol=self.symbol, seq=ev.seq, bids=len(ev.bids), asks=len(ev.asks))
            else:
                self.deltas += 1
            await self.queue.put(ev)
            if not self.healthy:
                self._set_health(True, None)

    async def _trade_loop(self) -> None:
        import ccxt

        while not self._stopping:
            try:
                trades = await self.exchange.watch_trades(self.symbol)
            except ccxt.NetworkError as exc:
                self.errors += 1
                log.warning("feed_trades_error", symbol=self.symbol, error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(self._trade_backoff.next_delay())
                continue
            self._trade_backoff.reset()
            now = self.clock.now_ms()
            for t in trades:
                tid = t.get("id")
                if tid is not None:
                    tid = str(tid)
                    if tid in self._seen_set:
                        continue
                    if len(self._seen_ids) == self._seen_ids.maxlen:
                        self._seen_set.discard(self._seen_ids[0])
                    self._seen_ids.append(tid)
                    self._seen_set.add(tid)
                tr = trade_from_ccxt(t, now)
                if tr is None:
                    log.warning("feed_bad_trade", symbol=self.symbol, trade=str(t)[:200])
                    continue
                self.trades += 1
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
