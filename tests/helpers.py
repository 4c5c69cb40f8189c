"""Small helpers shared by tests (importable as ``helpers``: pytest puts tests/ on the path)."""

from __future__ import annotations

import json
import socket
from typing import Any

T0 = 1_723_075_200_000


def json_lines(text: str, *, strict: bool = False) -> list[dict[str, Any]]:
    """The JSON log lines of ``text`` (lines starting with ``{``). A line that does not parse
    is skipped (another process's output can interleave), or raises with ``strict``."""
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                if strict:
                    raise
    return out


class ListSink:
    """The order manager's record sink as a list (``put`` and ``durable`` both append)."""

    def __init__(self) -> None:
        self.records: list[object] = []

    def put(self, record: object) -> None:
        self.records.append(record)

    async def durable(self, record: object) -> None:
        self.records.append(record)

    def fills(self) -> list[Any]:
        from bot.model import Fill

        return [r for r in self.records if isinstance(r, Fill)]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def paper_core(settings: Any, t0: int = T0) -> tuple[Any, Any]:
    """The real TradingCore with the paper broker and a started StoreWriter (the runner's own
    ``open_store``/``_writer``) under a simulated clock, trading, after one first book snapshot
    (60000 / 60001). Returns (core, database engine); close ``core.writer`` and dispose the engine."""
    from bot.clock import SimulatedClock
    from bot.engine import TradingCore, _writer, open_store
    from bot.execution.paper_broker import PaperBroker
    from bot.model import BookSnapshot
    from bot.risk.market_rules import MarketRules

    clock = SimulatedClock(t0)
    engine, run_id = await open_store(settings, "paper", t0)
    ref: list[TradingCore] = []
    writer = _writer(settings, engine, run_id, ref)
    core = TradingCore(settings, clock=clock, broker=PaperBroker(clock, settings.paper, settings.symbol),
                       writer=writer, run_id=run_id, rules=MarketRules.binance_spot(settings.symbol))
    ref.append(core)
    await writer.start()
    core.state = "trading"
    await core.on_event(BookSnapshot(ts=t0, bids=[(60000.0, 1.0)], asks=[(60001.0, 1.0)], seq=1, recv=t0))
    return core, engine


class SteppableClock:
    """A live clock for tests whose two sides are driven separately.

    Monotonic time only moves forward, when the test says so (``advance_to``/``advance``); the
    wall clock is monotonic time plus an offset that ``step_wall`` changes, as an NTP step or an
    operator's ``date -s`` would (by -1 h, +1 h, ...). Implements ``bot.clock.Clock``.
    """

    def __init__(self, wall0_ms: int, mono0_ms: int = 5_000_000) -> None:
        self._mono = mono0_ms
        self._offset = wall0_ms - mono0_ms

    def now_ms(self) -> int:
        return self._mono + self._offset

    def mono_ms(self) -> int:
        return self._mono

    def monotonic(self) -> float:
        return self._mono / 1000.0

    def advance(self, ms: int) -> None:
        self._mono += max(0, ms)

    def advance_to(self, mono_ms: int) -> None:
        self._mono = max(self._mono, mono_ms)

    def step_wall(self, delta_ms: int) -> None:
        self._offset += delta_ms


def feed_signals(events: Any, settings: Any, *, tick: float | None = None,
                 warmup_s: float | None = None) -> tuple[Any, list[Any]]:
    """Market events through ``OrderBook`` -> ``SignalEngine`` -> ``Detector``, in the order the
    trading engine feeds them; returns the engine and every ``ImbalanceSignal`` its sink saw
    (entries, exits and the sampled rows)."""
    from bot.market.book import OrderBook
    from bot.model import Trade
    from bot.signals.engine import SignalEngine

    book = OrderBook(tick=tick) if tick is not None else OrderBook()
    sunk: list[Any] = []
    eng = SignalEngine(settings, sink=sunk.append, tick=tick, warmup_s=warmup_s)
    for ev in events:
        if isinstance(ev, Trade):
            eng.on_trade(ev)
        else:
            book.apply(ev)
            eng.on_book(book, ev, ev.ts)
        eng.detector.update(ev.ts)
    return eng, sunk
