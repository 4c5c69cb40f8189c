"""Benchmark: tick-to-order latency over the wire (emulator sends a book update -> the order
it triggered arrives at the emulator), with the in-process part split out.

    python -m bench.latency_wire [--quick] [--orders N] [--interval-ms MS]

Why: ``bench.latency`` times only our own code (``TradingCore`` -> ``PaperBroker``). What the
edge of a signal sees is the whole path: exchange websocket -> ccxt.pro -> ``MarketFeed`` ->
``TradingCore`` -> ``CcxtBroker.create_order`` -> ccxt REST -> the exchange.

Process layout: the emulator (``bot.emulator.Emulator``, synthetic BTC/USDT, one market step
of 100 ms played every ``--interval-ms`` wall ms) runs in a CHILD process (``--serve``), so its
event loop does not share a core, or a loop, with the bot's (the machine has 2 cores; the
two processes get one each). In this process, as ``LiveRunner`` builds it: a real ccxt.pro
client (``make_ccxt_client``) -> ``MarketFeed`` -> ``TradingCore`` -> a real ``CcxtBroker``
(its user-data streams and REST poller running, ``om.run_updates`` consuming them).

Order-worthy events: as in ``bench.latency``, a post-only limit buy of the minimum size, $1
below the best bid, is forced after ``core.on_event`` on every book event the feed delivers
(``core._place``: RiskLimits -> OrderManager.submit -> CcxtBroker.create_order -> ccxt ->
HTTP). Each order is cancelled right after (untimed, but over the same client, as the bot
would). Only a tick the emulator sent while the bot was idle is traded on: an event whose
``E`` is not after the end of the previous order + cancel cycle, or that has older events
still queued behind it in the feed, is applied but not traded on (``wire_skipped_behind``),
so the bench's own cancels never queue the next tick (the emulator sends a burst of depth
updates per market step).
Risk's orders-per-minute cap and the bot's own ``RateLimiter`` (5 orders/s) are relaxed: they
would cap the rate, not change one order's path. ccxt's own limiter stays ON as the bot
has it (``enableRateLimit``; ``--no-ccxt-limiter`` shows the floor without it): its wait is
part of the "ccxt" share below.

Stamps (``time.monotonic_ns``: CLOCK_MONOTONIC, one clock for both processes on Linux):

* S, emulator send: in the child, just before the ``depthUpdate`` frame is written to the
  websocket (``ws.send_str``), keyed by its ``u`` (the bench wraps the connection's socket
  writer; no bot/ code is changed);
* R, feed event in: this process, when the consumer takes the ``BookDelta`` from the feed
  (``ev.seq`` is ccxt's last applied ``u``: when ccxt merged several messages into one book,
  the stamp is that of the NEWEST one, so the wait of the older ones is not counted);
* C, ``CcxtBroker.create_order`` entered (a subclass stamps it);
* F, the HTTP request leaves: ccxt's ``fetch`` called (after ccxt's limiter and signing);
* A, order arrival: in the child, when the ``POST /api/v3/order`` request enters the
  emulator's middleware (headers parsed, before the body and the matching engine).

Reported: wire = A - S, in-process = C - R, feed = R - S (websocket + ccxt parse + our
feed), client = C -> A split into ccxt (F - C: limiter, signing) and HTTP (A - F). A cross
check from the emulator's own, unmodified millisecond stamps: the order's ``time`` from
``GET /_emulator/orders`` minus the triggering update's ``E``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import statistics
import time
from decimal import Decimal
from typing import Any

from bench.child import emulator_child, serve_until_stdin_closes
from bot.logging import configure_logging

configure_logging("error")  # before the bot's modules bind their loggers

SYMBOL = "BTC/USDT"
STEP_MS = 100
WARMUP = 20  # first orders: connection set-up, caches
_mono = time.monotonic_ns


# --------------------------------------------------------------------------- child: emulator


class _StampingWS:
    """A websocket stand-in that stamps each ``depthUpdate`` frame just before it is written."""

    def __init__(self, ws: Any, sent: dict[int, int]) -> None:
        self._ws = ws
        self._sent = sent

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)

    async def send_str(self, data: str, *args: Any, **kw: Any) -> None:
        if data.startswith('{"e":"depthUpdate"'):
            t = _mono()
            i = data.find('"u":') + 4
            j = data.find(",", i)
            self._sent.setdefault(int(data[i:j]), t)
        await self._ws.send_str(data, *args, **kw)


def _stamped_emulator_cls() -> type:
    import orjson
    from aiohttp import web

    from bot.emulator.server import Emulator

    class StampedEmulator(Emulator):
        """The project's emulator plus two stamps (S, A) and a route that hands them out."""

        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self.sent_ns: dict[int, int] = {}
            self.arrived_ns: dict[str, int] = {}

        async def _accept(self, request: web.Request, kind: str) -> Any:
            ws, conn = await super()._accept(request, kind)
            if kind == "stream":
                conn.ws = _StampingWS(conn.ws, self.sent_ns)
            return ws, conn

        @web.middleware
        async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
            if request.method != "POST" or request.path != "/api/v3/order":
                return await super()._middleware(request, handler)
            t = _mono()
            resp = await super()._middleware(request, handler)
            body = getattr(resp, "body", None)
            if resp.status == 200 and isinstance(body, bytes | bytearray):
                cid = orjson.loads(body).get("clientOrderId")
                if cid:
                    self.arrived_ns[cid] = t
            return resp

        def _routes(self, app: web.Application) -> None:
            super()._routes(app)
            app.router.add_get("/_bench/stamps", self.h_stamps)

        async def h_stamps(self, request: web.Request) -> web.Response:
            return web.Response(
                body=orjson.dumps({"sent": {str(k): v for k, v in self.sent_ns.items()}, "arrived": self.arrived_ns}),
                content_type="application/json",
            )

    return StampedEmulator


async def _serve(port: int, interval_ms: float) -> None:
    emu = _stamped_emulator_cls()(speed=STEP_MS / interval_ms, step_ms=STEP_MS, symbols=(SYMBOL,))
    await serve_until_stdin_closes(emu, port)


# --------------------------------------------------------------------------- parent: the bot


def _pct(xs: list[int], p: float) -> float:
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(p * len(s)))] / 1e6, 3) if s else float("nan")


async def _measure(port: int, n_orders: int, ccxt_limiter: bool = True) -> dict[str, Any]:
    import aiohttp

    from bench.latency import NullSink
    from bot.clock import LiveClock
    from bot.config import Settings
    from bot.emulator import make_ccxt_client
    from bot.engine import TradingCore
    from bot.execution.ccxt_broker import CcxtBroker
    from bot.execution.throttle import BINANCE_SPOT, EndpointClass, RateLimiter
    from bot.market.feed import MarketFeed, market_tick
    from bot.model import BookSnapshot, Order, OrderRequest, OrderType, Side, Trade
    from bot.risk.market_rules import MarketRules

    # one record per forced order: [client_id, u, E_ms, R, C, F]
    records: list[list[Any]] = []

    class TimedCcxtBroker(CcxtBroker):
        tag: tuple[int, int, int] | None = None
        inflight: list[Any] | None = None

        async def create_order(self, order: Order) -> Order:
            t = _mono()
            if self.tag is not None:
                rec = [order.client_id, *self.tag, t, 0]
                self.tag = None
                records.append(rec)
                self.inflight = rec
            try:
                return await super().create_order(order)
            finally:
                self.inflight = None

    base = f"http://127.0.0.1:{port}"
    s0 = Settings()
    settings = s0.model_copy(
        update={"risk": s0.risk.model_copy(update={"max_orders_per_minute": 10**9})}
    )
    clock = LiveClock()
    ex = make_ccxt_client(base, "emulator-key", "emulator-secret")
    ex.enableRateLimit = ccxt_limiter
    loose = RateLimiter(
        {k: EndpointClass(c.weight, 10**6, c.period, c.counts_as_order) for k, c in BINANCE_SPOT.items()},
        weight_per_minute=10**9,
        orders_per_10s=10**9,
    )
    broker = TimedCcxtBroker(ex, settings.symbol, clock, limiter=loose, max_retries=settings.execution.max_retries)

    real_fetch = ex.fetch

    async def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        rec = broker.inflight
        if rec is not None and method == "POST" and url.split("?")[0].endswith("/api/v3/order"):
            rec[5] = _mono()
        return await real_fetch(url, method, headers, body)

    ex.fetch = fetch
    tasks: list[asyncio.Task[Any]] = []
    feed: MarketFeed | None = None
    skipped = rejected = books = 0
    try:
        await ex.load_markets()
        rules = MarketRules.from_exchange(ex, settings.symbol)
        tick = market_tick(ex, settings.symbol)
        core = TradingCore(
            settings, clock=clock, broker=broker, writer=NullSink(),  # type: ignore[arg-type]
            run_id=1, rules=rules, tick=tick,
        )
        await broker.start()
        core.state = "trading"

        def on_health(up: bool, reason: str | None) -> None:
            core.feed_up = up

        feed = MarketFeed(ex, settings.symbol, max(settings.signals.levels, 20), clock, on_health)
        tasks.append(asyncio.create_task(feed.run()))
        tasks.append(asyncio.create_task(core.om.run_updates()))
        amount: Decimal | None = None
        offset = Decimal("1.00")
        target = n_orders + WARMUP
        queue = feed.queue
        idle_since_ms = 0  # wall ms (the emulator's E clock) when the last order cycle ended
        async for ev in feed:
            if type(ev) is Trade:
                await core.on_event(ev)
                continue
            r = _mono()
            books += 1
            if type(ev) is BookSnapshot or ev.seq is None or queue.qsize() > 0 or ev.ts <= idle_since_ms:
                if type(ev) is not BookSnapshot:
                    skipped += 1
                await core.on_event(ev)
                continue
            broker.tag = (ev.seq, ev.ts, r)
            before = len(records)
            await core.on_event(ev)
            bb = core.book.best_bid()
            if bb is not None:
                if amount is None:  # ~20 USDT: clear of the emulator's NOTIONAL filter
                    amount = max(rules.min_amount or Decimal(0),
                                 (Decimal(20) / Decimal(repr(bb[0]))).quantize(rules.step, rounding="ROUND_UP"))
                req = OrderRequest(
                    settings.symbol, Side.BUY, amount, Decimal(repr(bb[0])) - offset,
                    OrderType.LIMIT, post_only=True, reason="bench",
                )
                await core._place(req)
            broker.tag = None
            if len(records) == before:
                rejected += 1
            for o in core.om.open_orders:  # untimed: keep risk's limits and the balance clear
                await core.om.cancel(o.client_id)
            idle_since_ms = int(time.time() * 1000)
            if len(records) >= target:
                break
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/_bench/stamps") as resp:
                stamps = await resp.json()
            async with http.get(f"{base}/_emulator/orders", params={"symbol": SYMBOL}) as resp:
                emu_orders = await resp.json()
        feed_errors = feed.errors
    finally:
        if feed is not None:
            with contextlib.suppress(Exception):
                await feed.stop()
        for t in tasks:
            t.cancel()
            with contextlib.suppress(BaseException):
                await t
        with contextlib.suppress(Exception):
            await broker.close()
        await ex.close()

    sent = {int(k): v for k, v in stamps["sent"].items()}
    arrived: dict[str, int] = stamps["arrived"]
    otime = {o["clientOrderId"]: int(o["time"]) for o in emu_orders}
    wire: list[int] = []
    inproc: list[int] = []
    feedp: list[int] = []
    ccxt_part: list[int] = []
    http_part: list[int] = []
    check: list[int] = []
    unmatched = 0
    for cid, u, e_ms, r, c, f in records[WARMUP:]:
        s, a = sent.get(u), arrived.get(cid)
        if s is None or a is None or not f:
            unmatched += 1
            continue
        wire.append(a - s)
        inproc.append(c - r)
        feedp.append(r - s)
        ccxt_part.append(f - c)
        http_part.append(a - f)
        if cid in otime:
            check.append((otime[cid] - e_ms) * 1_000_000)
    neg = sum(1 for x in wire + inproc + feedp + ccxt_part + http_part if x < 0)
    out: dict[str, Any] = {
        "wire_orders": len(wire),
        "wire_tick_to_order_p50_ms": _pct(wire, 0.50),
        "wire_tick_to_order_p99_ms": _pct(wire, 0.99),
        "wire_tick_to_order_p999_ms": _pct(wire, 0.999),
        "wire_tick_to_order_max_ms": round(max(wire) / 1e6, 3) if wire else float("nan"),
        "wire_tick_to_order_mean_ms": round(statistics.fmean(wire) / 1e6, 3) if wire else float("nan"),
        "wire_in_process_p50_ms": _pct(inproc, 0.50),
        "wire_in_process_p99_ms": _pct(inproc, 0.99),
        "wire_in_process_p999_ms": _pct(inproc, 0.999),
        "wire_feed_p50_ms": _pct(feedp, 0.50),
        "wire_feed_p99_ms": _pct(feedp, 0.99),
        "wire_feed_p999_ms": _pct(feedp, 0.999),
        "wire_ccxt_p50_ms": _pct(ccxt_part, 0.50),
        "wire_ccxt_p99_ms": _pct(ccxt_part, 0.99),
        "wire_ccxt_p999_ms": _pct(ccxt_part, 0.999),
        "wire_http_p50_ms": _pct(http_part, 0.50),
        "wire_http_p99_ms": _pct(http_part, 0.99),
        "wire_http_p999_ms": _pct(http_part, 0.999),
        "wire_check_emulator_ms_p50": _pct(check, 0.50),
        "wire_check_emulator_ms_p99": _pct(check, 0.99),
        "wire_book_events": books,
        "wire_skipped_behind": skipped,
        "wire_rejected": rejected,
        "wire_unmatched": unmatched,
        "wire_negative_intervals": neg,
        "wire_feed_errors": feed_errors,
    }
    return out


def run(
    quick: bool = False, orders: int | None = None, interval_ms: float = 60.0, ccxt_limiter: bool = True
) -> dict[str, Any]:
    n = orders or (300 if quick else 10_000)
    with emulator_child("bench.latency_wire", "--interval-ms", str(interval_ms)) as port:
        gc.collect()
        t0 = time.perf_counter()
        res = asyncio.run(_measure(port, n, ccxt_limiter))
        res["wire_seconds"] = round(time.perf_counter() - t0, 1)
    res["wire_setup"] = (
        f"emulator in a child process (one 100 ms market step per {interval_ms:g} ms); "
        "ccxt.pro -> MarketFeed -> TradingCore -> CcxtBroker in this one; ccxt limiter "
        + ("on" if ccxt_limiter else "OFF")
    )
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="300 orders instead of 10,000 (about 25 s)")
    ap.add_argument("--orders", type=int, default=None)
    ap.add_argument("--interval-ms", type=float, default=60.0, help="wall ms per market step")
    ap.add_argument("--no-ccxt-limiter", action="store_true", help="ccxt's enableRateLimit off (the floor)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.port, args.interval_ms))
        return
    res = run(args.quick, args.orders, args.interval_ms, not args.no_ccxt_limiter)
    width = max(len(k) for k in res)
    for k, v in res.items():
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
