"""Benchmark: all signals + detector per event, against the bare order-book update, in one run.

    python -m bench.signals [--quick]

Why measured against the book: the target is that the signals cost no more than keeping the
book itself. Both loops run on the same pre-parsed events (the real BTCUSDT recording when
present, else a synthetic one), best of N repeats:

- ``book_us``: ``OrderBook.apply`` per book event (snapshot/delta), nothing else;
- ``signals_us``: the extra time per book event when the same loop also runs
  ``SignalEngine.on_book``/``on_trade`` and ``detector.update`` after every event (book and
  trade events), i.e. the whole signal cost including the tape, charged to the book events;
- ``signals_per_event_us``: the same extra time spread over all events (book + trades).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.model import MarketEvent, Trade

REAL = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "recordings" / "btcusdt_spot_20240808.jsonl.gz"


def _events(quick: bool) -> tuple[str, float | None, list[MarketEvent]]:
    if REAL.is_file():
        from bot.market.recorder import RecordingReader

        reader = RecordingReader(REAL)
        evs = list(reader)
        tick = getattr(reader.header, "tick", None)
        return REAL.name, float(tick) if tick else None, evs
    import tempfile

    from bot.market.recorder import RecordingReader
    from bot.market.synthetic import write_synthetic_recording

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "synthetic.jsonl.gz"
        write_synthetic_recording(p, 120 if quick else 600, seed=7)
        reader = RecordingReader(p)
        evs = list(reader)
        tick = getattr(reader.header, "tick", None)
    return "synthetic", float(tick) if tick else None, evs


def _book_only(events: list[MarketEvent], tick: float | None) -> float:
    from bot.market.book import OrderBook

    book = OrderBook(tick=tick)
    apply = book.apply
    t0 = time.perf_counter()
    for ev in events:
        if type(ev) is not Trade:
            apply(ev)
    return time.perf_counter() - t0


def _with_signals(events: list[MarketEvent], tick: float | None, settings: Settings) -> tuple[float, int]:
    from bot.market.book import OrderBook
    from bot.signals.engine import SignalEngine

    book = OrderBook(tick=tick)
    eng = SignalEngine(settings, sink=None, tick=tick)
    apply, on_book, on_trade, update = book.apply, eng.on_book, eng.on_trade, eng.detector.update
    t0 = time.perf_counter()
    for ev in events:
        if type(ev) is Trade:
            on_trade(ev)
        else:
            apply(ev)
            on_book(book, ev, ev.ts)
        update(ev.ts)
    return time.perf_counter() - t0, eng.detector.entries


def run(quick: bool = False) -> dict[str, Any]:
    name, tick, events = _events(quick)
    if quick:
        events = events[:15_000]
    n_book = sum(1 for e in events if type(e) is not Trade)
    settings = Settings()
    repeats = 3 if quick else 7
    book_t, sig_t = [], []
    gc.disable()
    try:
        for _ in range(repeats):
            book_t.append(_book_only(events, tick))
            t, _entries = _with_signals(events, tick, settings)
            sig_t.append(t)
    finally:
        gc.enable()
    b, s = min(book_t), min(sig_t)
    extra = max(s - b, 0.0)
    book_us = b / n_book * 1e6
    signals_us = extra / n_book * 1e6
    return {
        "data": name,
        "events": len(events),
        "book_events": n_book,
        "levels": settings.signals.levels,
        "book_us": round(book_us, 3),
        "signals_us": round(signals_us, 3),
        "signals_per_event_us": round(extra / len(events) * 1e6, 3),
        "signals_vs_book_ratio": round(signals_us / book_us, 3) if book_us > 0 else float("nan"),
        "python": sys.version.split()[0],
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smaller run (< 20 s)")
    args = ap.parse_args(argv)
    res = run(args.quick)
    width = max(len(k) for k in res)
    for k, v in res.items():
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
