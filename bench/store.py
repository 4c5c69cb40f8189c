"""Benchmark: the store writer's throughput on SQLite and PostgreSQL, in one run.

    python -m bench.store [--quick]

What is timed: producers ``put`` N fills (each with its order row, as the bot does: an
order upsert, then the fill) or N signals into one ``StoreWriter`` and ``flush``; the
figure is records committed per second of wall time, end to end (row building, the running
average-cost inventory, the duplicate check, ``executemany`` inserts, WAL commits with
``synchronous=FULL``). Target: >= 20k fills/s on SQLite. PostgreSQL (fills/s and signal
rows/s, the same two runs) is measured against the server named by ``BOT_TEST_PG_URL``
(default 127.0.0.1:5432) in a scratch database; both are None, with ``pg_skipped`` saying
why, when it is not reachable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bot.model import Direction, Fill, ImbalanceSignal, Liquidity, Order, OrderStatus, OrderType, Side
from bot.store.db import make_engine, upgrade
from bot.store.queries import create_run
from bot.store.writer import StoreWriter

PG_URL = os.environ.get("BOT_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
T0 = 1_723_075_200_000


def _fills(n: int) -> list[tuple[Order, Fill]]:
    out = []
    for i in range(n):
        side = Side.BUY if i % 3 else Side.SELL
        price = Decimal(60000) + Decimal(i % 500) / 100
        amount = Decimal("0.001") + Decimal(i % 7) / 1000
        cid = f"b{i}"
        order = Order(cid, "BTC/USDT", side, OrderType.LIMIT, amount, price, status=OrderStatus.FILLED,
                      filled=amount, created_ts=T0 + i, reason="bench", signal_strength=2.1)
        fill = Fill(f"t{i}", cid, "BTC/USDT", side, price, amount, (price * amount * Decimal("0.001")),
                    "USDT", Liquidity.TAKER if i % 2 else Liquidity.MAKER, T0 + i)
        out.append((order, fill))
    return out


async def _measure(url: str, n_fills: int, n_signals: int) -> tuple[float, float]:
    await upgrade(url)
    engine = make_engine(url)
    try:
        run_id = await create_run(engine, mode="bench", config_hash="", version="", account="bench",
                                  symbol="BTC/USDT", exchange="binance", venue="binance", started_ms=T0)
        pairs = _fills(n_fills)
        w = StoreWriter(engine, run_id=run_id, account="bench", symbol="BTC/USDT", mode="bench", venue="binance",
                        queue_size=10 * n_fills, max_buffered=10 * n_fills + 10)
        await w.start()
        t = time.perf_counter()
        for i, (order, fill) in enumerate(pairs):
            w.put(order)
            w.put(fill)
            if i % 1000 == 999:
                await asyncio.sleep(0)  # let the writer run, as the event loop would
        await w.flush()
        fills_per_s = n_fills / (time.perf_counter() - t)
        sigs = [ImbalanceSignal(T0 + i, Direction.LONG, 2.0 + i % 5, {"ofi": 1.5, "tfi": -0.2, "mlofi": 0.7})
                for i in range(n_signals)]
        t = time.perf_counter()
        for i, s in enumerate(sigs):
            w.put(s)
            if i % 1000 == 999:
                await asyncio.sleep(0)
        await w.flush()
        signals_per_s = n_signals / (time.perf_counter() - t)
        await w.close()
        return fills_per_s, signals_per_s
    finally:
        await engine.dispose()


async def _pg(n_fills: int, n_signals: int) -> tuple[float, float] | str:
    """PG fills/s and signal rows/s in a scratch database, or why PG was skipped."""
    try:
        import asyncpg

        u = urlparse(PG_URL.replace("+asyncpg", ""))
        admin = f"postgresql://{u.username or 'postgres'}@{u.hostname}:{u.port or 5432}/{u.path.lstrip('/') or 'test'}"
        conn = await asyncpg.connect(admin, timeout=2)
    except Exception as exc:
        return f"no PostgreSQL at {PG_URL}: {type(exc).__name__}: {exc}"[:200]
    name = f"bot_bench_{uuid.uuid4().hex[:10]}"
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        url = f"postgresql+asyncpg://{u.username or 'postgres'}@{u.hostname}:{u.port or 5432}/{name}"
        return await _measure(url, n_fills, n_signals)
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


def run(quick: bool = False) -> dict[str, Any]:
    """``sqlite_fills_per_s``, ``sqlite_signals_per_s``, ``pg_fills_per_s``, ``pg_signals_per_s``
    (the PG ones None with ``pg_skipped`` saying why when no server answers)."""
    n = 20_000 if quick else 100_000
    with tempfile.TemporaryDirectory() as d:
        url = f"sqlite+aiosqlite:///{Path(d) / 'bench.db'}"
        sqlite_fills, sqlite_signals = asyncio.run(_measure(url, n, n))
    n_pg = n // 2 if quick else n
    pg = asyncio.run(_pg(n_pg, n_pg))
    out: dict[str, Any] = {
        "records": n,
        "sqlite_fills_per_s": round(sqlite_fills),
        "pg_fills_per_s": None if isinstance(pg, str) else round(pg[0]),
        "sqlite_signals_per_s": round(sqlite_signals),
        "pg_signals_per_s": None if isinstance(pg, str) else round(pg[1]),
        "pg_records": n_pg,
        "target_sqlite_fills_per_s": 20_000,
    }
    if isinstance(pg, str):
        out["pg_skipped"] = pg
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="20k records instead of 100k (< 20 s)")
    args = ap.parse_args()
    print(json.dumps(run(args.quick), indent=2))


if __name__ == "__main__":
    main()
