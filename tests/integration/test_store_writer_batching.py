"""StoreWriter batching (one transaction per batch, at most ``max_batch`` records) and SQLite
WAL: a plain ``sqlite3`` reader in another thread reads while the writer commits.

Counts and contents only: no timing assertions.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import sqlite3
import sys
import threading
from decimal import Decimal
from pathlib import Path

import pytest

from bot.model import Balance, Fill, Side
from bot.store.writer import StoreWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (no package): the store helpers
from fixtures_store import ACCOUNT, MODE, SYMBOL, T0, VENUE, fill, fresh_store, order, scalar


def _fills(n: int, start: int = 0) -> list[Fill]:
    """``n`` fills alternating buy/sell of 1 @ 100 (inventory stays within [0, 1])."""
    return [
        fill(f"t{i}", f"c{i // 50}", Side.BUY if i % 2 == 0 else Side.SELL, "100", "1", ts=T0 + i)
        for i in range(start, start + n)
    ]


async def test_three_records_then_flush_is_one_batch(tmp_path: Path) -> None:
    engine, run_id = await fresh_store(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    w = StoreWriter(engine, run_id=run_id, account=ACCOUNT, symbol=SYMBOL, mode=MODE, venue=VENUE)
    await w.start()
    assert w.batches == 0 and w.written == 0
    w.put(order("c1"))
    w.put(fill("t1", "c1", Side.BUY, "100", "1"))
    w.put(Balance("USDT", Decimal("1000"), Decimal("0"), T0))
    await w.flush()
    assert w.batches == 1
    assert w.written == 3
    assert await scalar(engine, "SELECT COUNT(*) FROM orders") == 1
    assert await scalar(engine, "SELECT COUNT(*) FROM fills") == 1
    assert await scalar(engine, "SELECT COUNT(*) FROM balances") == 1
    # a second put + flush is a second batch
    w.put(fill("t2", "c1", Side.SELL, "101", "1"))
    await w.flush()
    assert w.batches == 2 and w.written == 4
    await w.close()
    assert w.batches == 2  # close with nothing queued writes no empty batch
    await engine.dispose()


@pytest.mark.parametrize(("n", "max_batch"), [(250, 100), (300, 100), (101, 100), (100, 100), (7, 3)])
async def test_more_than_max_batch_splits_into_ceil_n_over_max(tmp_path: Path, n: int, max_batch: int) -> None:
    engine, run_id = await fresh_store(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    w = StoreWriter(engine, run_id=run_id, account=ACCOUNT, symbol=SYMBOL, mode=MODE, venue=VENUE, max_batch=max_batch)
    await w.start()
    for f in _fills(n):  # all put before the writer runs: no await in between
        w.put(f)
    await w.flush()
    assert w.batches == math.ceil(n / max_batch)
    assert w.written == n
    assert await scalar(engine, "SELECT COUNT(*) FROM fills") == n
    await w.close()
    assert w.batches == math.ceil(n / max_batch)
    await engine.dispose()


async def test_close_writes_what_is_queued_in_max_batch_chunks(tmp_path: Path) -> None:
    engine, run_id = await fresh_store(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    w = StoreWriter(engine, run_id=run_id, account=ACCOUNT, symbol=SYMBOL, mode=MODE, venue=VENUE, max_batch=40)
    await w.start()
    for f in _fills(130):
        w.put(f)
    await w.close()
    assert w.batches == 4 and w.written == 130
    assert await scalar(engine, "SELECT COUNT(*) FROM fills") == 130
    await engine.dispose()


TOTAL = 5_000


async def test_plain_sqlite3_reader_while_writer_commits(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    engine, run_id = await fresh_store(f"sqlite+aiosqlite:///{path}")
    w = StoreWriter(engine, run_id=run_id, account=ACCOUNT, symbol=SYMBOL, mode=MODE, venue=VENUE, max_batch=100)
    await w.start()

    # the database is in WAL mode (persistent in the file), as a `sqlite3 bot.db` user finds it
    probe = sqlite3.connect(path)
    try:
        assert probe.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    finally:
        probe.close()

    counts: list[int] = []
    errors: list[str] = []
    stop = threading.Event()
    started = threading.Event()

    def reader() -> None:
        conn = sqlite3.connect(path)  # plain: no pragmas of ours
        try:
            i = 0
            while True:
                done = stop.is_set()  # read once more after the writer finished
                try:
                    if i % 10 == 9:  # now and then a fresh connection, as a new `sqlite3 bot.db` would
                        c2 = sqlite3.connect(path)
                        try:
                            counts.append(c2.execute("SELECT COUNT(*) FROM fills").fetchone()[0])
                        finally:
                            c2.close()
                    else:
                        counts.append(conn.execute("SELECT COUNT(*) FROM fills").fetchone()[0])
                except sqlite3.OperationalError as exc:
                    errors.append(str(exc))
                started.set()
                i += 1
                if done:
                    return
        finally:
            conn.close()

    async def producer() -> None:
        for start in range(0, TOTAL, 50):  # a stream: 50 fills, yield, 50 more ...
            for f in _fills(50, start):
                w.put(f)
            await asyncio.sleep(0)
        await w.flush()

    th = threading.Thread(target=reader, name="sqlite3-reader", daemon=True)
    th.start()
    try:
        await asyncio.to_thread(started.wait, 30)
        await asyncio.create_task(producer())
    finally:
        stop.set()
        await asyncio.to_thread(th.join, 60)
    assert not th.is_alive()
    await w.close()

    assert errors == [], errors[:5]
    assert not any("locked" in e for e in errors)
    assert len(counts) >= 2
    assert all(a <= b for a, b in itertools.pairwise(counts)), "a reader saw the count go down"
    assert counts[-1] == TOTAL
    assert w.written == TOTAL and w.batches >= math.ceil(TOTAL / 100)
    assert await scalar(engine, "SELECT COUNT(*) FROM fills") == TOTAL
    assert await scalar(engine, "SELECT COUNT(DISTINCT trade_id) FROM fills") == TOTAL
    await engine.dispose()
