"""`bot report` shows runs, trades, daily PnL and risk events from the views."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rich.console import Console

from bot.model import RiskAction, RiskEvent, Side
from bot.store.report import ReportError, collect, render
from bot.store.writer import StoreWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (no package): the store helpers
from fixtures_store import ACCOUNT, DAY_MS, MODE, SYMBOL, T0, VENUE, fill, fresh_store, order


async def _seed(url: str) -> int:
    engine, run_id = await fresh_store(url)
    w = StoreWriter(engine, run_id=run_id, account=ACCOUNT, symbol=SYMBOL, mode=MODE, venue=VENUE)
    await w.start()
    w.put(order("c1"))
    w.put(fill("t1", "c1", Side.BUY, "100", "1", fee="0.1", ts=T0))
    w.put(order("c2", Side.SELL))
    w.put(fill("t2", "c2", Side.SELL, "102.5", "1", fee="0.1025", ts=T0 + DAY_MS))
    w.put(RiskEvent(T0 + DAY_MS, RiskAction.HALT, "max_drawdown", "drawdown 201 reached 200"))
    await w.close()
    await engine.dispose()
    return run_id


async def test_report_tables_and_filters(db_url: str) -> None:
    run_id = await _seed(db_url)
    data = await collect(db_url)
    assert [r["id"] for r in data.runs] == [run_id] and data.runs[0]["fills"] == 2
    assert [t["trade_id"] for t in data.trades] == ["t1", "t2"]
    assert len(data.daily) == 2 and [r["action"] for r in data.risk] == ["halt"]
    later = await collect(db_url, run_id=run_id, since="2024-08-09")
    assert [t["trade_id"] for t in later.trades] == ["t2"] and len(later.daily) == 1
    console = Console(record=True, width=200)
    render(data, console)
    out = console.export_text()
    for needle in ("Runs", "Trades", "Daily PnL", "Risk events", "max_drawdown", "2.5", "2.2975"):
        assert needle in out, needle
    for bad, msg in ((dict(run_id=999), "no run with id 999"), (dict(since="yesterday"), "YYYY-MM-DD")):
        try:
            await collect(db_url, **bad)  # type: ignore[arg-type]
        except ReportError as exc:
            assert msg in str(exc)
        else:
            raise AssertionError(bad)


def test_bot_report_command(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
    import asyncio

    asyncio.run(_seed(url))
    res = subprocess.run([sys.executable, "-m", "bot", "report", "--db", url], capture_output=True, text=True,
                         timeout=60, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    assert "Daily PnL" in res.stdout and "max_drawdown" in res.stdout
    res = subprocess.run([sys.executable, "-m", "bot", "report", "--db", f"sqlite:///{tmp_path / 'none.db'}"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "no database file" in res.stderr
