"""PaperBroker vs the emulator on the same order sequence and the same market events.

The emulator runs paused (``speed=0``); the test feeds every market event to both: the
emulator through ``inject`` (its matching engine), the paper broker through an
``OrderBook`` and ``on_book``/``on_trade``. Orders reach the emulator through real ccxt.

* marketable orders: the same fills (price, amount, liquidity, fee) -- both walk the
  market's levels;
* resting orders: both keep a queue position; they differ by design in one assumption:
  a level shrinking by more than the trades at it (cancels) shortens the paper queue pro
  rata (``ahead *= 1 - cancelled/level``) while the emulator only caps ``ahead`` at the new
  level size; and when the book moves across a resting order, paper fills all of it, the
  emulator only the liquidity that crossed. So paper fills at the same event or earlier;
  the test measures and prints the difference in market time.
"""

from __future__ import annotations

import itertools
from decimal import ROUND_DOWN
from decimal import Decimal as D
from typing import Any

from bot.clock import LiveClock, SimulatedClock
from bot.config import PaperSettings
from bot.emulator import Emulator, make_ccxt_client
from bot.execution.ccxt_broker import CcxtBroker
from bot.execution.client_ids import ClientIdFactory
from bot.execution.orders import OrderManager
from bot.execution.paper_broker import PaperBroker
from bot.market.book import OrderBook
from bot.model import BookSnapshot, Fill, OrderRequest, Side, Trade

SYMBOL = "BTC/USDT"
STEP = D("0.00001")


class Sink:
    def __init__(self) -> None:
        self.fills: list[Fill] = []

    def put(self, record: object) -> None:
        return None

    async def durable(self, record: object) -> None:
        assert isinstance(record, Fill)
        self.fills.append(record)


async def _setup() -> tuple[
    Any, Any, OrderManager, PaperBroker, OrderManager, Sink, SimulatedClock, OrderBook
]:
    emu = Emulator(seed=7, speed=0, maker_fee="0.0002", taker_fee="0.001")
    await emu.start(port=0)
    ex = make_ccxt_client(emu.base_url, "emulator-key", "emulator-secret", timeout_ms=3000)
    broker = CcxtBroker(ex, SYMBOL, LiveClock(), use_websocket=False, poll_interval=3600)
    await broker.start()
    om_emu = OrderManager(broker, Sink(), LiveClock(), ClientIdFactory(1), SYMBOL)
    clock = SimulatedClock(0)
    paper = PaperBroker(
        clock,
        PaperSettings(
            taker_fee_bps=10, maker_fee_bps=2, latency_ms=0, balances={"USDT": D(100000), "BTC": D(1)}
        ),
        SYMBOL,
        fee_currency="received",
        amount_step=STEP,
    )
    paper_sink = Sink()
    om_paper = OrderManager(paper, paper_sink, clock, ClientIdFactory(2), SYMBOL)
    return emu, broker, om_emu, paper, om_paper, paper_sink, clock, OrderBook(SYMBOL)


def _market_snapshot(emu: Any, ts: int) -> BookSnapshot:
    eng = emu.engines[SYMBOL]
    return BookSnapshot(ts, sorted(eng.mkt_bids.items(), reverse=True), sorted(eng.mkt_asks.items()))


def _emu_fills(emu: Any, cid: str) -> list[tuple[D, D, bool, D]]:
    return [(f.price, f.qty, f.maker, f.commission) for f in emu.engines[SYMBOL].fills if f.client_id == cid]


async def test_marketable_orders_fill_the_same() -> None:
    emu, broker, om_emu, paper, om_paper, paper_sink, clock, book = await _setup()
    try:
        compared = 0
        for i in range(12):
            ts = 1_000 * (i + 1)
            clock.advance(ts)
            snap = _market_snapshot(emu, ts)  # both start from the same book (levels taken earlier restored)
            emu.inject(SYMBOL, snap)
            book.apply(snap)
            paper.on_book(book, ts)
            side = Side.BUY if i % 2 == 0 else Side.SELL
            levels = book.top_asks(3) if side is Side.BUY else book.top_bids(3)
            depth = 1 + i % 3  # walk one, two or three levels
            amount = (D(repr(sum(q for _, q in levels[:depth]))) * D("0.8")).quantize(
                STEP, rounding=ROUND_DOWN
            )
            amount = min(amount, D("0.5"))
            limit = D(repr(levels[depth - 1][0]))
            req = OrderRequest(SYMBOL, side, amount, limit)
            o_emu = await om_emu.submit(req)
            o_paper = await om_paper.submit(req)
            paper.on_book(book, ts)  # latency 0: active at this event
            await om_paper.drain()
            got_emu = _emu_fills(emu, o_emu.client_id)
            got_paper = [
                (f.price, f.amount, f.liquidity == "maker", f.fee)
                for f in paper_sink.fills
                if f.client_id == o_paper.client_id
            ]
            assert got_emu, f"order {i} did not fill on the emulator"
            assert [(p, q, m) for p, q, m, _ in got_paper] == [(p, q, m) for p, q, m, _ in got_emu], i
            assert [fee for *_, fee in got_paper] == [fee for *_, fee in got_emu], i
            compared += 1
            await om_emu.cancel(o_emu.client_id)
            await om_paper.cancel(o_paper.client_id)
        assert compared == 12
    finally:
        await broker.close()
        await emu.stop()


async def test_resting_orders_fill_times_within_the_queue_model() -> None:
    emu, broker, om_emu, paper, om_paper, _sink, clock, book = await _setup()
    try:
        stream = emu.sources[SYMBOL].stream()
        snap = _market_snapshot(emu, 0)
        emu.inject(SYMBOL, snap)
        book.apply(snap)
        paper.on_book(book, 0)
        reqs = [OrderRequest(SYMBOL, Side.BUY, D("0.02"), D(repr(p))) for p, _ in book.top_bids(3)]
        reqs += [OrderRequest(SYMBOL, Side.SELL, D("0.02"), D(repr(p))) for p, _ in book.top_asks(3)]
        pairs = []
        for req in reqs:
            e = await om_emu.submit(req)
            p = await om_paper.submit(req)
            paper.on_book(book, 0)
            pairs.append((e.client_id, p.client_id))
        done_emu: dict[str, int] = {}
        done_paper: dict[str, int] = {}
        for offset, ev in itertools.islice(stream, 200_000):
            ts = int(offset) + 1
            clock.advance(ts)
            emu.inject(SYMBOL, ev)
            if isinstance(ev, Trade):
                paper.on_trade(Trade(ts, ev.price, ev.amount, ev.side))
            else:
                book.apply(ev)
                paper.on_book(book, ts)
            await om_paper.drain()
            for ce, cp in pairs:
                if ce not in done_emu and sum(q for _, q, _, _ in _emu_fills(emu, ce)) >= D("0.02"):
                    done_emu[ce] = ts
                o = om_paper.get(cp)
                if cp not in done_paper and o is not None and o.filled >= D("0.02"):
                    done_paper[cp] = ts
            if len(done_emu) == len(pairs) and len(done_paper) == len(pairs):
                break
        diffs = [(done_emu.get(ce), done_paper.get(cp)) for ce, cp in pairs]
        print(f"resting fill times (emulator ms, paper ms): {diffs}")
        for t_emu, t_paper in diffs:
            assert t_emu is not None and t_paper is not None
            assert t_paper <= t_emu  # paper's pro-rata cancels / full uncross fill are never later
        print(f"measured difference (emulator - paper), market ms: {[e - p for e, p in diffs if e and p]}")
    finally:
        await broker.close()
        await emu.stop()
