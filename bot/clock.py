"""One source of time for everything below the feed.

Live code reads the wall clock; replay reads event time. Nothing else calls
``time.time()``, so a replay is deterministic: the same recording gives the same orders,
fills and PnL every time.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Milliseconds since the epoch (UTC)."""
        ...

    def monotonic(self) -> float:
        """Seconds, never going backwards; for intervals and timeouts."""
        ...


class LiveClock:
    """Wall clock for live, paper and testnet modes."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()


class SimulatedClock:
    """Event-time clock for replay: it only moves when an event says so, and never backwards.

    Real exchanges interleave book and trade streams whose ``ts`` can step back by a few ms;
    ``advance`` keeps the largest time seen, so intervals measured on this clock are >= 0.
    """

    __slots__ = ("_now",)

    def __init__(self, start_ms: int = 0) -> None:
        self._now = start_ms

    def advance(self, ts_ms: int) -> int:
        if ts_ms > self._now:
            self._now = ts_ms
        return self._now

    def now_ms(self) -> int:
        return self._now

    def monotonic(self) -> float:
        return self._now / 1000.0
