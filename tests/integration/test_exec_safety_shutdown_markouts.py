"""Markouts still waiting at a live stop are written, not dropped.

``LiveRunner`` in paper mode against the emulator over real ccxt; a fill is booked while it
runs, then the runner is stopped long before the 60 s horizon: every horizon has its row, the
unfinished ones marked with the last mid seen and ``complete = false`` (``mid`` is NOT NULL).
"""

from __future__ import annotations

import asyncio
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from bot.config import settings_from_dict
from bot.emulator import Emulator
from bot.engine import LiveRunner
from bot.model import Fill, Liquidity, Side


@pytest.mark.slow
async def test_live_shutdown_writes_the_pending_markouts(tmp_path: Path) -> None:
    db = tmp_path / "bot.db"
    emu = Emulator(seed=5)
    await emu.start(port=0)
    settings = settings_from_dict(
        {"mode": "paper", "symbol": "BTC/USDT", "exchange": {"url": emu.base_url},
         "store": {"url": f"sqlite+aiosqlite:///{db}"}},
        env={},
    )
    runner = LiveRunner(settings, duration_s=120)
    try:
        task = asyncio.create_task(runner.run())
        for _ in range(600):  # at most ~30 s
            core = runner.core
            if task.done() or (core is not None and core.state == "trading" and core.book.mid() is not None):
                break
            await asyncio.sleep(0.05)
        assert not task.done(), task.result()
        core = runner.core
        assert core is not None
        mid = core.book.mid()
        assert mid is not None
        now = core.clock.now_ms()
        await core.om.on_fill_update(Fill("mk-1", core.om.ids.next(), "BTC/USDT", Side.BUY, Decimal(str(round(mid, 2))),
                                          Decimal("0.001"), Decimal("0"), "USDT", Liquidity.TAKER, now))
        assert core.markouts.pending == 3  # 1 s, 10 s, 60 s
        runner.request_stop("test")
        await asyncio.wait_for(task, 30)
    finally:
        await emu.stop()
    assert core.markouts.pending == 0
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT horizon_ms, complete, mid IS NOT NULL FROM markouts WHERE trade_id = 'mk-1' ORDER BY horizon_ms"
        ).fetchall()
    finally:
        con.close()
    assert [r[0] for r in rows] == [1000, 10_000, 60_000]
    assert rows[-1][1] == 0 and all(r[2] == 1 for r in rows)  # 60 s cannot have elapsed: flushed at the stop
