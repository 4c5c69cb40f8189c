"""Inventory: exact PnL through partial fills, flips and base-currency fees; restore; days; peaks."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.logging import configure_logging
from bot.model import Fill, Liquidity, Side
from bot.risk.inventory import DAY_MS, Inventory


@pytest.fixture(autouse=True)
def _fresh_logging() -> None:
    """Other tests' CliRunner runs leave structlog writing to a closed stream; re-point it."""
    configure_logging()


D = Decimal
T0 = 1723161600000 - 60_000  # 2024-08-08 23:59:00 UTC


def fill(n: int, side: Side, price: str, amount: str, fee: str = "0", cur: str = "USDT", ts: int = T0) -> Fill:
    return Fill(
        trade_id=f"t{n}", client_id=f"c{n}", symbol="BTC/USDT", side=side, price=D(price), amount=D(amount),
        fee=D(fee), fee_currency=cur, liquidity=Liquidity.TAKER, ts=ts,
    )


def test_partial_fills_average_and_realise() -> None:
    inv = Inventory("BTC/USDT")
    inv.apply_fill(fill(1, Side.BUY, "60000", "0.01"))
    inv.apply_fill(fill(2, Side.BUY, "60100", "0.03"))
    assert inv.position == D("0.04")
    assert inv.avg_price == D("60075")
    inv.apply_fill(fill(3, Side.SELL, "60200", "0.01"))  # partial close
    assert inv.position == D("0.03")
    assert inv.realized == D("1.25")  # (60200 - 60075) * 0.01
    assert inv.avg_price == D("60075")
    assert inv.unrealized(D("60000")) == D("-2.25")


def test_flip_long_to_short_through_zero() -> None:
    inv = Inventory("BTC/USDT")
    inv.apply_fill(fill(1, Side.BUY, "100", "0.3"))
    inv.apply_fill(fill(2, Side.SELL, "110", "0.5"))
    assert inv.position == D("-0.2")
    assert inv.realized == D("3.0")  # the whole long closed at +10
    assert inv.avg_price == D("110")  # the short opened at the fill price
    inv.apply_fill(fill(3, Side.BUY, "105", "0.2"))
    assert inv.position == 0
    assert inv.realized == D("4.0")
    assert inv.avg_price == 0


def test_fee_in_base_reduces_position_and_counts_in_quote() -> None:
    inv = Inventory("BTC/USDT")
    inv.apply_fill(fill(1, Side.BUY, "60000", "0.01", fee="0.00001", cur="BTC"))
    assert inv.position == D("0.00999")  # what the exchange credits
    assert inv.fees == D("0.6")  # 0.00001 BTC at 60000
    inv.apply_fill(fill(2, Side.SELL, "60000", "0.00999", fee="0.5994", cur="USDT"))
    assert inv.position == 0
    assert inv.fees == D("1.1994")
    assert inv.net_pnl(D("60000")) == D("-1.1994")


def test_fee_in_third_currency_uses_rate_or_is_kept_apart() -> None:
    inv = Inventory("BTC/USDT", fee_rates={"BNB": D("500")})
    inv.apply_fill(fill(1, Side.BUY, "60000", "0.01", fee="0.001", cur="BNB"))
    assert inv.fees == D("0.500")
    inv2 = Inventory("BTC/USDT")
    inv2.apply_fill(fill(1, Side.BUY, "60000", "0.01", fee="0.001", cur="BNB"))
    assert inv2.fees == 0 and inv2.other_fees == {"BNB": D("0.001")}


def test_duplicate_trade_id_is_applied_once() -> None:
    inv = Inventory("BTC/USDT")
    assert inv.apply_fill(fill(1, Side.BUY, "100", "1"))
    assert not inv.apply_fill(fill(1, Side.BUY, "100", "1"))
    assert inv.position == 1


def test_restore_from_fills_equals_live_booking() -> None:
    fills = [
        fill(1, Side.BUY, "60000", "0.02", fee="0.00002", cur="BTC", ts=T0),
        fill(2, Side.SELL, "60050", "0.05", fee="3.0025", cur="USDT", ts=T0 + 1000),
        fill(3, Side.BUY, "59990", "0.01", fee="0.6", cur="USDT", ts=T0 + 2000),
    ]
    live = Inventory("BTC/USDT")
    for f in fills:
        live.apply_fill(f)
    restored = Inventory.from_fills([*reversed(fills), fills[0]], "BTC/USDT")
    assert (restored.position, restored.cost, restored.realized, restored.fees) == (
        live.position, live.cost, live.realized, live.fees,
    )
    assert restored.snapshot().amount == D("-0.02002")


def test_daily_pnl_rolls_at_utc_midnight_and_peaks() -> None:
    inv = Inventory("BTC/USDT")
    inv.apply_fill(fill(1, Side.BUY, "60000", "0.01", ts=T0))
    inv.mark_to(T0 + 10_000, D("60500"))  # +5
    assert inv.daily_pnl() == D("5")
    assert inv.run_peak == D("5")
    inv.mark_to(T0 + 70_000, D("60300"))  # next UTC day: starts at equity 5, now 3
    assert inv.day == (T0 + 70_000) // DAY_MS
    assert inv.day_start_equity == D("5")
    assert inv.daily_pnl() == D("-2")
    assert inv.drawdown() == D("2")
    inv.mark_to(T0 + 80_000, D("60100"), microprice=D("60110"))
    assert inv.unrealized_mid == D("1") and inv.unrealized_micro == D("1.1")


def test_restore_keeps_todays_loss_but_starts_a_new_run_peak() -> None:
    fills = [fill(1, Side.BUY, "60000", "0.05", ts=T0 + 61_000), fill(2, Side.SELL, "59000", "0.05", ts=T0 + 62_000)]
    inv = Inventory.from_fills(fills, "BTC/USDT")
    assert inv.realized == D("-50")
    assert inv.daily_pnl() == D("-50")  # today's loss survives a restart
    assert inv.drawdown() == 0  # the run's peak starts at the restored equity


# --------------------------------------------------------------------------- property

_step = st.integers(min_value=1, max_value=5000).map(lambda n: D(n) * D("0.00001"))
_price = st.integers(min_value=5_000_000, max_value=7_000_000).map(lambda n: D(n) * D("0.01"))
_fill = st.tuples(
    st.sampled_from([Side.BUY, Side.SELL]),
    _price,
    _step,
    st.sampled_from(["none", "quote", "base"]),
    st.integers(min_value=0, max_value=20),  # fee in bps
)


@settings(max_examples=300, deadline=None)
@given(fills=st.lists(_fill, min_size=1, max_size=40), mark=_price)
def test_pnl_identity_against_balances(fills: list[tuple[Side, Decimal, Decimal, str, int]], mark: Decimal) -> None:
    """realised + unrealised - fees == change in equity computed from the balances, exactly."""
    inv = Inventory("BTC/USDT")
    base, quote = D(0), D(10000)
    start_equity = quote
    for i, (side, price, amount, fee_kind, bps) in enumerate(fills):
        if fee_kind == "base":
            fee, cur = amount * bps / D(10_000), "BTC"
        elif fee_kind == "quote":
            fee, cur = price * amount * bps / D(10_000), "USDT"
        else:
            fee, cur = D(0), "USDT"
        inv.apply_fill(fill(i, side, str(price), str(amount), str(fee), cur, ts=T0 + i))
        base += side.sign * amount
        quote -= side.sign * amount * price
        if cur == "BTC":
            base -= fee
        else:
            quote -= fee
        assert inv.position == base
    equity_change = quote + base * mark - start_equity
    assert inv.realized + inv.unrealized(mark) - inv.fees == equity_change
