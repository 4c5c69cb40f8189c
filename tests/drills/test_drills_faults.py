"""Fault drills: the real bot against the emulator misbehaving on purpose, each ending with the audit.

Each drill: start the emulator and ``bot run`` (testnet mode) as subprocesses, wait until the bot
is trading (alternating pressure episodes in the emulator's market keep orders flowing), switch a
fault on at run time (``POST /_emulator/faults``), keep it on until the emulator reports that it
fired (counted faults are armed while orders are flowing), switch it off, SIGTERM (exit 0
expected), then the audit: store against exchange, the fault's hit count, the log lines that
explain it (each drill names them: ``expect_events``), and the API secret searched for in the
bot's output, the emulator log, the database and ``bot report``. The crash drill is the engine's
kill -9 acceptance test: 15 kills in CI (``.ci/run`` exports ``BOT_DRILL_KILLS=15``, about 116 s on
2 cores; 20 take about 130 s), 5 by default.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest

from bot.execution.client_ids import parse_client_id

from drills.audit import AuditResult, audit, bot_prefix, report_text, sqlite_dump, wait_for
from drills.conftest import SECRET, Drill
from drills.dbfaults import SqliteLock, TcpRelay, pg_admin, pg_fill_rows, pg_text_dump

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("BOT_DRILL_KILLS", "5"))
SEED = int(os.environ.get("BOT_DRILL_SEED", "20261125"))
DB_OUTAGE_S = float(os.environ.get("BOT_DRILL_DB_OUTAGE", "30"))
PG_URL = os.environ.get("BOT_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
STEP = Decimal("0.00001")  # BTC/USDT's lot step on the emulator


def _ready(d: Drill, runs: int = 1, timeout: float = 30) -> None:
    wait_for(lambda: d.bot.count("ready") >= runs or not d.bot.alive(), timeout, "the bot's ready event")
    assert d.bot.alive(), f"bot exited before ready:\n{d.bot.text()[-3000:]}"


def _trading(d: Drill) -> None:
    """Ready, past warm-up and trading: pressure episodes keep orders coming, the first one is in."""
    _ready(d)
    d.start_traffic()
    wait_for(lambda: len(d.emu.orders()) > 0 or not d.bot.alive(), 40, "the first order")
    assert d.bot.alive(), d.bot.text()[-3000:]


def _our_orders(d: Drill) -> int:
    return len(d.emu.orders())


def _hits(d: Drill, key: str) -> int:
    return d.emu.hits().get(key, 0)


def _emu_events(d: Drill, event: str) -> list[dict[str, Any]]:
    out = []
    for line in d.emu.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            e = json.loads(line)
            if e.get("event") == event:
                out.append(e)
    return out


def _no_secret(d: Drill, name: str, store_url: str, pg_database: str | None) -> None:
    """The API secret appears nowhere a person or a log shipper reads."""
    sources = {
        "the bot's output": d.bot.text(),
        "the emulator log": d.emu.log_path.read_text(errors="replace"),
        "the database": pg_text_dump(PG_URL, pg_database) if pg_database else sqlite_dump(d.db),
        "bot report": report_text(store_url, SECRET, d.workdir),
    }
    for where, text in sources.items():
        assert SECRET not in text, f"{name}: the API secret appears in {where}"


def _finish(d: Drill, name: str, *, expect_events: tuple[str, ...], expect_hits: tuple[str, ...] = (),
            expect_rc: int | None = 0, pg_database: str | None = None) -> AuditResult:
    """SIGTERM, the audit and the secret search; the common end of every drill.

    ``expect_events``: the log lines that explain the drill's fault (``"event field=value"``, see
    drills/audit.py), the same strings as the drill's row in docs/operations.md. ``expect_hits``:
    the emulator faults that must have fired.
    """
    d.stop_traffic()
    rc = d.bot.terminate() if d.bot.alive() else d.bot.proc.returncode if d.bot.proc else None
    if expect_rc is not None:
        assert rc == expect_rc, f"exit code {rc}:\n{d.bot.text()[-3000:]}"
    pg_rows = pg_fill_rows(PG_URL, pg_database) if pg_database else None
    result = audit(name, d.emu, d.db, events=d.bot.events(), expect_events=expect_events,
                   expect_hits=expect_hits, pg_rows=pg_rows)
    if pg_database:
        u = urlsplit(PG_URL)
        store_url = f"postgresql+asyncpg://{u.username or 'postgres'}@{u.hostname}:{u.port or 5432}/{pg_database}"
    else:
        store_url = f"sqlite+aiosqlite:///{d.db}"
    _no_secret(d, name, store_url, pg_database)
    result.assert_clean()
    return result


def _run_fault(d: Drill, spec: str, seconds: float) -> None:
    d.emu.set_faults(spec)
    time.sleep(seconds)
    d.emu.set_faults("")


def _fault_until(d: Drill, spec: str, done: Callable[[], bool], timeout: float, what: str) -> None:
    """Switch ``spec`` on until ``done()`` (e.g. the fault fired N times), then off again."""
    d.emu.set_faults(spec)
    try:
        wait_for(lambda: done() or not d.bot.alive(), timeout, what)
    finally:
        d.emu.set_faults("")
    assert d.bot.alive(), d.bot.text()[-3000:]


def test_crash_drill_kill9_and_restart(drill: Callable[..., Drill]) -> None:
    """SIGKILL at seeded random moments while orders are live; restart each time; then SIGTERM.

    "Live": the current process is past its startup reconcile (its ``ready`` line) or placed the
    order itself, and an order is open on the exchange (its own, or one of the previous process it
    adopted). A kill moment that finds no order open is retried (up to 4 times); most kills must
    hit a live order. After every other kill an order left open is half filled while the bot is
    down (``POST /_emulator/fill``): the restart must book that fill from the exchange."""
    rng = random.Random(SEED)
    d = drill(warmup="1s", aggressive_z="5", order_ttl="3s")  # entries join the touch and rest: live orders
    prefix = bot_prefix(d.bot.config)
    d.start_traffic()
    killed_idle = filled_while_down = 0
    t0 = time.monotonic()
    for k in range(KILLS):
        d.bot.start()
        run = d.bot.starts  # one runs row per process start, so the run id counts starts

        def live(run: int = run) -> bool:
            orders = d.emu.open_orders()
            if any((p := parse_client_id(o["clientOrderId"], prefix)) is not None and p.run_id == run
                   for o in orders):
                return True  # (run ids are base 36 in client ids: run 10 is "<prefix>-a-...")
            return bool(orders) and d.bot.count("ready") >= run

        with_order = False
        for _attempt in range(4):
            try:
                wait_for(lambda: live() or not d.bot.alive(), 20, f"a live order in run {run}")
            except AssertionError:
                break  # no order went live: kill anyway, still a crash
            assert d.bot.alive(), d.bot.text()[-3000:]
            time.sleep(rng.uniform(0.0, 1.0))
            if live():
                with_order = True
                break
        assert d.bot.alive(), d.bot.text()[-3000:]
        d.bot.kill()
        killed_idle += not with_order
        left_open = [o for o in d.emu.open_orders() if Decimal(o["origQty"]) - Decimal(o["executedQty"]) >= STEP * 2]
        if k % 2 == 0 and left_open:
            d.emu.fill(left_open[0]["clientOrderId"])
            filled_while_down += 1
    d.bot.start()
    wait_for(lambda: d.bot.count("reconciled") >= KILLS + 1 or not d.bot.alive(), 30, "the final reconcile")
    time.sleep(3)
    took = time.monotonic() - t0
    result = _finish(d, f"crash x{KILLS} ({KILLS - killed_idle} with live orders, {filled_while_down} filled "
                        f"while down, {took:.0f} s)", expect_events=("reconciled", "reconcile_difference kind=missing_fill"))
    assert result.fills_checked > 0
    assert killed_idle <= KILLS // 4, f"{killed_idle} of {KILLS} kills found no live order"


def test_drill_ws_drop_every_5s(drill: Callable[..., Drill]) -> None:
    d = drill()
    d.bot.start()
    _trading(d)
    _run_fault(d, "ws_drop_every=5s", 12)
    time.sleep(2)
    _finish(d, "ws_drop_every_5s", expect_hits=("ws_drop_every",),
            expect_events=("ws_down", "feed_unhealthy", "feed_snapshot", "feed_healthy"))
    halts = [e for e in d.bot.events() if e.get("event") == "risk_halt"]
    assert not halts, f"the bot halted on a websocket reconnect: {halts[0]}"


def test_drill_rest_5xx_10pct(drill: Callable[..., Drill]) -> None:
    """10% of REST calls answer 500/502/503 (seeded); on until three have, one of them on a create,
    while orders are flowing. Which calls fail depends on timing (creates, cancels, lookups), so
    the drill asserts one line per failed call of each kind rather than a fixed mix."""
    d = drill()
    d.bot.start()
    _trading(d)
    _fault_until(d, "rest_5xx=0.1,seed=3", lambda: _hits(d, "rest_5xx") >= 3 and d.bot.count("create_ambiguous") >= 1,
                 60, "three 5xx answers, one on a create")
    time.sleep(3)
    _finish(d, "rest_5xx_10pct", expect_hits=("rest_5xx",), expect_events=("create_ambiguous",))
    # one line per 5xx: a create's is create_ambiguous, a cancel's cancel_retry, a lookup's or
    # listing's rest_retry
    hit = [(e["method"], e["path"]) for e in _emu_events(d, "emulator_fault")]
    on_create = sum(1 for m, p in hit if (m, p) == ("POST", "/api/v3/order"))
    on_cancel = sum(1 for m, p in hit if (m, p) == ("DELETE", "/api/v3/order"))
    on_get = sum(1 for m, _ in hit if m == "GET")
    assert d.bot.count("create_ambiguous") >= on_create, f"a 5xx on a create without a create_ambiguous line: {hit}"
    assert d.bot.count("cancel_retry") >= on_cancel, f"a 5xx on a cancel without a cancel_retry line: {hit}"
    assert d.bot.count("rest_retry") >= on_get, f"a 5xx on a lookup without a rest_retry line: {hit}"


def test_drill_429_storm_with_retry_after(drill: Callable[..., Drill]) -> None:
    """The next three REST calls answer 429 with Retry-After 2 s: the bot logs the wait it was
    told and sends nothing inside it (the emulator counts requests inside the window)."""
    d = drill()
    d.bot.start()
    _trading(d)
    _fault_until(d, "rest_429=3,retry_after=2s", lambda: _hits(d, "rest_429") >= 3, 40, "three 429 answers")
    time.sleep(3)
    _finish(d, "429_storm", expect_hits=("rest_429",), expect_events=("rate_limited retry_after_s=2",))


def test_drill_accept_then_timeout_on_create_and_cancel(drill: Callable[..., Drill]) -> None:
    """Two creates and then one cancel are executed by the exchange but never answered (a 2 s
    client timeout): the creates are looked up and adopted, the cancel is retried and settles on
    the exchange's state; nothing is sent twice."""
    d = drill(exchange_extra='timeout = "2s"', order_ttl="2s")
    d.bot.start()
    _trading(d)
    _fault_until(d, "accept_then_timeout=2", lambda: d.bot.count("create_adopted") >= 2, 60,
                 "two creates timed out and adopted")
    wait_for(lambda: bool(d.emu.open_orders()) or not d.bot.alive(), 30, "an open order to cancel")
    _fault_until(d, "cancel_accept_then_timeout=1", lambda: _hits(d, "cancel_accept_then_timeout") >= 1, 30,
                 "a cancel executed and not answered")
    held = _emu_events(d, "emulator_cancel_accept_then_timeout")
    assert held, "the emulator did not log the held cancel"
    cid = held[0]["client_id"]
    wait_for(lambda: any(e.get("event") == "order_status" and e.get("client_id") == cid
                         and e.get("status") == "cancelled" for e in d.bot.events()) or not d.bot.alive(),
             30, f"the bot to settle the unanswered cancel of {cid}")
    time.sleep(2)
    _finish(d, "accept_then_timeout", expect_hits=("accept_then_timeout", "cancel_accept_then_timeout"),
            expect_events=("create_ambiguous", "create_adopted", "cancel_retry", "order_status status=cancelled"))
    assert not d.bot.count("cancel_unresolved"), "an unanswered cancel was left unresolved"


def test_drill_exchange_rejections(drill: Callable[..., Drill]) -> None:
    """Binance's real rejections: two -2010 "Account has insufficient balance for requested
    action." then three -1013 "Filter failure: NOTIONAL"; the fifth in a row halts
    (risk.max_rejections = 5)."""
    d = drill()
    d.bot.start()
    _trading(d)
    _fault_until(d, "reject_insufficient=2,reject_notional=3",
                 lambda: _hits(d, "reject_insufficient") >= 2 and _hits(d, "reject_notional") >= 3, 60,
                 "five rejected orders")
    wait_for(lambda: any(e.get("event") == "risk_halt" and e.get("kind") == "max_rejections"
                         for e in d.bot.events()) or not d.bot.alive(), 20, "the halt on max_rejections")
    time.sleep(2)
    _finish(d, "rejections", expect_hits=("reject_insufficient", "reject_notional"),
            expect_events=("order_rejected error~InsufficientFunds", "order_rejected error~NOTIONAL",
                           "order_status status=rejected", "order_rejected_by_exchange",
                           "risk_halt kind=max_rejections"))


def test_drill_min_notional_never_sent(drill: Callable[..., Drill]) -> None:
    """max_order_notional below the exchange's 5 USDT minimum: every order is refused locally."""
    d = drill(max_notional="4")
    d.bot.start()
    _ready(d)
    d.start_traffic()
    wait_for(lambda: d.bot.count("risk_reject") >= 3 or not d.bot.alive(), 40, "three orders refused by risk")
    time.sleep(1)
    _finish(d, "min_notional", expect_events=("risk_reject kind=max_order_notional",))
    assert _our_orders(d) == 0


def test_drill_418_ban_halts_then_cleans_up_after_the_ban(drill: Callable[..., Drill]) -> None:
    """A 418 with Retry-After 6 s: a persisted halt at once, nothing sent during the ban, then
    only the clean-up (open orders cancelled, fills fetched); no new order ever after."""
    d = drill()
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
    _finish(d, "418_ban", expect_hits=("rest_418",),
            expect_events=("exchange_halt", "risk_halt kind=exchange_ban", "exchange_ban_over", "after_ban_cleanup"))


def test_drill_sigterm_during_partial_fill(drill: Callable[..., Drill]) -> None:
    """The next resting order is half filled at once (``partial_fill=1``); SIGTERM while it is
    partially filled: the rest is cancelled, the fill booked, exit 0."""
    d = drill(order_ttl="3s")
    d.bot.start()
    _trading(d)
    d.emu.set_faults("partial_fill=1")
    # the fault's own partial fill (an aggressive order of the bot can also be left partially filled
    # by the market: that one does not count)
    wait_for(lambda: _hits(d, "partial_fill") >= 1 or not d.bot.alive(), 30, "the partial_fill fault", step=0.05)
    wait_for(lambda: any(o["status"] == "PARTIALLY_FILLED" for o in d.emu.orders()) or not d.bot.alive(),
             10, "a partially filled order", step=0.05)
    assert d.bot.alive(), d.bot.text()[-3000:]
    d.emu.set_faults("")
    _finish(d, "sigterm_partial_fill", expect_hits=("partial_fill",),
            expect_events=("order_status status=partially_filled", "stop_requested", "stopped"))


def test_drill_sequence_gap_resyncs_the_book(drill: Callable[..., Drill]) -> None:
    """Withheld depth diffs: ccxt sees the gap, the feed resyncs from a snapshot, trading goes on."""
    d = drill()
    d.bot.start()
    _trading(d)
    _run_fault(d, "ws_gap=3", 3)
    wait_for(lambda: d.bot.count("feed_unhealthy") >= 1 or not d.bot.alive(), 20, "the gap reported by the feed")
    wait_for(lambda: d.bot.count("feed_snapshot") >= 2 or not d.bot.alive(), 30, "a resync snapshot after the gap")
    assert d.bot.alive(), d.bot.text()[-3000:]
    _finish(d, "sequence_gap", expect_hits=("ws_gap",), expect_events=("feed_unhealthy", "feed_snapshot"))


def test_drill_stream_frozen_past_stale_after(drill: Callable[..., Drill]) -> None:
    """No book update for longer than stale_after: book marked stale, resync requested, recovery."""
    d = drill()
    d.bot.start()
    _trading(d)
    _run_fault(d, "ws_freeze=8s", 9)
    wait_for(lambda: d.bot.count("book_stale") >= 1 or not d.bot.alive(), 20, "the stale book reported")
    wait_for(lambda: d.bot.count("feed_snapshot") >= 2 or not d.bot.alive(), 30, "a resync snapshot after the freeze")
    assert d.bot.alive(), d.bot.text()[-3000:]
    assert not any(e.get("event") == "risk_halt" for e in d.bot.events()), "a frozen stream must not halt"
    _finish(d, "stream_frozen", expect_hits=("ws_freeze",), expect_events=("book_stale", "feed_snapshot"))


def test_drill_exchange_clock_skew_beyond_recv_window(drill: Callable[..., Drill]) -> None:
    """The exchange clock jumps 20 s ahead (then back): -1021 on signed requests, the bot
    re-measures the offset each time and goes on trading; nothing sent twice."""
    d = drill()
    d.bot.start()
    _trading(d)
    before = _our_orders(d)
    _fault_until(d, "clock_skew=20s", lambda: _hits(d, "clock_skew") >= 1 and any(
        e.get("event") == "time_resync" and -21000 < int(e["offset_ms"]) < -19000 for e in d.bot.events()),
        40, "a -1021 and the resync to the skewed clock")
    time.sleep(6)
    _finish(d, "clock_skew", expect_hits=("clock_skew",), expect_events=("time_resync",))
    resyncs = [e for e in d.bot.events() if e.get("event") == "time_resync"]
    assert len(resyncs) >= 3, f"expected the startup measure, a resync on the skew and one when it ended: {resyncs}"
    assert any(-21000 < int(e["offset_ms"]) < -19000 for e in resyncs), resyncs
    assert not any(e.get("event") == "risk_halt" for e in d.bot.events()), "a clock skew must not halt"
    assert _our_orders(d) >= before


STORE_PAUSE_EVENTS = ("trading_paused kind=store_unavailable", "trading_resumed")


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
    d = drill()
    d.bot.start()
    lock = SqliteLock(d.db)
    _through_store_outage(d, lock.lock, lock.unlock)
    _finish(d, f"sqlite_locked_{DB_OUTAGE_S:.0f}s", expect_events=("store_write_failed error~locked", *STORE_PAUSE_EVENTS))


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
        d = drill(store_url=f"postgresql+asyncpg://{u.username or 'postgres'}@127.0.0.1:{relay.port}/{name}")
        d.bot.start()
        _through_store_outage(d, relay.down, relay.up)
        _finish(d, f"postgres_refused_{DB_OUTAGE_S:.0f}s",
                expect_events=("store_write_failed error~ConnectionRefusedError", *STORE_PAUSE_EVENTS), pg_database=name)
    finally:
        relay.down()
        pg_admin(PG_URL, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_drill_malformed_messages_stall_then_reconnect(drill: Callable[..., Drill]) -> None:
    """Invalid JSON on the market stream: ccxt's stream stops delivering; the stale guard asks for
    a resync, the feed fails the stalled connection after 5 s, resubscribes and gets a snapshot."""
    d = drill()
    d.bot.start()
    _trading(d)
    _run_fault(d, "ws_malformed_depth=3", 2)
    wait_for(lambda: d.bot.count("feed_snapshot") >= 2 or not d.bot.alive(), 30, "a snapshot after the stall")
    assert d.bot.alive(), d.bot.text()[-3000:]
    assert not any(e.get("event") == "risk_halt" for e in d.bot.events()), "a stalled stream must not halt"
    time.sleep(2)
    _finish(d, "malformed_messages", expect_hits=("ws_malformed_depth",),
            expect_events=("book_stale", "feed_reconnect", "feed_snapshot"))
