"""OrderManager + PaperBroker + the real StoreWriter: rows a reviewer sees, and a restart."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest

pytest.importorskip("bot.store.writer")

from sqlalchemy import text

from bot.clock import SimulatedClock
from bot.config import PaperSettings
from bot.execution.client_ids import ClientIdFactory
from bot.execution.orders import OrderManager
from bot.execution.paper_broker import PaperBroker
from bot.execution.reconcile import Reconciler
from bot.model import OrderRequest, OrderStatus, Side, Trade
from bot.store import db, queries
from bot.store.writer import StoreWriter

S = OrderStatus
ACCOUNT, SYMBOL = "paper", "BTC/USDT"
MODE, VENUE = "paper", "binance:sandbox"


class Book:
    def __init__(self) -> None:
        self.bids = {100.0: 2.0, 99.0: 5.0}
        self.asks = {101.0: 0.5, 102.0: 1.0}

    def best_bid(self) -> float | None:
        return max(self.bids)

    def best_ask(self) -> float | None:
        return min(self.asks)

    def top_bids(self, n: int) -> list[tuple[float, float]]:
        return sorted(self.bids.items(), reverse=True)[:n]

    def top_asks(self, n: int) -> list[tuple[float, float]]:
        return sorted(self.asks.items())[:n]

    def bid_size(self, p: float) -> float:
        return self.bids.get(p, 0.0)

    def ask_size(self, p: float) -> float:
        return self.asks.get(p, 0.0)


async def _run(engine: Any, start_ms: int) -> tuple[int, StoreWriter]:
    run_id = await queries.create_run(
        engine,
        mode="paper",
        config_hash="h",
        version="t",
        account=ACCOUNT,
        symbol=SYMBOL,
        exchange="binance",
        venue=VENUE,
        started_ms=start_ms,
    )
    w = StoreWriter(engine, run_id=run_id, account=ACCOUNT, symbol=SYMBOL, mode=MODE, venue=VENUE)
    await w.start()
    return run_id, w


async def test_orders_events_fills_are_stored_and_survive_a_restart(db_url: str) -> None:
    await db.upgrade(db_url)
    engine = db.make_engine(db_url)
    try:
        clock = SimulatedClock(1_700_000_000_000)
        run_id, w = await _run(engine, clock.now_ms())
        broker = PaperBroker(
            clock, PaperSettings(latency_ms=10, balances={"USDT": D(10000), "BTC": D(1)}), SYMBOL
        )
        om = OrderManager(broker, w, clock, ClientIdFactory(run_id), SYMBOL)
        book = Book()
        broker.on_book(book, clock.now_ms())
        taker = await om.submit(OrderRequest(SYMBOL, Side.BUY, D("0.7"), D("102"), reason="entry"))
        maker = await om.submit(OrderRequest(SYMBOL, Side.SELL, D("0.3"), D("105")))
        clock.advance(clock.now_ms() + 20)
        broker.on_book(book, clock.now_ms())
        await om.drain()
        await w.flush()

        fills = await queries.load_fills(engine, ACCOUNT, SYMBOL, mode=MODE, venue=VENUE)
        assert [(f.price, f.amount) for f in fills] == [(D("101"), D("0.5")), (D("102"), D("0.2"))]
        orders = {o.client_id: o for o in await queries.load_orders(engine, ACCOUNT, SYMBOL, mode=MODE, venue=VENUE)}
        assert orders[taker.client_id].status is S.FILLED and orders[taker.client_id].filled == D("0.7")
        assert orders[maker.client_id].status is S.ACKED
        async with engine.connect() as conn:
            rows = (
                (
                    await conn.execute(
                        text("SELECT status FROM order_events WHERE client_id = :c ORDER BY id"),
                        {"c": taker.client_id},
                    )
                )
                .scalars()
                .all()
            )
        assert rows == ["new", "submitted", "acked", "partially_filled", "filled"]
        await w.close()

        # restart: a new run loads the store, reconciles with the (same) broker, and goes on
        clock.advance(clock.now_ms() + 1_000)
        run2, w2 = await _run(engine, clock.now_ms())
        om2 = OrderManager(
            broker,
            w2,
            clock,
            ClientIdFactory(run2),
            SYMBOL,
            orders=await queries.load_orders(engine, ACCOUNT, SYMBOL, open_only=True, mode=MODE, venue=VENUE),
            fills=await queries.load_fills(engine, ACCOUNT, SYMBOL, mode=MODE, venue=VENUE),
        )
        assert om2.position.amount == D("0.7")
        report = await Reconciler(om2, broker, clock).reconcile_once()
        assert report.clean, report.differences
        # the resting sell fills after the restart; it is counted once
        broker.on_trade(Trade(clock.now_ms() + 5, 106.0, 1.0, Side.BUY))
        await om2.drain()
        await w2.flush()
        assert om2.position.amount == D("0.4")
        fills = await queries.load_fills(engine, ACCOUNT, SYMBOL, mode=MODE, venue=VENUE)
        assert len(fills) == 3 and len({f.trade_id for f in fills}) == 3
        await w2.close()
    finally:
        await engine.dispose()
