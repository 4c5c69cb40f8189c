"""Normalisation and rolling windows for the streaming signals.

Why a scale and not a z-score: a raw OFI of 5 BTC means something different in a quiet Sunday
book and in a news spike, so every signal is divided by its typical size, an exponentially
weighted RMS (root mean square) of the recent values, and ``entry_z = 2`` means "twice the
usual magnitude" in every regime; the half-life lets the scale follow the market. The flow
signals are signed with a natural zero (buying minus selling), so nothing is subtracted: a
z-score against an adaptive *mean* drifted up during a burst of buying, and continued but
weaker buying then scored negative - the bot sold into buy pressure (issue "Exact numbers",
item 6). Divided by a positive scale, every score has the sign of its raw value.

Why time slots instead of a per-event deque: a rolling time window over a tape of thousands
of events per second would push and pop one entry per event. Here the window is cut into
``slots`` fixed slots of event time; an event only adds a Python float to the open slot, and
the preallocated numpy ring is touched once per slot when the slot closes. That is O(1)
amortised with no allocation per event. The price is resolution: the window is exact to one
slot (window / slots), which is documented in docs/signals.md.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def alpha_from_halflife(halflife: float, step: float) -> float:
    """EWMA weight per observation when observations arrive every ``step`` (same unit as halflife)."""
    if halflife <= 0 or step <= 0:
        raise ValueError("halflife and step must be > 0")
    return 1.0 - math.pow(0.5, step / halflife)


# Outlier rejection of the scale (see EwmaScale): beyond REJECT times the scale a value is
# scored but not learnt from, for at most MAX_SKIP consecutive updates; then one is learnt and
# the scale grows, so a lasting change of magnitude is adopted (about ten half-lives for a
# 20-fold one; tests/unit/test_signals_normalize.py).
REJECT = 3.0
MAX_SKIP = 60
WARM = 30  # values learnt before the rejection applies
_TINY = 5e-324  # the smallest float: a non-zero value far below the scale keeps its sign


class EwmaScale:
    """Exponentially weighted RMS of a signed stream, and each new value in units of it.

    ``update(x)`` returns ``x / rms`` with the RMS *before* ``x`` is added, so a jump is
    measured against the past and not diluted by itself; the RMS is then updated with weight
    ``max(alpha, 1/n)`` (a plain running mean of ``x²`` until the EWMA has enough history).
    The score has the sign of ``x``, always: the scale is positive, a quotient that underflows
    is kept at the smallest float of ``x``'s sign, and before any scale exists (no non-zero
    value learnt yet) the score is ``sign(x)`` (the value in units of itself). A value whose
    square is not finite (NaN, inf, beyond 1e154) is scored but never learnt.

    Why outliers are not learnt from: the signals are rolling-window sums sampled every step, so
    one pressure episode gives tens of consecutive, correlated values at 5-8 times the usual
    size. Learning from them multiplied the spread (the z-scores' std, used before this scale,
    tripled after one 25 s episode) and every later episode then scored ~2: on the synthetic
    market the detector caught 4 of 68 episodes at entry_z 3. Once the scale has ``WARM`` values, a value beyond ``REJECT`` times the scale
    is scored but skipped, for at most ``MAX_SKIP`` consecutive updates (``python -m
    bench.detector``; docs/signals.md). With a scale instead of a mean this cannot flip a sign:
    it only decides how large the scores of an episode are.
    """

    __slots__ = ("alpha", "ms", "n", "rms", "skipped")

    def __init__(self, alpha: float) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1] (got {alpha})")
        self.alpha = alpha
        self.skipped = 0
        self.ms = 0.0  # EWMA of x²
        self.rms = 0.0  # sqrt(ms), kept so a score is one division
        self.n = 0

    def score(self, x: float) -> float:
        """``x`` in units of the current scale, without updating it; the sign of ``x`` always."""
        rms = self.rms
        if rms > 0.0:
            s = x / rms
            if s == 0.0 and x != 0.0:
                return math.copysign(_TINY, x)
            return s
        if x > 0.0:
            return 1.0
        if x < 0.0:
            return -1.0
        return x  # 0.0, -0.0 or NaN

    def update(self, x: float) -> float:
        s = self.score(x)
        if self.n > WARM and abs(s) > REJECT and self.skipped < MAX_SKIP:
            self.skipped += 1
            return s
        x2 = x * x
        if not math.isfinite(x2):
            return s
        self.skipped = 0
        self.n += 1
        a = max(self.alpha, 1.0 / self.n)
        self.ms += a * (x2 - self.ms)
        self.rms = math.sqrt(self.ms) if self.ms > 0.0 else 0.0
        return s


class RingBuffer:
    """A fixed-capacity float64 ring (numpy, preallocated); ``values()`` oldest first."""

    __slots__ = ("_buf", "_i", "_n", "capacity")

    def __init__(self, capacity: int, width: int = 1) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be > 0")
        self.capacity = capacity
        self._buf: FloatArray = np.zeros((capacity, width), dtype=np.float64)
        self._i = 0  # next write position
        self._n = 0

    def append(self, row: float | list[float] | FloatArray) -> None:
        self._buf[self._i] = row
        self._i = (self._i + 1) % self.capacity
        if self._n < self.capacity:
            self._n += 1

    def __len__(self) -> int:
        return self._n

    def values(self) -> FloatArray:
        """A copy of the stored rows, oldest first, shape (len, width)."""
        if self._n < self.capacity:
            return self._buf[: self._n].copy()
        return np.concatenate((self._buf[self._i :], self._buf[: self._i]))

    def sum(self) -> FloatArray:
        """Column sums over the stored rows (no copy)."""
        out: FloatArray = self._buf.sum(axis=0) if self._n == self.capacity else self._buf[: self._n].sum(axis=0)
        return out

    def last(self) -> FloatArray:
        if self._n == 0:
            raise IndexError("empty ring buffer")
        out: FloatArray = self._buf[(self._i - 1) % self.capacity]
        return out

    def oldest(self) -> FloatArray:
        if self._n == 0:
            raise IndexError("empty ring buffer")
        out: FloatArray = self._buf[self._i % self.capacity] if self._n == self.capacity else self._buf[0]
        return out

    def clear(self) -> None:
        self._buf[:] = 0.0
        self._i = 0
        self._n = 0


class SlotClock:
    """Cuts event time (ms) into fixed slots aligned to multiples of ``slot_ms``.

    ``advance(ts)`` returns how many slots closed since the last call (0 on the fast path: a
    single integer comparison). Time never runs backwards here: a ``ts`` that steps back a few
    ms (book and trade streams interleave like that) stays in the open slot, as a simulated
    clock would keep the largest ``ts`` seen.
    """

    __slots__ = ("end", "slot_ms", "start")

    def __init__(self, slot_ms: int) -> None:
        if slot_ms <= 0:
            raise ValueError("slot_ms must be > 0")
        self.slot_ms = slot_ms
        self.start = -1  # start of the open slot; -1 before the first event
        self.end = -1

    def advance(self, ts: int) -> int:
        if ts < self.end:
            return 0
        if self.start < 0:
            self.start = ts - ts % self.slot_ms
            self.end = self.start + self.slot_ms
            return 0
        new_start = ts - ts % self.slot_ms
        closed = (new_start - self.start) // self.slot_ms
        self.start = new_start
        self.end = new_start + self.slot_ms
        return int(closed)


class RollingSums:
    """Rolling-window sums of ``width`` quantities over the last ``slots`` closed slots.

    The caller accumulates the open slot in its own Python floats (the hot path) and calls
    ``close(row, n_closed)`` when ``SlotClock.advance`` reports closed slots: the row goes into
    the ring and ``n_closed - 1`` empty slots follow it (quiet periods). ``sums()`` is the sum
    over the window of closed slots, recomputed exactly (no add/subtract drift) once per close.
    """

    __slots__ = ("_ring", "_sum", "slots", "width")

    def __init__(self, slots: int, width: int) -> None:
        if slots <= 0 or width <= 0:
            raise ValueError("slots and width must be > 0")
        self.slots = slots
        self.width = width
        self._ring = RingBuffer(slots, width)
        self._sum: list[float] = [0.0] * width

    def close(self, row: list[float], n_closed: int = 1) -> None:
        if n_closed <= 0:
            return
        self._ring.append(row)
        for _ in range(min(n_closed - 1, self.slots)):
            self._ring.append(0.0)
        self._sum = self._ring.sum().tolist()

    def sums(self) -> list[float]:
        return self._sum

    def clear(self) -> None:
        self._ring.clear()
        self._sum = [0.0] * self.width
