"""Benchmark: latency of ``GET /status`` while the bot's loop runs at full feed rate.

    python -m bench.status [--quick] [--seconds N] [--rate HZ] [--feed 2000,0]

Why this shape: the status server shares the event loop with the trading path, so what
matters is (a) how long a request waits behind market events and (b) how much the polling
slows the feed. The loop here runs the real ``OrderBook`` + ``SignalEngine`` + detector on
the real BTCUSDT recording (synthetic when absent), one event per loop iteration with a
yield in between (as a websocket feed delivers them), as fast as the CPU allows: a
saturated loop, the worst case. The provider builds the status dict the way
``Engine.status()`` does (top-10 book, signals, z-scores, position, orders, 20 decisions).

Phases: an idle loop (the machine's own noise floor), a paced feed (default 2000 events/s,
well above one Binance symbol's book + trade rate) and the saturated feed.
A client in a separate process (as ``bot monitor`` or Prometheus would be) polls
``/status`` over a keep-alive connection at ``--rate`` requests per second and records each
round trip. Reported: latency percentiles (target p99 < 5 ms), the status build + JSON cost
alone, and the feed's event rate with and without the polling.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import multiprocessing as mp
import statistics
import sys
import time
from collections import deque
from decimal import Decimal
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.model import MarketEvent, Trade
from bot.status_server import StatusServer, dumps_status

REAL = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "recordings" / "btcusdt_spot_20240808.jsonl.gz"


def _events() -> tuple[str, float | None, list[MarketEvent]]:
    from bot.market.recorder import RecordingReader

    if REAL.is_file():
        reader = RecordingReader(REAL)
        evs = list(reader)
        return REAL.name, reader.header.tick, evs
    import tempfile

    from bot.market.synthetic import write_synthetic_recording

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "synthetic.jsonl.gz"
        write_synthetic_recording(p, 300, seed=7)
        reader = RecordingReader(p)
        evs = list(reader)
    return "synthetic", reader.header.tick, evs


class _Bot:
    """The trading path's market side, fed as fast as the loop allows, with a status() like the engine's."""

    def __init__(self, events: list[MarketEvent], tick: float | None) -> None:
        self.events = events
        self.tick = tick
        self.settings = Settings()
        self.processed = 0
        self.decisions: deque[dict[str, Any]] = deque(maxlen=200)
        for i in range(200):
            self.decisions.append({"ts": 1_723_075_200_000 + i, "kind": ("signal", "order", "fill", "risk")[i % 4],
                                   "text": f"entry long z=+2.{i:02d} buy 0.001 @ 60000.00 ofi-3-{i}"})
        self._reset()

    def _reset(self) -> None:
        from bot.market.book import OrderBook
        from bot.signals.engine import SignalEngine

        self.book = OrderBook(tick=self.tick)
        self.signals = SignalEngine(self.settings, sink=None, tick=self.tick)

    async def run(self, stop: asyncio.Event, rate: float = 0.0) -> None:
        """Feed events until ``stop``: ``rate`` events/s, or as fast as possible when 0."""
        t0, n0 = time.perf_counter(), self.processed
        while not stop.is_set():
            self._reset()
            book, eng = self.book, self.signals
            for ev in self.events:
                if rate > 0:
                    while self.processed - n0 >= (time.perf_counter() - t0) * rate:
                        await asyncio.sleep(0.0005)
                        if stop.is_set():
                            return
                if type(ev) is Trade:
                    eng.on_trade(ev)
                else:
                    book.apply(ev)
                    eng.on_book(book, ev, ev.ts)
                eng.detector.update(ev.ts)
                self.processed += 1
                self.now = ev.ts
                await asyncio.sleep(0)  # one feed message per loop turn
                if stop.is_set():
                    return

    def status(self) -> dict[str, Any]:
        s = self.settings
        snap = self.signals.snapshot()
        zs = {k[2:]: v for k, v in snap.items() if k.startswith("z_")}
        pos = Decimal("0.01")
        return {
            "ts": getattr(self, "now", 0), "run_id": 1, "mode": "paper", "symbol": "BTC/USDT", "account": "default",
            "state": "trading",
            "book": {"healthy": self.book.healthy, "reason": self.book.reason, "mid": self.book.mid(),
                     "spread": self.book.spread(), "microprice": snap.get("microprice"),
                     "bids": [list(x) for x in self.book.top_bids(10)],
                     "asks": [list(x) for x in self.book.top_asks(10)], "updates": self.book.updates},
            "signals": {k: v for k, v in snap.items() if not k.startswith("z_") and k != "state"},
            "zscores": zs,
            "detector": {"state": "flat", "combined_z": zs.get("combined"), "entry_z": s.strategy.entry_z,
                         "exit_z": s.strategy.exit_z, "persistence": s.strategy.persistence},
            "position": {"amount": str(pos), "avg_price": "59950.00", "realized_pnl": "1.23",
                         "unrealized_pnl": "-0.40", "fees": "0.12", "equity": "10000.71"},
            "open_orders": [{"client_id": f"ofi-1-{i}", "side": "buy", "price": "59999.99", "amount": "0.001",
                             "filled": "0", "status": "acked", "age_ms": 1200} for i in range(2)],
            "risk": {"halted": False, "halt_kind": None, "halt_reason": None,
                     "limits": {"position_pct": 20.0, "daily_loss_pct": 0.0, "drawdown_pct": 1.5}},
            "health": {"feed": "up", "store": "ok", "loop_lag_ms": 0.4},
            "decisions": list(self.decisions)[-20:],
        }


def _client(port: int, seconds: float, rate: float, out: Any) -> None:
    """Runs in its own process: poll /status at ``rate`` Hz, send back the round trips (ms)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    lat: list[float] = []
    period = 1.0 / rate if rate > 0 else 0.0
    end = time.perf_counter() + seconds
    nxt = time.perf_counter()
    sizes = 0
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        conn.request("GET", "/status")
        resp = conn.getresponse()
        body = resp.read()
        lat.append((time.perf_counter() - t0) * 1000.0)
        sizes = len(body)
        if resp.status != 200:
            raise SystemExit(f"HTTP {resp.status}")
        nxt += period
        pause = nxt - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    conn.close()
    out.put((lat, sizes))


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100.0 * (len(s) - 1)))]


async def _phase(bot: _Bot | None, seconds: float, rate: float, feed_rate: float) -> dict[str, Any]:
    """One measurement: the feed (None: idle loop) at ``feed_rate`` and a client polling at ``rate``."""
    stop = asyncio.Event()
    task = asyncio.create_task(bot.run(stop, feed_rate)) if bot is not None else None
    server = StatusServer(bot.status if bot is not None else dict, port=0)
    port = await server.start()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_client, args=(port, seconds, rate, q), daemon=True)
    proc.start()
    await asyncio.sleep(0.5)  # the client process starts (spawn)
    n1, t1 = (bot.processed if bot else 0), time.perf_counter()
    lat, _size = await asyncio.to_thread(q.get, True, seconds + 60)
    fed = ((bot.processed if bot else 0) - n1) / (time.perf_counter() - t1)
    await asyncio.to_thread(proc.join, 10)
    stop.set()
    if task is not None:
        await task
    await server.stop()
    return {"requests": len(lat), "p50_ms": round(statistics.median(lat), 3), "p90_ms": round(_pct(lat, 90), 3),
            "p99_ms": round(_pct(lat, 99), 3), "max_ms": round(max(lat), 3), "feed_events_per_s": round(fed)}


async def _measure(bot: _Bot, seconds: float, rate: float, feed_rates: list[float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in (await _phase(None, min(seconds, 3.0), rate, 0)).items():
        if k != "feed_events_per_s":
            out[f"idle_loop_{k}"] = v
    for fr in feed_rates:
        tag = f"feed_{int(fr)}_per_s" if fr > 0 else "feed_saturated"
        for k, v in (await _phase(bot, seconds, rate, fr)).items():
            out[f"{tag}_{k}"] = v
    # the provider + JSON cost alone (what each request adds to the loop)
    reps = 2000
    t = time.perf_counter()
    for _ in range(reps):
        body = dumps_status(bot.status())
    out["status_bytes"] = len(body)
    out["status_build_json_us"] = round((time.perf_counter() - t) / reps * 1e6, 1)
    return out


def run(quick: bool = False, seconds: float | None = None, rate: float = 200.0,
        feed_rates: list[float] | None = None) -> dict[str, Any]:
    name, tick, events = _events()
    bot = _Bot(events, tick)
    secs = seconds if seconds is not None else (4.0 if quick else 15.0)
    feed_rates = feed_rates if feed_rates is not None else [2000.0, 0.0]
    res = asyncio.run(_measure(bot, secs, rate, feed_rates))
    worst = max(v for k, v in res.items() if k.endswith("p99_ms") and not k.startswith("idle"))
    return {"data": name, "events": len(events), "client_rate_hz": rate, "seconds_per_phase": secs, **res,
            "target_p99_ms": 5.0, "ok": worst < 5.0, "python": sys.version.split()[0]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smaller run (< 20 s)")
    ap.add_argument("--seconds", type=float, default=None, help="polling time (default 20, quick 4)")
    ap.add_argument("--rate", type=float, default=200.0, help="client requests per second (0 = back to back)")
    ap.add_argument("--feed", default="2000,0",
                    help="feed rates to test, events/s, comma separated; 0 = saturated (default 2000,0)")
    args = ap.parse_args(argv)
    res = run(args.quick, args.seconds, args.rate, [float(x) for x in args.feed.split(",") if x.strip()])
    width = max(len(k) for k in res)
    for k, v in res.items():
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
