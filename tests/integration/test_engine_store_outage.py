"""A store outage in the engine: a pause (no new orders, nothing lost) that lifts by itself,
and a kill-switch halt only when the outage outlasts STORE_DOWN_HALT_MS.

The real TradingCore with the paper broker, a real StoreWriter on a SQLite file and a
simulated clock; the writer's health callback is driven directly, as the writer drives it.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

from bot.clock import SimulatedClock
from bot.config import settings_from_dict
from bot.engine import STORE_DOWN_HALT_MS, TradingCore
from bot.store import queries

from helpers import paper_core

T0 = 1_723_075_200_000


async def _core(tmp_path: Path) -> tuple[TradingCore, object, Path]:
    db = tmp_path / "bot.db"
    core, engine = await paper_core(settings_from_dict({"store": {"url": f"sqlite+aiosqlite:///{db}"}}, env={}), T0)
    return core, engine, db


def _risk_rows(db: Path) -> list[tuple[str, str]]:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT action, kind FROM risk_events ORDER BY id").fetchall()
    finally:
        con.close()


async def test_short_outage_pauses_then_resumes_and_is_not_a_persisted_halt(tmp_path: Path) -> None:
    core, engine, db = await _core(tmp_path)
    clock = core.clock
    assert isinstance(clock, SimulatedClock)
    core.on_store_health(False, "store_unavailable: OperationalError: database is locked")
    core.strategy.target = Decimal("0.005")  # the strategy wants a position...
    await core.decide(clock.now_ms())
    assert list(core.om.open_orders) == []  # ...but no order while paused
    clock.advance(T0 + 30_000)
    await core._guard()
    assert not core.killswitch.halted
    core.on_store_health(True, "ok")
    await core.decide(clock.now_ms())
    assert len(list(core.om.open_orders)) == 1, "trading resumes once the store is back"
    await core.writer.close()
    assert _risk_rows(db) == [("pause", "store_unavailable"), ("unpause", "store_unavailable")]
    assert await queries.latest_halt(engine, core.settings.exchange.account, core.symbol,  # type: ignore[arg-type]
                                     mode=core.settings.mode, venue=core.settings.venue) is None
    await engine.dispose()  # type: ignore[attr-defined]


async def test_outage_longer_than_the_limit_trips_the_kill_switch(tmp_path: Path) -> None:
    core, engine, db = await _core(tmp_path)
    clock = core.clock
    assert isinstance(clock, SimulatedClock)
    core.on_store_health(False, "store_unavailable: ConnectionRefusedError")
    clock.advance(T0 + STORE_DOWN_HALT_MS - 1)
    await core._guard()
    assert not core.killswitch.halted
    clock.advance(T0 + STORE_DOWN_HALT_MS)
    await core._guard()
    assert core.killswitch.halted and core.killswitch.halt_kind == "store_unavailable"
    core.on_store_health(True, "ok")  # the store coming back does not lift a halt
    assert core.killswitch.halted
    await core.writer.close()
    assert _risk_rows(db) == [("pause", "store_unavailable"), ("halt", "store_unavailable")]
    await engine.dispose()  # type: ignore[attr-defined]
