"""The engine end to end: deterministic replay, `bot run` under systemd's notify protocol, `bot demo`."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from bot.config import settings_from_dict
from bot.engine import run_replay
from bot.market.synthetic import write_synthetic_recording

from helpers import json_lines

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tables(db: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    con = sqlite3.connect(db)
    try:
        orders = con.execute(
            "SELECT client_id, side, type, price, amount, status, filled, reason, signal_strength "
            "FROM orders ORDER BY client_id"
        ).fetchall()
        fills = con.execute(
            "SELECT trade_id, client_id, side, price, amount, fee, fee_currency, liquidity, ts "
            "FROM fills ORDER BY trade_id"
        ).fetchall()
    finally:
        con.close()
    return orders, fills


REPLAY_SETTINGS = {
    "signals": {"window": "5s", "halflife": "30s"},
    "strategy": {"entry_z": 1.5, "exit_z": 0.3, "persistence": 2, "max_hold": "20s", "cost_gate": False},
    "risk": {"max_order_notional": 3000},
    "paper": {"balances": {"USDT": 10000, "BTC": 0.05}},
}


@pytest.mark.slow
def test_replay_is_deterministic_and_trades(tmp_path: Path) -> None:
    rec = tmp_path / "synthetic.jsonl.gz"
    write_synthetic_recording(rec, seconds=240, seed=11, pressure=True)
    settings = settings_from_dict(REPLAY_SETTINGS, env={})
    results = []
    for name in ("a", "b"):
        db = tmp_path / f"{name}.db"
        summary = asyncio.run(run_replay(rec, settings, f"sqlite+aiosqlite:///{db}", warmup_s=20))
        results.append((summary, _tables(db)))
    (s1, (orders1, fills1)), (s2, (orders2, fills2)) = results
    assert s1.events == s2.events > 2000
    assert fills1, "the strategy placed no filled order on a recording with injected pressure"
    assert orders1 == orders2
    assert fills1 == fills2
    # The store and the engine agree on the position, to the exact decimal.
    # (SQLite keeps money as integer units of 1e-8, see docs/sql.md)
    signed = sum((Decimal(f[4]) if f[2] == "buy" else -Decimal(f[4])) for f in fills1) / Decimal(10**8)
    assert s1.position == signed
    # Nothing left working at the end of the recording.
    assert all(o[5] in ("filled", "cancelled", "rejected", "expired") for o in orders1)


def test_replay_real_recording(tmp_path: Path, real_recordings: dict[str, Path]) -> None:
    db = tmp_path / "real.db"
    settings = settings_from_dict({}, env={})
    summary = asyncio.run(run_replay(real_recordings["btcusdt"], settings, f"sqlite+aiosqlite:///{db}"))
    assert summary.events == 1 + 6493 + 19903
    orders, fills = _tables(db)
    assert summary.orders == len(orders)
    assert summary.fills == len(fills)
    con = sqlite3.connect(db)
    try:
        runs = con.execute("SELECT mode, symbol FROM runs").fetchall()
        n_signals = con.execute("SELECT count(*) FROM signals").fetchone()[0]
    finally:
        con.close()
    assert runs == [("replay", "BTC/USDT")]
    assert n_signals > 0  # sampled rows at least


def _start_emulator(port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "emulator", "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("emulator did not start")


@pytest.mark.slow
def test_bot_run_notifies_ready_watchdog_stopping(tmp_path: Path) -> None:
    port = _free_port()
    emu = _start_emulator(port)
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(1.0)
    cfg = tmp_path / "bot.toml"
    cfg.write_text(
        f'mode = "paper"\nsymbol = "BTC/USDT"\n[exchange]\nurl = "http://127.0.0.1:{port}"\n'
        f'[store]\nurl = "sqlite+aiosqlite:///{tmp_path / "run.db"}"\n'
    )
    cfg.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}
    env.update(NOTIFY_SOCKET=sock_path, WATCHDOG_USEC="2000000")
    bot = subprocess.Popen([sys.executable, "-m", "bot", "run", "--config", str(cfg)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    got: list[str] = []
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not ("READY=1" in " ".join(got) and any(m == "WATCHDOG=1" for m in got)):
            try:
                got.append(sock.recv(4096).decode())
            except TimeoutError:
                assert bot.poll() is None, bot.stderr.read() if bot.stderr else ""
        assert any(m.startswith("READY=1") for m in got), got
        assert "WATCHDOG=1" in got, got
        t0 = time.monotonic()
        bot.send_signal(signal.SIGTERM)
        code = bot.wait(timeout=15)
        elapsed = time.monotonic() - t0
        while True:
            try:
                got.append(sock.recv(4096).decode())
            except (TimeoutError, BlockingIOError):
                break
    finally:
        if bot.poll() is None:
            bot.kill()
        emu.terminate()
        emu.wait(timeout=10)
        sock.close()
    assert code == 0, bot.stderr.read() if bot.stderr else ""
    assert elapsed < 10
    kinds = [m.split("\n")[0].split("=")[0] for m in got]
    first_ready = kinds.index("READY")
    first_wd = kinds.index("WATCHDOG")
    stopping = kinds.index("STOPPING")
    assert first_ready < first_wd < stopping
    assert stopping == len(kinds) - 1
    con = sqlite3.connect(tmp_path / "run.db")
    try:
        row = con.execute("SELECT mode, symbol, ended_at IS NOT NULL FROM runs").fetchone()
    finally:
        con.close()
    assert row == ("paper", "BTC/USDT", 1)


def _events(path: Path) -> list[dict[str, object]]:
    return json_lines(path.read_text(errors="replace"))


def _wait_event(path: Path, bot: subprocess.Popen[str], event: str, n: int = 1, timeout: float = 40) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in _events(path) if e.get("event") == event]
        if len(found) >= n:
            return found[n - 1]
        assert bot.poll() is None, path.read_text()[-3000:]
        time.sleep(0.1)
    raise AssertionError(f"no {event!r} within {timeout} s:\n{path.read_text()[-3000:]}")


def test_sighup_reloads_risk_limits_and_keeps_them_on_a_bad_file(tmp_path: Path) -> None:
    port = _free_port()
    emu = _start_emulator(port)
    cfg = tmp_path / "bot.toml"
    base = (f'mode = "paper"\nsymbol = "BTC/USDT"\n[exchange]\nurl = "http://127.0.0.1:{port}"\n'
            f'[store]\nurl = "sqlite+aiosqlite:///{tmp_path / "run.db"}"\n')
    cfg.write_text(base + "[risk]\nmax_position = 0.05\n")
    cfg.chmod(0o600)
    out = tmp_path / "bot.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}
    with out.open("w") as fh:
        bot = subprocess.Popen([sys.executable, "-m", "bot", "run", "--config", str(cfg)],
                               stdout=fh, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        _wait_event(out, bot, "ready")
        cfg.write_text(base + "[risk]\nmax_position = 0.02\nmax_open_orders = 2\n")
        bot.send_signal(signal.SIGHUP)
        ev = _wait_event(out, bot, "risk_limits_reloaded")
        assert (ev["max_position"], ev["max_open_orders"]) == ("0.02", "2")
        cfg.write_text(base + "[risk]\nmax_position = -1\n")
        bot.send_signal(signal.SIGHUP)
        bad = _wait_event(out, bot, "reload_failed")
        assert "risk.max_position" in str(bad["error"]) and bad["kept"] == "previous risk limits"
        assert bot.poll() is None, "a bad file on SIGHUP must not stop the bot"
        bot.send_signal(signal.SIGTERM)
        assert bot.wait(timeout=15) == 0
    finally:
        if bot.poll() is None:
            bot.kill()
        emu.terminate()
        emu.wait(timeout=10)


def test_live_needs_three_confirmations(tmp_path: Path) -> None:
    cfg = tmp_path / "live.toml"
    cfg.write_text('mode = "live"\n[exchange]\nsandbox = false\naccount = "desk1"\n')
    cfg.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}
    env.update(BOT_API_KEY="k-123456", BOT_API_SECRET="s-123456")
    r = subprocess.run([sys.executable, "-m", "bot", "run", "--config", str(cfg)],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 78
    assert 'mode: "live" trades real money; add --live on the command line to confirm' in r.stderr
    assert "BOT_LIVE_CONFIRM: must equal [exchange] account ('desk1') to trade live" in r.stderr
    assert "s-123456" not in r.stdout + r.stderr
    paper = tmp_path / "paper.toml"
    paper.write_text('mode = "paper"\n')
    paper.chmod(0o600)
    r = subprocess.run([sys.executable, "-m", "bot", "run", "--config", str(paper), "--live"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 78
    assert '--live: given, but the config says mode = "paper"' in r.stderr


@pytest.mark.slow
def test_demo_runs_offline_and_leaves_a_queryable_db(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}
    env["COLUMNS"] = "200"
    r = subprocess.run(
        [sys.executable, "-m", "bot", "demo", "--seconds", "30", "--db", f"sqlite+aiosqlite:///{db}"],
        capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    for section in ("Runs", "Trades", "Daily PnL", "Risk events"):
        assert section in r.stdout
    con = sqlite3.connect(db)
    try:
        runs = con.execute("SELECT mode, account FROM runs").fetchall()
        trades = con.execute("SELECT count(*) FROM v_trades").fetchone()[0]
        n_sig = con.execute("SELECT count(*) FROM signals").fetchone()[0]
    finally:
        con.close()
    assert runs == [("paper", "demo")]
    assert n_sig > 0
    assert trades >= 1, r.stdout[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize(("fee_bps", "trades"), [(50.0, False), (0.0, True)])
def test_cost_gate_blocks_entries_when_fees_exceed_the_edge(tmp_path: Path, fee_bps: float, trades: bool) -> None:
    rec = tmp_path / "synthetic.jsonl.gz"
    write_synthetic_recording(rec, seconds=240, seed=11, pressure=True)
    cfg = {**REPLAY_SETTINGS,
           "strategy": {**REPLAY_SETTINGS["strategy"], "cost_gate": True},
           "paper": {**REPLAY_SETTINGS["paper"], "taker_fee_bps": fee_bps, "maker_fee_bps": fee_bps}}
    settings = settings_from_dict(cfg, env={})
    db = tmp_path / "gate.db"
    summary = asyncio.run(run_replay(rec, settings, f"sqlite+aiosqlite:///{db}", warmup_s=20))
    con = sqlite3.connect(db)
    try:
        entries = con.execute("SELECT count(*) FROM orders WHERE reason LIKE 'entry%'").fetchone()[0]
        skipped = con.execute("SELECT count(*) FROM signals WHERE kind = 'skipped_for_cost'").fetchone()[0]
    finally:
        con.close()
    assert summary.signals > 0
    if trades:
        assert entries > 0 and summary.fills > 0
        assert skipped == summary.extra["skipped_for_cost"]
    else:
        assert entries == 0 and summary.fills == 0
        assert skipped == summary.extra["skipped_for_cost"] > 0
