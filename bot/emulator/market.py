"""What drives each symbol's public book and tape: a seeded synthetic market or a recording.

Why this shape: the engine only needs "the next market events and when they are due".
Both sources yield ``(offset_ms, event)`` pairs, offsets measured in *market* time from the
source's start; the server's driver turns that into wall-clock time with a ``speed``
factor (speed 50 plays 50 market seconds per wall second), so a test can push 10,000 book
updates in a few seconds and ``bot demo`` can run in real time from the same code. The
served market is live: event times on the wire are the emulator's wall clock, not the
source's timestamps. A recording is replayed in a loop (its first snapshot resets the book
at each pass).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from bot.emulator.matching import SymbolSpec
from bot.market.synthetic import RegimeSchedule
from bot.model import BookDelta, BookSnapshot, MarketEvent, Trade


class MarketSource(Protocol):
    symbol: str

    def initial(self) -> BookSnapshot: ...

    def stream(self) -> Iterator[tuple[float, MarketEvent]]: ...


class SyntheticSource:
    """``bot.market.synthetic.SyntheticMarket`` with the symbol's real tick and lot."""

    def __init__(self, spec: SymbolSpec, seed: int, step_ms: int = 100,
                 schedule: RegimeSchedule | None = None) -> None:
        from bot.market.synthetic import SyntheticMarket

        self.symbol = spec.symbol
        self.step_ms = step_ms
        # a different but reproducible seed per symbol
        sym_seed = seed * 1000 + sum(map(ord, spec.symbol))
        self.m = SyntheticMarket(
            seed=sym_seed,
            symbol=spec.symbol,
            start_price=spec.start_price,
            tick=float(spec.tick),
            lot=float(spec.step),
            start_ms=int(time.time() * 1000),
            step_ms=step_ms,
            schedule=schedule,
        )

    def initial(self) -> BookSnapshot:
        return self.m.snapshot()

    def stream(self) -> Iterator[tuple[float, MarketEvent]]:
        t0 = self.m.start_ms
        while True:
            events = self.m.step()
            offset = float(self.m.now_ms - t0)
            for ev in events:
                yield offset, ev


class RecordingSource:
    """A ``bot-recording/1`` file, replayed in a loop with its own pacing."""

    def __init__(self, path: str | Path, symbol: str | None = None) -> None:
        from bot.market.recorder import RecordingReader

        self.path = Path(path)
        reader = RecordingReader(self.path)
        self.symbol = symbol or reader.header.symbol
        self._first: BookSnapshot | None = None
        for ev in reader:
            if isinstance(ev, BookSnapshot):
                self._first = ev
                break
        if self._first is None:
            raise ValueError(f"{self.path}: no book snapshot in the recording")

    @staticmethod
    def header_symbol(path: str | Path) -> str:
        from bot.market.recorder import RecordingReader

        return str(RecordingReader(Path(path)).header.symbol)

    def initial(self) -> BookSnapshot:
        assert self._first is not None
        return self._first

    def stream(self) -> Iterator[tuple[float, MarketEvent]]:
        from bot.market.recorder import RecordingReader

        base = 0.0
        while True:
            t0: int | None = None
            last = 0.0
            started = False
            for ev in RecordingReader(self.path, on_error="skip"):
                if not started:  # skip up to and including the first snapshot (served as initial)
                    if isinstance(ev, BookSnapshot):
                        started = True
                        t0 = ev.ts
                        if base > 0:
                            yield base, ev
                    continue
                assert t0 is not None
                off = max(last, float(ev.ts - t0))  # never backwards
                last = off
                if isinstance(ev, BookDelta | Trade | BookSnapshot):
                    yield base + off, ev
            base += last + 100.0
