"""The malformed-message corpus (tests/corpus/messages/): raw Binance spot websocket frames, and
what the bot does with each.

Every file is a REST depth snapshot (line 1, what ccxt fetches when it subscribes) and then
frames in arrival order: a good depth diff and a good trade, the bad frame, sometimes good
frames after it. Offline, each frame goes through ccxt's own handling - its websocket client's
decode (``Client.handle_text_or_binary_message``: orjson, then ``binance.handle_message``, as
bench/feed.py drives it) - and what ccxt hands on (the book ``watch_order_book`` returns, the new
trades ``watch_trades`` returns, or the error it rejects the watch with) goes through the same
``MarketFeed`` methods its book and trade loops call (``on_book``, ``on_trades``,
``on_book_error``). Only the socket is replaced (``WsClient``); no ccxt method is.

messages/expected.toml states the outcome of each file; the test asserts it, that every event
the feed emitted before the bad frame is still there, unchanged, and that no emitted event holds
a non-finite, non-positive or absurd price.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ccxt
import ccxt.pro
import orjson
import pytest
import structlog
from ccxt.async_support.base.ws.client import Client
from structlog.testing import LogCapture

import bot.market.feed as feed_module
from bot.clock import SimulatedClock
from bot.market.feed import MarketFeed
from bot.market.sanity import MAX_AMOUNT, MAX_PRICE
from bot.model import BookDelta, BookSnapshot, MarketEvent, Trade

MESSAGES = Path(__file__).resolve().parent.parent / "corpus" / "messages"
EXPECTED: dict[str, dict[str, Any]] = tomllib.loads((MESSAGES / "expected.toml").read_text())["messages"]
SYMBOL = "BTC/USDT"
LEVELS = 5
BOOK_HASH = f"orderbook::{SYMBOL}"
TRADE_HASH = f"trade::{SYMBOL}"
OUTCOMES = {"accepted", "resync", "skipped", "ignored", "ccxt_raises"}


def _market(base: str, quote: str) -> dict[str, Any]:
    return {
        "id": base + quote, "symbol": f"{base}/{quote}", "base": base, "quote": quote, "baseId": base,
        "quoteId": quote, "type": "spot", "spot": True, "margin": False, "swap": False, "future": False,
        "option": False, "contract": False, "linear": None, "inverse": None, "active": True,
        "lowercaseId": (base + quote).lower(), "precision": {"price": 0.01, "amount": 1e-5}, "limits": {},
        "info": {},
    }


class WsClient:
    """The socket side of ccxt's ws ``Client``: what its decode and binance's handlers touch.

    ``receive`` runs ccxt's own ``Client.handle_text_or_binary_message`` on a text frame; an
    exception from it is what would escape ccxt's receive callback live (that connection then
    stops being read). ``resolve``/``reject`` record what the watch futures would get;
    ``on_error`` records the feed failing the connection (``MarketFeed._force_reconnect``).
    """

    url = "wss://stream.binance.com:9443/stream"  # binance's handlers read the market type off it
    verbose = False
    decompressBinary = True

    def __init__(self, exchange: Any) -> None:
        self.on_message_callback = exchange.handle_message
        self.subscriptions: dict[str, Any] = {BOOK_HASH: {}, TRADE_HASH: {}}
        self.resolved: list[tuple[str, Any]] = []
        self.rejected: list[tuple[str | None, Exception]] = []
        self.failed: list[BaseException] = []
        self.failed_event = asyncio.Event()

    def receive(self, frame: str) -> None:
        Client.handle_text_or_binary_message(self, frame)

    def resolve(self, result: Any, message_hash: str) -> Any:
        self.resolved.append((message_hash, result))
        return result

    def reject(self, error: Exception, message_hash: str | None = None) -> Exception:
        self.rejected.append((message_hash, error))
        return error

    def on_error(self, error: BaseException) -> None:
        self.failed.append(error)
        self.failed_event.set()


def watch_trades_result(exchange: Any, trades: Any) -> Any:
    """What ``binance.watch_trades`` returns once its future resolves with ``trades`` (its own code)."""
    first = exchange.safe_dict(trades, 0)
    limit = trades.getLimit(exchange.safe_string(first, "symbol"), None) if exchange.newUpdates else None
    return exchange.filter_by_since_limit(trades, None, limit, "timestamp", True)


@dataclass
class Run:
    feed: MarketFeed
    ws: WsClient
    events: list[tuple[int, MarketEvent]] = field(default_factory=list)  # (line, event)
    ccxt_raised: list[tuple[int, Exception]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    last_ts_seen: list[int] = field(default_factory=list)  # feed.last_ts after every frame


@contextlib.contextmanager
def feed_logs() -> Iterator[list[dict[str, Any]]]:
    """The feed's log lines as dicts (its module logger is bound at import, so it is swapped here
    rather than reconfigured with structlog.testing.capture_logs)."""
    cap = LogCapture()
    saved = feed_module.log
    feed_module.log = structlog.wrap_logger(None, processors=[cap]).bind(logger="market.feed")
    try:
        yield cap.entries
    finally:
        feed_module.log = saved


def replay(path: Path, upto: int | None = None) -> Run:
    """Lines 1..``upto`` of ``path`` through ccxt and the feed's normaliser."""
    lines = path.read_text().splitlines()[:upto]
    ex = ccxt.pro.binance()
    ex.set_markets([_market("BTC", "USDT"), _market("ETH", "USDT")])
    ws = WsClient(ex)
    ex.clients = {ws.url: ws}
    run = Run(MarketFeed(ex, SYMBOL, LEVELS, SimulatedClock(1_700_000_000_000)), ws)
    feed = run.feed
    with feed_logs() as logs:
        for line_no, raw in enumerate(lines, start=1):
            ws.resolved.clear()
            ws.rejected.clear()
            if line_no == 1:  # what fetch_order_book_snapshot does with the REST answer
                snap = orjson.loads(raw)
                ob = ex.order_book({}, 1000)
                ex.orderbooks[SYMBOL] = ob
                book = ex.parse_order_book(snap, SYMBOL)
                book["nonce"] = snap["lastUpdateId"]
                ob.reset(book)
                ws.resolve(ob, BOOK_HASH)
            else:
                try:
                    ws.receive(raw)
                except Exception as exc:
                    run.ccxt_raised.append((line_no, exc))
            for message_hash, error in ws.rejected:
                assert message_hash == BOOK_HASH, (message_hash, error)
                feed.on_book_error(error)  # what watch_order_book raising does in the book loop
            for message_hash, result in ws.resolved:
                if message_hash == BOOK_HASH:
                    ev = feed.on_book(result.limit())  # watch_order_book returns orderbook.limit()
                    if ev is not None:
                        run.events.append((line_no, ev))
                elif message_hash == TRADE_HASH:
                    run.events.extend((line_no, t) for t in feed.on_trades(watch_trades_result(ex, result)))
                # any other hash is another symbol's stream: this feed does not watch it
            run.last_ts_seen.append(feed.last_ts)
    run.logs = logs
    return run


def _events_of(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e.get("event") == name]


def _check_sane(ev: MarketEvent) -> None:
    if type(ev) is Trade:
        assert 0.0 < ev.price <= MAX_PRICE and math.isfinite(ev.price), ev
        assert 0.0 < ev.amount <= MAX_AMOUNT and math.isfinite(ev.amount), ev
        return
    assert isinstance(ev, BookSnapshot | BookDelta)
    for p, q in [*ev.bids, *ev.asks]:
        assert 0.0 < p <= MAX_PRICE and math.isfinite(p), ev
        assert 0.0 <= q <= MAX_AMOUNT and math.isfinite(q), ev


def test_every_message_file_has_an_expected_outcome() -> None:
    assert {p.name for p in MESSAGES.glob("*.jsonl")} == set(EXPECTED)
    for name, exp in EXPECTED.items():
        assert exp["outcome"] in OUTCOMES, name
        assert exp.get("note"), f"{name}: say why"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_message(name: str) -> None:
    exp = EXPECTED[name]
    path = MESSAGES / name
    bad_line = int(exp["bad_line"])
    run = replay(path)
    feed, logs = run.feed, run.logs
    outcome = exp["outcome"]

    # nothing the feed emitted before the bad frame is lost or changed, and nothing insane got out
    before = replay(path, upto=bad_line - 1)
    assert run.events[: len(before.events)] == before.events
    assert len(run.events) == exp["events"], [type(e).__name__ for _, e in run.events]
    for _, ev in run.events:
        _check_sane(ev)
    # the feed's clock never goes backwards, whatever the frames' timestamps do
    assert run.last_ts_seen == sorted(run.last_ts_seen)
    assert feed.last_ts == max(ev.ts for _, ev in run.events)

    bad_logs = _events_of(logs, "feed_bad_message") + _events_of(logs, "feed_bad_trade")
    if outcome == "ccxt_raises":
        # the exception escapes ccxt's receive callback: nothing reaches the feed (see
        # test_a_frame_ccxt_raises_on_stalls_the_stream_and_the_feed_reconnects for what follows)
        assert [(n, type(e).__name__) for n, e in run.ccxt_raised] == [(bad_line, exp["error"])]
        assert not [ev for n, ev in run.events if n >= bad_line]
        assert not bad_logs and feed.bad_messages == feed.bad_trades == feed.errors == 0
        return
    assert not run.ccxt_raised, run.ccxt_raised
    if outcome in ("accepted", "ignored"):
        assert not bad_logs, bad_logs
        assert feed.bad_messages == feed.bad_trades == feed.errors == 0
        assert feed.other_symbol == exp.get("other_symbol", 0)
        produced = [ev for n, ev in run.events if n >= bad_line]
        assert (not produced) if outcome == "ignored" else len(produced) == exp.get("produced", 1), produced
        return
    assert outcome in ("resync", "skipped")
    counter = exp["counter"]
    assert getattr(feed, counter) == exp.get("count", 1), counter
    if "log" in exp:
        lines = _events_of(logs, exp["log"])
        assert len(lines) == exp.get("count", 1), logs
        assert exp["field"] in lines[0]["field"], lines[0]
        assert exp["reason"] in lines[0]["reason"], lines[0]
        assert lines[0]["action"] == ("resync" if outcome == "resync" else "skipped")
    if outcome == "skipped":
        assert feed.bad_messages == 0 and feed.reason == "starting", feed.reason  # the book is untouched
        assert exp.get("produced", 0) == len([ev for n, ev in run.events if n > bad_line])
        return
    # resync: the feed is unhealthy (no order on this book) until the next snapshot
    then = exp.get("then", "waiting")
    if then == "snapshot":
        assert feed.snapshots == 2 and type(run.events[-1][1]) is BookSnapshot
        assert run.events[-1][0] > bad_line
        return
    assert not feed.healthy and feed.reason is not None and feed.reason.startswith(exp["health"]), feed.reason
    assert not feed.differ.has_snapshot, "the next good book must be a snapshot"
    if then == "reconnect":
        assert len(run.ws.failed) == 1 and isinstance(run.ws.failed[0], ccxt.NetworkError), run.ws.failed
        assert _events_of(logs, "feed_reconnect")
    else:
        assert not run.ws.failed


async def test_a_frame_ccxt_raises_on_stalls_the_stream_and_the_feed_reconnects() -> None:
    """What the feed does about a frame ccxt raises on (the ccxt_raises entries): live, the error
    escapes ccxt's receive callback and that connection is never read again, so no book comes.
    The engine's stale-book guard asks the feed for a resync; unserved, the feed fails the
    stalled connection (ccxt drops it, the book loop subscribes again, a snapshot follows)."""
    run = replay(MESSAGES / "depth_truncated_json.jsonl")
    feed = run.feed
    assert run.ccxt_raised and not run.ws.failed
    feed.stall_reconnect_s = 0.01
    feed.request_resync("stale: no book update for 5001 ms (limit 5000 ms)")  # the engine's guard
    assert not feed.healthy
    stall = asyncio.create_task(feed._stall_loop())
    try:
        await asyncio.wait_for(run.ws.failed_event.wait(), 10)
    finally:
        stall.cancel()
    assert isinstance(run.ws.failed[0], ccxt.NetworkError) and feed.reconnects >= 1


class ScriptedExchange:
    """``watch_order_book``/``watch_trades`` handing over scripted results (or raising them), for
    the feed's own loops; the books and trades come from real ccxt (``replay``)."""

    def __init__(self, books: list[Any], trades: list[Any]) -> None:
        self.books, self.trade_batches = books, trades

    async def _next(self, script: list[Any]) -> Any:
        await asyncio.sleep(0)
        if not script:
            await asyncio.Event().wait()
        item = script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    async def watch_order_book(self, symbol: str) -> Any:
        return await self._next(self.books)

    async def watch_trades(self, symbol: str) -> Any:
        return await self._next(self.trade_batches)


def _book(bids: list[list[float]], asks: list[list[float]], nonce: int, ts: int) -> dict[str, Any]:
    return {"symbol": SYMBOL, "bids": bids, "asks": asks, "nonce": nonce, "timestamp": ts}


async def test_feed_loops_keep_running_through_bad_books_and_trades() -> None:
    """The loops themselves: a NaN book, a book ccxt failed on (TypeError), a negative trade price
    and a trade of another symbol neither stop the feed nor reach the queue; everything good
    before and after is delivered in order, and the health reports say why the book resynced."""
    good1 = _book([[100.0, 1.0]], [[100.01, 1.0]], 10, 1000)
    nan = _book([[math.nan, 1.0], [100.0, 1.0]], [[100.01, 1.0]], 11, 1100)
    good2 = _book([[100.0, 2.0]], [[100.01, 1.0]], 20, 1190)
    good3 = _book([[100.0, 3.0]], [[100.01, 1.0]], 21, 1197)  # 3 ms before the trade below: accepted
    trade = {"symbol": SYMBOL, "id": "1", "timestamp": 1199, "price": 100.01, "amount": 0.5, "side": "buy"}
    bad_trade = {**trade, "id": "2", "price": -1.0}
    other = {**trade, "id": "3", "symbol": "ETH/USDT"}
    later = {**trade, "id": "4", "timestamp": 1196}
    ex = ScriptedExchange([good1, nan, TypeError("bad operand type for unary -: 'NoneType'"), good2, good3],
                          [[trade, bad_trade, other], [later]])
    health: list[tuple[bool, str | None]] = []
    feed = MarketFeed(ex, SYMBOL, LEVELS, SimulatedClock(5000), lambda h, r: health.append((h, r)),
                      backoff_base_s=0.001, backoff_cap_s=0.002)
    task = asyncio.create_task(feed.run())
    out: list[MarketEvent] = []
    async with asyncio.timeout(5):
        async for ev in feed:
            out.append(ev)
            if len(out) == 5:
                break
    await feed.stop()
    await task
    books = [e for e in out if type(e) is not Trade]
    assert [type(e).__name__ for e in books] == ["BookSnapshot", "BookSnapshot", "BookDelta"]
    assert books[0].bids == [(100.0, 1.0)] and books[1].seq == 20 and books[2].ts == 1197
    assert [t.trade_id for t in out if type(t) is Trade] == ["1", "4"]
    assert feed.bad_messages == 2 and feed.bad_trades == 1 and feed.other_symbol == 1
    assert feed.last_ts == 1199
    downs = [r for up, r in health if not up]
    assert downs[0] is not None and downs[0].startswith("resync requested: bad message: bids[0].price")
    assert health[-1] == (True, None)


def test_recording_with_ts_stepping_back_is_replayed_whole_and_the_clock_holds() -> None:
    """tests/corpus/recordings/ts_steps_back.jsonl: a delta and a trade 3-4 ms behind the trade
    before them (the book and trade streams interleave). The reader keeps every line in arrival
    order with its own ts, the book stays healthy, and the replay clock never runs backwards."""
    from bot.market.book import OrderBook
    from bot.market.recorder import RecordingReader

    path = MESSAGES.parent / "recordings" / "ts_steps_back.jsonl"
    reader = RecordingReader(path, on_error="stop")
    clock = SimulatedClock(0)
    book = OrderBook(SYMBOL, tick=0.01)
    ts: list[int] = []
    now: list[int] = []
    for ev in reader:
        ts.append(ev.ts)
        now.append(clock.advance(ev.ts))
        if type(ev) is not Trade:
            book.apply(ev)
            assert book.healthy, book.reason
    assert reader.skipped == 0 and not reader.errors
    assert ts == [1700000000000, 1700000000100, 1700000000150, 1700000000147, 1700000000146]
    assert now == sorted(now) and now[-1] == 1700000000150
    assert book.best_bid() == (100.0, 2.0)
