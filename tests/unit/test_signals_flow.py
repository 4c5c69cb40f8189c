"""Trade-flow imbalance over time windows and volume buckets, CVD, intensity, absorption."""

from __future__ import annotations

import pytest

from bot.config import Settings, SignalSettings
from bot.model import Side, Trade
from bot.signals.engine import SignalEngine
from bot.signals.flow import VolumeBuckets, absorption_score


class FakeBook:
    """Just what SignalEngine reads from an OrderBook."""

    def __init__(self, bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> None:
        self.healthy = True
        self.bids, self.asks = bids, asks

    def top_bids(self, n: int) -> list[tuple[float, float]]:
        return self.bids[:n]

    def top_asks(self, n: int) -> list[tuple[float, float]]:
        return self.asks[:n]


def test_tfi_over_a_window_boundary() -> None:
    # window 1 s in 250 ms slots: the window evaluated at a slot close is the last 4 closed slots
    eng = SignalEngine(Settings(signals=SignalSettings(window=1.0, levels=1)), step_ms=250)
    eng.on_trade(Trade(10, 100.0, 1.0, Side.BUY))
    eng.on_trade(Trade(900, 100.0, 0.5, Side.SELL))
    eng.on_trade(Trade(1100, 100.0, 2.0, Side.BUY))  # closes [750,1000): window [0,1000)
    assert eng.values["tfi_raw"] == pytest.approx(0.5)
    assert eng.values["intensity"] == pytest.approx(2.0)  # 2 trades in 1 s
    eng.on_trade(Trade(1260, 100.0, 0.25, Side.SELL))  # closes [1000,1250): window [250,1250)
    assert eng.values["tfi_raw"] == pytest.approx(-0.5 + 2.0)
    eng.on_trade(Trade(2600, 100.0, 1.0, Side.SELL))  # window [1500,2500): nothing traded
    assert eng.values["tfi_raw"] == 0.0
    assert eng.cvd == pytest.approx(1.0 - 0.5 + 2.0 - 0.25 - 1.0)


def test_volume_buckets_split_trades_at_the_boundary() -> None:
    vb = VolumeBuckets(2.0)
    vb.add(1.5, True)
    assert vb.completed == 0 and vb.open_imbalance == 1.0
    vb.add(1.0, False)  # 0.5 sell completes the bucket: (1.5 - 0.5)/2, 0.5 sell opens the next
    assert vb.completed == 1 and vb.last == pytest.approx(0.5)
    vb.add(3.5, False)  # fills bucket 2 (0.5 + 1.5 sell) and bucket 3 (2.0 sell)
    assert vb.completed == 3 and vb.last == pytest.approx(-1.0)


def test_absorption_scores_flow_that_does_not_move_the_price() -> None:
    assert absorption_score(4.0, 0.0) == 4.0  # heavy buying, mid flat: absorbed
    assert absorption_score(4.0, -2.0) == 4.0  # price even fell
    assert absorption_score(4.0, 0.5) == pytest.approx(2.0)  # half a tick: half absorbed
    assert absorption_score(4.0, 3.0) == 0.0  # the price followed the flow
    assert absorption_score(-3.0, -3.0) == 0.0
    assert absorption_score(-3.0, 0.0) == -3.0


def test_engine_reports_absorption_per_window() -> None:
    s = Settings(signals=SignalSettings(window=1.0, levels=1, halflife=60.0))
    eng = SignalEngine(s, step_ms=250, warmup_s=0.0, tick=1.0)
    book = FakeBook([(100.0, 5.0)], [(101.0, 5.0)])
    from bot.model import BookDelta, BookSnapshot

    eng.on_book(book, BookSnapshot(0, book.bids, book.asks), 0)
    t = 0
    for i in range(200):  # balanced small flow: a baseline for the z-scores
        t = 250 * i + 10
        eng.on_trade(Trade(t, 100.0, 0.1 + 0.01 * (i % 5), Side.BUY if i % 2 else Side.SELL))
        eng.on_book(book, BookDelta(t, [], []), t)
    for _j in range(8):  # then very heavy buying while the mid stays at 100.5
        t += 250
        eng.on_trade(Trade(t, 101.0, 5.0, Side.BUY))
    assert eng.values["tfi"] > 3
    assert eng.values["absorption"] == eng.values["tfi"]


def test_a_trade_many_buckets_long_is_counted_exactly_in_one_step() -> None:
    """A 10 BTC print against a 1e-5 bucket (a quiet warm-up, then a big trade): 1,000,000 buckets,
    each all buys, in one step (the bucket-by-bucket loop took 0.3 s inside ``on_trade``)."""
    vb = VolumeBuckets(1e-5)
    vb.add(0.4e-5, False)
    vb.add(10.0, True)
    assert vb.completed == 1_000_000
    assert vb.last == 1.0
    assert vb.open_imbalance == pytest.approx(1.0)  # the 0.4e-5 left over opens the next bucket, buys
    small = VolumeBuckets(1.0)
    small.add(0.4, False)
    small.add(5.3, True)  # closes 0.4 sell + 0.6 buy, four whole buy buckets, 0.7 buy open
    assert small.completed == 5 and small.last == 1.0 and small.open_imbalance == 1.0
