"""Benchmark: in-process tick-to-order latency (market event in -> order handed to the broker).

    python -m bench.latency [--quick] [--orders N]

Why: the edge of an order-flow signal decays in milliseconds; our own code between the
exchange message and the order leaving must stay well below the network's share (target:
p99 < 1 ms in-process).

What is measured, exactly: the engine's ``TradingCore`` (``bot/engine.py``) with a
``PaperBroker`` subclass whose ``create_order`` takes a ``perf_counter_ns`` stamp on entry
and a stub record sink (the store writer's ``put`` is a queue hand-off, its disk work runs
in its own task, off this path). For every book event of the real BTCUSDT recording
(``recordings/btcusdt_spot_20240808.jsonl.gz``; a synthetic one when absent), looped as
often as needed:

    t0 = perf_counter_ns()
    await core.on_event(ev)      # SimulatedClock, book.apply, signals + detector, paper
                                 # broker on_book, strategy tick, kill-switch guard, decide
    await core._place(request)   # the order path: RiskLimits.check -> OrderManager.submit
                                 # (client id, state machine, order_events) -> broker
    latency = stamp in create_order - t0

The request is a post-only limit buy of the minimum size, $1 below the best bid (inside the
price band; it never crosses, so the paper broker never rejects it), forced on every book
event so that every one of them is "order-worthy" (the strategy itself fires only a few
times a minute). Each order is then
cancelled outside the timer so risk's open-order and position limits stay clear
(``max_orders_per_minute`` is raised for the bench: it would otherwise reject after 30).
Not included: the websocket receive and ccxt's parsing (see ``bench.feed``), and the
network/exchange side of ``create_order``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from bot.logging import configure_logging

configure_logging("error")

from bot.clock import SimulatedClock  # noqa: E402
from bot.config import Settings  # noqa: E402
from bot.execution.paper_broker import PaperBroker  # noqa: E402
from bot.model import MarketEvent, Order, OrderRequest, OrderType, Side, Trade  # noqa: E402

REAL = (
    Path(__file__).resolve().parent.parent.parent
    / "shared"
    / "data"
    / "recordings"
    / "btcusdt_spot_20240808.jsonl.gz"
)


class TimedPaperBroker(PaperBroker):
    """The paper broker, stamping the moment each order is handed to it."""

    stamp_ns: int = 0
    count: int = 0

    async def create_order(self, order: Order) -> Order:
        self.stamp_ns = time.perf_counter_ns()
        self.count += 1
        return await super().create_order(order)


class NullSink:
    """Stands in for the store writer (``put`` is a queue hand-off there; nothing to wait for)."""

    def __init__(self) -> None:
        self.n = 0

    def put(self, record: object) -> None:
        self.n += 1

    async def durable(self, record: object) -> None:
        self.n += 1


def _events() -> tuple[str, float | None, list[MarketEvent]]:
    from bot.market.recorder import RecordingReader

    if REAL.is_file():
        reader = RecordingReader(REAL)
        evs = list(reader)
        return REAL.name, reader.header.tick, evs
    from bot.market.synthetic import SyntheticMarket

    m = SyntheticMarket(seed=7)
    return "synthetic", m.tick, list(m.events(600))


async def _measure(n_orders: int, events: list[MarketEvent], tick: float | None) -> dict[str, Any]:
    from bot.engine import TradingCore
    from bot.risk.market_rules import MarketRules

    base = Settings()
    settings = base.model_copy(update={"risk": base.risk.model_copy(update={"max_orders_per_minute": 10**9})})
    rules = MarketRules.binance_spot(settings.symbol)
    clock = SimulatedClock(0)
    broker = TimedPaperBroker(clock, settings.paper, settings.symbol)
    core = TradingCore(
        settings,
        clock=clock,
        broker=broker,
        writer=NullSink(),  # type: ignore[arg-type]
        run_id=1,
        rules=rules,
        tick=tick,
    )
    core.state = "trading"
    amount = rules.min_amount or Decimal("0.0001")
    offset = Decimal("1.00")  # 100 ticks below the bid: inside the price band, never crosses
    lat: list[int] = []
    rejected = 0
    seen = 0
    pc = time.perf_counter_ns
    while len(lat) < n_orders:
        for ev in events:
            if type(ev) is Trade:
                await core.on_event(ev)
                continue
            seen += 1
            before = broker.count
            t0 = pc()
            await core.on_event(ev)
            bb = core.book.best_bid()
            if bb is None or core.strategy is None:
                continue
            req = OrderRequest(
                settings.symbol,
                Side.BUY,
                amount,
                Decimal(repr(bb[0])) - offset,
                OrderType.LIMIT,
                post_only=True,
                reason="bench",
            )
            await core._place(req)
            if broker.count == before:
                rejected += 1
                continue
            lat.append(broker.stamp_ns - t0)
            for o in core.om.open_orders:  # untimed: keep the limits clear
                await core.om.cancel(o.client_id)
            if len(lat) >= n_orders:
                break
    lat.sort()

    def q(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] / 1e6

    return {
        "tick_to_order_orders": len(lat),
        "tick_to_order_rejected": rejected,
        "tick_to_order_p50_ms": round(q(0.50), 4),
        "tick_to_order_p99_ms": round(q(0.99), 4),
        "tick_to_order_p999_ms": round(q(0.999), 4),
        "tick_to_order_max_ms": round(lat[-1] / 1e6, 4),
        "tick_to_order_mean_ms": round(statistics.fmean(lat) / 1e6, 4),
        "tick_to_order_path": "TradingCore.on_event + _place (risk + OrderManager.submit) -> PaperBroker.create_order",
    }


def run(quick: bool = False, orders: int | None = None) -> dict[str, Any]:
    n = orders or (10_000 if quick else 20_000)
    name, tick, events = _events()
    gc.collect()
    res = asyncio.run(_measure(n, events, tick))
    res["tick_to_order_data"] = name
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10k orders instead of 20k")
    ap.add_argument("--orders", type=int, default=None)
    args = ap.parse_args(argv)
    res = run(args.quick, args.orders)
    width = max(len(k) for k in res)
    for k, v in res.items():
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
