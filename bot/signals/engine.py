"""``SignalEngine``: every signal of one symbol, fed event by event, plus its ``Detector``.

Why one object per symbol: the hot path (a book delta or a trade every few hundred µs) must
be cheap, so the per-event work is only the OFI of the new top-of-book view and a few float
additions into the open time slot. Everything else - rolling-window sums, depth imbalance,
microprice, absorption, the scale-normalised scores, the combined score - is computed once per evaluation
step (``step_ms``, default 1 s of event time) when a slot closes. The detector then
decides on complete, grid-aligned windows, which makes live and replay decide identically.

Call order (the trading engine does this; see docs/signals.md):

    book.apply(ev); signals.on_book(book, ev, ev.ts)     # every snapshot/delta
    signals.on_trade(trade)                              # every trade
    sig = signals.detector.update(ts)                    # after each event; entry/exit or None

The per-event OFI and TFI are the same floats ``bot analyze`` computes with numpy; pass
``record_interval_ms`` to keep per-bucket sums (``bucket_sums()``) and check that.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

from bot.config import Settings
from bot.model import BookSnapshot, ImbalanceSignal, MarketEvent, Side, Trade
from bot.signals.book_imbalance import depth_imbalance, microprice, queue_imbalance
from bot.signals.detector import Detector, Sink
from bot.signals.flow import VolumeBuckets, absorption_score
from bot.signals.normalize import EwmaScale, RingBuffer, RollingSums, SlotClock, alpha_from_halflife
from bot.signals.ofi import OfiTracker

# slot row layout
_OFI, _TFI, _BUY, _SELL, _NTR, _LVL = 0, 1, 2, 3, 4, 5

Z_CLIP = 6.0  # component scores are clipped to +-Z_CLIP in the combination

DEFAULT_WEIGHTS: dict[str, float] = {"ofi": 1.0, "mlofi": 1.0, "tfi": 1.0, "imbalance": 1.0}
COMPONENTS = ("ofi", "mlofi", "tfi", "imbalance")


def combine(scores: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """The combined flow: ``sum(w_k * clip(score_k, +-Z_CLIP)) / sum(|w_k|)`` over ``scores``.

    The scores are scale-normalised signed flows (each with the sign of its raw value), so
    this is the weighted sum of the flows in units of their typical size; the clip keeps one
    heavy-tailed component (a block trade) from carrying it alone. The detector's ``combined``
    is this divided by its own RMS: a positive number, so the sign is this one's.
    """
    wsum = sum(abs(w) for w in weights.values()) or 1.0
    return sum(weights.get(k, 0.0) * max(-Z_CLIP, min(Z_CLIP, v)) for k, v in scores.items()) / wsum


class BookView(Protocol):
    """What the engine reads from ``bot.market.book.OrderBook`` (kept structural: no import sideways)."""

    @property
    def healthy(self) -> bool: ...

    def top_bids(self, n: int) -> list[tuple[float, float]]: ...

    def top_asks(self, n: int) -> list[tuple[float, float]]: ...


class SignalEngine:
    """All signals for one symbol; ``detector.update(ts)`` turns them into ImbalanceSignals."""

    def __init__(
        self,
        settings: Settings,
        sink: Sink | None = None,
        *,
        tick: float | None = None,
        step_ms: int = 1000,
        warmup_s: float | None = None,
        weights: Mapping[str, float] | None = None,
        bucket_volume: float | None = None,
        record_interval_ms: int | None = None,
    ) -> None:
        sig = settings.signals
        self.levels = L = sig.levels
        self.window_ms = max(1, round(sig.window * 1000))
        self.step_ms = step_ms
        self.slots = max(1, math.ceil(self.window_ms / step_ms))
        self.tick = tick
        self.weights = dict(weights or DEFAULT_WEIGHTS)
        self.warmup_steps = math.ceil((warmup_s if warmup_s is not None else max(60.0, 3 * sig.window)) * 1000 / step_ms)
        alpha = alpha_from_halflife(sig.halflife * 1000, step_ms)
        self._z = {k: EwmaScale(alpha) for k in (*COMPONENTS, "combined")}
        self._depth_alpha = alpha
        self._depth_mean = 0.0

        self.clock = SlotClock(step_ms)
        self.ofi = OfiTracker(L)
        self.roll = RollingSums(self.slots, _LVL + L)
        self._mids = RingBuffer(self.slots)  # mid at each slot close: window start for absorption
        # open slot (plain Python floats: the hot path)
        self._o_ofi = 0.0
        self._o_tfi = 0.0
        self._o_buy = 0.0
        self._o_sell = 0.0
        self._o_ntr = 0
        self._o_lvl = [0.0] * L
        self._bids: list[tuple[float, float]] = []
        self._asks: list[tuple[float, float]] = []
        self.cvd = 0.0
        self.volume = 0.0
        self.first_ts = -1
        self.steps = 0
        self.vbuckets: VolumeBuckets | None = VolumeBuckets(bucket_volume) if bucket_volume else None
        self.values: dict[str, float] = {}
        self._pending: dict[str, float] | None = None
        self.detector = Detector.from_settings(settings, self._take, sink)
        # research tap: per-bucket sums for the parity check with ``bot analyze``
        self._tap_ms = record_interval_ms
        self._tap: dict[int, list[float]] = {}

    # ------------------------------------------------------------------ hot path

    def on_book(self, book: BookView, ev: MarketEvent, ts: int) -> None:
        """After ``book`` applied ``ev`` (a snapshot or delta): OFI of the event, new view."""
        if ts >= self.clock.end:
            self._roll(ts)
        if not book.healthy:
            self.ofi.reset()
            self._bids = self._asks = []
            if self._tap_ms is not None:
                self._tap_event(ts, math.nan)
            return
        L = self.levels
        bids = book.top_bids(L)
        asks = book.top_asks(L)
        self._bids = bids
        self._asks = asks
        if type(ev) is BookSnapshot:
            self.ofi.reset(bids, asks)  # a snapshot only resets the book: no OFI
        elif self.ofi.update(bids, asks):
            last = self.ofi.last
            self._o_ofi += last[0]
            lv = self._o_lvl
            for i in range(L):
                lv[i] += last[i]
            if self._tap_ms is not None:
                self._tap_event(ts, self._mid(), last)
                return
        if self._tap_ms is not None:
            self._tap_event(ts, self._mid())

    def on_trade(self, trade: Trade) -> None:
        ts = trade.ts
        if ts >= self.clock.end:
            self._roll(ts)
        amt = trade.amount
        if trade.side is Side.BUY:
            self._o_buy += amt
            self._o_tfi += amt
            self.cvd += amt
        else:
            self._o_sell += amt
            self._o_tfi -= amt
            self.cvd -= amt
        self._o_ntr += 1
        self.volume += amt
        if self.vbuckets is not None:
            self.vbuckets.add(amt, trade.side is Side.BUY)
        if self._tap_ms is not None:
            self._tap_event(ts, math.nan, None, amt if trade.side is Side.BUY else -amt, book=False)

    def update(self, ts: int) -> ImbalanceSignal | None:
        """Same as ``detector.update(ts)``."""
        return self.detector.update(ts)

    # ------------------------------------------------------------------ per step

    def _mid(self) -> float:
        b, a = self._bids, self._asks
        if not b or not a:
            return math.nan
        return (b[0][0] + a[0][0]) * 0.5

    def _roll(self, ts: int) -> None:
        if self.first_ts < 0:
            self.first_ts = ts
        n = self.clock.advance(ts)
        if n <= 0:
            return
        self.roll.close([self._o_ofi, self._o_tfi, self._o_buy, self._o_sell, float(self._o_ntr), *self._o_lvl], n)
        mid = self._mid()
        for _ in range(min(n, self.slots)):
            self._mids.append(mid)
        self._o_ofi = self._o_tfi = self._o_buy = self._o_sell = 0.0
        self._o_ntr = 0
        for i in range(self.levels):
            self._o_lvl[i] = 0.0
        self._evaluate(mid)

    def _evaluate(self, mid: float) -> None:
        """Window values, their scaled scores and the combined score at a slot close."""
        s = self.roll.sums()
        L = self.levels
        bids, asks = self._bids, self._asks
        if bids and asks:
            b1, bq1 = bids[0]
            a1, aq1 = asks[0]
            depth = (sum(q for _, q in bids[:L]) + sum(q for _, q in asks[:L])) / (2 * L)
            if self._depth_mean <= 0.0:
                self._depth_mean = depth
            else:
                self._depth_mean += self._depth_alpha * (depth - self._depth_mean)
            qi = queue_imbalance(bq1, aq1)
            di = depth_imbalance(bids, asks, L)
            micro = microprice(b1, bq1, a1, aq1)
            if self.tick is None or a1 - b1 < self.tick:
                self.tick = a1 - b1 if a1 > b1 else self.tick
        else:
            qi = di = 0.0
            micro = math.nan
        tick = self.tick or 1.0
        level_sum = 0.0
        for i in range(L):
            level_sum += s[_LVL + i]
        mlofi = level_sum / self._depth_mean if self._depth_mean > 0 else 0.0
        start_mid = float(self._mids.oldest()[0]) if len(self._mids) else math.nan
        move_ticks = (mid - start_mid) / tick
        z = self._z
        ofi_scale, ml_scale, tfi_scale = z["ofi"].rms, z["mlofi"].rms, z["tfi"].rms
        imb_scale, comb_scale = z["imbalance"].rms, z["combined"].rms
        z_ofi = z["ofi"].update(s[_OFI])
        z_ml = z["mlofi"].update(mlofi)
        z_tfi = z["tfi"].update(s[_TFI])
        z_imb = z["imbalance"].update(di)
        raw = combine({"ofi": z_ofi, "mlofi": z_ml, "tfi": z_tfi, "imbalance": z_imb}, self.weights)
        self.steps += 1
        # the components' own scales need history first: their early scores are meaningless
        # and would inflate the combined score's scale for a whole half-life, so it learns
        # only from the second half of the warm-up (before that: scored, not learnt)
        zc = z["combined"]
        combined = zc.update(raw) if self.steps > self.warmup_steps // 2 else zc.score(raw)
        window_s = self.window_ms / 1000.0
        if self.vbuckets is None and self.steps == self.warmup_steps and self.volume > 0:
            # volume clock: a bucket is a tenth of the typical window volume seen in warm-up
            self.vbuckets = VolumeBuckets(self.volume / (self.steps * self.step_ms / 1000.0) * window_s / 10.0)
        self.values = {
            "combined": combined,
            "ofi": z_ofi,
            "mlofi": z_ml,
            "tfi": z_tfi,
            "imbalance": z_imb,
            "absorption": absorption_score(z_tfi, move_ticks),
            "ofi_raw": s[_OFI],
            "mlofi_raw": mlofi,
            "tfi_raw": s[_TFI],
            "queue_imbalance": qi,
            "depth_imbalance": di,
            "microprice": micro,
            "micro_dev_ticks": (micro - mid) / tick,
            "mid": mid,
            "cvd": self.cvd,
            "intensity": s[_NTR] / window_s,
            "volume_imbalance": self.vbuckets.last if self.vbuckets is not None else 0.0,
            "combined_raw": raw,
            # the scales each score was measured against (before this step's value was learnt):
            # raw / scale is the score, so a reviewer can recompute every number from the row
            "ofi_scale": ofi_scale,
            "mlofi_scale": ml_scale,
            "tfi_scale": tfi_scale,
            "imbalance_scale": imb_scale,
            "combined_scale": comb_scale,
        }
        if self.steps > self.warmup_steps:
            self._pending = self.values

    def _take(self, ts: int) -> Mapping[str, float] | None:
        """The detector's source: the latest evaluation, once."""
        if ts >= self.clock.end:
            self._roll(ts)
        out = self._pending
        if out is not None:
            self._pending = None
        return out

    # ------------------------------------------------------------------ views

    @property
    def warmed_up(self) -> bool:
        return self.steps > self.warmup_steps

    def snapshot(self) -> dict[str, float]:
        """Current values and scaled scores (status endpoint, sampled rows); empty before the first step."""
        out = dict(self.values)
        out["cvd"] = self.cvd
        out["state"] = float(int(self.detector.state))
        return out

    # ------------------------------------------------------------------ research tap

    def _tap_event(self, ts: int, mid: float, levels: list[float] | None = None, tfi: float = 0.0,
                   book: bool = True) -> None:
        assert self._tap_ms is not None
        k = ts // self._tap_ms
        row = self._tap.get(k)
        if row is None:
            row = self._tap[k] = [0.0, 0.0, math.nan, *([0.0] * self.levels)]
        if levels is not None:
            row[0] += levels[0]
            for i in range(self.levels):
                row[3 + i] += levels[i]
        row[1] += tfi
        if book:
            row[2] = mid  # book events only: a bucket's mid is the book as of its end, never a trade's

    def bucket_sums(self) -> dict[str, Any]:
        """Per-bucket sums seen by the streaming path: bucket ids, ofi, tfi, mid at end, per-level OFI."""
        import numpy as np

        keys = sorted(self._tap)
        arr = np.array([self._tap[k] for k in keys], dtype=np.float64).reshape(len(keys), 3 + self.levels)
        # a bucket with trades only carries the previous bucket's mid forward (bot analyze's rule)
        for i in range(1, len(keys)):
            if math.isnan(arr[i, 2]):
                arr[i, 2] = arr[i - 1, 2]
        return {
            "bucket": np.array(keys, dtype=np.int64),
            "ofi": arr[:, 0],
            "tfi": arr[:, 1],
            "mid": arr[:, 2],
            "mlofi": arr[:, 3:],
        }
