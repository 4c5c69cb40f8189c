"""PaperBroker under a simulated clock, driven through the OrderManager as the engine does."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from bot.clock import SimulatedClock
from bot.config import PaperSettings
from bot.execution.client_ids import ClientIdFactory
from bot.execution.orders import OrderManager
from bot.execution.paper_broker import PaperBroker
from bot.model import Fill, Liquidity, OrderEvent, OrderRequest, OrderStatus, OrderType, Side, Trade

from helpers import SteppableClock

S = OrderStatus


class Book:
    """A minimal stand-in for bot.market.book.OrderBook."""

    def __init__(self, bids: dict[float, float], asks: dict[float, float]) -> None:
        self.bids, self.asks = dict(bids), dict(asks)

    def best_bid(self) -> float | None:
        return max(self.bids) if self.bids else None

    def best_ask(self) -> float | None:
        return min(self.asks) if self.asks else None

    def top_bids(self, n: int) -> list[tuple[float, float]]:
        return sorted(self.bids.items(), reverse=True)[:n]

    def top_asks(self, n: int) -> list[tuple[float, float]]:
        return sorted(self.asks.items())[:n]

    def bid_size(self, price: float) -> float:
        return self.bids.get(price, 0.0)

    def ask_size(self, price: float) -> float:
        return self.asks.get(price, 0.0)


class Sink:
    def __init__(self) -> None:
        self.records: list[object] = []
        self.durable_fills: list[Fill] = []

    def put(self, record: object) -> None:
        self.records.append(record)

    async def durable(self, record: object) -> None:
        assert isinstance(record, Fill)
        self.durable_fills.append(record)
        self.records.append(record)


def _setup(
    latency: float = 50, balances: dict[str, D] | None = None
) -> tuple[SimulatedClock, PaperBroker, OrderManager, Sink]:
    clock = SimulatedClock(1_000)
    settings = PaperSettings(
        taker_fee_bps=10,
        maker_fee_bps=2,
        latency_ms=latency,
        balances=balances or {"USDT": D(10000), "BTC": D(1)},
    )
    broker = PaperBroker(clock, settings, "BTC/USDT")
    sink = Sink()
    om = OrderManager(broker, sink, clock, ClientIdFactory(3), "BTC/USDT")
    return clock, broker, om, sink


def _book() -> Book:
    return Book({100.0: 2.0, 99.0: 5.0}, {101.0: 0.5, 102.0: 1.0, 103.0: 4.0})


async def _event(
    clock: SimulatedClock,
    broker: PaperBroker,
    om: OrderManager,
    ts: int,
    book: Book | None = None,
    trade: Trade | None = None,
) -> None:
    clock.advance(ts)
    if book is not None:
        broker.on_book(book, ts)
    if trade is not None:
        broker.on_trade(trade)
    await om.drain()


async def test_marketable_buy_walks_the_book_after_latency() -> None:
    clock, broker, om, sink = _setup()
    book = _book()
    await _event(clock, broker, om, 1_000, book)
    o = await om.submit(OrderRequest("BTC/USDT", Side.BUY, D("1.2"), D("102.5")))
    assert o.status is S.SUBMITTED and o.client_id == "ofi-3-1"
    await _event(clock, broker, om, 1_049, book)  # before t + latency: nothing happens
    assert sink.durable_fills == []
    await _event(clock, broker, om, 1_050, book)
    fills = sink.durable_fills
    assert [(f.price, f.amount, f.liquidity, f.ts) for f in fills] == [
        (D("101.0"), D("0.5"), Liquidity.TAKER, 1_050),
        (D("102.0"), D("0.7"), Liquidity.TAKER, 1_050),
    ]
    assert fills[0].fee == D("101.0") * D("0.5") * D("0.001")
    order = om.get(o.client_id)
    assert order is not None and order.status is S.FILLED and order.filled == D("1.2")
    assert om.position.amount == D("1.2")
    statuses = [r.status for r in sink.records if isinstance(r, OrderEvent)]
    assert statuses == [S.NEW, S.SUBMITTED, S.ACKED, S.PARTIALLY_FILLED, S.FILLED]
    bal = await broker.fetch_balance()
    cost = D("101.0") * D("0.5") + D("102.0") * D("0.7")
    assert bal["BTC"].free == D("2.2") and bal["USDT"].free == D(10000) - cost - cost * D("0.001")
    assert bal["USDT"].locked == 0


async def test_market_order_remainder_expires_when_book_exhausted() -> None:
    clock, broker, om, _sink = _setup(latency=0, balances={"USDT": D(0), "BTC": D(2)})
    book = Book({100.0: 1.0}, {101.0: 0.3})
    await _event(clock, broker, om, 1_000, book)
    o = await om.submit(OrderRequest("BTC/USDT", Side.SELL, D("1.5"), None, type=OrderType.MARKET))
    await _event(clock, broker, om, 1_000, book)
    order = om.get(o.client_id)
    assert order is not None and order.status is S.EXPIRED and order.filled == D("1.0")
    assert om.position.amount == D("-1.0")


async def test_resting_order_queue_position_trades_and_cancels() -> None:
    clock, broker, om, sink = _setup()
    book = _book()
    await _event(clock, broker, om, 1_000, book)
    o = await om.submit(OrderRequest("BTC/USDT", Side.BUY, D("1"), D("100")))
    await _event(clock, broker, om, 1_060, book)  # active, 2.0 ahead of us
    # 0.5 trades at our price: 1.5 ahead, level 1.5 (explained by the trade, no cancels)
    await _event(clock, broker, om, 1_100, trade=Trade(1_100, 100.0, 0.5, Side.SELL))
    book.bids[100.0] = 1.5
    await _event(clock, broker, om, 1_110, book)
    # 0.5 cancelled out of 1.5 -> ahead shrinks pro rata: 1.5 * (1 - 0.5/1.5) = 1.0
    book.bids[100.0] = 1.0
    await _event(clock, broker, om, 1_120, book)
    assert sink.durable_fills == []
    # 1.3 trades at our price: 1.0 ahead is consumed, 0.3 fills us (maker)
    await _event(clock, broker, om, 1_200, trade=Trade(1_200, 100.0, 1.3, Side.SELL))
    assert [(f.price, f.amount, f.liquidity) for f in sink.durable_fills] == [
        (D("100"), D("0.3"), Liquidity.MAKER)
    ]
    assert sink.durable_fills[0].fee == D("100") * D("0.3") * D("0.0002")
    # a buy-aggressor print does not touch our bid; a sell through our price fills us with
    # its volume (the queue at our price was gone), never more than it traded
    await _event(clock, broker, om, 1_300, trade=Trade(1_300, 100.0, 5.0, Side.BUY))
    assert len(sink.durable_fills) == 1
    await _event(clock, broker, om, 1_400, trade=Trade(1_400, 99.0, 0.01, Side.SELL))
    assert [f.amount for f in sink.durable_fills] == [D("0.3"), D("0.01")]
    await _event(clock, broker, om, 1_500, trade=Trade(1_500, 99.0, 2.0, Side.SELL))
    assert [f.amount for f in sink.durable_fills] == [D("0.3"), D("0.01"), D("0.69")]
    order = om.get(o.client_id)
    assert order is not None and order.status is S.FILLED
    assert om.position.amount == D("1")


async def test_cancel_releases_funds_and_post_only_crossing_is_rejected() -> None:
    clock, broker, om, _sink = _setup()
    book = _book()
    await _event(clock, broker, om, 1_000, book)
    o = await om.submit(OrderRequest("BTC/USDT", Side.BUY, D("1"), D("99")))
    assert (await broker.fetch_balance())["USDT"].locked == D("99") * D("1.001")
    c = await om.cancel(o.client_id)
    assert c.status is S.CANCELLED
    bal = await broker.fetch_balance()
    assert bal["USDT"].free == D(10000) and bal["USDT"].locked == 0
    p = await om.submit(OrderRequest("BTC/USDT", Side.BUY, D("0.1"), D("101"), post_only=True))
    await _event(clock, broker, om, 1_100, book)
    order = om.get(p.client_id)
    assert order is not None and order.status is S.REJECTED and order.reason == "post-only order would cross"


async def test_insufficient_balance_is_rejected_with_the_numbers() -> None:
    clock, broker, om, _sink = _setup(balances={"USDT": D(50), "BTC": D(0)})
    await _event(clock, broker, om, 1_000, _book())
    o = await om.submit(OrderRequest("BTC/USDT", Side.BUY, D("1"), D("100")))
    assert o.status is S.REJECTED
    assert o.reason == "insufficient balance: needs 100.1 USDT, free 50 USDT"
    s = await om.submit(OrderRequest("BTC/USDT", Side.SELL, D("1"), D("100")))
    assert s.reason == "insufficient balance: needs 1 BTC, free 0 BTC"


async def test_duplicate_fill_is_counted_once() -> None:
    clock, broker, om, sink = _setup(latency=0)
    book = _book()
    await _event(clock, broker, om, 1_000, book)
    await om.submit(OrderRequest("BTC/USDT", Side.BUY, D("0.5"), D("101")))
    await _event(clock, broker, om, 1_000, book)
    fill = sink.durable_fills[0]
    assert await om.on_fill_update(fill) is False  # the REST fallback re-delivering it
    assert om.position.amount == D("0.5") and len(sink.durable_fills) == 1


def _run_replay() -> list[tuple[str, str, str, int]]:
    import asyncio

    async def go() -> list[tuple[str, str, str, int]]:
        clock, broker, om, sink = _setup()
        book = _book()
        await _event(clock, broker, om, 1_000, book)
        await om.submit(OrderRequest("BTC/USDT", Side.BUY, D("1"), D("100")))
        await om.submit(OrderRequest("BTC/USDT", Side.SELL, D("0.2"), D("99")))
        for i in range(20):
            await _event(
                clock, broker, om, 1_010 + 10 * i, trade=Trade(1_010 + 10 * i, 100.0, 0.2, Side.SELL)
            )
        return [(f.trade_id, str(f.price), str(f.amount), f.ts) for f in sink.durable_fills]

    return asyncio.run(go())


def test_replay_is_deterministic() -> None:
    first = _run_replay()
    assert first and first == _run_replay()


@pytest.mark.parametrize("fee_currency,expect", [("quote", "USDT"), ("received", "BTC")])
async def test_fee_currency(fee_currency: str, expect: str) -> None:
    clock = SimulatedClock(0)
    broker = PaperBroker(clock, PaperSettings(latency_ms=0), "BTC/USDT", fee_currency=fee_currency)  # type: ignore[arg-type]
    sink = Sink()
    om = OrderManager(broker, sink, clock, ClientIdFactory(1), "BTC/USDT")
    broker.on_book(_book(), 0)
    await om.submit(OrderRequest("BTC/USDT", Side.BUY, D("0.1"), D("101")))
    broker.on_book(_book(), 0)
    await om.drain()
    assert sink.durable_fills[0].fee_currency == expect


async def test_shutdown_cancels_every_open_order() -> None:
    clock, broker, om, _sink = _setup()
    await _event(clock, broker, om, 1_000, _book())
    for px in ("98", "97", "96"):
        await om.submit(OrderRequest("BTC/USDT", Side.BUY, D("0.1"), D(px)))
    await _event(clock, broker, om, 1_100, _book())
    assert len(om.open_orders) == 3
    assert await om.shutdown(budget_s=1.0) == []
    assert await broker.fetch_open_orders("BTC/USDT") == []
    assert {o.status for o in om.orders.values()} == {S.CANCELLED}


async def test_works_with_the_market_order_book() -> None:
    from bot.market.book import OrderBook
    from bot.model import BookSnapshot

    _clock, broker, om, sink = _setup(latency=0)
    book = OrderBook("BTC/USDT")
    book.apply(BookSnapshot(1_000, [(100.0, 2.0)], [(101.0, 0.5), (102.0, 1.0)]))
    broker.on_book(book, 1_000)
    await om.submit(OrderRequest("BTC/USDT", Side.BUY, D("0.6"), D("102")))
    broker.on_book(book, 1_000)
    await om.drain()
    assert [(f.price, f.amount) for f in sink.durable_fills] == [
        (D("101.0"), D("0.5")),
        (D("102.0"), D("0.1")),
    ]


def test_both_brokers_implement_the_protocol() -> None:
    from bot.execution.broker import Broker
    from bot.execution.ccxt_broker import CcxtBroker

    paper: Broker = PaperBroker(SimulatedClock(0), PaperSettings(), "BTC/USDT")
    live: Broker = CcxtBroker(object(), "BTC/USDT", SimulatedClock(0))
    assert isinstance(paper, Broker) and isinstance(live, Broker)


@pytest.mark.parametrize("step_ms", [-3_600_000, 3_600_000], ids=["back_1h", "forward_1h"])
async def test_latency_is_event_time_whatever_the_wall_clock_does(step_ms: int) -> None:
    """Live paper: events carry exchange time and the wall clock can step. The simulated latency
    counts from the exchange time of the latest event, so a step neither skips it (back) nor
    holds the order for an hour (forward)."""
    clock = SteppableClock(wall0_ms=1_000)
    broker = PaperBroker(clock, PaperSettings(latency_ms=50, balances={"USDT": D(10000), "BTC": D(1)}), "BTC/USDT")
    sink = Sink()
    om = OrderManager(broker, sink, clock, ClientIdFactory(3), "BTC/USDT")
    book = _book()
    broker.on_book(book, 1_000)
    clock.step_wall(step_ms)
    o = await om.submit(OrderRequest("BTC/USDT", Side.BUY, D("0.2"), D("101.0")))
    assert o.status is S.SUBMITTED
    broker.on_book(book, 1_049)
    await om.drain()
    assert sink.durable_fills == []
    broker.on_book(book, 1_050)
    await om.drain()
    assert [(f.price, f.amount, f.ts) for f in sink.durable_fills] == [(D("101.0"), D("0.2"), 1_050)]


async def test_marketable_limit_larger_than_the_book_takes_only_what_is_shown() -> None:
    """Issue "Exact numbers", item 2: bid 100.00 x 0.0001, sell 0.01 @ 100.00. The visible 0.0001
    fills as taker; the other 0.0099 rests at 100.00 (no maker fill on the same event against the
    bid it has just taken) and fills only as later prints at or through 100.00 reach it."""
    clock, broker, om, sink = _setup(latency=0)
    book = Book({100.0: 0.0001, 99.0: 1.0}, {100.5: 1.0})
    await _event(clock, broker, om, 1_000, book)
    o = await om.submit(OrderRequest("BTC/USDT", Side.SELL, D("0.01"), D("100.00")))
    await _event(clock, broker, om, 1_000, book)
    fills = [(f.price, f.amount, f.liquidity) for f in sink.durable_fills]
    assert fills == [(D("100.0"), D("0.0001"), Liquidity.TAKER)]
    order = om.get(o.client_id)
    assert order is not None and order.status is S.PARTIALLY_FILLED and order.filled == D("0.0001")
    assert [x.client_id for x in await broker.fetch_open_orders("BTC/USDT")] == [o.client_id]
    # the feed repeats the same book (the bid it has not seen us take): nothing more fills
    await _event(clock, broker, om, 1_010, book)
    assert len(sink.durable_fills) == 1
    # a second order in the same book cannot take the 0.0001 again
    o2 = await om.submit(OrderRequest("BTC/USDT", Side.SELL, D("0.0001"), D("100.00")))
    await _event(clock, broker, om, 1_010, book)
    assert len(sink.durable_fills) == 1
    assert (om.get(o2.client_id) or o2).filled == 0
    await om.cancel(o2.client_id)
    # sellers hitting the bid at 100.00 do not fill our ask; a buyer lifting 100.00 does, with
    # what it traded (nothing was ahead of us on the ask side at 100.00)
    await _event(clock, broker, om, 1_020, trade=Trade(1_020, 100.0, 0.5, Side.SELL))
    assert len(sink.durable_fills) == 1
    await _event(clock, broker, om, 1_030, trade=Trade(1_030, 100.0, 0.004, Side.BUY))
    await _event(clock, broker, om, 1_040, trade=Trade(1_040, 100.2, 0.003, Side.BUY))  # through
    await _event(clock, broker, om, 1_050, trade=Trade(1_050, 100.0, 1.0, Side.BUY))
    assert [(f.price, f.amount, f.liquidity) for f in sink.durable_fills[1:]] == [
        (D("100.00"), D("0.004"), Liquidity.MAKER),
        (D("100.00"), D("0.003"), Liquidity.MAKER),
        (D("100.00"), D("0.0029"), Liquidity.MAKER),
    ]
    order = om.get(o.client_id)
    assert order is not None and order.status is S.FILLED and order.filled == D("0.01")


async def test_remainder_rests_behind_the_queue_at_its_price() -> None:
    """A buy 1.0 @ 101 takes the 0.5 offered at 101; the 0.5 left rests at 101 behind what the bid
    side showed at 101 on arrival (nothing) and fills from the prints that reach it."""
    clock, broker, om, sink = _setup(latency=0)
    book = _book()
    await _event(clock, broker, om, 1_000, book)
    await om.submit(OrderRequest("BTC/USDT", Side.BUY, D("1.0"), D("101")))
    await _event(clock, broker, om, 1_000, book)
    assert [(f.price, f.amount, f.liquidity) for f in sink.durable_fills] == [
        (D("101.0"), D("0.5"), Liquidity.TAKER)
    ]
    # the market's own update: the ask at 101 is gone and someone bids 0.3 at 101; that bid came
    # after ours, so it queues behind us (``ahead`` is what our side showed when we arrived: 0)
    del book.asks[101.0]
    book.bids[101.0] = 0.3
    await _event(clock, broker, om, 1_010, book)
    assert len(sink.durable_fills) == 1
    await _event(clock, broker, om, 1_020, trade=Trade(1_020, 101.0, 0.2, Side.SELL))
    assert [f.amount for f in sink.durable_fills[1:]] == [D("0.2")]  # nothing was ahead of us


async def test_one_print_fills_our_orders_once() -> None:
    """Two of our bids at the same price, nothing ahead, and a print of 0.3: 0.3 in all, the
    earlier order first; a print through both fills the better price first."""
    clock, broker, om, sink = _setup(latency=0)
    book = Book({99.0: 5.0}, {101.0: 1.0})
    await _event(clock, broker, om, 1_000, book)
    a = await om.submit(OrderRequest("BTC/USDT", Side.BUY, D("0.2"), D("100")))
    b = await om.submit(OrderRequest("BTC/USDT", Side.BUY, D("0.2"), D("100")))
    c = await om.submit(OrderRequest("BTC/USDT", Side.BUY, D("0.5"), D("99.5")))
    await _event(clock, broker, om, 1_000, book)
    await _event(clock, broker, om, 1_010, trade=Trade(1_010, 100.0, 0.3, Side.SELL))
    got = [(f.client_id, f.amount) for f in sink.durable_fills]
    assert got == [(a.client_id, D("0.2")), (b.client_id, D("0.1"))]
    await _event(clock, broker, om, 1_020, trade=Trade(1_020, 99.0, 0.4, Side.SELL))
    got = [(f.client_id, f.amount) for f in sink.durable_fills[2:]]
    assert got == [(b.client_id, D("0.1")), (c.client_id, D("0.3"))]


async def test_market_order_takes_only_what_the_book_shows() -> None:
    """A market sell larger than the bids fills what they show and expires the rest (Binance);
    the taken bids are gone for the next order until the feed updates them."""
    clock, broker, om, sink = _setup(latency=0, balances={"USDT": D(0), "BTC": D(5)})
    book = Book({100.0: 1.0, 99.0: 0.5}, {101.0: 0.3})
    await _event(clock, broker, om, 1_000, book)
    o = await om.submit(OrderRequest("BTC/USDT", Side.SELL, D("2"), None, type=OrderType.MARKET))
    await _event(clock, broker, om, 1_000, book)
    order = om.get(o.client_id)
    assert order is not None and order.status is S.EXPIRED and order.filled == D("1.5")
    p = await om.submit(OrderRequest("BTC/USDT", Side.SELL, D("1"), None, type=OrderType.MARKET))
    await _event(clock, broker, om, 1_000, book)
    order = om.get(p.client_id)
    assert order is not None and order.status is S.EXPIRED and order.filled == 0
    book.bids[99.0] = 0.25  # the feed changes the level: its new size is there to take
    q = await om.submit(OrderRequest("BTC/USDT", Side.SELL, D("1"), None, type=OrderType.MARKET))
    await _event(clock, broker, om, 1_010, book)
    order = om.get(q.client_id)
    assert order is not None and order.filled == D("0.25")
    assert sum(f.amount for f in sink.durable_fills) == D("1.75")


async def test_book_moving_across_a_resting_order_fills_only_what_crossed() -> None:
    """The asks come down to our bid: we trade with the size they show at or below our price, at
    our price (maker), once; a later change of that level brings its new size."""
    clock, broker, om, sink = _setup(latency=0)
    book = _book()
    await _event(clock, broker, om, 1_000, book)
    o = await om.submit(OrderRequest("BTC/USDT", Side.BUY, D("1"), D("100")))
    await _event(clock, broker, om, 1_000, book)  # rests behind 2.0
    del book.bids[100.0]
    book.asks.update({99.5: 0.1, 100.0: 0.3})
    await _event(clock, broker, om, 1_010, book)
    assert [(f.price, f.amount, f.liquidity) for f in sink.durable_fills] == [
        (D("100"), D("0.1"), Liquidity.MAKER),
        (D("100"), D("0.3"), Liquidity.MAKER),
    ]
    await _event(clock, broker, om, 1_020, book)  # the same book: nothing new crossed
    assert len(sink.durable_fills) == 2
    book.asks[100.0] = 0.2
    await _event(clock, broker, om, 1_030, book)
    assert [f.amount for f in sink.durable_fills[2:]] == [D("0.2")]
    order = om.get(o.client_id)
    assert order is not None and order.status is S.PARTIALLY_FILLED and order.filled == D("0.6")
