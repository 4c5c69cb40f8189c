"""kill -9 while the writer is mid-batch: every fill acknowledged as durable is in the database."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from bot.store.db import make_engine
from bot.store.queries import load_fills
from bot.store.writer import StoreWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (no package): the store helpers
from bot.model import Side

from fixtures_store import ACCOUNT, MODE, SYMBOL, T0, VENUE, fill, fresh_store

CHILD = r"""
import asyncio, sys
from decimal import Decimal
from bot.model import Fill, Liquidity, Order, OrderType, Side, ImbalanceSignal, Direction
from bot.store.writer import StoreWriter

async def main(url, run_id):
    w = StoreWriter(url, run_id=run_id, account="acct1", symbol="BTC/USDT", mode="paper", venue="binance",
                    batch_ms=20)
    await w.start()
    out = sys.stdout

    async def one(i):
        cid = f"k{i}"
        w.put(Order(cid, "BTC/USDT", Side.BUY, OrderType.LIMIT, Decimal("0.001"), Decimal("60000"), created_ts=i))
        for j in range(20):  # load: signals keep the batches large
            w.put(ImbalanceSignal(i, Direction.LONG, 1.0, {"ofi": float(j)}))
        f = Fill(f"kt{i}", cid, "BTC/USDT", Side.BUY, Decimal("60000"), Decimal("0.001"), Decimal("0.06"),
                 "USDT", Liquidity.TAKER, 1_723_075_200_000 + i)
        await w.durable(f)
        out.write(f"D kt{i}\n")
        out.flush()

    i = 0
    while True:
        await asyncio.gather(*(one(i + k) for k in range(25)))
        i += 25

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


@pytest.mark.slow
async def test_sigkill_mid_batch_loses_no_durable_fill(db_url: str) -> None:
    engine, run_id = await fresh_store(db_url)
    cmd = [sys.executable, "-c", CHILD, db_url, str(run_id)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # noqa: ASYNC220
    acked: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    try:
        while len(acked) < 400 and time.monotonic() < deadline:
            line = await asyncio.to_thread(proc.stdout.readline)
            if not line:
                break
            acked.append(line.split()[1])
        os.kill(proc.pid, signal.SIGKILL)  # no flush, no close: mid-batch
        rest, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    acked += [ln.split()[1] for ln in rest.splitlines() if ln.startswith("D ")]  # written before the kill
    assert len(acked) >= 400, err[-2000:]
    assert proc.returncode == -signal.SIGKILL

    stored = {f.trade_id for f in await load_fills(engine, ACCOUNT, SYMBOL, mode=MODE, venue=VENUE)}
    missing = [t for t in acked if t not in stored]
    assert missing == []
    # restart: the database is consistent and the writer carries on from the stored position
    w = StoreWriter(engine, run_id=run_id, account=ACCOUNT, symbol=SYMBOL, mode=MODE, venue=VENUE)
    await w.start()
    await w.durable(fill("after-restart", "k0", Side.SELL, "60010", "0.001", ts=T0 + 10**8))
    await w.close()
    fills = await load_fills(engine, ACCOUNT, SYMBOL, mode=MODE, venue=VENUE)
    assert fills[-1].trade_id == "after-restart" and len(fills) == len(stored) + 1
    e2 = make_engine(db_url)
    async with e2.connect() as conn:
        from sqlalchemy import text

        pos = (await conn.execute(text("SELECT position_after FROM v_trades WHERE trade_id = 'after-restart'"))).scalar()
    await e2.dispose()
    from bot.store.queries import to_decimal

    assert to_decimal(pos) == (len(stored) - 1) * Decimal("0.001")
    await engine.dispose()
