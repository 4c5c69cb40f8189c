"""Fuzz the live normaliser: whatever a ccxt book or trade holds (NaN, inf, strings, None, bools,
huge integers, wrong shapes), ``BookDiffer.update`` and ``parse_trade`` either give a valid event
or raise the feed's own ``BadMessage``; ``trade_from_ccxt`` and ``MarketFeed.on_book``/``on_trades``
never raise at all; a rejected book changes nothing, so no non-finite, non-positive or absurd
price ever reaches an ``OrderBook``."""

from __future__ import annotations

import math
from typing import Any

import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import LogCapture

import bot.market.feed as feed_module
from bot.clock import SimulatedClock
from bot.market.book import OrderBook
from bot.market.feed import BadMessage, BookDiffer, MarketFeed, OtherSymbol, parse_trade, trade_from_ccxt
from bot.market.sanity import MAX_AMOUNT, MAX_PRICE, MAX_TS_MS
from bot.model import BookDelta, BookSnapshot, Side, Trade

SYMBOL = "BTC/USDT"

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=10**300, max_value=10**400),  # float() of these overflows
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=1e11, max_value=1e13),  # around the sanity limit
    st.floats(min_value=0.01, max_value=200.0),  # plausible prices and sizes
    st.just(0.0),
    st.just(-0.0),
    st.text(max_size=6),
    st.sampled_from(["100.5", "NaN", "nan", "inf", "-1", "abc", "1e400", "", "BTC/USDT"]),
)
anything = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
                        | st.dictionaries(st.text(max_size=3), inner, max_size=2), max_leaves=6)
levels = st.lists(st.one_of(st.lists(scalars, min_size=2, max_size=3), st.tuples(scalars, scalars), anything),
                  max_size=7)


@st.composite
def ccxt_books(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 19)) == 0:
        return draw(anything)  # not a book at all
    ob: dict[str, Any] = {}
    for side in ("bids", "asks"):
        if draw(st.integers(0, 19)):
            ob[side] = draw(st.one_of(levels, anything)) if draw(st.integers(0, 9)) == 0 else draw(levels)
    for key, usual, values in (("nonce", st.integers(0, 10**6), scalars),
                               ("timestamp", st.integers(0, 2 * 10**12), scalars),
                               ("symbol", st.just(SYMBOL), st.one_of(st.just("ETH/USDT"), scalars))):
        choice = draw(st.integers(0, 9))  # 0-3 missing, 4-7 usual, 8-9 anything
        if choice >= 4:
            ob[key] = draw(usual if choice < 8 else values)
    return ob


good_levels = st.dictionaries(st.floats(min_value=1.0, max_value=99.0), st.floats(min_value=0.001, max_value=10.0),
                              max_size=8)


@st.composite
def good_books(draw: st.DrawFn) -> dict[str, Any]:
    bids = draw(good_levels)
    asks = {p + 100.0: q for p, q in draw(good_levels).items()}  # never crossed
    return {"symbol": SYMBOL, "bids": [[p, q] for p, q in sorted(bids.items(), reverse=True)],
            "asks": [[p, q] for p, q in sorted(asks.items())], "nonce": None, "timestamp": 1}


def _check_levels(lvls: list[tuple[float, float]], removal_ok: bool) -> None:
    for p, q in lvls:
        assert type(p) is float and type(q) is float
        assert math.isfinite(p) and 0.0 < p <= MAX_PRICE, p
        assert math.isfinite(q) and (0.0 <= q if removal_ok else 0.0 < q) and q <= MAX_AMOUNT, q


def _check_event(ev: BookSnapshot | BookDelta) -> None:
    assert type(ev.ts) is int and 0 <= ev.ts <= MAX_TS_MS
    _check_levels(ev.bids, removal_ok=type(ev) is BookDelta)
    _check_levels(ev.asks, removal_ok=type(ev) is BookDelta)
    if ev.seq is not None:
        assert type(ev.seq) is int and ev.seq >= 0


def _check_trade(tr: Trade) -> None:
    assert type(tr.ts) is int and 0 <= tr.ts <= MAX_TS_MS
    assert type(tr.price) is float and math.isfinite(tr.price) and 0.0 < tr.price <= MAX_PRICE
    assert type(tr.amount) is float and math.isfinite(tr.amount) and 0.0 < tr.amount <= MAX_AMOUNT
    assert tr.side in (Side.BUY, Side.SELL)
    assert tr.trade_id is None or type(tr.trade_id) is str


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(ccxt_books(), good_books()), min_size=1, max_size=8),
       st.lists(st.one_of(st.integers(0, 2 * 10**12), scalars), min_size=8, max_size=8),
       st.integers(1, 6))
def test_book_differ_gives_valid_events_or_bad_message_and_a_rejected_book_changes_nothing(
    books: list[Any], times: list[Any], n_levels: int
) -> None:
    fuzzed = BookDiffer(n_levels, SYMBOL)
    clean = BookDiffer(n_levels, SYMBOL)  # sees only the books ``fuzzed`` accepted
    ours = OrderBook(SYMBOL)
    for ob, ts in zip(books, times, strict=False):
        try:
            ev = fuzzed.update(ob, ts, None)
        except BadMessage as exc:
            assert exc.field and exc.reason and str(exc).startswith(exc.field)
            continue
        assert ev == clean.update(ob, ts, None)  # what was rejected before left no trace
        if ev is None:
            continue
        assert type(ev) in (BookSnapshot, BookDelta)
        _check_event(ev)
        ours.apply(ev)
        for p, q in ours.bids() + ours.asks():
            assert math.isfinite(p) and 0.0 < p <= MAX_PRICE and math.isfinite(q) and 0.0 < q <= MAX_AMOUNT
        # the book is exactly the accepted ccxt book's top window
        assert ours.bids() == sorted(feed_module._window(ob["bids"], n_levels).items(), reverse=True)
        assert ours.asks() == sorted(feed_module._window(ob["asks"], n_levels).items())
        if ours.has_snapshot and ours.bids() and ours.asks():
            assert ours.best_bid_price() < ours.best_ask_price()


@st.composite
def ccxt_trades(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 19)) == 0:
        return draw(anything)
    good = {"id": "7", "timestamp": 1_700_000_000_000, "price": 100.5, "amount": 0.25, "side": "buy",
            "symbol": SYMBOL}
    t: dict[str, Any] = {}
    for key, value in good.items():
        choice = draw(st.integers(0, 19))  # 0 missing, 1-15 the good value, 16-19 anything
        if choice == 0:
            continue
        t[key] = value if choice <= 15 else draw(scalars if choice < 19 else anything)
    return t


@settings(max_examples=1000, deadline=None)
@given(ccxt_trades(), st.one_of(st.none(), st.integers(0, 2 * 10**12), scalars))
def test_trade_normaliser_gives_a_valid_trade_or_bad_message(t: Any, recv: Any) -> None:
    try:
        tr = parse_trade(t, recv, SYMBOL)
    except OtherSymbol as exc:
        assert exc.field == "symbol" and trade_from_ccxt(t, recv, SYMBOL) is None
        assert isinstance(t, dict) and t["symbol"] != SYMBOL
        return
    except BadMessage as exc:
        assert exc.field and exc.reason
        assert trade_from_ccxt(t, recv, SYMBOL) is None
        return
    _check_trade(tr)
    assert trade_from_ccxt(t, recv, SYMBOL) == tr
    assert tr.recv is None or (type(tr.recv) is int and tr.recv >= 0)


def _quiet(feed_logs: LogCapture) -> Any:
    return structlog.wrap_logger(None, processors=[feed_logs]).bind(logger="market.feed")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(ccxt_books(), good_books()), max_size=6),
       st.lists(st.one_of(st.lists(ccxt_trades(), max_size=4), anything), max_size=4))
def test_feed_normaliser_never_raises_and_counts_every_rejection(books: list[Any], batches: list[Any]) -> None:
    cap = LogCapture()
    saved = feed_module.log
    feed_module.log = _quiet(cap)
    try:
        feed = MarketFeed(None, SYMBOL, 5, SimulatedClock(1_700_000_000_000))
        ours = OrderBook(SYMBOL)
        for ob in books:
            before = feed.bad_messages
            ev = feed.on_book(ob)
            if ev is not None:
                _check_event(ev)
                ours.apply(ev)
            elif feed.bad_messages > before:
                assert not feed.healthy and feed.reason and feed.reason.startswith("resync requested: bad message")
                assert not feed.differ.has_snapshot  # the next good book is a snapshot
        for p, _ in ours.bids() + ours.asks():
            assert math.isfinite(p) and 0.0 < p <= MAX_PRICE
        delivered = 0
        for batch in batches:
            for tr in feed.on_trades(batch):
                _check_trade(tr)
                delivered += 1
        assert feed.trades == delivered
        bad_lines = [e for e in cap.entries if e["event"] in ("feed_bad_message", "feed_bad_trade")]
        assert len(bad_lines) == feed.bad_messages + feed.bad_trades  # one line per rejection
        for line in bad_lines:
            assert line["field"] and len(line["value"]) <= 80
    finally:
        feed_module.log = saved
