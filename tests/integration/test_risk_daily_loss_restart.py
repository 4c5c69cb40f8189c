"""Risk acceptance: a scripted loss past max_daily_loss, one kill switch, a restart, `bot resume`.

The issue's words: "A scripted price path that loses more than max_daily_loss triggers exactly
one kill switch, leaves no open orders and a flat (or configured) position, and after a process
restart the bot is still halted."

Everything is the real engine: ``TradingCore`` with the paper broker, the real ``StoreWriter``
on a real database (SQLite file and PostgreSQL), a simulated clock. The long position comes
from real fills (a strong entry signal -> the strategy crosses the spread -> the paper broker
walks the book); the loss comes from book events that walk the mid down, one per second of
event time (the kill switch's guard cadence). The "restart" disposes of everything and builds
a fresh core on the same database the way ``LiveRunner.run`` does (fills and open orders loaded
from the store, then ``_restore_halt``). The resume is the real CLI in a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bot.clock import SimulatedClock
from bot.config import Settings, settings_from_dict
from bot.engine import TradingCore, _restore_halt, _writer, live_paper_broker, open_store
from bot.model import BookDelta, BookSnapshot, Direction, ImbalanceSignal
from bot.risk.killswitch import resume_persisted
from bot.risk.market_rules import MarketRules
from bot.store import queries

MAX_DAILY_LOSS = Decimal("5")
POSITION = Decimal("0.008")  # 480 USDT at 60 000: a 625 USDT drop of the mid loses 5 USDT
MID0 = 60_000.0
STEP = 100.0  # the mid falls this much per second of event time


SCOPE = {"mode": "paper", "venue": "binance:sandbox"}  # what _settings gives: paper, sandbox, no url


def _settings(db_url: str) -> Settings:
    return settings_from_dict(
        {
            "store": {"url": db_url},
            "strategy": {"cost_gate": False, "aggressive_z": 3.0},
            "risk": {
                "max_position": float(POSITION),
                "max_order_notional": 500,
                "max_daily_loss": float(MAX_DAILY_LOSS),
                "max_drawdown": 1000,
                "flatten_on_halt": True,
                "daily_loss_resume": "manual",
            },
        },
        env={},
    )


def _levels(best: float, sign: int, n: int = 5) -> list[tuple[float, float]]:
    return [(best + sign * i * 1.0, 1.0) for i in range(n)]


def _book_at(mid: float, ts: int, seq: int) -> BookDelta:
    """A delta that moves the whole visible book to ``mid`` (old levels removed, new ones set)."""
    bids = _levels(mid - 0.5, -1)
    asks = _levels(mid + 0.5, +1)
    return BookDelta(ts=ts, bids=bids, asks=asks, seq=seq, recv=ts)


class Proc:
    """One "process": store engine, writer, core, on one database."""

    def __init__(self, core: TradingCore, engine: Any, clock: SimulatedClock) -> None:
        self.core = core
        self.engine = engine
        self.clock = clock
        self.seq = 1
        self.mid = MID0

    async def move_to(self, mid: float, dt_ms: int = 1000) -> None:
        """One book event ``dt_ms`` later with the book centred on ``mid`` (removing the old levels)."""
        ts = self.clock.now_ms() + dt_ms
        old_bids = [(p, 0.0) for p, _ in self.core.book.top_bids(50)]
        old_asks = [(p, 0.0) for p, _ in self.core.book.top_asks(50)]
        new = _book_at(mid, ts, self.seq + 1)
        keep_b = {p for p, _ in new.bids}
        keep_a = {p for p, _ in new.asks}
        ev = BookDelta(ts=ts, bids=[x for x in old_bids if x[0] not in keep_b] + list(new.bids),
                       asks=[x for x in old_asks if x[0] not in keep_a] + list(new.asks), seq=self.seq + 1, recv=ts)
        self.seq += 1
        self.mid = mid
        await self.core.on_event(ev)

    async def strong_signal(self, z: float = 4.0) -> None:
        ts = self.clock.now_ms()
        sig = ImbalanceSignal(ts=ts, direction=Direction.LONG, strength=z, components={"ofi": z}, kind="entry")
        self.core._on_detector(sig, self.core.book.mid())
        await self.core.decide(ts)

    async def close(self) -> None:
        await self.core.writer.close()
        await queries.end_run(self.engine, self.core.run_id, self.clock.now_ms())
        await self.engine.dispose()


async def _start(db_url: str, t0: int) -> Proc:
    """Build a core as ``LiveRunner.run`` does: store state loaded, writer started, halt restored."""
    settings = _settings(db_url)
    clock = SimulatedClock(t0)
    engine, run_id = await open_store(settings, "paper", t0)
    scope = {"mode": settings.mode, "venue": settings.venue}
    fills = await queries.load_fills(engine, settings.exchange.account, settings.symbol, **scope)
    open_orders = await queries.load_orders(engine, settings.exchange.account, settings.symbol, open_only=True,
                                            **scope)
    ref: list[TradingCore] = []
    writer = _writer(settings, engine, run_id, ref)
    core = TradingCore(settings, clock=clock, broker=live_paper_broker(settings, clock, run_id, fills),
                       writer=writer, run_id=run_id, rules=MarketRules.binance_spot(settings.symbol),
                       orders=open_orders, fills=fills, warmup_s=0.0,
                       position_floor=-settings.paper.balances.get(settings.base, Decimal(0)))
    ref.append(core)
    await writer.start()
    await core.broker.start()
    await _restore_halt(core, engine)
    if not core.killswitch.halted:
        core.state = "trading"
    p = Proc(core, engine, clock)
    await core.on_event(BookSnapshot(ts=t0, bids=_levels(MID0 - 0.5, -1), asks=_levels(MID0 + 0.5, +1),
                                     seq=1, recv=t0))
    return p


async def _rows(engine: Any, sql: str) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(text(sql))).all())


def _bot_resume(db_url: str) -> subprocess.CompletedProcess[str]:
    bot = shutil.which("bot", path=str(Path(sys.executable).parent)) or shutil.which("bot")
    assert bot, "the bot console script must be installed"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}
    return subprocess.run([bot, "resume", "--db", db_url], capture_output=True, text=True, timeout=120, env=env)


T0 = 1_723_078_800_000  # 2024-08-08 01:00 UTC: fixed, so every run takes the same path


async def _lose_halt_restart(db_url: str) -> float:
    """Processes 1 and 2: the loss, the one halt, flat, no open orders; the restart still halted."""
    symbol = "BTC/USDT"
    # ---------------------------------------------------------------- process 1: the loss
    p = await _start(db_url, T0)
    core = p.core
    assert not core.killswitch.halted and core.state == "trading"
    await p.strong_signal()
    assert len(core.om.open_orders) == 1, list(core.decisions)
    await p.move_to(MID0, dt_ms=100)  # after the paper latency: the crossing buy walks the asks
    assert core.position == POSITION, (core.position, list(core.decisions))
    buy_fills = await _rows(p.engine, "SELECT side, liquidity FROM fills")
    assert [tuple(r) for r in buy_fills] == [("buy", "taker")]

    path: list[tuple[float, str, str]] = []
    mid = MID0
    while not core.killswitch.halted and mid > MID0 - 20 * STEP:
        mid -= STEP
        await p.move_to(mid)
        path.append((mid, str(core.inventory.daily_pnl(Decimal(repr(mid)))), str(core.position)))
    print(f"\nprice path (mid, daily pnl, position): {path}")
    assert core.killswitch.halted, path
    assert core.killswitch.halt_kind == "max_daily_loss"
    # the flatten order went out with the halt; the next event (after the latency) fills it
    await p.move_to(mid, dt_ms=100)
    await p.move_to(mid)
    assert core.position == 0, (core.position, list(core.decisions))
    assert core.om.open_orders == []
    assert await core.broker.fetch_open_orders(symbol) == []
    # strong signals while halted: nothing
    for _ in range(3):
        await p.strong_signal(6.0)
        await p.move_to(mid)
    assert core.om.open_orders == [] and core.position == 0 and core.counts["orders"] == 1
    await p.close()

    halts = await _halt_rows(db_url)
    assert len(halts) == 1, halts
    kind, reason, details = halts[0]
    assert kind == "max_daily_loss"
    assert f"reached max_daily_loss {MAX_DAILY_LOSS}" in reason
    d = json.loads(details)
    assert Decimal(d["daily_pnl"]) <= -MAX_DAILY_LOSS, d
    assert Decimal(d["max_daily_loss"]) == MAX_DAILY_LOSS
    assert Decimal(d["position"]) == POSITION  # the position at the breach, before the flatten
    # the numbers add up: the position times the fall from the entry price, plus the entry fee
    assert Decimal(d["mark"]) == Decimal(repr(mid))
    fills = await _fills(db_url)
    assert [(f.side.value, f.amount) for f in fills] == [("buy", POSITION), ("sell", POSITION)], fills
    buy = fills[0]
    expected = POSITION * (Decimal(repr(mid)) - buy.price) - buy.fee
    assert Decimal(d["daily_pnl"]) == expected, (d, buy)
    assert -expected > MAX_DAILY_LOSS
    print(f"halt row: {reason} {d}")
    orders = await _all(db_url, "SELECT side, status, reason FROM orders ORDER BY id")
    assert [(o[0], o[1]) for o in orders] == [("buy", "filled"), ("sell", "filled")], orders
    assert "kill switch flatten" in orders[1][2]

    # ---------------------------------------------------------------- process 2: restart, still halted
    p2 = await _start(db_url, T0 + 60_000)
    assert p2.core.killswitch.halted and p2.core.killswitch.halt_kind == "max_daily_loss"
    assert p2.core.state == "halted"
    assert p2.core.position == 0
    for _ in range(3):
        await p2.strong_signal(6.0)
        await p2.move_to(mid)
    assert p2.core.om.open_orders == [] and p2.core.counts["orders"] == 0
    await p2.close()
    assert len(await _halt_rows(db_url)) == 1, "the restart must not write a second halt"
    assert await _all(db_url, "SELECT count(*) FROM orders") == [(2,)]
    return mid


async def _trades_after_resume(db_url: str, t3: int) -> tuple[int, Decimal, bool]:
    p3 = await _start(db_url, t3)
    await p3.strong_signal()
    await p3.move_to(MID0, dt_ms=100)
    await p3.move_to(MID0)
    got = p3.core.counts["orders"], p3.core.position, p3.core.killswitch.halted
    await p3.close()
    return got


async def test_daily_loss_halts_once_flat_survives_restart_until_bot_resume(db_url: str) -> None:
    await _lose_halt_restart(db_url)

    out = _bot_resume(db_url)  # the real CLI, in its own process, on the wall clock
    assert out.returncode == 0, out.stderr
    assert "lifted max_daily_loss halt of 2024-08-08 01:00:" in out.stdout, out.stdout
    assert "for default BTC/USDT" in out.stdout, out.stdout
    resumes = await _all(db_url, "SELECT kind, reason FROM risk_events WHERE action = 'resume'")
    assert len(resumes) == 1 and resumes[0][0] == "max_daily_loss", resumes
    latest = await _latest_halt(db_url)
    assert latest is None

    # process 3, after the resume (a later UTC day than the loss: the day's loss budget is fresh)
    orders, position, halted = await _trades_after_resume(db_url, time.time_ns() // 1_000_000 + 1_000)
    print(f"after resume: orders {orders}, position {position}, halted {halted}")
    assert (orders, position, halted) == (1, POSITION, False)
    assert len(await _halt_rows(db_url)) == 1


async def test_resume_on_the_same_utc_day_trades_again(sqlite_url: str) -> None:
    """`bot resume` on the day of a max_daily_loss halt gives a fresh budget from the restart."""
    await _lose_halt_restart(sqlite_url)
    halt, ev = await resume_persisted(sqlite_url, "default", "BTC/USDT", T0 + 120_000, **SCOPE)
    assert halt is not None and ev is not None
    orders, position, halted = await _trades_after_resume(sqlite_url, T0 + 180_000)
    assert not halted, (await _halt_rows(sqlite_url))[-1]
    assert (orders, position) == (1, POSITION)


async def test_paper_fills_after_a_restart_are_booked(sqlite_url: str) -> None:
    """Paper trade ids carry the run id: a restarted paper bot's fills are not taken for stored ones."""
    await _lose_halt_restart(sqlite_url)  # two fills stored by the first process
    await resume_persisted(sqlite_url, "default", "BTC/USDT", T0 + 120_000, **SCOPE)
    orders, position, _ = await _trades_after_resume(sqlite_url, T0 + 86_400_000)
    assert orders == 1
    assert position == POSITION, "the broker filled the buy; the engine must have booked it"
    ids = [f.trade_id for f in await _fills(sqlite_url)]
    assert len(ids) == 3 and len(set(ids)) == 3, ids


async def test_a_restarted_paper_broker_holds_what_the_stored_fills_say() -> None:
    from bot.model import Fill, Liquidity, Side

    settings = _settings("sqlite+aiosqlite:///unused.db")
    fills = [
        Fill("paper-r1-t1", "c1", "BTC/USDT", Side.BUY, Decimal("60000"), Decimal("0.01"), Decimal("0.6"),
             "USDT", Liquidity.TAKER, T0),
        Fill("paper-r1-t2", "c2", "BTC/USDT", Side.SELL, Decimal("61000"), Decimal("0.004"), Decimal("0.244"),
             "USDT", Liquidity.TAKER, T0 + 1),
    ]
    b = live_paper_broker(settings, SimulatedClock(T0), 2, fills)
    start = {k: Decimal(v) for k, v in settings.paper.balances.items()}
    free = {c: bal.free for c, bal in (await b.fetch_balance()).items()}
    assert free["BTC"] == start.get("BTC", Decimal(0)) + Decimal("0.006")
    assert free["USDT"] == start["USDT"] - Decimal("600") - Decimal("0.6") + Decimal("244") - Decimal("0.244")
    assert b.id_prefix == "paper-r2"


async def _all(db_url: str, sql: str) -> list[tuple[Any, ...]]:
    from bot.store.db import make_engine

    engine = make_engine(db_url)
    try:
        return [tuple(r) for r in await _rows(engine, sql)]
    finally:
        await engine.dispose()


async def _halt_rows(db_url: str) -> list[tuple[Any, ...]]:
    return await _all(db_url, "SELECT kind, reason, details FROM risk_events WHERE action = 'halt' ORDER BY id")




async def _latest_halt(db_url: str) -> Any:
    from bot.store.db import make_engine

    engine = make_engine(db_url)
    try:
        return await queries.latest_halt(engine, "default", "BTC/USDT", **SCOPE)
    finally:
        await engine.dispose()


async def _fills(db_url: str) -> list[Any]:
    from bot.store.db import make_engine

    engine = make_engine(db_url)
    try:
        return await queries.load_fills(engine, "default", "BTC/USDT", **SCOPE)
    finally:
        await engine.dispose()
