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
from collections.abc import Callable

import pytest

from drills.audit import AuditResult, audit, wait_for
from drills.conftest import SECRET, Drill

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("BOT_DRILL_KILLS", "5"))
SEED = int(os.environ.get("BOT_DRILL_SEED", "20261125"))


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


def _finish(d: Drill, name: str, *, expect_rc: int | None = 0) -> AuditResult:
    """SIGTERM, the audit and the secret search; the common end of every drill."""
    rc = d.bot.terminate() if d.bot.alive() else d.bot.proc.returncode if d.bot.proc else None
    if expect_rc is not None:
        assert rc == expect_rc, f"exit code {rc}:\n{d.bot.text()[-3000:]}"
    result = audit(name, d.emu, d.db)
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


@pytest.mark.xfail(strict=False, reason=(
    "bug seen: after a 418 the bot stops with an order PARTIALLY_FILLED on the exchange and that fill "
    "missing from the store (engine LiveRunner._main catches ExchangeHalted and shuts down without "
    "booking fills that arrive after the ban); not strict: depends on whether an order is live at the ban"))
def test_drill_418_ban_halts_and_sends_nothing_more(drill: Callable[..., Drill]) -> None:
    d = drill(warmup="4s")
    d.bot.start()
    _ready(d)
    wait_for(lambda: _our_orders(d) > 0 or not d.bot.alive(), 30, "the first order")
    d.emu.set_faults("rest_418=1000,retry_after=60s")
    wait_for(lambda: not d.bot.alive() or d.bot.count("exchange_halted") + d.bot.count("risk_halt") > 0,
             30, "the bot to halt on 418")
    d.emu.set_faults("")
    before = _our_orders(d)
    time.sleep(6)
    assert _our_orders(d) == before, "orders were sent after the 418 ban"
    _finish(d, "418_ban", expect_rc=None)


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
