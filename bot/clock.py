"""One source of time for everything below the feed.

Two kinds of time, never mixed:

* **wall time** (``now_ms``, ms since the epoch, UTC) is a *stamp*: it goes into rows, log
  lines and events, and answers calendar questions (which UTC day a daily loss belongs to).
  It can step: NTP, an operator's ``date -s``, a VM resumed from a snapshot.
* **monotonic time** (``mono_ms``, ``monotonic``) measures *durations*: order-rate windows,
  order TTLs, ``max_hold``, stale books, feed-down and store-down timers, decision and guard
  cadences, settle delays. It never steps, so a wall-clock step changes nothing the bot does
  (DESIGN.md failure rules: "Time"). Its zero is arbitrary: only differences mean anything,
  and never against a wall-clock or exchange timestamp.

Live code reads the system clocks; replay reads event time for both (``SimulatedClock``), so
a replay is deterministic: the same recording gives the same orders, fills and PnL every time.
Nothing else calls ``time.time()``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Wall time: milliseconds since the epoch (UTC). For stamps and UTC days, never durations."""
        ...

    def mono_ms(self) -> int:
        """Monotonic milliseconds (arbitrary zero, never going backwards): for every duration."""
        ...

    def monotonic(self) -> float:
        """Seconds, never going backwards; for intervals and timeouts (``mono_ms`` / 1000)."""
        ...


class LiveClock:
    """The system clocks, for live, paper and testnet modes.

    ``wall_ms`` replaces the wall clock (tests step it to check that nothing but the stamps
    moves); the monotonic side is always ``time.monotonic_ns``.
    """

    __slots__ = ("_wall",)

    def __init__(self, wall_ms: Callable[[], int] | None = None) -> None:
        self._wall = wall_ms

    def now_ms(self) -> int:
        if self._wall is not None:
            return self._wall()
        return time.time_ns() // 1_000_000

    def mono_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()


class SimulatedClock:
    """Event-time clock for replay: it only moves when an event says so, and never backwards.

    Real exchanges interleave book and trade streams whose ``ts`` can step back by a few ms;
    ``advance`` keeps the largest time seen, so intervals measured on this clock are >= 0.
    Wall and monotonic time are the same event time here, so replay decisions stay exact.
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

    def mono_ms(self) -> int:
        return self._now

    def monotonic(self) -> float:
        return self._now / 1000.0
