"""A seeded synthetic market with injected episodes of buy and sell pressure.

Why: tests, the exchange emulator and ``bot demo`` need a market that behaves like a real
L2 book (levels on the tick grid, sizes on the lot grid, a one-tick spread most of the
time, trades that consume the best level, a random-walk mid) and that contains KNOWN
order-flow episodes, so a test can check that the detector fires inside them and stays
quiet outside. Everything comes from one seed: the same seed gives the same events.

The model, per ``step_ms`` step:

1. trades: Poisson(``trades_per_step``) prints; each aggressor eats the best opposite level
   (a level that is used up disappears, so the best price moves);
2. limit-order noise: symmetric adds and cancels on both sides, more often near the top;
3. pressure (inside a ``Regime``): more and larger aggressor trades in the regime's direction,
   extra additions on the supporting side (bids for buy pressure, including price
   improvement inside the spread), and cancellations on the opposite best level;
4. the spread is refilled from both sides (biased by pressure) and each side is kept at
   about ``levels`` levels (new levels behind the worst; the excess far levels removed).

All book changes of a step become ONE ``BookDelta`` (like one Binance ``depthUpdate``),
after the step's trades, with consecutive ``first_seq``/``seq``. Prices and sizes are
integers of ticks and lots internally, so the book is exact and never crossed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from bot.model import BookDelta, BookSnapshot, Level, MarketEvent, Side, Trade


@dataclass(frozen=True)
class RegimeSchedule:
    """When automatic pressure episodes happen, in seconds: each a (low, high) uniform range.

    The default paces episodes like a slow real market (the first after one to two minutes);
    ``bot demo`` uses :data:`DEMO_SCHEDULE` so a 30 s demo sees an episode after its warm-up.
    """

    first_s: tuple[float, float] = (60.0, 120.0)
    gap_s: tuple[float, float] = (45.0, 90.0)
    duration_s: tuple[float, float] = (20.0, 45.0)


DEMO_SCHEDULE = RegimeSchedule(first_s=(14.0, 15.0), gap_s=(8.0, 12.0), duration_s=(14.0, 18.0))


@dataclass(frozen=True)
class Regime:
    """An injected pressure episode: ``direction`` +1 is buy pressure, -1 sell pressure."""

    start_ms: int
    end_ms: int
    direction: int


def _decimals(x: float) -> int:
    exp = Decimal(repr(x)).normalize().as_tuple().exponent
    return max(0, -int(exp))


class SyntheticMarket:
    """Seeded L2 book + tape; see the module docstring for the model."""

    def __init__(
        self,
        seed: int = 7,
        symbol: str = "BTC/USDT",
        start_price: float = 60000.0,
        tick: float = 0.01,
        lot: float = 0.00001,
        start_ms: int = 1_700_000_000_000,
        levels: int = 20,
        step_ms: int = 100,
        pressure: bool | list[Regime] = True,
        trades_per_step: float = 2.0,
        schedule: RegimeSchedule | None = None,
    ) -> None:
        if tick <= 0 or lot <= 0 or levels < 2 or step_ms <= 0 or start_price <= 0:
            raise ValueError("tick, lot, start_price and step_ms must be positive and levels >= 2")
        self.seed = seed
        self.symbol = symbol
        self.tick = tick
        self.lot = lot
        self.start_ms = start_ms
        self.levels = levels
        self.step_ms = step_ms
        self.trades_per_step = trades_per_step
        self.now_ms = start_ms
        self.seq = 1_000_000
        self._pdec = _decimals(tick)
        self._ldec = _decimals(lot)
        self._rng = random.Random(f"synthetic-market-{seed}")
        self._regime_rng = random.Random(f"synthetic-regimes-{seed}")
        self._auto = pressure is True
        self.schedule = schedule or RegimeSchedule()
        self.regimes: list[Regime] = [] if isinstance(pressure, bool) else sorted(pressure, key=lambda r: r.start_ms)
        self._regime_idx = 0
        self._trade_id = 0
        # typical sizes, in lots: a resting level ~0.2 base, a trade ~0.02 base at defaults
        self._mu_level = math.log(max(1.0, 0.2 / lot))
        self._mu_trade = math.log(max(1.0, 0.02 / lot))
        self._bids: dict[int, int] = {}  # price in ticks -> size in lots
        self._asks: dict[int, int] = {}
        s = round(start_price / tick)
        rng = self._rng
        p = s
        for _ in range(levels):
            self._bids[p] = self._level_lots()
            p -= 1 if rng.random() < 0.7 else rng.randint(2, 3)
        p = s + 1
        for _ in range(levels):
            self._asks[p] = self._level_lots()
            p += 1 if rng.random() < 0.7 else rng.randint(2, 3)
        if self._auto:
            self._extend_regimes(self.now_ms + 600_000)

    # ------------------------------------------------------------------ helpers

    def _level_lots(self, scale: float = 1.0) -> int:
        return max(1, int(self._rng.lognormvariate(self._mu_level, 1.0) * scale))

    def _poisson(self, lam: float) -> int:
        if lam <= 0:
            return 0
        limit = math.exp(-lam)
        k = 0
        p = self._rng.random()
        while p > limit:
            k += 1
            p *= self._rng.random()
        return k

    def _extend_regimes(self, until_ms: int) -> None:
        rng = self._regime_rng
        end = self.regimes[-1].end_ms if self.regimes else None
        while end is None or end < until_ms:
            if end is None:
                start = self.start_ms + int(rng.uniform(*self.schedule.first_s) * 1000)
            else:
                start = end + int(rng.uniform(*self.schedule.gap_s) * 1000)
            end = start + int(rng.uniform(*self.schedule.duration_s) * 1000)
            self.regimes.append(Regime(start, end, rng.choice((1, -1))))

    def direction_at(self, ts_ms: int) -> int:
        """+1/-1 inside a buy/sell pressure regime, 0 outside."""
        if self._auto and (not self.regimes or self.regimes[-1].end_ms < ts_ms + 60_000):
            self._extend_regimes(ts_ms + 600_000)
        regs = self.regimes
        i = self._regime_idx
        while i < len(regs) and regs[i].end_ms < ts_ms:
            i += 1
        self._regime_idx = i
        if i < len(regs) and regs[i].start_ms <= ts_ms:
            return regs[i].direction
        return 0

    def start_regime(self, direction: int, seconds: float) -> Regime:
        """A pressure episode from now for ``seconds``; it replaces the planned episodes it overlaps."""
        start = self.now_ms
        end = start + int(seconds * 1000)
        regime = Regime(start, end, direction)
        keep = [r for r in self.regimes if r.end_ms < start or r.start_ms > end]
        self.regimes[:] = sorted([*keep, regime], key=lambda r: r.start_ms)
        self._regime_idx = 0  # direction_at scans forward from its index; the list changed under it
        return regime

    def _price(self, ticks: int) -> float:
        return round(ticks * self.tick, self._pdec)

    def _size(self, lots: int) -> float:
        return round(lots * self.lot, self._ldec)

    def book_levels(self) -> tuple[list[Level], list[Level]]:
        """The full current book: bids and asks, best first."""
        bids = [(self._price(p), self._size(self._bids[p])) for p in sorted(self._bids, reverse=True)]
        asks = [(self._price(p), self._size(self._asks[p])) for p in sorted(self._asks)]
        return bids, asks

    def snapshot(self) -> BookSnapshot:
        bids, asks = self.book_levels()
        return BookSnapshot(ts=self.now_ms, bids=bids, asks=asks, seq=self.seq)

    def mid(self) -> float:
        return (self._price(max(self._bids)) + self._price(min(self._asks))) / 2

    # ------------------------------------------------------------------ dynamics

    def step(self) -> list[MarketEvent]:
        """Advance ``step_ms``: the step's trades (in time order), then one BookDelta."""
        rng = self._rng
        prev_ms = self.now_ms
        self.now_ms = now = prev_ms + self.step_ms
        d = self.direction_at(now)
        bids, asks = self._bids, self._asks
        ch_b: set[int] = set()
        ch_a: set[int] = set()
        out: list[MarketEvent] = []

        # 1. trades: aggressors eat the best opposite level
        n = self._poisson(self.trades_per_step * (1.0 + 1.5 * abs(d)))
        if n:
            times = sorted(rng.randint(1, self.step_ms) for _ in range(n))
            p_buy = 0.5 + 0.3 * d
            for t in times:
                side = Side.BUY if rng.random() < p_buy else Side.SELL
                with_flow = d != 0 and side.sign == d
                want = max(1, int(rng.lognormvariate(self._mu_trade + (0.5 if with_flow else 0.0), 1.0)))
                book, changed = (asks, ch_a) if side is Side.BUY else (bids, ch_b)
                if len(book) <= 1:
                    continue
                best = min(book) if side is Side.BUY else max(book)
                avail = book[best]
                take = min(want, avail)
                if take == avail:
                    del book[best]
                else:
                    book[best] = avail - take
                changed.add(best)
                self._trade_id += 1
                out.append(Trade(prev_ms + t, self._price(best), self._size(take), side, str(self._trade_id)))

        # 2. limit-order noise, symmetric, concentrated near the top
        for book, changed, sign in ((bids, ch_b, -1), (asks, ch_a, 1)):
            for _ in range(self._poisson(3.0)):
                prices = sorted(book, key=lambda p, s=sign: p * s)  # type: ignore[misc]
                j = min(len(prices) - 1, int(rng.expovariate(0.25)))
                p = prices[j]
                if rng.random() < 0.5:
                    book[p] += self._level_lots(0.5)
                else:
                    cut = max(1, int(book[p] * rng.uniform(0.2, 1.0)))
                    if cut >= book[p] and len(book) > 2:
                        del book[p]
                    else:
                        book[p] = max(1, book[p] - cut)
                changed.add(p)

        # 3. pressure: supporting side adds (and improves), opposite side pulls
        if d:
            sup, sup_ch, opp, opp_ch = (bids, ch_b, asks, ch_a) if d > 0 else (asks, ch_a, bids, ch_b)
            for _ in range(self._poisson(1.2)):
                best_sup = max(sup) if d > 0 else min(sup)
                best_opp = min(opp) if d > 0 else max(opp)
                p = best_sup + d if abs(best_opp - best_sup) > 1 and rng.random() < 0.5 else best_sup
                sup[p] = sup.get(p, 0) + self._level_lots()
                sup_ch.add(p)
            if rng.random() < 0.4:
                best_opp = min(opp) if d > 0 else max(opp)
                cut = max(1, int(opp[best_opp] * rng.uniform(0.3, 1.0)))
                if cut >= opp[best_opp] and len(opp) > 2:
                    del opp[best_opp]
                else:
                    opp[best_opp] = max(1, opp[best_opp] - cut)
                opp_ch.add(best_opp)

        # 4. refill the spread, keep about `levels` levels per side
        p_bid_fill = 0.5 + 0.25 * d
        while True:
            bb, ba = max(bids), min(asks)
            if ba - bb <= 1 or (ba - bb <= 3 and rng.random() < 0.6):
                break
            if rng.random() < p_bid_fill:
                bids[bb + 1] = self._level_lots(0.5)
                ch_b.add(bb + 1)
            else:
                asks[ba - 1] = self._level_lots(0.5)
                ch_a.add(ba - 1)
        L = self.levels
        for book, changed, sign in ((bids, ch_b, -1), (asks, ch_a, 1)):
            while len(book) < L:
                worst = min(book) if sign < 0 else max(book)
                p = worst + sign * (1 if rng.random() < 0.7 else rng.randint(2, 3))
                book[p] = self._level_lots()
                changed.add(p)
            while len(book) > L + 5:
                worst = min(book) if sign < 0 else max(book)
                del book[worst]
                changed.add(worst)

        n_changes = len(ch_b) + len(ch_a)
        first = self.seq + 1
        self.seq = first + max(0, n_changes - 1)
        out.append(
            BookDelta(
                ts=now,
                bids=[(self._price(p), self._size(bids.get(p, 0))) for p in sorted(ch_b, reverse=True)],
                asks=[(self._price(p), self._size(asks.get(p, 0))) for p in sorted(ch_a)],
                seq=self.seq,
                first_seq=first,
            )
        )
        return out

    def events(self, seconds: float | None = None) -> Iterator[MarketEvent]:
        """The current snapshot, then every step's events (for ``seconds``, or forever)."""
        yield self.snapshot()
        if seconds is None:
            while True:
                yield from self.step()
        for _ in range(math.ceil(seconds * 1000 / self.step_ms)):
            yield from self.step()


def write_synthetic_recording(
    path: str | Path,
    seconds: float,
    seed: int = 7,
    pressure: bool | list[Regime] = True,
    **kw: Any,
) -> list[Regime]:
    """Write ``seconds`` of a synthetic market as a bot-recording/1 file; return its regimes.

    Only the regimes that start within the recorded span are returned.
    """
    from bot.market.recorder import RecordingWriter

    m = SyntheticMarket(seed=seed, pressure=pressure, **kw)
    with RecordingWriter(path, "synthetic", m.symbol, m.tick) as w:
        for ev in m.events(seconds):
            w.write(ev)
    return [r for r in m.regimes if r.start_ms < m.now_ms]
