"""Markouts: where the mid (and microprice) went 1 s, 10 s and 60 s after each of our fills.

Why: the fee is only the visible cost of a fill. A fill the market then moves against
(a taker who was late, a maker who was picked off) loses more; averaged by horizon, by
maker/taker and by signal strength the markouts show whether the signals pay for their costs.

The rule (the same live and in replay, so replay is exact):

* For a fill at ``fill.ts`` and a horizon ``h``, the markout uses the FIRST book value passed to
  :meth:`MarkoutTracker.on_mid` whose ``ts >= fill.ts + h`` (a book event exactly at the due
  time counts). The caller calls ``on_mid`` after every book event that leaves the book usable,
  so that value is the book right after the first event at or after the due time.
  A NaN mid (no usable book) is skipped: the markout waits for the next real one.
* ``pnl = side.sign * (mid - price) * amount`` (quote, before fees; Decimal, exact);
  ``bps = side.sign * (mid - price) / price * 1e4``; ``micro_bps`` the same with the microprice.
  Float mids are converted with ``Decimal(repr(x))`` (the shortest decimal that round-trips),
  so a mid of two tick prices keeps its exact decimal value.
* ``flush_pending()`` at the end of a stream (replay end, shutdown) emits the markouts still
  waiting, with the last mid seen and ``complete=False``; reviews average only complete ones.

Cost: ``add_fill`` is a heap push per horizon; ``on_mid`` is one comparison when nothing is
due (the heap's head is the earliest due time), so calling it on every book event is cheap.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterable
from decimal import Decimal

from bot.model import Fill, Markout

DEFAULT_HORIZONS_MS: tuple[int, ...] = (1000, 10_000, 60_000)
_BPS = Decimal(10_000)


def _dec(x: float) -> Decimal:
    return Decimal(repr(x))


def make_markout(fill: Fill, horizon_ms: int, ts: int, mid: float, microprice: float | None,
                 signal_strength: float | None, *, complete: bool = True) -> Markout:
    """The markout of ``fill`` against ``mid``/``microprice`` seen at ``ts`` (see the module rule)."""
    m = _dec(mid)
    sign = fill.side.sign
    move = (m - fill.price) * sign
    pnl = move * fill.amount
    bps = float(move * _BPS / fill.price) if fill.price else math.nan
    micro: Decimal | None = None
    micro_bps: float | None = None
    if microprice is not None and math.isfinite(microprice):
        micro = _dec(microprice)
        micro_bps = float((micro - fill.price) * sign * _BPS / fill.price) if fill.price else None
    return Markout(
        trade_id=fill.trade_id, client_id=fill.client_id, symbol=fill.symbol, side=fill.side,
        liquidity=fill.liquidity, price=fill.price, amount=fill.amount, fill_ts=fill.ts,
        horizon_ms=horizon_ms, ts=ts, mid=m, microprice=micro, pnl=pnl, bps=bps, micro_bps=micro_bps,
        signal_strength=signal_strength, complete=complete,
    )


class MarkoutTracker:
    """Pending (fill, horizon) pairs in a heap by due time; ``on_mid`` emits the due ones."""

    def __init__(self, horizons_ms: Iterable[int] = DEFAULT_HORIZONS_MS) -> None:
        self.horizons_ms = tuple(sorted({int(h) for h in horizons_ms}))
        if not self.horizons_ms or self.horizons_ms[0] < 0:
            raise ValueError(f"horizons_ms: need at least one horizon >= 0 (got {horizons_ms!r})")
        # (due_ts, tiebreak, horizon, fill, strength): the tiebreak keeps fills in arrival order
        self._heap: list[tuple[int, int, int, Fill, float | None]] = []
        self._count = itertools.count()
        self._last: tuple[int, float, float | None] | None = None
        self.emitted = 0

    @property
    def pending(self) -> int:
        return len(self._heap)

    def add_fill(self, fill: Fill, signal_strength: float | None) -> None:
        """Track ``fill``: one markout per horizon will follow; ``signal_strength`` goes on each row."""
        for h in self.horizons_ms:
            heapq.heappush(self._heap, (fill.ts + h, next(self._count), h, fill, signal_strength))

    def on_mid(self, ts_ms: int, mid: float, microprice: float | None) -> list[Markout]:
        """Call after every book event: the markouts that became due at ``ts_ms`` (often none)."""
        if mid != mid:  # NaN: the book is not usable; wait for the next real mid
            return []
        self._last = (ts_ms, mid, microprice)
        heap = self._heap
        if not heap or heap[0][0] > ts_ms:
            return []
        out: list[Markout] = []
        while heap and heap[0][0] <= ts_ms:
            _, _, h, fill, strength = heapq.heappop(heap)
            out.append(make_markout(fill, h, ts_ms, mid, microprice, strength))
        self.emitted += len(out)
        return out

    def flush_pending(self) -> list[Markout]:
        """End of stream: the markouts still waiting, against the last mid seen, ``complete=False``.

        Without any mid seen there is nothing to mark against: the pending items are dropped.
        """
        heap, self._heap = self._heap, []
        if self._last is None:
            return []
        ts, mid, micro = self._last
        out = [make_markout(fill, h, ts, mid, micro, strength, complete=False)
               for _, _, h, fill, strength in sorted(heap)]
        self.emitted += len(out)
        return out
