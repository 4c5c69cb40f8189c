"""Fault drills: the real bot against the emulator misbehaving on purpose, each ending with the audit.

Each drill: start the emulator and ``bot run`` (testnet mode) as subprocesses, wait until the bot
is ready, switch a fault on at run time (``POST /_emulator/faults``), let it trade through the
fault, switch it off, SIGTERM (exit 0 expected), then audit store against exchange and search
the whole output for the API secret. The crash drill is the engine's kill -9 acceptance test:
``BOT_DRILL_KILLS=20 pytest tests/drills -k crash`` runs it with 20 kills instead of 5.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from drills.audit import AuditResult, audit, wait_for
from drills.conftest import SECRET, Drill
from drills.dbfaults import SqliteLock, TcpRelay, pg_admin, pg_fill_rows

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("BOT_DRILL_KILLS", "5"))
SEED = int(os.environ.get("BOT_DRILL_SEED", "20261125"))
DB_OUTAGE_S = float(os.environ.get("BOT_DRILL_DB_OUTAGE", "30"))
PG_URL = os.environ.get("BOT_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


def _ready(d: Drill, runs: int = 1, timeout: float = 30) -> None:
    wait_for(lambda: d.bot.count("ready") >= runs or not d.bot.alive(), timeout, "the bot's ready event")
    assert d.bot.alive(), f"bot exited before ready:\n{d.bot.text()[-3000:]}"


def _trading(d: Drill) -> None:
    """Ready and past warm-up: the first order reached the exchange, so the fault hits a trading bot."""
    _ready(d)
    wait_for(lambda: len(d.emu.orders()) > 0 or not d.bot.alive(), 40, "the first order")
    assert d.bot.alive(), d.bot.text()[-3000:]


def _our_orders(d: Drill) -> int:
    return len(d.emu.orders())


def _finish(d: Drill, name: str, *, expect_rc: int | None = 0,
            pg_rows: Callable[[], list[tuple[Any, ...]]] | None = None) -> AuditResult:
    """SIGTERM, the audit and the secret search; the common end of every drill."""
    rc = d.bot.terminate() if d.bot.alive() else d.bot.proc.returncode if d.bot.proc else None
    if expect_rc is not None:
        assert rc == expect_rc, f"exit code {rc}:\n{d.bot.text()[-3000:]}"
    result = audit(name, d.emu, d.db, pg_rows=pg_rows() if pg_rows is not None else None)
    everything = d.bot.text() + d.emu.log_path.read_text(errors="replace")
    assert SECRET not in everything, f"{name}: the API secret appears in the output"
    result.assert_clean()
    return result


def _run_fault(d: Drill, spec: str, seconds: float) -> None:
    d.emu.set_faults(spec)
    time.sleep(seconds)
    d.emu.set_faults("")


def test_crash_drill_kill9_and_restart(drill: Callable[..., Drill]) -> None:
    """SIGKILL at seeded random moments while orders are live; restart each time; then SIGTERM."""
    rng = random.Random(SEED)
    d = drill(warmup="4s")
    killed_idle = 0
    for _ in range(KILLS):
        d.bot.start()
        run_id = d.bot.starts  # one runs row per process start, so the run id counts starts
        prefix = f"ofi-{run_id}-"
        try:
            wait_for(lambda p=prefix: any(o["clientOrderId"].startswith(p) for o in d.emu.open_orders())  # type: ignore[misc]
                     or not d.bot.alive(), 25, f"a live order of run {run_id}")
            time.sleep(rng.uniform(0.0, 1.5))
        except AssertionError:
            killed_idle += 1  # no order went live (e.g. at max position): kill anyway, still a crash
        assert d.bot.alive(), d.bot.text()[-3000:]
        d.bot.kill()
    d.bot.start()
    wait_for(lambda: d.bot.count("reconciled") >= KILLS + 1 or not d.bot.alive(), 30, "the final reconcile")
    time.sleep(3)
    result = _finish(d, f"crash x{KILLS} ({KILLS - killed_idle} with live orders)")
    assert result.fills_checked > 0


def test_drill_ws_drop_every_5s(drill: Callable[..., Drill]) -> None:
    d = drill(warmup="4s")
    d.bot.start()
    _trading(d)
    _run_fault(d, "ws_drop_every=5s", 12)
    time.sleep(2)
    _finish(d, "ws_drop_every_5s")
    assert d.bot.count("ws_down") > 0
    halts = [e for e in d.bot.events() if e.get("event") == "risk_halt"]
    assert not halts, f"the bot halted on a websocket reconnect: {halts[0]}"


def test_drill_rest_5xx_10pct(drill: Callable[..., Drill]) -> None:
    d = drill(warmup="4s")
    d.bot.start()
    _trading(d)
    _run_fault(d, "rest_5xx=0.1,seed=3", 15)
    time.sleep(3)
    _finish(d, "rest_5xx_10pct")
    assert _our_orders(d) > 0


def test_drill_429_storm_with_retry_after(drill: Callable[..., Drill]) -> None:
    d = drill(warmup="4s")
    d.bot.start()
    _trading(d)
    _run_fault(d, "rest_429=0.5,retry_after=2s,seed=5", 12)
    time.sleep(3)
    _finish(d, "429_storm")


def test_drill_accept_then_timeout_on_create_and_cancel(drill: Callable[..., Drill]) -> None:
    d = drill(warmup="4s")
    d.bot.start()
    _trading(d)
    _run_fault(d, "accept_then_timeout=2,cancel_accept_then_timeout=2", 15)
    time.sleep(3)
    _finish(d, "accept_then_timeout")
    assert _our_orders(d) > 0


def test_drill_exchange_rejections(drill: Callable[..., Drill]) -> None:
    """-2010 rejections (what insufficient balance looks like) and orders below min-notional."""
    d = drill(warmup="4s")
    d.bot.start()
    _trading(d)
    _run_fault(d, "reject_orders=3", 15)
    time.sleep(2)
    _finish(d, "rejections")
    rejected = [e for e in d.bot.events() if e.get("event") == "order_status" and e.get("status") == "rejected"]
    if not rejected:
        pytest.skip("the bot sent no order while rejections were on (no signal in 15 s)")


def test_drill_min_notional_never_sent(drill: Callable[..., Drill]) -> None:
    """max_order_notional below the exchange's 5 USDT minimum: every order is refused locally."""
    d = drill(warmup="4s", max_notional="4")
    d.bot.start()
    _ready(d)
    time.sleep(12)
    _finish(d, "min_notional")
    assert _our_orders(d) == 0


def test_drill_418_ban_halts_then_cleans_up_after_the_ban(drill: Callable[..., Drill]) -> None:
    """A 418 with Retry-After 6 s: a persisted halt at once, nothing sent during the ban, then
    only the clean-up (open orders cancelled, fills fetched); no new order ever after."""
    d = drill(warmup="4s")
    d.bot.start()
    _trading(d)
    d.emu.set_faults("rest_418=1000,retry_after=6s")
    wait_for(lambda: not d.bot.alive() or any(e.get("event") == "risk_halt" and e.get("kind") == "exchange_ban"
                                              for e in d.bot.events()), 30, "the bot to halt on 418")
    assert d.bot.alive(), f"a ban is a halt, not a crash:\n{d.bot.text()[-3000:]}"
    d.emu.set_faults("")
    before = {o["clientOrderId"] for o in d.emu.orders()}
    wait_for(lambda: d.bot.count("after_ban_cleanup") >= 1 or not d.bot.alive(), 30, "the clean-up after the ban")
    time.sleep(3)
    new = {o["clientOrderId"] for o in d.emu.orders()} - before
    assert not new, f"orders were sent after the 418 ban: {sorted(new)}"
    assert not d.emu.open_orders(), "the clean-up after the ban left orders open"
    _finish(d, "418_ban")


def test_drill_sigterm_during_partial_fill(drill: Callable[..., Drill]) -> None:
    d = drill(warmup="4s")
    d.bot.start()
    _ready(d)
    try:
        wait_for(lambda: any(o["status"] == "PARTIALLY_FILLED" for o in d.emu.orders()) or not d.bot.alive(),
                 30, "a partially filled order", step=0.05)
    except AssertionError:
        d.bot.terminate()
        pytest.skip("no partial fill on the exchange within 30 s (the synthetic market decides)")
    _finish(d, "sigterm_partial_fill")


def test_drill_sequence_gap_resyncs_the_book(drill: Callable[..., Drill]) -> None:
    """Withheld depth diffs: ccxt sees the gap, the feed resyncs from a snapshot, trading goes on."""
    d = drill(warmup="4s")
    d.bot.start()
    _trading(d)
    _run_fault(d, "ws_gap=3", 3)
    wait_for(lambda: d.bot.count("feed_unhealthy") >= 1 or not d.bot.alive(), 20, "the gap reported by the feed")
    wait_for(lambda: d.bot.count("feed_snapshot") >= 2 or not d.bot.alive(), 30, "a resync snapshot after the gap")
    assert d.bot.alive(), d.bot.text()[-3000:]
    _finish(d, "sequence_gap")


def test_drill_stream_frozen_past_stale_after(drill: Callable[..., Drill]) -> None:
    """No book update for longer than stale_after: book marked stale, resync requested, recovery."""
    d = drill(warmup="4s")
    d.bot.start()
    _trading(d)
    _run_fault(d, "ws_freeze=8s", 9)
    wait_for(lambda: d.bot.count("book_stale") >= 1 or not d.bot.alive(), 20, "the stale book reported")
    wait_for(lambda: d.bot.count("feed_snapshot") >= 2 or not d.bot.alive(), 30, "a resync snapshot after the freeze")
    assert d.bot.alive(), d.bot.text()[-3000:]
    assert not any(e.get("event") == "risk_halt" for e in d.bot.events()), "a frozen stream must not halt"
    _finish(d, "stream_frozen")


def test_drill_exchange_clock_skew_beyond_recv_window(drill: Callable[..., Drill]) -> None:
    """The exchange clock jumps 20 s ahead (then back): -1021 on signed requests, the bot
    re-measures the offset each time and goes on trading; nothing sent twice."""
    d = drill(warmup="4s")
    d.bot.start()
    _trading(d)
    before = _our_orders(d)
    _run_fault(d, "clock_skew=20s", 12)
    time.sleep(6)
    _finish(d, "clock_skew")
    resyncs = [e for e in d.bot.events() if e.get("event") == "time_resync"]
    assert len(resyncs) >= 2, f"expected a resync on the skew and one when it ended: {resyncs}"
    assert any(-21000 < int(e["offset_ms"]) < -19000 for e in resyncs), resyncs
    assert not any(e.get("event") == "risk_halt" for e in d.bot.events()), "a clock skew must not halt"
    assert _our_orders(d) >= before


def _through_store_outage(d: Drill, down: Callable[[], None], up: Callable[[], None]) -> None:
    """Take the store away for DB_OUTAGE_S: the bot pauses new orders, holds its records, resumes."""
    _trading(d)
    down()
    t0 = time.monotonic()
    try:
        wait_for(lambda: d.bot.count("trading_paused") >= 1 or not d.bot.alive(), DB_OUTAGE_S,
                 "the pause on the unavailable store")
        assert d.bot.alive(), d.bot.text()[-3000:]
        time.sleep(1.0)  # an order already on its way when the store failed may still land
        sent_when_paused = _our_orders(d)
        time.sleep(max(0.0, DB_OUTAGE_S - (time.monotonic() - t0)))
        assert _our_orders(d) == sent_when_paused, "new orders were sent while the store was unavailable"
    finally:
        up()
    wait_for(lambda: d.bot.count("trading_resumed") >= 1 or not d.bot.alive(), 20, "trading to resume")
    assert d.bot.alive(), d.bot.text()[-3000:]
    halts = [e for e in d.bot.events() if e.get("event") == "risk_halt"]
    assert not halts, f"a {DB_OUTAGE_S:.0f} s store outage must pause, not halt: {halts[0]}"
    time.sleep(3)


def test_drill_sqlite_locked_by_another_writer(drill: Callable[..., Drill]) -> None:
    d = drill(warmup="4s")
    d.bot.start()
    lock = SqliteLock(d.db)
    _through_store_outage(d, lock.lock, lock.unlock)
    _finish(d, f"sqlite_locked_{DB_OUTAGE_S:.0f}s")


def test_drill_postgres_connection_refused(drill: Callable[..., Drill]) -> None:
    """The bot's PostgreSQL port starts refusing connections at run time (a relay in front of the
    real server is closed), then comes back."""
    name = f"drill_{uuid.uuid4().hex[:10]}"
    try:
        pg_admin(PG_URL, f"CREATE DATABASE {name}")
    except OSError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {exc} (set BOT_TEST_PG_URL or start the server)")
    u = urlsplit(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
    relay = TcpRelay(u.hostname or "127.0.0.1", u.port or 5432)
    relay.up()
    try:
        d = drill(warmup="4s", store_url=f"postgresql+asyncpg://{u.username or 'postgres'}@127.0.0.1:{relay.port}/{name}")
        d.bot.start()
        _through_store_outage(d, relay.down, relay.up)
        _finish(d, f"postgres_refused_{DB_OUTAGE_S:.0f}s", pg_rows=lambda: pg_fill_rows(PG_URL, name))
    finally:
        relay.down()
        pg_admin(PG_URL, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_drill_malformed_messages_stall_then_reconnect(drill: Callable[..., Drill]) -> None:
    """Invalid JSON on the market stream: ccxt's stream stops delivering; the stale guard asks for
    a resync, the feed fails the stalled connection after 5 s, resubscribes and gets a snapshot."""
    d = drill(warmup="4s")
    d.bot.start()
    _trading(d)
    _run_fault(d, "ws_malformed=3", 2)
    wait_for(lambda: d.bot.count("feed_snapshot") >= 2 or not d.bot.alive(), 30, "a snapshot after the stall")
    assert d.bot.alive(), d.bot.text()[-3000:]
    assert not any(e.get("event") == "risk_halt" for e in d.bot.events()), "a stalled stream must not halt"
    time.sleep(2)
    _finish(d, "malformed_messages")
