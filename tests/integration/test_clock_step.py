"""A wall-clock step changes nothing: every duration the engine measures is monotonic.

The story (the defect): after an NTP step of the wall clock by -1 h, the order-rate window
(``max_orders_per_minute``) compared order times with the wall clock and refused every order
for an hour, exits included, while the position sat at its maximum long past ``max_hold``.

The real ``TradingCore`` in paper mode (``PaperBroker``, a real ``StoreWriter`` on a SQLite
file) is driven three times by the same seeded synthetic market (events stamped with exchange
time, as the live feed delivers them) under a clock whose monotonic side follows the market
and whose wall side is steady, stepped -1 h, or stepped +1 h in the middle of the run. The
scenario trades: entries on the injected pressure, flattens after ``max_hold``, and enough
orders to hit ``max_orders_per_minute``. The three runs must place the same orders (side,
amount, type, price, reason), get the same fills, and take the same risk decisions.

The outage timers of the kill switch (store down, feed down) get the same treatment: a step
forward trips nothing early, a step back delays nothing.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings, settings_from_dict
from bot.engine import FEED_DOWN_HALT_MS, STORE_DOWN_HALT_MS, TradingCore, _writer, open_store
from bot.execution.paper_broker import PaperBroker
from bot.market.synthetic import Regime, SyntheticMarket
from bot.model import BookSnapshot
from bot.risk.market_rules import MarketRules

from helpers import SteppableClock

HOUR_MS = 3_600_000
T0 = 1_723_118_400_000  # 2024-08-08 12:00 UTC: a step of an hour either way stays on the same UTC day
SECONDS = 150
STEP_AT_MS = T0 + 75_000  # the wall clock steps half-way through the run

SETTINGS: dict[str, Any] = {
    "signals": {"window": "5s", "halflife": "30s"},
    "strategy": {"entry_z": 1.0, "exit_z": 0.2, "persistence": 2, "max_hold": "4s", "order_ttl": "2s",
                 "cost_gate": False},
    "risk": {"max_orders_per_minute": 6, "max_order_notional": 3000, "max_position": 0.02},
    "paper": {"balances": {"USDT": 100000, "BTC": 1}},
}
# buy and sell pressure, alternating, over the whole run (so entries happen before and after the step)
REGIMES = [Regime(T0 + s * 1000, T0 + (s + 12) * 1000, 1 if i % 2 == 0 else -1)
           for i, s in enumerate(range(15, SECONDS, 16))]


def _rows(db: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    con = sqlite3.connect(db)
    try:
        orders = con.execute(
            "SELECT client_id, side, amount, type, price, reason, status, filled FROM orders ORDER BY id"
        ).fetchall()
        fills = con.execute(
            "SELECT trade_id, client_id, side, price, amount, fee, liquidity, ts FROM fills ORDER BY id"
        ).fetchall()
        risk = con.execute("SELECT action, kind, reason FROM risk_events ORDER BY id").fetchall()
    finally:
        con.close()
    return orders, fills, risk


async def _core(tmp_path: Path, name: str, clock: SteppableClock, settings: Settings) -> tuple[TradingCore, Any]:
    """The real paper TradingCore + StoreWriter on ``clock``, trading (as ``helpers.paper_core``,
    but on a live-like clock: nothing advances it from the events)."""
    engine, run_id = await open_store(settings, "paper", clock.now_ms())
    ref: list[TradingCore] = []
    writer = _writer(settings, engine, run_id, ref)
    core = TradingCore(settings, clock=clock, broker=PaperBroker(clock, settings.paper, settings.symbol),
                       writer=writer, run_id=run_id, rules=MarketRules.binance_spot(settings.symbol),
                       tick=0.01, warmup_s=10.0)
    ref.append(core)
    await writer.start()
    core.state = "trading"
    return core, engine


def _settings(db: Path, **extra: Any) -> Settings:
    return settings_from_dict({**SETTINGS, **extra, "store": {"url": f"sqlite+aiosqlite:///{db}"}}, env={})


async def _run(tmp_path: Path, name: str, step_ms: int) -> tuple[list[Any], list[Any], list[Any]]:
    db = tmp_path / f"{name}.db"
    clock = SteppableClock(wall0_ms=T0)
    mono0 = clock.mono_ms()
    core, engine = await _core(tmp_path, name, clock, _settings(db))
    stepped = False
    try:
        for ev in SyntheticMarket(seed=5, start_ms=T0, pressure=REGIMES).events(SECONDS):
            # the local monotonic clock moves with the market; exchange timestamps never step
            clock.advance_to(mono0 + ev.ts - T0)
            if not stepped and ev.ts >= STEP_AT_MS:
                stepped = True
                clock.step_wall(step_ms)
            await core.on_event(ev)
    finally:
        await core.writer.close()
        await engine.dispose()
    assert stepped
    return _rows(db)


async def test_the_scenario_enters_exits_on_max_hold_and_hits_the_order_rate_limit(tmp_path: Path) -> None:
    orders, fills, risk = await _run(tmp_path, "steady", 0)
    reasons = [o[5] for o in orders]
    assert sum(r.startswith("entry") for r in reasons) >= 3, reasons
    assert sum(r.startswith("flatten") for r in reasons) >= 2, f"no max_hold exits: {reasons}"
    assert any(o[6] == "cancelled" for o in orders), "no order_ttl cancel in the scenario"
    assert len(fills) >= 4
    assert any(r[1] == "max_orders_per_minute" for r in risk), "the scenario never reached max_orders_per_minute"
    # trading before and after the step point (fills.ts is stored as UTC text)
    step_at = dt.datetime.fromtimestamp(STEP_AT_MS / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    assert any(str(f[7]) >= step_at for f in fills) and any(str(f[7]) < step_at for f in fills), fills


@pytest.mark.parametrize("step_ms", [-HOUR_MS, HOUR_MS], ids=["back_1h", "forward_1h"])
async def test_a_wall_clock_step_changes_no_order_fill_or_risk_decision(tmp_path: Path, step_ms: int) -> None:
    orders, fills, risk = await _run(tmp_path, "steady", 0)
    o2, f2, r2 = await _run(tmp_path, "stepped", step_ms)
    # no order refused by the rate window beyond the steady run's (the defect: 185 rejects)
    assert [r for r in r2 if r[1] == "max_orders_per_minute"] == [r for r in risk if r[1] == "max_orders_per_minute"]
    # the same orders (side, amount, type, price, reason), with the same outcomes
    assert [o[1:6] for o in o2] == [o[1:6] for o in orders]
    assert o2 == orders
    assert f2 == fills
    assert r2 == risk


async def _core_with_book(tmp_path: Path, clock: SteppableClock) -> tuple[TradingCore, Any]:
    core, engine = await _core(tmp_path, "outage", clock, _settings(tmp_path / "outage.db"))
    await core.on_event(BookSnapshot(ts=T0, bids=[(60000.0, 1.0)], asks=[(60001.0, 1.0)], seq=1, recv=T0))
    return core, engine


async def _close(core: TradingCore, engine: Any) -> None:
    await core.writer.close()
    await engine.dispose()


@pytest.mark.parametrize("outage", ["store", "feed"])
async def test_a_forward_step_does_not_turn_a_short_outage_into_a_halt(tmp_path: Path, outage: str) -> None:
    clock = SteppableClock(wall0_ms=T0)
    core, engine = await _core_with_book(tmp_path, clock)
    try:
        if outage == "store":
            core.on_store_health(False, "store_unavailable: OperationalError: database is locked")
        else:
            core.on_feed_health(False)
        clock.advance(2_000)
        clock.step_wall(HOUR_MS)
        await core._guard()
        assert not core.killswitch.halted, core.killswitch.halt_reason
    finally:
        await _close(core, engine)


@pytest.mark.parametrize("outage", ["store", "feed"])
async def test_a_backward_step_does_not_delay_the_outage_halt(tmp_path: Path, outage: str) -> None:
    clock = SteppableClock(wall0_ms=T0)
    core, engine = await _core_with_book(tmp_path, clock)
    limit = STORE_DOWN_HALT_MS if outage == "store" else FEED_DOWN_HALT_MS
    try:
        if outage == "store":
            core.on_store_health(False, "store_unavailable: ConnectionRefusedError")
        else:
            core.on_feed_health(False)
        clock.step_wall(-HOUR_MS)
        clock.advance(limit - 1)
        await core._guard()
        assert not core.killswitch.halted
        clock.advance(1)
        await core._guard()
        assert core.killswitch.halted and core.killswitch.halt_kind == f"{outage}_{'unavailable' if outage == 'store' else 'down'}"
    finally:
        await _close(core, engine)
