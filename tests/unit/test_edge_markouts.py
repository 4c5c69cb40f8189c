"""``MarkoutTracker`` rules: first mid at or after fill.ts + horizon, NaN skipped, signs, flush."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bot.analytics.markouts import MarkoutTracker
from bot.model import Fill, Liquidity, Side


def f(tid: str, side: Side, price: str, amount: str, ts: int) -> Fill:
    return Fill(tid, "c" + tid, "BTC/USDT", side, Decimal(price), Decimal(amount), Decimal(0), "USDT",
                Liquidity.TAKER, ts)


def test_first_mid_at_or_after_the_due_time() -> None:
    tr = MarkoutTracker(horizons_ms=(1000,))
    tr.add_fill(f("1", Side.BUY, "100", "2", 0), 2.0)
    assert tr.on_mid(999, 101.0, None) == []
    (m,) = tr.on_mid(1000, 102.0, None)
    assert (m.ts, m.mid, m.pnl, m.bps, m.microprice, m.micro_bps) == (1000, Decimal("102.0"), Decimal("4.0"), 200.0,
                                                                      None, None)
    assert tr.pending == 0 and tr.on_mid(2000, 103.0, None) == []


def test_sell_is_signed_and_nan_waits() -> None:
    tr = MarkoutTracker(horizons_ms=(1000, 10_000))
    tr.add_fill(f("1", Side.SELL, "100", "1", 0), -3.0)
    assert tr.on_mid(1500, float("nan"), None) == []
    (m,) = tr.on_mid(1700, 99.5, 99.4)
    assert m.ts == 1700 and m.pnl == Decimal("0.5") and m.bps == 50.0 and m.micro_bps == pytest.approx(60.0)
    assert m.signal_strength == -3.0 and m.complete
    assert tr.pending == 1


def test_many_due_at_once_in_horizon_then_fill_order() -> None:
    tr = MarkoutTracker()
    tr.add_fill(f("a", Side.BUY, "100", "1", 0), None)
    tr.add_fill(f("b", Side.BUY, "100", "1", 0), None)
    out = tr.on_mid(60_000, 100.0, None)
    assert [(m.trade_id, m.horizon_ms) for m in out] == [("a", 1000), ("b", 1000), ("a", 10_000), ("b", 10_000),
                                                         ("a", 60_000), ("b", 60_000)]


def test_flush_marks_incomplete_against_the_last_mid() -> None:
    tr = MarkoutTracker(horizons_ms=(1000, 60_000))
    assert MarkoutTracker().flush_pending() == []
    tr.add_fill(f("1", Side.BUY, "100", "1", 0), None)
    tr.on_mid(1200, 100.5, None)
    (m,) = tr.flush_pending()
    assert m.horizon_ms == 60_000 and not m.complete and m.ts == 1200 and m.pnl == Decimal("0.5")
    assert tr.pending == 0 and tr.emitted == 2


def test_float_mid_keeps_its_decimal_digits() -> None:
    tr = MarkoutTracker(horizons_ms=(0,))
    tr.add_fill(f("1", Side.BUY, "60000.01", "0.001", 5), None)
    (m,) = tr.on_mid(5, (60000.01 + 60000.02) / 2, None)
    assert m.mid == Decimal("60000.015") and m.pnl == Decimal("0.000005")


def test_bad_horizons() -> None:
    with pytest.raises(ValueError, match="horizons_ms"):
        MarkoutTracker(horizons_ms=())
