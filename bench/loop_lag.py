"""Benchmark: event-loop lag while the bot's loop consumes the full market feed.

    python -m bench.loop_lag [--quick] [--seconds N]

Why: everything of one bot runs in one asyncio loop (feed, book, signals, order updates,
store hand-off, watchdog). If the market work hogs the loop, timers fire late: order
updates, cancels and the systemd watchdog ping all wait. The figure is the lateness of a
10 ms ticker (``asyncio.sleep(0.01)``; lateness = actual wake-up - planned wake-up).

Set-up: the emulator (``bot.emulator.server.Emulator(speed=5000, step_ms=...)``, synthetic
BTC/USDT stepping as fast as it can) runs in a CHILD process, so that its own CPU is not
charged to the measured loop (on a 2-core machine the two processes get one core each).
In this process: a real ccxt.pro client (``make_ccxt_client``) -> ``MarketFeed`` (book via
``watch_order_book`` + trades) -> ``OrderBook.apply`` -> ``SignalEngine.on_book``/``on_trade``
-> ``detector.update``, for every event, at whatever rate the feed delivers, with the ticker
beside it. A baseline of the same ticker on an idle loop is measured first (the peer: what
the OS and asyncio alone cost).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from typing import Any

from bench.child import emulator_child, serve_until_stdin_closes
from bot.logging import configure_logging

configure_logging("error")  # before the bot's modules bind their loggers

SYMBOL = "BTC/USDT"
TICK_S = 0.010


async def _ticker(seconds: float, out: list[float]) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while True:
        planned = time.perf_counter() + TICK_S
        await asyncio.sleep(TICK_S)
        out.append(max(0.0, time.perf_counter() - planned) * 1000)
        if loop.time() >= end:
            return


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * len(s)))] if s else float("nan")


async def _serve(port: int, speed: float, step_ms: int) -> None:
    from bot.emulator.server import Emulator

    await serve_until_stdin_closes(Emulator(speed=speed, step_ms=step_ms, symbols=(SYMBOL,)), port)


async def _measure(port: int, seconds: float) -> dict[str, Any]:
    from bot.clock import LiveClock
    from bot.config import Settings
    from bot.emulator import make_ccxt_client
    from bot.market.book import OrderBook
    from bot.market.feed import MarketFeed
    from bot.model import Trade
    from bot.signals.engine import SignalEngine

    idle: list[float] = []
    await _ticker(min(2.0, seconds), idle)

    settings = Settings()
    ex = make_ccxt_client(f"http://127.0.0.1:{port}", "emulator-key", "emulator-secret")
    feed = MarketFeed(ex, SYMBOL, settings.signals.levels, LiveClock())
    book = OrderBook(SYMBOL)
    eng = SignalEngine(settings, sink=None)
    counts = {"book": 0, "trade": 0}
    first_book = asyncio.Event()

    async def consume() -> None:
        apply, on_book, on_trade, update = book.apply, eng.on_book, eng.on_trade, eng.detector.update
        async for ev in feed:
            if type(ev) is Trade:
                on_trade(ev)
                counts["trade"] += 1
            else:
                apply(ev)
                on_book(book, ev, ev.ts)
                counts["book"] += 1
                first_book.set()
            update(ev.ts)

    producer = asyncio.create_task(feed.run())
    consumer = asyncio.create_task(consume())
    try:
        # wait for the first snapshot before the clock starts
        await asyncio.wait_for(first_book.wait(), timeout=20)
        start_counts = dict(counts)
        lag: list[float] = []
        t0 = time.perf_counter()
        await _ticker(seconds, lag)
        dt = time.perf_counter() - t0
    finally:
        await feed.stop()
        for t in (producer, consumer):
            t.cancel()
            with contextlib.suppress(BaseException):
                await t
        await ex.close()
    books = counts["book"] - start_counts["book"]
    trades = counts["trade"] - start_counts["trade"]
    return {
        "loop_lag_seconds": round(dt, 2),
        "loop_lag_ticks": len(lag),
        "loop_lag_book_events_per_s": round(books / dt),
        "loop_lag_trade_events_per_s": round(trades / dt),
        "loop_lag_p50_ms": round(_pct(lag, 0.50), 3),
        "loop_lag_p99_ms": round(_pct(lag, 0.99), 3),
        "loop_lag_max_ms": round(max(lag), 3) if lag else float("nan"),
        "loop_lag_mean_ms": round(statistics.fmean(lag), 3) if lag else float("nan"),
        "idle_loop_lag_p99_ms": round(_pct(idle, 0.99), 3),
        "feed_errors": feed.errors,
    }


def run(
    quick: bool = False, seconds: float | None = None, speed: float = 5000.0, step_ms: int = 100
) -> dict[str, Any]:
    secs = seconds or (5.0 if quick else 20.0)
    with emulator_child("bench.loop_lag", "--speed", str(speed), "--step-ms", str(step_ms)) as port:
        res = asyncio.run(_measure(port, secs))
    res["loop_lag_emulator"] = f"subprocess, speed={speed:g}, step_ms={step_ms}"
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 s instead of 20 s")
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--speed", type=float, default=5000.0)
    ap.add_argument("--step-ms", type=int, default=100)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.port, args.speed, args.step_ms))
        return
    res = run(args.quick, args.seconds, args.speed, args.step_ms)
    width = max(len(k) for k in res)
    for k, v in res.items():
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
