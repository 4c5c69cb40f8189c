"""Store test helpers: an upgraded database with a run, and model-record builders.

Plain helpers (no fixtures to register): tests import them directly.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.model import Fill, Liquidity, Order, OrderStatus, OrderType, Side
from bot.store.db import make_engine, upgrade
from bot.store.queries import create_run

ACCOUNT = "acct1"
SYMBOL = "BTC/USDT"
MODE = "paper"
VENUE = "binance"  # Settings.venue of a config with sandbox = false and no url
T0 = 1_723_075_200_000  # 2024-08-08 00:00:00 UTC
DAY_MS = 86_400_000


async def fresh_store(url: str, *, account: str = ACCOUNT, symbol: str = SYMBOL, mode: str = MODE,
                      venue: str = VENUE) -> tuple[AsyncEngine, int]:
    """Upgrade ``url`` with Alembic (never create_all) and create one run."""
    await upgrade(url)
    engine = make_engine(url)
    run_id = await create_run(engine, mode=mode, config_hash="h", version="0.1.0", account=account,
                              symbol=symbol, exchange="binance", venue=venue, started_ms=T0)
    return engine, run_id


def order(cid: str, side: Side = Side.BUY, amount: str = "1", price: str | None = "100", *, ts: int = T0,
          status: OrderStatus = OrderStatus.NEW, filled: str = "0", reason: str = "entry",
          strength: float | None = 2.5, mid: str | None = None, exchange_id: str | None = None) -> Order:
    return Order(cid, SYMBOL, side, OrderType.LIMIT, Decimal(amount), None if price is None else Decimal(price),
                 status=status, filled=Decimal(filled), exchange_id=exchange_id, reason=reason, created_ts=ts,
                 signal_strength=strength, mid_price=None if mid is None else Decimal(mid))


def fill(tid: str, cid: str, side: Side, price: str, amount: str, *, fee: str = "0", fee_ccy: str = "USDT",
         liq: Liquidity = Liquidity.TAKER, ts: int = T0, symbol: str = SYMBOL) -> Fill:
    return Fill(tid, cid, symbol, side, Decimal(price), Decimal(amount), Decimal(fee), fee_ccy, liq, ts)


async def rows(engine: AsyncEngine, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        res = await conn.execute(text(sql), params)
        return [dict(r._mapping) for r in res]


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar()
