"""Every score has the sign of its raw flow (issue "Exact numbers", item 6).

The defect: z-scores against an adaptive mean. After a burst of buying the mean had risen, so
continued but weaker buying scored negative and the bot went short into buy pressure. The
signals are now divided by a positive scale (``EwmaScale``) and never shifted, so:

- property (hypothesis): for random streams, ``sign(score) == sign(raw)`` for the normaliser,
  for every component of the ``SignalEngine`` and for the combined score (whose raw value is
  the combined flow ``combine(...)``, the weighted sum of the scaled components);
- on both real recordings: every entry's direction, and every evaluated step's combined score,
  has the sign of the combined flow recomputed from the raw components and their scales.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.config import Settings, StrategySettings, settings_from_dict
from bot.model import BookDelta, BookSnapshot, Side, Trade
from bot.signals.engine import COMPONENTS, DEFAULT_WEIGHTS, Z_CLIP, SignalEngine, combine
from bot.signals.normalize import EwmaScale

from helpers import feed_signals

# each component's score and the raw value it scales
RAW_OF = {"ofi": "ofi_raw", "mlofi": "mlofi_raw", "tfi": "tfi_raw", "imbalance": "depth_imbalance"}


def sgn(x: float) -> int:
    return (x > 0) - (x < 0)


def combined_flow(values: Mapping[str, float], weights: Mapping[str, float] = DEFAULT_WEIGHTS) -> float:
    """The raw combined flow, recomputed from the raw components: sum(w * clip(raw / scale)) / sum|w|."""
    total = 0.0
    for k in COMPONENTS:
        raw, scale = values[RAW_OF[k]], values[f"{k}_scale"]
        score = raw / scale if scale > 0 else float(sgn(raw))
        total += weights.get(k, 0.0) * max(-Z_CLIP, min(Z_CLIP, score))
    return total / (sum(abs(w) for w in weights.values()) or 1.0)


# ---------------------------------------------------------------------- the normaliser

finite = st.floats(allow_nan=False, allow_infinity=False)
# runs of one value: bursts long enough (> REJECT, > WARM values) to exercise the outlier rule
runs = st.lists(st.tuples(st.one_of(finite, st.just(0.0), st.floats(-10, 10)), st.integers(1, 80)),
                min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(alpha=st.floats(1e-4, 1.0), stream=runs)
def test_the_scaled_score_has_the_sign_of_the_raw_value(alpha: float, stream: list[tuple[float, int]]) -> None:
    z = EwmaScale(alpha)
    for x, n in stream:
        for _ in range(n):
            assert sgn(z.score(x)) == sgn(x)
            s = z.update(x)
            assert sgn(s) == sgn(x), (x, s, z.rms)
            assert z.rms >= 0.0 and math.isfinite(z.rms)


# (products of weights and scores kept out of the float underflow range: w * s below 1e-308 is 0)
@settings(max_examples=300, deadline=None)
@given(scores=st.fixed_dictionaries({k: st.one_of(st.just(0.0), st.floats(1e-150, 1e6)) for k in COMPONENTS}),
       weights=st.fixed_dictionaries({k: st.one_of(st.just(0.0), st.floats(1e-3, 5.0)) for k in COMPONENTS}))
def test_components_that_all_point_one_way_combine_that_way(scores: dict[str, float], weights: dict[str, float]) -> None:
    """All flows buying -> the combined flow buys (and the mirror image sells); never the other way."""
    expect = 1 if any(scores[k] > 0 and weights[k] > 0 for k in COMPONENTS) else 0
    assert sgn(combine(scores, weights)) == expect
    assert sgn(combine({k: -v for k, v in scores.items()}, weights)) == -expect


# ---------------------------------------------------------------------- the engine on random streams


class _Book:
    """The part of ``OrderBook`` the engine reads, set directly by the test."""

    healthy = True

    def __init__(self) -> None:
        self.bids: list[tuple[float, float]] = []
        self.asks: list[tuple[float, float]] = []

    def top_bids(self, n: int) -> list[tuple[float, float]]:
        return self.bids[:n]

    def top_asks(self, n: int) -> list[tuple[float, float]]:
        return self.asks[:n]


LEVELS = 3
size = st.one_of(st.floats(1e-4, 50.0), st.sampled_from([1e-4, 0.5, 1.0, 1e3]))
book_state = st.tuples(st.integers(-3, 3), st.lists(size, min_size=LEVELS, max_size=LEVELS),
                       st.lists(size, min_size=LEVELS, max_size=LEVELS))
trade = st.tuples(st.booleans(), st.one_of(st.floats(1e-4, 20.0), st.sampled_from([1e-4, 5.0, 500.0])))
# one evaluation step (1 s): a few book states and trades; a bias makes runs of one-sided flow
step = st.tuples(st.lists(book_state, min_size=0, max_size=3), st.lists(trade, min_size=0, max_size=4),
                 st.sampled_from([None, True, False]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(steps=st.lists(step, min_size=20, max_size=90),
       weights=st.fixed_dictionaries({k: st.floats(-2.0, 2.0) for k in COMPONENTS}))
def test_every_component_and_the_combined_score_keep_the_sign_of_the_raw_flow(
        steps: list[Any], weights: dict[str, float]) -> None:
    cfg = settings_from_dict({"signals": {"levels": LEVELS, "window": "3s", "halflife": "8s"}}, env={})
    # a fixed volume-clock bucket: sized from a warm-up of 1e-4 lots, a 500-lot trade would be
    # split into 1e8 buckets one by one (VolumeBuckets.add), which is not what this test is about
    eng = SignalEngine(cfg, step_ms=1000, warmup_s=6, weights=weights, bucket_volume=1.0)
    book = _Book()
    mid_ticks = 10_000
    ts = 1_700_000_000_000
    checked = 0
    for books, trades, bias in steps:
        for shift, bq, aq in books:
            mid_ticks += shift
            book.bids = [((mid_ticks - i) * 0.01, q) for i, q in enumerate(bq)]
            book.asks = [((mid_ticks + 1 + i) * 0.01, q) for i, q in enumerate(aq)]
            first = eng.clock.start < 0
            ev = BookSnapshot(ts=ts, bids=[], asks=[]) if first else BookDelta(ts=ts, bids=[], asks=[])
            eng.on_book(book, ev, ts)
            ts += 50
        for is_buy, amount in trades:
            side = Side.BUY if (is_buy if bias is None else bias) else Side.SELL
            eng.on_trade(Trade(ts, mid_ticks * 0.01, amount, side, str(ts)))
            ts += 10
        ts += 1000 - ts % 1000  # close the step
        eng.detector.update(ts)
        v = eng.values
        if not v:
            continue
        for k in COMPONENTS:
            assert sgn(v[k]) == sgn(v[RAW_OF[k]]), (k, v[k], v[RAW_OF[k]])
        assert v["combined_raw"] == combine({k: v[k] for k in COMPONENTS}, weights)
        assert sgn(v["combined"]) == sgn(v["combined_raw"]), (v["combined"], v["combined_raw"])
        checked += 1
    assert checked >= len(steps) - 2


# ---------------------------------------------------------------------- the real recordings


def _stream(path: Path, settings: Settings) -> list[Any]:
    from bot.market.recorder import RecordingReader

    reader = RecordingReader(path)
    _, sunk = feed_signals(reader, settings, tick=reader.header.tick)
    return sunk


@pytest.mark.parametrize("name", ["btcusdt", "ethusdt"])
@pytest.mark.parametrize("strategy", [StrategySettings(), StrategySettings(entry_z=1.0, exit_z=0.3, persistence=1)],
                         ids=["defaults", "eager"])
def test_every_entry_on_a_real_recording_follows_the_sign_of_the_raw_combined_flow(
        real_recordings: dict[str, Path], name: str, strategy: StrategySettings) -> None:
    sunk = _stream(real_recordings[name], Settings(strategy=strategy))
    entries = [s for s in sunk if s.kind == "entry"]
    if strategy.entry_z <= 1.0:
        assert len(entries) >= 5, "the eager detector should enter several times in 11 minutes"
    for s in entries:
        flow = combined_flow(s.components)
        assert flow == pytest.approx(s.components["combined_raw"], rel=1e-9, abs=1e-12)
        assert int(s.direction) == sgn(flow) != 0, (s.ts, s.direction, flow, s.components)
        assert sgn(s.strength) == int(s.direction)
    # every evaluated step, not only the entries: the combined score's sign is the flow's
    samples = [s for s in sunk if s.kind == "sample"]
    assert len(samples) > 500
    for s in samples:
        c = s.components
        assert sgn(c["combined"]) == sgn(combined_flow(c)), (s.ts, c)
        for k in COMPONENTS:
            assert sgn(c[k]) == sgn(c[RAW_OF[k]]), (s.ts, k, c)
