"""MarketRules: Binance's real filters offline, and rounding identical to ccxt's own methods."""

from __future__ import annotations

from decimal import Decimal

import ccxt
import pytest
from ccxt.base.decimal_to_precision import DECIMAL_PLACES
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.logging import configure_logging
from bot.model import Side
from bot.risk.market_rules import _BINANCE_SPOT, MarketRules


@pytest.fixture(autouse=True)
def _fresh_logging() -> None:
    """Other tests' CliRunner runs leave structlog writing to a closed stream; re-point it."""
    configure_logging()


D = Decimal


def _binance_with_markets() -> ccxt.binance:
    """A real ccxt binance instance with the markets set locally (no network)."""
    ex = ccxt.binance()
    ex.set_markets([dict(m, spot=True, type="spot", active=True) for m in _BINANCE_SPOT.values()])
    return ex


def test_binance_spot_btc_filters() -> None:
    r = MarketRules.binance_spot("BTC/USDT")
    assert (r.tick, r.step, r.min_amount, r.min_notional) == (D("0.01"), D("0.00001"), D("0.00001"), D("5"))
    assert (r.base, r.quote) == ("BTC", "USDT")


def test_binance_spot_eth_filters() -> None:
    r = MarketRules.binance_spot("ETH/USDT")
    assert (r.tick, r.step, r.min_amount, r.min_notional) == (D("0.01"), D("0.0001"), D("0.0001"), D("5"))


def test_unknown_symbol_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"no built-in Binance spot rules for 'DOGE/USDT' \(known: BTC/USDT, ETH/USDT\)"):
        MarketRules.binance_spot("DOGE/USDT")


def test_from_exchange_equals_offline_default() -> None:
    ex = _binance_with_markets()
    assert MarketRules.from_exchange(ex, "BTC/USDT") == MarketRules.binance_spot("BTC/USDT")


@pytest.mark.parametrize(
    ("price", "side", "expected"),
    [
        ("60000.125", None, "60000.13"),  # nearest, as ccxt.price_to_precision
        ("60000.124", None, "60000.12"),
        ("60000.129", Side.BUY, "60000.12"),  # buy rounds down (passive)
        ("60000.121", Side.SELL, "60000.13"),  # sell rounds up (passive)
        ("60000.12", Side.SELL, "60000.12"),  # already on the tick
    ],
)
def test_price_rounding(price: str, side: Side | None, expected: str) -> None:
    assert MarketRules.binance_spot("BTC/USDT").price_to_precision(D(price), side) == D(expected)


def test_amount_truncates_and_minimums() -> None:
    r = MarketRules.binance_spot("BTC/USDT")
    assert r.amount_to_precision(D("0.123456789")) == D("0.12345")
    assert r.amount_to_precision(D("0.000009")) == D("0")
    assert r.below_minimum(D("0"), D("60000")) == "amount 0 is not positive after rounding to step 0.00001"
    assert r.below_minimum(D("0.00008"), D("60000")) == "notional 4.80000 below the market minimum 5.0 USDT"
    assert r.below_minimum(D("0.0001"), D("60000")) is None


def test_decimal_places_mode() -> None:
    market = {
        "symbol": "BTC/USD",
        "precision": {"amount": 4, "price": 1},
        "limits": {"amount": {"min": 0.0001}, "cost": {"min": 1}},
    }
    r = MarketRules.from_market(market, DECIMAL_PLACES)
    assert (r.tick, r.step) == (D("0.1"), D("0.0001"))
    assert r.price_to_precision(D("100.01"), Side.SELL) == D("100.1")
    assert r.amount_to_precision(D("1.23456")) == D("1.2345")


@settings(max_examples=300, deadline=None)
@given(
    amount=st.decimals(min_value=D("0.0001"), max_value=D("100"), places=9),
    price=st.decimals(min_value=D("1"), max_value=D("200000"), places=6),
    symbol=st.sampled_from(["BTC/USDT", "ETH/USDT"]),
)
def test_rounds_exactly_like_ccxt(amount: Decimal, price: Decimal, symbol: str) -> None:
    """Paper (offline rules) and live (ccxt's methods on a loaded exchange) send the same strings."""
    ex = _EX
    r = MarketRules.binance_spot(symbol)
    assert r.amount_str(amount) == ex.amount_to_precision(symbol, str(amount))
    assert r.price_to_precision(price) == D(ex.price_to_precision(symbol, str(price)))


_EX = _binance_with_markets()
