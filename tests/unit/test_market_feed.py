"""MarketFeed: whole ccxt books -> snapshot/deltas that rebuild ccxt's top N; reconnects and resyncs.

The exchange here is a scripted stand-in with ccxt's shapes (books as dicts of sorted
[price, size] lists with a nonce, trades as ccxt trade dicts) and ccxt's real exception
classes; the real ccxt <-> emulator path is covered by the integration tests.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import ccxt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.clock import SimulatedClock
from bot.market.book import OrderBook
from bot.market.feed import Backoff, BookDiffer, MarketFeed, diff_window, trade_from_ccxt
from bot.model import BookDelta, BookSnapshot, MarketEvent, Side, Trade

from helpers import SteppableClock


def ccxt_book(bids: dict[float, float], asks: dict[float, float], nonce: int | None, ts: int = 1000) -> dict[str, Any]:
    return {
        "bids": [[p, q] for p, q in sorted(bids.items(), reverse=True)],
        "asks": [[p, q] for p, q in sorted(asks.items())],
        "nonce": nonce,
        "timestamp": ts,
    }


def test_diff_window() -> None:
    prev = {100.0: 1.0, 99.0: 2.0, 98.0: 3.0}
    cur = {100.0: 1.0, 99.0: 2.5, 97.0: 1.0}
    assert diff_window(prev, cur, descending=True) == [(99.0, 2.5), (98.0, 0.0), (97.0, 1.0)]
    assert diff_window(prev, prev, descending=True) == []


def test_differ_snapshot_then_deltas_with_seq_chain() -> None:
    d = BookDiffer(levels=2)
    s = d.update(ccxt_book({100.0: 1.0, 99.0: 2.0, 98.0: 3.0}, {101.0: 1.0, 102.0: 2.0}, 50), ts=1, recv=3)
    assert s == BookSnapshot(ts=1, bids=[(100.0, 1.0), (99.0, 2.0)], asks=[(101.0, 1.0), (102.0, 2.0)], seq=50, recv=3)
    # a new best bid pushes 99.0 out of the 2-level window: it is emitted as removed
    e = d.update(ccxt_book({100.5: 1.0, 100.0: 1.0, 99.0: 2.0}, {101.0: 0.5, 102.0: 2.0}, 57), ts=2)
    assert e == BookDelta(ts=2, bids=[(100.5, 1.0), (99.0, 0.0)], asks=[(101.0, 0.5)], seq=57, first_seq=51)
    assert d.update(ccxt_book({100.5: 1.0, 100.0: 1.0}, {101.0: 0.5, 102.0: 2.0}, 57), ts=3) is None  # same nonce
    # the nonce going back means ccxt resynced: a snapshot again
    again = d.update(ccxt_book({90.0: 1.0}, {91.0: 1.0}, 10), ts=4)
    assert isinstance(again, BookSnapshot) and again.seq == 10


def test_trade_from_ccxt() -> None:
    t = {"id": 12, "timestamp": 1700, "price": 100.5, "amount": 0.25, "side": "sell"}
    assert trade_from_ccxt(t, 1702) == Trade(1700, 100.5, 0.25, Side.SELL, "12", 1702)
    assert trade_from_ccxt({**t, "side": None}, None) is None


def test_backoff_is_exponential_with_full_jitter() -> None:
    b = Backoff(base_s=1.0, cap_s=8.0, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(6)]
    ceilings = [1, 2, 4, 8, 8, 8]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == 6
    b.reset()
    assert b.attempt == 0


books = st.dictionaries(st.integers(1, 40).map(float), st.sampled_from([0.5, 1.0, 2.0]), max_size=15)


@settings(max_examples=200, deadline=None)
@given(seq=st.lists(st.tuples(books, books), min_size=1, max_size=20), levels=st.integers(1, 6))
def test_events_rebuild_ccxt_top_n_exactly(seq: list[tuple[dict[float, float], dict[float, float]]], levels: int) -> None:
    d = BookDiffer(levels)
    ours = OrderBook()
    for i, (b, a) in enumerate(seq):
        asks = {p + 40.0: q for p, q in a.items()}  # never crossed
        ob = ccxt_book(b, asks, nonce=100 + i * 3)
        ev = d.update(ob, ts=i)
        if ev is not None:
            ours.apply(ev)
        assert ours.bids() == [tuple(x) for x in ob["bids"][:levels]]
        assert ours.asks() == [tuple(x) for x in ob["asks"][:levels]]
        assert ours.healthy, ours.reason  # the seq chain has no gaps


class FakeExchange:
    """Scripted ``watch_order_book``/``watch_trades``: each call takes the next item (or raises it)."""

    def __init__(self, books: list[Any], trades: list[Any]) -> None:
        self.books = books
        self.trade_batches = trades
        self.book_calls = 0

    async def _next(self, script: list[Any]) -> Any:
        await asyncio.sleep(0)
        if not script:
            await asyncio.Event().wait()  # no more data: block like a quiet stream
        item = script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    async def watch_order_book(self, symbol: str) -> Any:
        self.book_calls += 1
        return await self._next(self.books)

    async def watch_trades(self, symbol: str) -> Any:
        return await self._next(self.trade_batches)


async def _collect(feed: MarketFeed, n: int) -> list[MarketEvent]:
    task = asyncio.create_task(feed.run())
    out: list[MarketEvent] = []
    async with asyncio.timeout(5):
        async for ev in feed:
            out.append(ev)
            if len(out) == n:
                break
    await feed.stop()
    await task
    return out


async def test_feed_reconnects_and_resyncs_with_health_reports() -> None:
    b1 = ccxt_book({100.0: 1.0}, {101.0: 1.0}, 10)
    b2 = ccxt_book({100.0: 2.0}, {101.0: 1.0}, 12)
    b3 = ccxt_book({99.0: 1.0}, {100.5: 1.0}, 40)  # after ccxt's resync
    b4 = ccxt_book({99.0: 1.0}, {100.5: 3.0}, 41)
    ex = FakeExchange(
        [b1, b2, ccxt.NetworkError("connection closed"), b3, ccxt.ChecksumError("binance BTC/USDT gap"), b4],
        [[{"id": 1, "timestamp": 1001, "price": 101.0, "amount": 0.1, "side": "buy"}],
         ccxt.RequestTimeout("timeout"),
         [{"id": 1, "timestamp": 1001, "price": 101.0, "amount": 0.1, "side": "buy"},  # duplicate id: dropped
          {"id": 2, "timestamp": 1005, "price": 100.0, "amount": 0.2, "side": "sell"}]],
    )
    health: list[tuple[bool, str | None]] = []
    feed = MarketFeed(ex, "BTC/USDT", 5, SimulatedClock(5000), lambda h, r: health.append((h, r)),
                      backoff_base_s=0.001, backoff_cap_s=0.002)
    evs = await _collect(feed, 6)
    book_evs = [e for e in evs if not isinstance(e, Trade)]
    trades = [e for e in evs if isinstance(e, Trade)]
    assert [type(e).__name__ for e in book_evs] == ["BookSnapshot", "BookDelta", "BookSnapshot", "BookSnapshot"]
    assert book_evs[1] == BookDelta(1000, [(100.0, 2.0)], [], seq=12, first_seq=11, recv=5000)
    assert [t.trade_id for t in trades] == ["1", "2"] and trades[1].side is Side.SELL and trades[1].recv == 5000
    assert health == [
        (True, None),
        (False, "network error: NetworkError: connection closed"),
        (True, None),
        (False, "resync: ChecksumError: binance BTC/USDT gap"),
        (True, None),
    ]
    assert feed.errors == 3 and feed.snapshots == 3


async def test_feed_fatal_error_propagates() -> None:
    ex = FakeExchange([ccxt.BadSymbol("binance does not have market symbol FOO/BAR")], [])
    feed = MarketFeed(ex, "FOO/BAR", 5, SimulatedClock(0))
    with pytest.raises(ccxt.BadSymbol, match="FOO/BAR"):
        async with asyncio.timeout(5):
            await feed.run()
    assert not feed.healthy


async def test_request_resync_emits_a_snapshot() -> None:
    b1 = ccxt_book({100.0: 1.0}, {101.0: 1.0}, 10)
    b2 = ccxt_book({100.0: 2.0}, {101.0: 1.0}, 12)
    ex = FakeExchange([b1, b2], [])
    feed = MarketFeed(ex, "BTC/USDT", 5, SimulatedClock(0), trades=False)
    task = asyncio.create_task(feed.run())
    it = feed.__aiter__()
    first = await anext(it)
    feed.request_resync("book stale")
    assert not feed.healthy and feed.reason == "resync requested: book stale"
    second = await anext(it)
    await feed.stop()
    await task
    assert isinstance(first, BookSnapshot) and isinstance(second, BookSnapshot) and second.seq == 12
    assert feed.healthy


@pytest.mark.parametrize("step_ms", [-3_600_000, 3_600_000], ids=["back_1h", "forward_1h"])
def test_stale_book_is_measured_on_the_monotonic_receive_time(step_ms: int) -> None:
    """A wall-clock step neither hides a stale book (step back: the never-backwards ``recv`` stamp
    stays ahead of the wall clock for an hour) nor fakes one (step forward)."""
    clock = SteppableClock(wall0_ms=1_700_000_000_000)
    feed = MarketFeed(None, "BTC/USDT", 5, clock)
    book = OrderBook("BTC/USDT")
    first = feed.on_book(ccxt_book({100.0: 1.0}, {101.0: 1.0}, 10, ts=1_700_000_000_000))
    assert first is not None and first.recv_mono == clock.mono_ms() and first.recv == clock.now_ms()
    book.apply(first)
    clock.step_wall(step_ms)
    clock.advance(1_000)
    second = feed.on_book(ccxt_book({100.0: 2.0}, {101.0: 1.0}, 11, ts=1_700_000_001_000))
    assert second is not None and second.recv_mono == clock.mono_ms()
    book.apply(second)
    clock.advance(5_000)
    assert book.check_stale(clock.mono_ms(), 5_000) is True  # 5 s without an update: not yet stale
    clock.advance(1)
    assert book.check_stale(clock.mono_ms(), 5_000) is False
    assert book.reason == "stale: no book update for 5001 ms (limit 5000 ms)"
