"""The single writer on SQLite and PostgreSQL: idempotent, durable, and loud when the DB is down."""

from __future__ import annotations

import asyncio
import sys
import uuid
from decimal import Decimal as D
from pathlib import Path
from urllib.parse import urlparse

import pytest

from bot.model import (
    Balance,
    Direction,
    ImbalanceSignal,
    OrderEvent,
    OrderStatus,
    Position,
    RiskAction,
    RiskEvent,
    Side,
)
from bot.store.db import upgrade
from bot.store.queries import end_run, insert_risk_event, latest_halt, load_fills, load_orders, to_decimal
from bot.store.writer import StoreOverflowError, StoreWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (no package): the store helpers
from fixtures_store import ACCOUNT, MODE, SYMBOL, T0, VENUE, fill, fresh_store, order, rows, scalar


async def test_the_same_fill_twice_leaves_one_row(db_url: str) -> None:
    engine, run_id = await fresh_store(db_url)
    w = StoreWriter(engine, run_id=run_id, account=ACCOUNT, symbol=SYMBOL, mode=MODE, venue=VENUE)
    await w.start()
    f = fill("t1", "c1", Side.BUY, "100", "1", fee="0.1")
    w.put(order("c1"))
    w.put(f)
    w.put(f)  # same batch
    await w.flush()
    w.put(f)  # a later batch
    await w.durable(f)
    await w.close()
    # a second writer (after a restart) replays it again
    w2 = StoreWriter(engine, run_id=run_id, account=ACCOUNT, symbol=SYMBOL, mode=MODE, venue=VENUE)
    await w2.start()
    await w2.durable(f)
    await w2.close()
    assert await scalar(engine, "SELECT COUNT(*) FROM fills") == 1
    assert await scalar(engine, "SELECT COUNT(*) FROM v_trades") == 1
    trade = (await rows(engine, "SELECT position_after, realized_pnl FROM v_trades"))[0]
    assert to_decimal(trade["position_after"]) == 1  # counted once
    assert await load_fills(engine, ACCOUNT, SYMBOL, mode=MODE, venue=VENUE) == [f]
    await engine.dispose()


async def test_order_upsert_events_and_placeholder_for_unknown_orders(db_url: str) -> None:
    engine, run_id = await fresh_store(db_url)
    w = StoreWriter(engine, run_id=run_id, account=ACCOUNT, symbol=SYMBOL, mode=MODE, venue=VENUE)
    await w.start()
    # a fill whose order the writer has never seen: kept, under a placeholder order
    w.put(fill("t9", "ext-1", Side.SELL, "101", "0.5", ts=T0 + 5))
    await w.flush()
    w.put(order("c1", mid="100.05"))
    w.put(OrderEvent("c1", OrderStatus.SUBMITTED, T0 + 1))
    w.put(order("c1", status=OrderStatus.ACKED, exchange_id="X1", mid="100.05"))  # as replace() gives
    w.put(OrderEvent("c1", OrderStatus.ACKED, T0 + 11, exchange_id="X1"))
    w.put(OrderEvent("c1", OrderStatus.ACKED, T0 + 11, exchange_id="X1"))  # replayed: no-op
    await w.flush()
    w.put(order("c1", status=OrderStatus.FILLED, filled="1"))  # exchange id/mid not repeated: kept
    w.put(OrderEvent("c1", OrderStatus.FILLED, T0 + 40, filled=D(1)))
    w.put(fill("t1", "c1", Side.BUY, "100.1", "1", ts=T0 + 40))
    w.put(OrderEvent("ev-only", OrderStatus.CANCELLED, T0 + 50))  # event for an unknown order
    await w.close()
    got = await rows(engine, "SELECT client_id, status, exchange_id, reason, side FROM orders ORDER BY client_id")
    assert got == [
        {"client_id": "c1", "status": "filled", "exchange_id": "X1", "reason": "entry", "side": "buy"},
        {"client_id": "ev-only", "status": "unknown", "exchange_id": None, "reason": "external", "side": None},
        {"client_id": "ext-1", "status": "unknown", "exchange_id": None, "reason": "external", "side": "sell"},
    ]
    assert await scalar(engine, "SELECT COUNT(*) FROM order_events WHERE client_id = 'c1'") == 3
    lat = (await rows(engine, "SELECT * FROM v_order_latency WHERE client_id = 'c1'"))[0]
    assert (lat["submit_to_ack_ms"], lat["ack_to_fill_ms"], lat["submit_to_fill_ms"]) == (10, 29, 39)
    trade = (await rows(engine, "SELECT slippage_bps, order_reason FROM v_trades WHERE trade_id = 't1'"))[0]
    assert trade["order_reason"] == "entry"
    assert float(trade["slippage_bps"]) == pytest.approx(0.05 / 100.05 * 10_000)  # paid 5 cents over mid
    open_orders = await load_orders(engine, ACCOUNT, SYMBOL, open_only=True, mode=MODE, venue=VENUE)
    assert [o.client_id for o in open_orders] == ["ext-1"]  # the placeholder waits for reconciliation
    c1 = next(o for o in await load_orders(engine, ACCOUNT, SYMBOL, mode=MODE, venue=VENUE) if o.client_id == "c1")
    assert (c1.status, c1.filled, c1.exchange_id, c1.mid_price) == (OrderStatus.FILLED, 1, "X1", D("100.05"))
    await engine.dispose()


async def test_a_placeholder_takes_the_real_order_when_it_arrives(db_url: str) -> None:
    engine, run_id = await fresh_store(db_url)
    w = StoreWriter(engine, run_id=run_id, account=ACCOUNT, symbol=SYMBOL, mode=MODE, venue=VENUE)
    await w.start()
    await w.durable(fill("t1", "c1", Side.BUY, "100", "1"))
    w.put(order("c1", status=OrderStatus.FILLED, filled="1", reason="entry long", strength=3.1))
    await w.close()
    (o,) = await load_orders(engine, ACCOUNT, SYMBOL, mode=MODE, venue=VENUE)
    assert (o.reason, o.amount, o.price, o.signal_strength) == ("entry long", 1, 100, 3.1)
    await engine.dispose()


async def test_other_records_and_store_queries(db_url: str) -> None:
    engine, run_id = await fresh_store(db_url)
    w = StoreWriter(engine, run_id=run_id, account=ACCOUNT, symbol=SYMBOL, mode=MODE, venue=VENUE)
    await w.start()
    w.put(Position(SYMBOL, D("0.5"), D("100.5"), D("1.25"), D("0.01"), T0))
    w.put(Balance("USDT", D("9000.5"), D("100"), T0))
    w.put(ImbalanceSignal(T0, Direction.LONG, 2.25, {"ofi": 1.5, "tfi": 0.75}, kind="entry"))
    w.put(RiskEvent(T0 + 1, RiskAction.HALT, "max_daily_loss", "daily loss 101 reached 100", None, {"pnl": "-101"}))
    with pytest.raises(TypeError, match="cannot write a str"):
        w.put("nonsense")
    await w.close()
    assert await scalar(engine, "SELECT components FROM signals") == '{"ofi":1.5,"tfi":0.75}'
    assert D(str(await scalar(engine, "SELECT COUNT(*) FROM positions"))) == 1
    halt = await latest_halt(engine, ACCOUNT, SYMBOL, mode=MODE, venue=VENUE)
    assert halt is not None and halt.kind == "max_daily_loss" and halt.details == {"pnl": "-101"}
    assert await latest_halt(engine, ACCOUNT, "ETH/USDT", mode=MODE, venue=VENUE) is None
    await insert_risk_event(engine, None, ACCOUNT, SYMBOL, RiskEvent(T0 + 2, RiskAction.RESUME, "operator", "looked"),
                            mode=MODE, venue=VENUE)
    assert await latest_halt(engine, ACCOUNT, SYMBOL, mode=MODE, venue=VENUE) is None
    summary = await rows(engine, "SELECT action, kind, events FROM v_risk_summary ORDER BY action")
    assert summary == [{"action": "halt", "kind": "max_daily_loss", "events": 1},
                       {"action": "resume", "kind": "operator", "events": 1}]
    await end_run(engine, run_id, T0 + 1000)
    assert await scalar(engine, "SELECT COUNT(*) FROM runs WHERE ended_at IS NOT NULL") == 1
    await engine.dispose()


def _unavailable_url(db_url: str, tmp_path: object) -> tuple[str, str]:
    """A URL whose database does not exist yet, and the admin URL to create it from."""
    if db_url.startswith("sqlite"):
        return f"sqlite+aiosqlite:///{tmp_path}/later/bot.db", ""
    u = urlparse(db_url.replace("+asyncpg", ""))
    name = f"{u.path.lstrip('/')}_late_{uuid.uuid4().hex[:6]}"
    return (f"postgresql+asyncpg://{u.username}@{u.hostname}:{u.port}/{name}",
            f"postgresql://{u.username}@{u.hostname}:{u.port}{u.path}")


async def _make_available(url: str, admin: str) -> None:
    if url.startswith("sqlite"):
        import os

        os.makedirs(url.split("///", 1)[1].rsplit("/", 1)[0], exist_ok=True)
    else:
        import asyncpg

        conn = await asyncpg.connect(admin)
        await conn.execute(f'CREATE DATABASE "{url.rsplit("/", 1)[1]}"')
        await conn.close()
    await upgrade(url)
    from bot.store.db import make_engine
    from bot.store.queries import create_run

    e = make_engine(url)
    await create_run(e, mode=MODE, config_hash="", version="", account=ACCOUNT, symbol=SYMBOL,
                     exchange="binance", venue=VENUE, started_ms=T0)
    await e.dispose()


async def _drop(url: str, admin: str) -> None:
    if not url.startswith("sqlite"):
        import asyncpg

        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
        await conn.close()


async def test_db_down_reports_unhealthy_keeps_records_and_recovers(db_url: str, tmp_path: object) -> None:
    url, admin = _unavailable_url(db_url, tmp_path)
    health: list[tuple[bool, str]] = []
    w = StoreWriter(url, run_id=1, account=ACCOUNT, symbol=SYMBOL, mode=MODE, venue=VENUE, batch_ms=5,
                    on_health=lambda ok, why: health.append((ok, why)))
    await w.start()
    try:
        f = fill("t1", "c1", Side.BUY, "100", "1")
        w.put(order("c1"))
        durable = asyncio.create_task(w.durable(f))
        for _ in range(200):
            if health:
                break
            await asyncio.sleep(0.01)
        assert health and health[0][0] is False and health[0][1].startswith("store_unavailable: ")
        assert not w.healthy and w.last_error and not durable.done()
        await _make_available(url, admin)
        await asyncio.wait_for(durable, 10)
        assert health[-1] == (True, "ok") and w.healthy
        await w.close()
        from bot.store.db import make_engine

        e = make_engine(url)
        assert [x.trade_id for x in await load_fills(e, ACCOUNT, SYMBOL, mode=MODE, venue=VENUE)] == ["t1"]
        await e.dispose()
    finally:
        await _drop(url, admin)


async def test_too_many_records_while_down_fails_loudly(db_url: str, tmp_path: object) -> None:
    url, _admin = _unavailable_url(db_url, tmp_path)
    w = StoreWriter(url, run_id=1, account=ACCOUNT, symbol=SYMBOL, mode=MODE, venue=VENUE, batch_ms=1, queue_size=5,
                    max_buffered=20)
    await w.start()
    with pytest.raises(StoreOverflowError, match="max_buffered 20"):
        for i in range(21):
            w.put(fill(f"t{i}", "c1", Side.BUY, "100", "1"))
    assert not w.healthy
    with pytest.raises(StoreOverflowError):
        w.put(fill("t99", "c1", Side.BUY, "100", "1"))
    with pytest.raises(StoreOverflowError):
        await w.close()
