"""Benchmark: latency of ``GET /status`` while the bot's loop runs at full feed rate.

    python -m bench.status [--quick] [--seconds N] [--rate HZ] [--feed 2000,0]

Why this shape: the status server shares the event loop with the trading path, so what
matters is (a) how long a request waits behind market events and (b) how much the polling
slows the feed. The loop here runs the real ``bot.engine.TradingCore`` (book, signals,
detector, strategy, risk, ``OrderManager``, a ``PaperBroker`` on a ``SimulatedClock``, and a
real ``StoreWriter`` into a temporary SQLite database, built as ``run_replay`` builds it,
state ``trading``) on the real BTCUSDT recording (synthetic when absent), one event per loop
iteration with a yield in between (as a websocket feed delivers them), as fast as the CPU
allows: a saturated loop, the worst case. The recording is looped with its timestamps shifted
by its span on each pass (so event time only moves forward). ``/status`` is served by the
real ``bot.status_server.StatusServer`` with ``TradingCore.status`` as the provider.

Phases: an idle loop (the machine's own noise floor), a paced feed (default 2000 events/s,
well above one Binance symbol's book + trade rate) and the saturated feed.
A client in a separate process (as ``bot monitor`` or Prometheus would be) polls
``/status`` over a keep-alive connection at ``--rate`` requests per second and records each
round trip. Reported: latency percentiles (target p99 < 5 ms), the ``status()`` build and
its JSON cost alone, and the feed's event rate with and without the polling.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bot.logging import configure_logging

configure_logging("error")

from bot.config import Settings  # noqa: E402
from bot.model import MarketEvent  # noqa: E402
from bot.status_server import StatusServer, dumps_status  # noqa: E402

REAL = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "recordings" / "btcusdt_spot_20240808.jsonl.gz"


def _events() -> tuple[str, str | None, float | None, list[MarketEvent]]:
    from bot.market.recorder import RecordingReader

    if REAL.is_file():
        reader = RecordingReader(REAL)
        evs = list(reader)
        return REAL.name, reader.header.symbol, reader.header.tick, evs
    from bot.market.synthetic import write_synthetic_recording

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "synthetic.jsonl.gz"
        write_synthetic_recording(p, 300, seed=7)
        reader = RecordingReader(p)
        evs = list(reader)
    return "synthetic", reader.header.symbol, reader.header.tick, evs


class _Bot:
    """The real ``TradingCore`` (paper broker, simulated clock, store writer), fed as fast as the loop allows."""

    def __init__(self, events: list[MarketEvent], symbol: str | None, tick: float | None, db_dir: str) -> None:
        self.events = events
        self.tick = tick
        base = Settings()
        update: dict[str, Any] = {"mode": "paper",
                                  "store": base.store.model_copy(update={"url": f"sqlite+aiosqlite:///{db_dir}/status.db"})}
        if symbol and symbol != base.symbol:
            update["symbol"] = symbol
        self.settings = base.model_copy(update=update)
        self.processed = 0
        self._ts = [ev.ts for ev in events]
        self._span = (self._ts[-1] - self._ts[0] + 1000) if events else 0
        self._pass = 0
        self.core: Any = None
        self._engine: Any = None
        self._writer: Any = None

    async def start(self) -> None:
        from bot.clock import SimulatedClock
        from bot.engine import TradingCore, open_store
        from bot.execution.paper_broker import PaperBroker
        from bot.model import ZERO
        from bot.risk.market_rules import MarketRules
        from bot.store.writer import StoreWriter

        s = self.settings
        rules = MarketRules.binance_spot(s.symbol)
        clock = SimulatedClock(0)
        self._engine, run_id = await open_store(s, "replay", 0)
        core_ref: list[Any] = []

        def on_health(ok: bool, reason: str) -> None:
            if core_ref:
                core_ref[0].on_store_health(ok, reason)

        self._writer = StoreWriter(self._engine, run_id=run_id, account=s.exchange.account, symbol=s.symbol,
                                   mode="replay", venue=s.venue, exchange=s.exchange.id, queue_size=s.store.queue_size, batch_ms=s.store.batch_ms,
                                   max_buffered=s.store.max_buffered, on_health=on_health)
        broker = PaperBroker(clock, s.paper, s.symbol)
        self.core = TradingCore(s, clock=clock, broker=broker, writer=self._writer, run_id=run_id, rules=rules,
                                tick=self.tick, position_floor=-s.paper.balances.get(s.base, ZERO))
        core_ref.append(self.core)
        await self._writer.start()
        self.core.state = "trading"

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.close()
        if self._engine is not None:
            await self._engine.dispose()

    def status(self) -> dict[str, Any]:
        return self.core.status()  # type: ignore[no-any-return]

    async def run(self, stop: asyncio.Event, rate: float = 0.0) -> None:
        """Feed events until ``stop``: ``rate`` events/s, or as fast as possible when 0."""
        t0, n0 = time.perf_counter(), self.processed
        core, ts, events = self.core, self._ts, self.events
        while not stop.is_set():
            shift = self._pass * self._span
            for i, ev in enumerate(events):
                if rate > 0:
                    while self.processed - n0 >= (time.perf_counter() - t0) * rate:
                        await asyncio.sleep(0.0005)
                        if stop.is_set():
                            return
                ev.ts = ts[i] + shift  # the recording again, later (event time moves forward)
                await core.on_event(ev)
                self.processed += 1
                await asyncio.sleep(0)  # one feed message per loop turn
                if stop.is_set():
                    return
            self._pass += 1


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
    # the provider + JSON cost alone (what each request adds to the loop), on the core as the
    # feed left it (book, signals, paper position, orders, decisions populated)
    reps = 2000
    t = time.perf_counter()
    for _ in range(reps):
        st = bot.status()
    build = (time.perf_counter() - t) / reps
    t = time.perf_counter()
    for _ in range(reps):
        body = dumps_status(bot.status())
    both = (time.perf_counter() - t) / reps
    out["status_bytes"] = len(body)
    out["status_build_us"] = round(build * 1e6, 1)
    out["status_build_json_us"] = round(both * 1e6, 1)
    out["core_state"] = st["state"]
    out["core_counts"] = st["counts"]
    return out


def run(quick: bool = False, seconds: float | None = None, rate: float = 200.0,
        feed_rates: list[float] | None = None) -> dict[str, Any]:
    name, symbol, tick, events = _events()
    secs = seconds if seconds is not None else (4.0 if quick else 15.0)
    feed_rates = feed_rates if feed_rates is not None else [2000.0, 0.0]

    async def go(db_dir: str) -> dict[str, Any]:
        bot = _Bot(events, symbol, tick, db_dir)
        await bot.start()
        try:
            return await _measure(bot, secs, rate, feed_rates)
        finally:
            await bot.close()

    with tempfile.TemporaryDirectory() as d:
        res = asyncio.run(go(d))
    worst = max(v for k, v in res.items() if k.endswith("p99_ms") and not k.startswith("idle"))
    return {"data": name, "events": len(events), "provider": "TradingCore.status", "client_rate_hz": rate, "seconds_per_phase": secs, **res,
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
