"""Sizer: volatility-targeted unit, inventory skew, ccxt rounding, market minimums — offline."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from bot.config import settings_from_dict
from bot.logging import configure_logging
from bot.model import Direction, ImbalanceSignal, Order, OrderStatus, OrderType, Side
from bot.risk.market_rules import MarketRules
from bot.risk.sizing import Sizer


@pytest.fixture(autouse=True)
def _fresh_logging() -> None:
    """Other tests' CliRunner runs leave structlog writing to a closed stream; re-point it."""
    configure_logging()


D = Decimal


def sizer(max_position: str = "0.05", max_daily_loss: str = "100", max_hold: str = "120s") -> Sizer:
    s = settings_from_dict(
        {"risk": {"max_position": float(max_position), "max_daily_loss": float(max_daily_loss)},
         "strategy": {"max_hold": max_hold}},
        env={},
    )
    return Sizer(s, MarketRules.binance_spot("BTC/USDT"))


def sig(strength: float) -> ImbalanceSignal:
    direction = Direction.LONG if strength > 0 else Direction.SHORT if strength < 0 else Direction.FLAT
    return ImbalanceSignal(ts=0, direction=direction, strength=strength)


def test_unit_size_formula() -> None:
    # 10 % of 100 USDT at one sigma over 120 s: 10 / (60000 * 1e-4 * sqrt(120))
    unit = sizer().unit_size(volatility_bps=1.0, mid=60000.0)
    assert float(unit) == pytest.approx(10 / (60000 * 1e-4 * math.sqrt(120)))


def test_target_is_strength_times_unit_rounded_to_step() -> None:
    s = sizer(max_position="10", max_daily_loss="1")  # unit = 0.1/(60000*1e-4*sqrt(120)) = 0.0015214 BTC
    assert s.target_position(sig(2.5), position=D(0), volatility_bps=1.0, mid=60000.0) == D("0.00380")
    assert s.target_position(sig(-2.5), position=D(0), volatility_bps=1.0, mid=60000.0) == D("-0.00380")
    # twice the volatility: half the size
    assert s.target_position(sig(2.5), position=D(0), volatility_bps=2.0, mid=60000.0) == D("0.00190")


def test_target_capped_at_max_position_and_flat_signal_is_zero() -> None:
    s = sizer()
    assert s.target_position(sig(5.0), position=D(0), volatility_bps=1.0, mid=60000.0) == D("0.05")
    assert s.target_position(sig(0.0), position=D("0.02"), volatility_bps=1.0, mid=60000.0) == 0


def test_skew_damps_adding_and_keeps_reducing() -> None:
    s = sizer()  # max_position 0.05
    # long 0.04: room 20 %, so a raw target of 0.2 moves only 0.2*(0.2-0.04)=0.032 -> capped at 0.05
    assert s.skew(D("0.2"), D("0.04")) == D("0.072")
    assert s.skew(D("0.045"), D("0.04")) == D("0.041")
    # reducing or flipping is taken in full
    assert s.skew(D("-0.2"), D("0.04")) == D("-0.2")
    assert s.skew(D("0.01"), D("0.04")) == D("0.01")
    assert s.skew(D("-0.045"), D("-0.04")) == D("-0.041")


def _order(side: Side, amount: str, filled: str = "0") -> Order:
    return Order(client_id="x", symbol="BTC/USDT", side=side, type=OrderType.LIMIT, amount=D(amount),
                 price=D("60000"), status=OrderStatus.ACKED, filled=D(filled))


def test_order_for_nets_open_orders_and_rounds() -> None:
    s = sizer()
    req = s.order_for(D("0.03"), D("0.01"), [_order(Side.BUY, "0.005", filled="0.002")], D("60000.129"), reason="r")
    assert req is not None
    assert (req.side, req.amount, req.price, req.reason) == (Side.BUY, D("0.01700"), D("60000.12"), "r")
    sell = s.order_for(D("-0.0123456"), D("0"), [], D("60000.121"))
    assert sell is not None and (sell.side, sell.amount, sell.price) == (Side.SELL, D("0.01234"), D("60000.13"))


def test_order_for_drops_below_minimums_and_respects_side_hint() -> None:
    s = sizer()
    assert s.order_for(D("0.00008"), D("0"), [], D("60000")) is None  # 4.8 USDT < 5 min notional
    assert s.order_for(D("0.000004"), D("0"), [], D("60000")) is None  # below one step
    assert s.order_for(D("0.01"), D("0.01"), [], D("60000")) is None  # nothing to do
    assert s.order_for(D("0.01"), D("0"), [], D("60000"), side_hint=Side.SELL) is None
