"""Replay runs are the recording's: they never halt for the store, carry market time, fail
cleanly, and every summary is the run's own.

* A long replay waits for the store writer (backpressure) instead of pausing or halting: a
  24 h recording with a tiny store queue ends with no pause/halt rows and one sampled signal
  row per ``signals.sample_interval``; a 20x repeat of the real BTC recording (3.6 h of market
  time, past the ~2.7 h at which the default queue used to fill) runs through too.
* ``runs.started_at`` / ``ended_at`` are the first and last event times (not 1970).
* A bad line in the middle: ``bot replay`` exits 1 with one line naming file and line, the run
  is ``failed``, and no order is left open.
* Summaries (replay, the live paper path `bot demo` uses, `bot report --run`) count only their run.
"""

from __future__ import annotations

import asyncio
import gzip
import math
import os
import random
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select, text

from bot.clock import SimulatedClock
from bot.config import Settings, settings_from_dict
from bot.engine import TradingCore, _writer, live_paper_broker, open_store, run_replay
from bot.market.synthetic import write_synthetic_recording
from bot.model import BookDelta, BookSnapshot, Direction, ImbalanceSignal
from bot.risk.market_rules import MarketRules
from bot.store import queries
from bot.store import tables as t
from bot.store.db import make_engine
from bot.store.report import collect
from bot.store.types import dt_to_ms, ms_to_dt
from bot.store.writer import StoreWriter

T0 = 1_723_075_200_000  # 2024-08-08 00:00:00 UTC, a multiple of every interval below
DAY_S = 86_400
WARMUP_S = 60

# the settings of tests/integration/test_engine.py that make the synthetic pressure recording trade
TRADING = {
    "signals": {"window": "5s", "halflife": "30s", "warmup": "20s"},
    "strategy": {"entry_z": 1.5, "exit_z": 0.3, "persistence": 2, "max_hold": "20s", "cost_gate": False},
    "risk": {"max_order_notional": 3000},
    "paper": {"balances": {"USDT": 10000, "BTC": 0.05}},
}
TRADING_TOML = """
[signals]
window = "5s"
halflife = "30s"
warmup = "20s"

[strategy]
entry_z = 1.5
exit_z = 0.3
persistence = 2
max_hold = "20s"
cost_gate = false

[risk]
max_order_notional = 3000

[paper]
balances = { USDT = 10000, BTC = 0.05 }
"""
OPEN = ("new", "submitted", "acked", "partially_filled", "unknown")


def _sql(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


async def _runs(url: str) -> list[dict[str, Any]]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(t.runs).order_by(t.runs.c.id))).all()
    finally:
        await engine.dispose()
    return [dict(r._mapping) for r in rows]


def _sparse_day(path: Path, seconds: int = DAY_S, seed: int = 5) -> list[int]:
    """``seconds`` of a quiet market, one event per second (a snapshot, then deltas and trades
    at fixed prices with random sizes), ``ts`` on whole seconds from T0. Returns every ts."""
    rng = random.Random(seed)
    bids = [round(100.0 - 0.01 * i, 2) for i in range(5)]
    asks = [round(100.01 + 0.01 * i, 2) for i in range(5)]
    out = [orjson.dumps({"type": "header", "format": "bot-recording/1", "exchange": "binance",
                         "symbol": "BTC/USDT", "tick": 0.01})]
    stamps = []
    for k in range(seconds):
        ts = T0 + k * 1000
        stamps.append(ts)
        if k == 0:
            line = {"type": "snapshot", "ts": ts, "bids": [[p, 1.0] for p in bids], "asks": [[p, 1.0] for p in asks]}
        elif k % 3 == 0:
            line = {"type": "trade", "ts": ts, "price": asks[0] if k % 2 else bids[0],
                    "amount": round(rng.uniform(0.001, 0.05), 4), "side": "buy" if k % 2 else "sell"}
        else:
            line = {"type": "delta", "ts": ts, "bids": [[rng.choice(bids), round(rng.uniform(0.1, 2.0), 3)]],
                    "asks": [[rng.choice(asks), round(rng.uniform(0.1, 2.0), 3)]]}
        out.append(orjson.dumps(line))
    path.write_bytes(b"\n".join(out) + b"\n")
    return stamps


# --------------------------------------------------------------------------- (a) 24 h, tiny queue


def test_a_day_long_replay_waits_for_the_store_and_samples_every_second(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = tmp_path / "day.jsonl"
    stamps = _sparse_day(rec)
    url = f"sqlite+aiosqlite:///{tmp_path / 'day.db'}"
    settings = settings_from_dict({"store": {"queue_size": 100}}, env={})
    waits = 0
    flush = StoreWriter.flush

    async def counting_flush(self: StoreWriter) -> None:
        nonlocal waits
        waits += 1
        assert self.backlog <= 100, "the writer's queue outgrew queue_size"
        await flush(self)

    monkeypatch.setattr(StoreWriter, "flush", counting_flush)
    started = time.perf_counter()
    summary = asyncio.run(run_replay(rec, settings, url, warmup_s=WARMUP_S))
    elapsed = time.perf_counter() - started
    print(f"\n24 h replay, queue_size 100: {summary.events} events in {elapsed:.1f} s, {waits} waits for the store")

    db = tmp_path / "day.db"
    assert summary.events == len(stamps) == DAY_S
    assert not summary.halted, summary.halt_reason
    assert _sql(db, "SELECT action, kind, reason FROM risk_events WHERE action IN ('pause', 'halt')") == []
    # One sampled row per sample_interval (1 s) of event time once the signals are warm: the
    # first event opens the first 1 s step, each later event closes one, and the detector
    # samples from the first step after the warm-up's WARMUP_S steps on, on every event (one a second).
    step_s = 1
    warmup_steps = math.ceil(WARMUP_S / step_s)
    expected = len(stamps) - 1 - warmup_steps
    assert _sql(db, "SELECT count(*) FROM signals WHERE kind = 'sample'") == [(expected,)]
    # the backpressure was exercised: ~one wait per 50 records (half the queue), never a backlog report
    assert waits >= expected // 50 // 2, waits
    run = asyncio.run(_runs(url))[0]
    assert (dt_to_ms(run["started_at"]), dt_to_ms(run["ended_at"])) == (stamps[0], stamps[-1])
    assert (run["status"], run["end_reason"]) == ("ended", None)


# --------------------------------------------------------------------------- (b) 20x the real BTC recording


def _repeat_recording(src: Path, dst: Path, times: int) -> tuple[int, int, int]:
    """``times`` copies of ``src`` back to back, each shifted to start 1 s after the previous one
    ended (every copy starts with its snapshot). Returns (events, first ts, last ts)."""
    with gzip.open(src, "rb") as f:
        header, *lines = f.read().splitlines()
    events = [orjson.loads(line) for line in lines if line.strip()]
    first = events[0]["ts"]
    span = max(e["ts"] for e in events) - first + 1000
    n = 0
    last = first
    with gzip.open(dst, "wb", compresslevel=1) as out:
        out.write(header + b"\n")
        for r in range(times):
            shift = r * span
            chunk = []
            for e in events:
                e2 = dict(e)
                e2["ts"] = e["ts"] + shift
                if "recv" in e2:
                    e2["recv"] = e["recv"] + shift
                chunk.append(orjson.dumps(e2))
                last = e2["ts"]
            out.write(b"\n".join(chunk) + b"\n")
            n += len(chunk)
    return n, first, last


@pytest.mark.slow
def test_twenty_times_the_btc_recording_replays_without_a_store_halt(
        tmp_path: Path, real_recordings: dict[str, Path]) -> None:
    """3.6 h of market time at the default queue_size (10 000): the old engine paused at
    ~2.7 h and halted 120 s later. ``BOT_TEST_REPLAY_REPEAT`` changes the repeat count."""
    times = int(os.environ.get("BOT_TEST_REPLAY_REPEAT", "20"))
    rec = tmp_path / f"btc_x{times}.jsonl.gz"
    n, first, last = _repeat_recording(real_recordings["btcusdt"], rec, times)
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    started = time.perf_counter()
    summary = asyncio.run(run_replay(rec, settings_from_dict({}, env={}), url))
    elapsed = time.perf_counter() - started
    print(f"\n{times}x BTC: {n} events, {(last - first) / 3.6e6:.2f} h of market time, replayed in {elapsed:.1f} s")
    assert summary.events == n
    assert not summary.halted, summary.halt_reason
    db = tmp_path / "x.db"
    assert _sql(db, "SELECT action, kind, reason FROM risk_events WHERE action IN ('pause', 'halt')") == []
    run = asyncio.run(_runs(url))[0]
    assert (dt_to_ms(run["started_at"]), dt_to_ms(run["ended_at"]), run["status"]) == (first, last, "ended")
    # sampled rows run to the end of the recording (one a second), not to a halt
    last_sample = _sql(db, "SELECT max(ts) FROM signals WHERE kind = 'sample'")[0][0]
    assert last - _text_ms(last_sample) <= 1000, (last_sample, last)


# --------------------------------------------------------------------------- (c) market time


def test_replay_runs_start_and_end_at_the_recordings_event_times(tmp_path: Path) -> None:
    rec = tmp_path / "short.jsonl"
    stamps = _sparse_day(rec, seconds=300)
    url = f"sqlite+aiosqlite:///{tmp_path / 't.db'}"
    settings = settings_from_dict({}, env={})
    for _ in range(2):
        asyncio.run(run_replay(rec, settings, url, warmup_s=WARMUP_S))
    runs = asyncio.run(_runs(url))
    assert [(dt_to_ms(r["started_at"]), dt_to_ms(r["ended_at"]), r["mode"], r["status"]) for r in runs] == \
        [(stamps[0], stamps[-1], "replay", "ended")] * 2


# --------------------------------------------------------------------------- (d) a bad line in the middle


def test_a_bad_line_mid_recording_fails_the_run_and_leaves_no_open_order(tmp_path: Path) -> None:
    rec = tmp_path / "synthetic.jsonl"
    write_synthetic_recording(rec, seconds=240, seed=11, pressure=True)
    settings = settings_from_dict(TRADING, env={})
    # A clean replay shows where an order is working: the bad line goes right after that event.
    working: list[tuple[int, int]] = []

    def on_status(status: dict[str, Any]) -> None:
        if not working and any(o["status"] == "acked" for o in status["open_orders"]):
            working.append((status["counts"]["events"], status["ts"]))

    asyncio.run(run_replay(rec, settings, f"sqlite+aiosqlite:///{tmp_path / 'clean.db'}", on_status=on_status))
    assert working, "no order was ever working in the clean replay"
    events_before, ts_before = working[0]
    lines = rec.read_bytes().splitlines()
    bad_line_no = 1 + events_before + 1  # the header, the events replayed, then the bad line
    lines.insert(bad_line_no - 1, b'{"type": "delta", "ts": oops}')
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\n".join(lines) + b"\n")
    cfg = tmp_path / "bot.toml"
    cfg.write_text(TRADING_TOML)
    db = tmp_path / "bad.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}
    r = subprocess.run([sys.executable, "-m", "bot", "replay", str(bad), "--config", str(cfg),
                        "--db", f"sqlite+aiosqlite:///{db}"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 1, r.stderr[-2000:]
    err = [line for line in r.stderr.splitlines() if not line.startswith("{")]
    assert len(err) == 1, r.stderr[-2000:]
    assert err[0].startswith(f"replay failed: {bad}:{bad_line_no}: invalid JSON"), err[0]
    assert "run 1 marked failed" in err[0]

    (status, reason, ended_at), = _sql(db, "SELECT status, end_reason, ended_at FROM runs")
    assert status == "failed" and reason.startswith(f"{bad}:{bad_line_no}:"), reason
    assert ended_at == _ms_text(ts_before), (ended_at, ts_before)  # the last event replayed
    orders = _sql(db, "SELECT client_id, status FROM orders")
    assert orders, "the failed run placed no order"
    assert [o for o in orders if o[1] in OPEN] == [], orders
    # the order working at the failure was cancelled by the failure's clean-up
    assert _sql(db, "SELECT count(*) FROM order_events WHERE status = 'cancelled' AND ts >= ?",
                _ms_text(ts_before))[0][0] >= 1


def _ms_text(ms: int) -> str:
    """A time as SQLite stores it (UTC text)."""
    return ms_to_dt(ms).strftime("%Y-%m-%d %H:%M:%S.%f")


def _text_ms(stored: str) -> int:
    return dt_to_ms(datetime.fromisoformat(stored).replace(tzinfo=UTC))


# --------------------------------------------------------------------------- (e) the run's own summary


async def _run_sums(url: str, run_id: int) -> tuple[int, Decimal, Decimal]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(text(
                "SELECT count(*), coalesce(sum(realized_pnl), 0), coalesce(sum(fee_quote), 0) FROM fills "
                "WHERE run_id = :r"), {"r": run_id})).one()
    finally:
        await engine.dispose()
    scale = Decimal(10**8) if url.startswith("sqlite") else Decimal(1)  # SQLite: integer 1e-8 units
    return int(row[0]), Decimal(row[1]) / scale, Decimal(row[2]) / scale


def test_a_replay_summary_and_report_count_only_their_run(tmp_path: Path) -> None:
    rec = tmp_path / "synthetic.jsonl.gz"
    write_synthetic_recording(rec, seconds=240, seed=11, pressure=True)
    url = f"sqlite+aiosqlite:///{tmp_path / 'two.db'}"
    settings = settings_from_dict(TRADING, env={})
    first = asyncio.run(run_replay(rec, settings, url))
    second = asyncio.run(run_replay(rec, settings, url))
    assert (first.run_id, second.run_id) == (1, 2)
    assert first.fills > 0
    # the same simulation, run twice: the second run's numbers are its own, equal to the first's
    for s in (first, second):
        fills, realized, fees = asyncio.run(_run_sums(url, s.run_id))
        assert (s.fills, s.realized_pnl, s.fees) == (fills, realized, fees)
    assert (second.orders, second.fills, second.position, second.realized_pnl, second.fees) == \
        (first.orders, first.fills, first.position, first.realized_pnl, first.fees)
    assert second.start_position == 0
    report = asyncio.run(collect(url, run_id=2))
    assert report.scope == "run 2" and [r["id"] for r in report.runs] == [2]
    assert {t_["run_id"] for t_ in report.trades} == {2}
    assert sum(int(d["trade_count"]) for d in report.daily) == second.fills
    assert sum(Decimal(str(d["realized_pnl"])) for d in report.daily).quantize(Decimal("1e-8")) == \
        second.realized_pnl.quantize(Decimal("1e-8"))
    everything = asyncio.run(collect(url))
    assert sum(int(d["trade_count"]) for d in everything.daily) == first.fills + second.fills


def _paper_settings(url: str) -> Settings:
    return settings_from_dict({"store": {"url": url}, "strategy": {"cost_gate": False, "aggressive_z": 3.0},
                               "risk": {"max_position": 0.008, "max_order_notional": 1000}}, env={})


async def _paper_process(url: str, t0: int, mid: float, direction: Direction) -> Any:
    """One `bot run`/`bot demo` process in paper mode, built as ``LiveRunner.run`` builds it (the
    scope's stored fills loaded into the ledger), that takes one signal and trades it."""
    settings = _paper_settings(url)
    clock = SimulatedClock(t0)
    engine, run_id = await open_store(settings, "paper", t0)
    scope = {"mode": settings.mode, "venue": settings.venue}
    fills = await queries.load_fills(engine, settings.exchange.account, settings.symbol, **scope)
    ref: list[TradingCore] = []
    writer = _writer(settings, engine, run_id, ref)
    core = TradingCore(settings, clock=clock, broker=live_paper_broker(settings, clock, run_id, fills),
                       writer=writer, run_id=run_id, rules=MarketRules.binance_spot(settings.symbol),
                       fills=fills, warmup_s=0.0, position_floor=Decimal(0))
    ref.append(core)
    await writer.start()
    await core.broker.start()
    core.state = "trading"

    def book(ts: int, seq: int) -> Any:
        bids = [(mid - 0.5 - i, 1.0) for i in range(5)]
        asks = [(mid + 0.5 + i, 1.0) for i in range(5)]
        return (BookSnapshot if seq == 1 else BookDelta)(ts=ts, bids=bids, asks=asks, seq=seq, recv=ts)

    await core.on_event(book(t0, 1))
    z = 4.0 if direction is Direction.LONG else -4.0
    core._on_detector(ImbalanceSignal(ts=t0, direction=direction, strength=z, components={"ofi": z}, kind="entry"),
                      core.book.mid())
    await core.decide(t0)
    for i in range(2, 5):
        await core.on_event(book(t0 + 100 * i, i))
    summary = core.summary(1.0)
    await writer.close()
    await queries.end_run(engine, run_id, clock.now_ms())
    await engine.dispose()
    return summary


def test_a_paper_run_summary_counts_only_its_run(tmp_path: Path) -> None:
    """The live paper path (`bot run`, `bot demo`): the ledger carries earlier runs' fills, the
    summary counts this run's fills, PnL and fees only."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'paper.db'}"
    one = asyncio.run(_paper_process(url, T0, 60_000.0, Direction.LONG))
    assert one.fills >= 1 and one.position > 0 and one.fees > 0
    two = asyncio.run(_paper_process(url, T0 + 60_000, 60_100.0, Direction.SHORT))
    assert two.start_position == one.position  # the ledger went on from run 1
    assert two.fills >= 1 and two.position == 0 and two.realized_pnl > 0
    for s in (one, two):
        assert (s.fills, s.realized_pnl, s.fees) == asyncio.run(_run_sums(url, s.run_id))
    assert two.lines()[2].startswith(f"position 0 ({one.position.normalize()} at the run's start), realised PnL ")


# --------------------------------------------------------------------------- exit codes of `bot replay`


def test_bot_replay_exits_1_with_the_reason_when_its_risk_rules_halt_it(tmp_path: Path) -> None:
    rec = tmp_path / "synthetic.jsonl.gz"
    write_synthetic_recording(rec, seconds=240, seed=11, pressure=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}
    results = {}
    for name, extra in (("ok", ""), ("halt", "max_daily_loss = 0.5\n")):
        cfg = tmp_path / f"{name}.toml"
        cfg.write_text(TRADING_TOML.replace("[risk]\n", f"[risk]\n{extra}"))
        db = tmp_path / f"{name}.db"
        r = subprocess.run([sys.executable, "-m", "bot", "replay", str(rec), "--config", str(cfg),
                            "--db", f"sqlite+aiosqlite:///{db}"], capture_output=True, text=True, timeout=120, env=env)
        err = [line for line in r.stderr.splitlines() if not line.startswith("{")]
        results[name] = (r, err, _sql(db, "SELECT status, end_reason FROM runs"))
    r, err, runs = results["ok"]
    assert (r.returncode, err, runs) == (0, [], [("ended", None)]), r.stderr[-2000:]
    assert next(line for line in r.stdout.splitlines() if not line.startswith("{")).startswith("run 1: ")
    r, err, runs = results["halt"]
    assert r.returncode == 1, r.stderr[-2000:]
    assert len(err) == 1 and err[0].startswith("replay halted by the risk engine (max_daily_loss): daily loss "), err
    assert err[0].endswith("(run 1)") and "reached max_daily_loss 0.5" in err[0]
    assert "HALTED: daily loss" in r.stdout  # the summary is printed all the same
    assert runs[0][0] == "halted" and runs[0][1].startswith("max_daily_loss: daily loss ")
