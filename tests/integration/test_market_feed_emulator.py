"""MarketFeed through real ccxt pro against the emulator: the book matches the exchange's at
every update id, trades arrive, and gaps / dropped connections resync the book; `bot record`
end to end."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bot.clock import LiveClock
from bot.emulator.client import make_ccxt_client
from bot.emulator.server import Emulator
from bot.market.book import OrderBook
from bot.market.feed import MarketFeed
from bot.market.recorder import RecordingReader
from bot.model import BookDelta, BookSnapshot, MarketEvent, Trade

SYMBOL = "BTC/USDT"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


LEVELS = 10


async def _run_feed(emu: Emulator, seconds: float, until: Any = None) -> tuple[list[MarketEvent], MarketFeed,
                                                                                list[tuple[bool, str | None]]]:
    ex = make_ccxt_client(emu.base_url, None, None)
    health: list[tuple[bool, str | None]] = []
    feed = MarketFeed(ex, SYMBOL, LEVELS, LiveClock(), lambda h, r: health.append((h, r)),
                      backoff_base_s=0.05, backoff_cap_s=0.2)
    task = asyncio.create_task(feed.run())
    evs: list[MarketEvent] = []
    try:
        async with asyncio.timeout(seconds):
            async for ev in feed:
                evs.append(ev)
                if until is not None and until(evs, feed):
                    break
    except TimeoutError:
        pass
    finally:
        await feed.stop()
        await task
        await ex.close()
    return evs, feed, health


def _check_against_exchange(evs: list[MarketEvent], log: dict[int, Any]) -> int:
    """Apply the events; at every update id the exchange logged, our top N equals its top N."""
    book = OrderBook(SYMBOL)
    checked = 0
    for ev in evs:
        if isinstance(ev, Trade):
            continue
        book.apply(ev)
        assert isinstance(ev, BookSnapshot | BookDelta)
        if ev.seq is not None and ev.seq in log:
            bids, asks = log[ev.seq]
            assert book.top_bids(LEVELS) == [tuple(map(float, lv)) for lv in bids[:LEVELS]], f"bids at u={ev.seq}"
            assert book.top_asks(LEVELS) == [tuple(map(float, lv)) for lv in asks[:LEVELS]], f"asks at u={ev.seq}"
            checked += 1
        if isinstance(ev, BookDelta):
            assert book.healthy, book.reason
    return checked


async def test_feed_book_equals_the_exchange_book_at_every_update() -> None:
    async with Emulator(seed=7, symbols=(SYMBOL,)) as emu:
        log = emu.record_books(SYMBOL)
        evs, feed, health = await _run_feed(emu, 6.0, until=lambda e, f: f.deltas >= 25 and f.trades >= 5)
    assert isinstance(evs[0], BookSnapshot) or isinstance(evs[0], Trade)
    assert feed.snapshots == 1 and feed.deltas >= 25 and feed.trades >= 5
    assert _check_against_exchange(evs, log) >= 20
    assert health == [(True, None)]
    trades = [e for e in evs if isinstance(e, Trade)]
    assert all(t.recv is not None and t.price > 0 and t.amount > 0 for t in trades)
    assert len({t.trade_id for t in trades}) == len(trades)


async def test_gap_in_the_stream_resyncs_the_book() -> None:
    async with Emulator(seed=7, symbols=(SYMBOL,)) as emu:
        log = emu.record_books(SYMBOL)

        def until(evs: list[MarketEvent], feed: MarketFeed) -> bool:
            if feed.deltas == 5 and not emu.faults.spec:
                emu.set_faults("ws_gap=1")  # withhold one depth diff: ccxt raises ChecksumError
            return feed.snapshots >= 2 and feed.deltas >= 15

        evs, feed, health = await _run_feed(emu, 12.0, until)
    assert feed.snapshots >= 2, health
    assert health[0] == (True, None)
    assert health[1][0] is False and "resync" in str(health[1][1]) and "ChecksumError" in str(health[1][1])
    assert health[-1] == (True, None)
    _check_against_exchange(evs, log)  # no stale levels survive the resync


async def test_dropped_connection_reconnects() -> None:
    async with Emulator(seed=7, symbols=(SYMBOL,)) as emu:
        log = emu.record_books(SYMBOL)

        def until(evs: list[MarketEvent], feed: MarketFeed) -> bool:
            if feed.deltas == 5 and not emu.faults.spec:
                emu.set_faults("ws_drop=1")
            return feed.snapshots >= 2 and feed.deltas >= 15

        evs, feed, health = await _run_feed(emu, 12.0, until)
    assert feed.snapshots >= 2, health
    assert [h for h, _ in health][:2] == [True, False] and health[-1] == (True, None)
    assert "network error" in str(health[1][1])
    _check_against_exchange(evs, log)


@pytest.mark.slow
def test_bot_record_from_the_emulator(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "bot", "emulator", "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    try:
        import socket

        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "emulator did not start"
                time.sleep(0.1)
        out = tmp_path / "rec.jsonl.gz"
        res = subprocess.run(
            [sys.executable, "-m", "bot", "--log-level", "warning", "record", "--symbol", SYMBOL,
             "--seconds", "3", "--out", str(out), "--url", f"http://127.0.0.1:{port}", "--levels", "10"],
            capture_output=True, text=True, timeout=60, env=env,
        )
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith("recorded ") and str(out) in res.stdout
        assert "recording BTC/USDT:" in res.stderr  # the progress line
        r = RecordingReader(out)
        evs = list(r)
        assert r.errors == [] and r.header.symbol == SYMBOL and r.header.tick == 0.01
        assert r.header.exchange == "binance"
        assert isinstance(next(e for e in evs if not isinstance(e, Trade)), BookSnapshot)
        assert sum(isinstance(e, BookDelta) for e in evs) >= 10
        assert any(isinstance(e, Trade) for e in evs)
        book = OrderBook()
        for ev in evs:
            book.apply(ev)
        assert book.healthy, book.reason
        bad = subprocess.run(
            [sys.executable, "-m", "bot", "record", "--symbol", "NOPE/USDT", "--seconds", "1",
             "--out", str(tmp_path / "x.jsonl"), "--url", f"http://127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60, env=env,
        )
        assert bad.returncode == 2 and "unknown symbol 'NOPE/USDT'" in bad.stderr
    finally:
        server.terminate()
        server.wait(10)


async def test_a_stalled_trade_stream_is_reconnected_while_the_book_flows() -> None:
    """A half-sent trade frame leaves ccxt's trade connection open but silent: the feed notices
    (no trade for trades_stall_s while books arrive), reconnects it, and trades flow again."""
    async with Emulator(seed=7, symbols=(SYMBOL,)) as emu:
        ex = make_ccxt_client(emu.base_url, None, None)
        feed = MarketFeed(ex, SYMBOL, LEVELS, LiveClock(), None, backoff_base_s=0.05, backoff_cap_s=0.2,
                          trades_stall_s=2.0)
        task = asyncio.create_task(feed.run())
        trades_before = trades_after = 0
        try:
            async with asyncio.timeout(25):
                async for ev in feed:
                    if not isinstance(ev, Trade):
                        continue
                    if feed.trade_stalls == 0:
                        trades_before += 1
                        if trades_before == 5 and not emu.faults.spec:
                            emu.set_faults("ws_malformed=1")  # the next market frame, cut in half
                    else:
                        trades_after += 1
                        if trades_after >= 5:
                            break
        finally:
            await feed.stop()
            await task
            await ex.close()
    assert trades_before >= 5
    assert feed.trade_stalls >= 1, "the silent trade stream was never noticed"
    assert trades_after >= 5, "trades did not come back after the reconnect"
