"""Average-cost accounting and the exact money representation, without a database."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

from sqlalchemy.dialects import postgresql, sqlite

from bot.model import Fill, Liquidity, Side
from bot.store.pnl import Inventory, apply_fill, fee_in_quote, split_symbol
from bot.store.types import Money, UtcDateTime, dt_to_ms, ms_to_dt


def _fill(side: Side, price: str, amount: str, fee: str = "0", ccy: str = "USDT") -> Fill:
    return Fill("t", "c", "BTC/USDT", side, D(price), D(amount), D(fee), ccy, Liquidity.TAKER, 0)


def test_adding_averages_and_closing_realises_against_the_average() -> None:
    inv = Inventory()
    assert apply_fill(inv, _fill(Side.BUY, "100", "1"), "BTC") == 0
    assert apply_fill(inv, _fill(Side.BUY, "110", "3"), "BTC") == 0
    assert (inv.position, inv.avg_price) == (D(4), D("107.5"))
    assert apply_fill(inv, _fill(Side.SELL, "120", "1.5"), "BTC") == D("18.75")  # (120-107.5)*1.5
    assert (inv.position, inv.avg_price) == (D("2.5"), D("107.5"))


def test_a_flip_through_zero_closes_then_opens_at_the_fill_price() -> None:
    inv = Inventory()
    apply_fill(inv, _fill(Side.BUY, "100", "2"), "BTC")
    assert apply_fill(inv, _fill(Side.SELL, "90", "5"), "BTC") == D("-20")  # closes 2 at -10
    assert (inv.position, inv.avg_price) == (D(-3), D(90))
    assert apply_fill(inv, _fill(Side.BUY, "80", "1"), "BTC") == D("10")  # short gains when price falls
    assert apply_fill(inv, _fill(Side.BUY, "95", "2"), "BTC") == D("-10")
    assert (inv.position, inv.avg_price) == (D(0), D(0))


def test_a_non_terminating_average_is_kept_at_8_places_half_even() -> None:
    inv = Inventory()
    apply_fill(inv, _fill(Side.BUY, "100", "1"), "BTC")
    apply_fill(inv, _fill(Side.BUY, "101", "2"), "BTC")
    assert inv.avg_price == D("100.66666667")
    assert apply_fill(inv, _fill(Side.SELL, "102", "0.3"), "BTC") == D("0.4")  # 1.33333333 * 0.3 = 0.399999999 -> 0.40000000


def test_a_base_currency_fee_reduces_the_position_like_the_exchange_balance() -> None:
    inv = Inventory()
    f = _fill(Side.BUY, "100", "1", fee="0.001", ccy="BTC")
    apply_fill(inv, f, "BTC")
    assert inv.position == D("0.999")
    assert fee_in_quote(f, "BTC", "USDT") == D("0.1")
    assert fee_in_quote(_fill(Side.BUY, "100", "1", fee="0.2", ccy="BNB"), "BTC", "USDT") is None
    assert split_symbol("BTC/USDT:USDT") == ("BTC", "USDT")


def test_money_is_integer_satoshis_on_sqlite_and_numeric_on_postgres() -> None:
    m = Money()
    lite, pg = sqlite.dialect(), postgresql.dialect()
    to_lite = m.bind_processor(lite)
    to_pg = m.bind_processor(pg)
    assert to_lite(D("60000.12345678")) == 6000012345678
    assert to_lite(D("-0.000000015")) == -2  # half-even
    assert to_lite(None) is None
    assert to_pg(D("1.234567891")) == D("1.23456789")
    assert m.process_result_value(6000012345678, lite) == D("60000.12345678")
    assert m.process_result_value(D("1.5"), pg) == D("1.5")


def test_timestamps_are_exact_utc_milliseconds() -> None:
    ms = 1_723_075_200_123
    dt = ms_to_dt(ms)
    assert dt == datetime(2024, 8, 8, 0, 0, 0, 123000, tzinfo=UTC)
    assert dt_to_ms(dt) == ms
    to_lite = UtcDateTime().bind_processor(sqlite.dialect())
    assert to_lite is not None
    assert to_lite(ms) == "2024-08-08 00:00:00.123000"
    assert UtcDateTime().process_result_value(datetime(2024, 8, 8), sqlite.dialect()) == datetime(2024, 8, 8, tzinfo=UTC)
