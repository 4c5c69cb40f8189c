"""Orders, fills, positions and halts are kept apart by mode and venue (revision 0004).

The defect this guards against: with the default ``bot.db`` and account ``default``, a testnet
run after a paper run loaded the paper fills as its position and "flattened" it with real
orders. A run reads only its own (account, mode, venue, symbol); a trade id is unique per
(venue, symbol) only, so the same id at another venue is another fill, never a duplicate.
"""

from __future__ import annotations

import sys
from decimal import Decimal as D
from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy import insert
from sqlalchemy.engine import Connection

from bot.config import Settings, settings_from_dict
from bot.model import Liquidity, Markout, OrderEvent, OrderStatus, Position, RiskAction, RiskEvent, Side
from bot.store import queries
from bot.store import tables as t
from bot.store.db import alembic_config, current_revision, make_engine, upgrade
from bot.store.types import ms_to_dt
from bot.store.writer import StoreWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (no package): the store helpers
from fixtures_store import ACCOUNT, SYMBOL, T0, fill, fresh_store, order, rows, scalar

KEYS = {"BOT_API_KEY": "k", "BOT_API_SECRET": "s"}
PAPER = Settings()  # the defaults: paper, binance, sandbox on
TESTNET = settings_from_dict({"mode": "testnet"}, env=KEYS)  # the same [exchange] section, testnet mode


def _writer(engine: Any, run_id: int, mode: str, venue: str) -> StoreWriter:
    return StoreWriter(engine, run_id=run_id, account=ACCOUNT, symbol=SYMBOL, mode=mode, venue=venue)


async def _state(engine: Any, mode: str, venue: str) -> dict[str, Any]:
    """What a run of (mode, venue) loads at start-up."""
    scope = {"mode": mode, "venue": venue}
    return {
        "fills": [f.trade_id for f in await queries.load_fills(engine, ACCOUNT, SYMBOL, **scope)],
        "orders": [o.client_id for o in await queries.load_orders(engine, ACCOUNT, SYMBOL, **scope)],
        "open": [o.client_id for o in await queries.load_orders(engine, ACCOUNT, SYMBOL, open_only=True, **scope)],
        "own": await queries.load_own_client_ids(engine, ACCOUNT, mode, venue, SYMBOL),
        "halt": await queries.latest_halt(engine, ACCOUNT, SYMBOL, **scope),
        "last": await queries.latest_halt_or_resume(engine, ACCOUNT, SYMBOL, **scope),
    }


async def test_a_testnet_run_never_reads_the_paper_fills_orders_or_halt(db_url: str) -> None:
    """(a) paper rows written by the real writer; a testnet run of the same account sees none of them."""
    assert (PAPER.venue, TESTNET.venue) == ("binance:sandbox", "binance:sandbox")  # the same venue: mode parts them
    engine, run_id = await fresh_store(db_url, mode=PAPER.mode, venue=PAPER.venue)
    w = _writer(engine, run_id, PAPER.mode, PAPER.venue)
    await w.start()
    w.put(order("c1", status=OrderStatus.FILLED, filled="1"))
    await w.durable(fill("t1", "c1", Side.BUY, "100", "1"))
    w.put(order("c2", Side.SELL, price="105"))  # still open
    w.put(fill("t-ext", "ext-1", Side.BUY, "101", "0.5", ts=T0 + 1))  # an order it never placed: a placeholder
    w.put(OrderEvent("ev-only", OrderStatus.CANCELLED, T0 + 2))  # a placeholder without a side
    w.put(Position(SYMBOL, D("1.5"), D("100.33333333"), D(0), D(0), T0 + 3))
    w.put(RiskEvent(T0 + 4, RiskAction.HALT, "max_daily_loss", "daily loss 101 reached 100"))
    await w.close()

    testnet = await _state(engine, TESTNET.mode, TESTNET.venue)
    assert testnet == {"fills": [], "orders": [], "open": [], "own": set(), "halt": None, "last": None}
    live = await _state(engine, "live", "binance")
    assert live == {"fills": [], "orders": [], "open": [], "own": set(), "halt": None, "last": None}

    paper = await _state(engine, PAPER.mode, PAPER.venue)
    assert paper["fills"] == ["t1", "t-ext"]
    assert paper["orders"] == ["c1", "c2", "ext-1"]  # the side-less placeholder is never an order
    assert paper["open"] == ["c2", "ext-1"]
    assert paper["own"] == {"c1", "c2"}  # 'external' placeholders are not the bot's
    assert paper["halt"] is not None and paper["halt"].kind == "max_daily_loss"
    assert paper["last"] == paper["halt"]

    # every row the writer wrote carries the scope
    for table in ("orders", "fills", "positions", "risk_events"):
        assert await rows(engine, f"SELECT DISTINCT mode, venue FROM {table}") == [
            {"mode": "paper", "venue": "binance:sandbox"}], table

    # a testnet `bot resume` finds nothing to lift and leaves the paper halt alone
    from bot.risk.killswitch import resume_persisted

    assert await resume_persisted(db_url, ACCOUNT, SYMBOL, T0 + 10, mode=TESTNET.mode,
                                  venue=TESTNET.venue) == (None, None)
    assert await queries.latest_halt(engine, ACCOUNT, SYMBOL, mode="paper", venue=PAPER.venue) is not None
    halt, ev = await resume_persisted(db_url, ACCOUNT, SYMBOL, T0 + 10, mode=PAPER.mode, venue=PAPER.venue)
    assert halt is not None and ev is not None
    assert await queries.latest_halt(engine, ACCOUNT, SYMBOL, mode="paper", venue=PAPER.venue) is None
    assert await rows(engine, "SELECT mode, venue, run_id FROM risk_events WHERE action = 'resume'") == [
        {"mode": "paper", "venue": "binance:sandbox", "run_id": run_id}]
    await engine.dispose()


async def test_the_same_trade_id_at_two_venues_is_two_fills_with_their_own_positions(db_url: str) -> None:
    """(c) the testnet's trade 7 and the live exchange's trade 7 are different fills."""
    engine, live_run = await fresh_store(db_url, mode="live", venue="binance")
    test_run = await queries.create_run(engine, mode="testnet", config_hash="h", version="0.1.0", account=ACCOUNT,
                                        symbol=SYMBOL, exchange="binance", venue="binance:sandbox",
                                        started_ms=T0)
    live = _writer(engine, live_run, "live", "binance")
    test = _writer(engine, test_run, "testnet", "binance:sandbox")
    await live.start()
    await test.start()
    live.put(order("live-1"))
    test.put(order("test-1", amount="2"))
    f_live = fill("7", "live-1", Side.BUY, "100", "1", fee="0.1", ts=T0 + 1)
    f_test = fill("7", "test-1", Side.BUY, "100", "2", fee="0.2", ts=T0 + 2)
    await live.durable(f_live)
    await test.durable(f_test)
    for w, f, cid in ((live, f_live, "live-1"), (test, f_test, "test-1")):
        w.put(f)  # a replay of the same fact at the same venue: still a no-op
        w.put(Markout("7", cid, SYMBOL, Side.BUY, Liquidity.TAKER, f.price, f.amount, f.ts, 1000, f.ts + 1000,
                      D("101"), None, f.amount, 100.0, complete=True))
    await live.flush()
    await test.flush()
    live.put(order("live-2"))
    await live.durable(fill("8", "live-2", Side.BUY, "102", "1", ts=T0 + 3))
    await live.close()
    await test.close()

    got = await rows(engine, "SELECT venue, mode, trade_id, position_after, avg_price_after FROM v_trades "
                             "ORDER BY fill_id")
    assert [(r["venue"], r["mode"], r["trade_id"], D(str(r["position_after"])), D(str(r["avg_price_after"])))
            for r in got] == [
        ("binance", "live", "7", D(1), D(100)),
        ("binance:sandbox", "testnet", "7", D(2), D(100)),  # its own inventory, not 1 + 2
        ("binance", "live", "8", D(2), D(101)),  # continues the live book, not the testnet one
    ]
    assert [f.amount for f in await queries.load_fills(engine, ACCOUNT, SYMBOL, mode="live", venue="binance")] == [
        D(1), D(1)]
    assert [f.amount for f in await queries.load_fills(engine, ACCOUNT, SYMBOL, mode="testnet",
                                                       venue="binance:sandbox")] == [D(2)]
    marks = await rows(engine, "SELECT venue, fee_quote FROM v_markouts ORDER BY venue")
    assert [(r["venue"], D(str(r["fee_quote"]))) for r in marks] == [("binance", D("0.1")),
                                                                     ("binance:sandbox", D("0.2"))]
    daily = await rows(engine, "SELECT mode, venue, trade_count, end_position FROM v_daily_pnl ORDER BY mode")
    assert [(r["mode"], r["venue"], r["trade_count"], D(str(r["end_position"]))) for r in daily] == [
        ("live", "binance", 2, D(2)), ("testnet", "binance:sandbox", 1, D(2))]
    await engine.dispose()


# --------------------------------------------------------------------------- (b) the upgrade


async def _seed_0003(url: str) -> None:
    """A database at revision 0003 with a testnet run and one order, fill, risk event and markout."""
    await upgrade(url, "0003")
    assert await current_revision(url) == "0003"
    engine = make_engine(url)
    at = ms_to_dt(T0)
    try:
        async with engine.begin() as conn:  # only the 0003 columns: the models' newer ones are left out
            run_id = (await conn.execute(insert(t.runs).values(
                started_at=at, mode="testnet", config_hash="h", version="0.0.9", account=ACCOUNT, symbol=SYMBOL,
                exchange="binance", pid=1).returning(t.runs.c.id))).scalar_one()
            await conn.execute(insert(t.orders).values(
                run_id=run_id, account=ACCOUNT, symbol=SYMBOL, client_id="old-1", exchange_id="X1", side="buy",
                type="limit", post_only=False, price=D(100), amount=D(1), filled=D(1), status="filled",
                reason="entry", created_at=at, updated_at=at))
            await conn.execute(insert(t.order_events).values(
                run_id=run_id, client_id="old-1", ts=at, status="filled", filled=D(1), reason=""))
            await conn.execute(insert(t.fills).values(
                run_id=run_id, account=ACCOUNT, exchange="binance", symbol=SYMBOL, trade_id="7", client_id="old-1",
                ts=at, side="buy", price=D(100), amount=D(1), notional=D(100), fee=D("0.1"), fee_currency="USDT",
                fee_quote=D("0.1"), liquidity="taker", position_after=D(1), avg_price_after=D(100),
                realized_pnl=D(0)))
            await conn.execute(insert(t.risk_events).values(
                run_id=run_id, account=ACCOUNT, symbol=SYMBOL, ts=at, action="halt", kind="max_drawdown",
                reason="drawdown", details="{}"))
            await conn.execute(insert(t.markouts).values(
                run_id=run_id, account=ACCOUNT, exchange="binance", symbol=SYMBOL, trade_id="7", client_id="old-1",
                side="buy", liquidity="taker", price=D(100), amount=D(1), fill_ts=at, horizon_ms=1000, ts=at,
                mid=D(101), pnl=D(1), bps=100.0, complete=True))
    finally:
        await engine.dispose()


async def test_upgrade_from_0003_backfills_mode_and_venue_from_the_run(db_url: str) -> None:
    """(b) old rows take their run's mode and its exchange id as the venue; the new key lets another
    venue's trade 7 in."""
    await _seed_0003(db_url)
    await upgrade(db_url)
    engine = make_engine(db_url)
    try:
        assert await rows(engine, "SELECT mode, venue FROM runs") == [{"mode": "testnet", "venue": "binance"}]
        for table in ("orders", "fills", "risk_events", "markouts"):
            assert await rows(engine, f"SELECT mode, venue FROM {table}") == [
                {"mode": "testnet", "venue": "binance"}], table
        old = {"mode": "testnet", "venue": "binance"}
        assert [f.trade_id for f in await queries.load_fills(engine, ACCOUNT, SYMBOL, **old)] == ["7"]
        assert (await queries.latest_halt(engine, ACCOUNT, SYMBOL, **old)) is not None
        assert await queries.load_own_client_ids(engine, ACCOUNT, "testnet", "binance", SYMBOL) == {"old-1"}

        # trade 7 at the sandbox (what the old run really was) is not a duplicate of the stored one
        run_id = await queries.create_run(engine, mode="testnet", config_hash="h", version="0.1.0", account=ACCOUNT,
                                          symbol=SYMBOL, exchange="binance", venue="binance:sandbox",
                                          started_ms=T0 + 1)
        w = _writer(engine, run_id, "testnet", "binance:sandbox")
        await w.start()
        w.put(order("new-1"))
        await w.durable(fill("7", "new-1", Side.BUY, "100", "2", ts=T0 + 1))
        await w.close()
        assert await scalar(engine, "SELECT COUNT(*) FROM fills WHERE trade_id = '7'") == 2
        got = await rows(engine, "SELECT venue, position_after FROM v_trades ORDER BY fill_id")
        assert [(r["venue"], D(str(r["position_after"]))) for r in got] == [("binance", D(1)),
                                                                            ("binance:sandbox", D(2))]
    finally:
        await engine.dispose()


def _downgrade_on(conn: Connection, url: str, revision: str) -> None:
    cfg = alembic_config(url)
    cfg.attributes["connection"] = conn
    command.downgrade(cfg, revision)


async def test_downgrade_to_0003_and_back_keeps_the_rows(db_url: str) -> None:
    await _seed_0003(db_url)
    await upgrade(db_url)
    engine = make_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_downgrade_on, db_url, "0003")
    finally:
        await engine.dispose()
    assert await current_revision(db_url) == "0003"
    engine = make_engine(db_url)
    try:
        for view in ("v_trades", "v_daily_pnl", "v_order_latency", "v_risk_summary", "v_markouts"):
            assert await scalar(engine, f"SELECT COUNT(*) FROM {view}") == 1, view
        cols = await rows(engine, "SELECT * FROM fills")
        assert "venue" not in cols[0] and cols[0]["trade_id"] == "7"
    finally:
        await engine.dispose()
    await upgrade(db_url)
    engine = make_engine(db_url)
    try:
        assert await rows(engine, "SELECT mode, venue FROM fills") == [{"mode": "testnet", "venue": "binance"}]
    finally:
        await engine.dispose()
