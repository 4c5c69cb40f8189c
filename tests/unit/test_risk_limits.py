"""Pre-trade limits: one table row per limit with the exact reason, and the max-position property."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.clock import LiveClock, SimulatedClock
from bot.config import RiskSettings
from bot.logging import configure_logging
from bot.model import Order, OrderRequest, OrderStatus, OrderType, RiskAction, Side
from bot.risk.limits import MarketState, RiskLimits
from bot.risk.market_rules import MarketRules

from helpers import SteppableClock


@pytest.fixture(autouse=True)
def _fresh_logging() -> None:
    """Other tests' CliRunner runs leave structlog writing to a closed stream; re-point it."""
    configure_logging()


D = Decimal
NOW = 1_723_161_600_000
RULES = MarketRules.binance_spot("BTC/USDT")
HEALTHY = MarketState(mid=60000.0, best_bid=59999.99, best_ask=60000.01, book_healthy=True, book_reason=None)


def risk(**kw: Any) -> RiskSettings:
    base: dict[str, Any] = {
        "max_position": D("0.05"), "max_order_notional": D("1000"), "max_orders_per_minute": 3,
        "max_open_orders": 2, "price_band_bps": 50.0,
    }
    base.update(kw)
    return RiskSettings(**base)


def req(side: Side = Side.BUY, amount: str = "0.01", price: str | None = "60000") -> OrderRequest:
    return OrderRequest(symbol="BTC/USDT", side=side, amount=D(amount), price=None if price is None else D(price),
                        type=OrderType.LIMIT if price is not None else OrderType.MARKET)


def open_order(side: Side, amount: str, filled: str = "0", symbol: str = "BTC/USDT",
               status: OrderStatus = OrderStatus.ACKED) -> Order:
    return Order(client_id=f"o{amount}{side}", symbol=symbol, side=side, type=OrderType.LIMIT, amount=D(amount),
                 price=D("60000"), status=status, filled=D(filled))


def limits(**kw: Any) -> RiskLimits:
    return RiskLimits(risk(**kw), RULES, SimulatedClock(NOW))


CASES: list[tuple[str, dict[str, Any], RiskAction, str, str, str | None]] = [
    # id, inputs, action, kind, reason, allowed amount
    ("accept", {}, RiskAction.ACCEPT, "ok", "accepted", "0.01"),
    ("feed_down", {"market": dataclasses.replace(HEALTHY, feed_up=False)}, RiskAction.REJECT, "feed_down",
     "market feed is down: no new orders", None),
    ("stale", {"market": dataclasses.replace(HEALTHY, book_healthy=False, book_reason="stale")}, RiskAction.REJECT,
     "book_unhealthy", "book not healthy (stale): no new orders until it resyncs", None),
    ("resync", {"market": dataclasses.replace(HEALTHY, book_healthy=False, book_reason="resync")},
     RiskAction.REJECT, "book_unhealthy", "book not healthy (resync): no new orders until it resyncs", None),
    ("crossed", {"market": dataclasses.replace(HEALTHY, best_bid=60001.0, best_ask=60000.0)}, RiskAction.REJECT,
     "book_unhealthy", "book crossed (best bid 60001.0 >= best ask 60000.0): no new orders until it resyncs", None),
    ("max_open_orders", {"open": [open_order(Side.SELL, "0.001"), open_order(Side.SELL, "0.002")]},
     RiskAction.REJECT, "max_open_orders", "2 open orders, max_open_orders is 2", None),
    ("orders_per_minute", {"sent": [NOW - 59_000, NOW - 30_000, NOW - 1]}, RiskAction.REJECT,
     "max_orders_per_minute", "3 orders sent in the last 60 s, max_orders_per_minute is 3", None),
    ("orders_per_minute_window_expired", {"sent": [NOW - 60_000, NOW - 30_000, NOW - 1]}, RiskAction.ACCEPT,
     "ok", "accepted", "0.01"),
    ("no_mid", {"market": dataclasses.replace(HEALTHY, mid=None)}, RiskAction.REJECT, "no_mid",
     "no mid price: the price band cannot be checked", None),
    ("price_band_buy", {"req": req(price="60301")}, RiskAction.REJECT, "price_band",
     "price 60301 is 50.2 bps from mid 60000.0, price_band_bps is 50", None),
    ("price_band_sell", {"req": req(Side.SELL, price="59690")}, RiskAction.REJECT, "price_band",
     "price 59690 is 51.7 bps from mid 60000.0, price_band_bps is 50", None),
    ("price_band_edge_ok", {"req": req(price="60300")}, RiskAction.ACCEPT, "ok", "accepted", "0.01"),
    ("max_order_notional_clip", {"req": req(amount="0.02")}, RiskAction.CLIP, "max_order_notional",
     "notional 1200.00 above max_order_notional 1000: amount clipped 0.02 -> 0.01666", "0.01666"),
    ("max_order_notional_reject", {"req": req(amount="0.02"), "settings": {"max_order_notional": D("4")}},
     RiskAction.REJECT, "max_order_notional",
     "notional 1200.00 above max_order_notional 4; clipped notional 3.60000 below the market minimum 5.0 USDT",
     None),
    ("max_position_clip", {"position": "0.04", "open": [open_order(Side.BUY, "0.01", filled="0.004")]},
     RiskAction.CLIP, "max_position",
     "worst-case position 0.056 (position 0.04, open buys 0.006, order +0.01) exceeds max_position 0.05"
     ": amount clipped 0.01 -> 0.004", "0.004"),
    ("max_position_reject", {"position": "0.05"}, RiskAction.REJECT, "max_position",
     "worst-case position 0.06 (position 0.05, open buys 0, order +0.01) exceeds max_position 0.05; no room left",
     None),
    ("max_position_short_clip", {"req": req(Side.SELL, "0.015"), "position": "-0.04"}, RiskAction.CLIP,
     "max_position",
     "worst-case position -0.055 (position -0.04, open sells 0, order -0.015) exceeds max_position 0.05"
     ": amount clipped 0.015 -> 0.01", "0.01"),
    ("max_position_clip_below_min", {"position": "0.04996"}, RiskAction.REJECT, "max_position",
     "worst-case position 0.05996 (position 0.04996, open buys 0, order +0.01) exceeds max_position 0.05"
     "; clipped notional 2.40000 below the market minimum 5.0 USDT", None),
    ("reducing_sell_ok_when_long_at_max", {"req": req(Side.SELL, "0.05"), "position": "0.05",
                                           "settings": {"max_order_notional": D("5000")}}, RiskAction.ACCEPT,
     "ok", "accepted", "0.05"),
    ("other_symbol_orders_ignored", {"open": [open_order(Side.BUY, "1", symbol="ETH/USDT")] * 3},
     RiskAction.ACCEPT, "ok", "accepted", "0.01"),
    ("both_clips", {"req": req(amount="0.03"), "position": "0.035"}, RiskAction.CLIP, "max_position",
     "notional 1800.00 above max_order_notional 1000: amount clipped 0.03 -> 0.01666; worst-case position 0.05166 "
     "(position 0.035, open buys 0, order +0.01666) exceeds max_position 0.05: amount clipped 0.01666 -> 0.015",
     "0.015"),
]


@pytest.mark.parametrize(("inputs", "action", "kind", "reason", "allowed"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_limit_table(inputs: dict[str, Any], action: RiskAction, kind: str, reason: str, allowed: str | None) -> None:
    lim = limits(**inputs.get("settings", {}))
    for ts in inputs.get("sent", []):
        lim.on_order_sent(ts)
    r = inputs.get("req", req())
    d = lim.check(r, position=D(inputs.get("position", "0")), open_orders=inputs.get("open", []),
                  market=inputs.get("market", HEALTHY))
    assert (d.action, d.kind, d.reason) == (action, kind, reason)
    if allowed is None:
        assert d.order is None
    else:
        assert d.order is not None and d.order.amount == D(allowed)
        assert (d.order.side, d.order.price) == (r.side, r.price)
    if action in (RiskAction.REJECT, RiskAction.CLIP):
        assert d.event is not None
        assert (d.event.action, d.event.kind, d.event.reason, d.event.ts) == (action, kind, reason, NOW)
    else:
        assert d.event is None


def test_every_decision_is_one_log_line_with_numbers() -> None:
    lines: list[tuple[str, dict[str, Any]]] = []

    class Log:
        def warning(self, event: str, **kw: Any) -> None:
            lines.append((event, kw))

        info = error = debug = warning

    lim = RiskLimits(risk(), RULES, SimulatedClock(NOW), log=Log())
    lim.check(req(amount="0.02"), position=D("0.045"), open_orders=[], market=HEALTHY)
    assert len(lines) == 1
    event, kw = lines[0]
    assert event == "risk_clip" and kw["kind"] == "max_position"
    assert kw["position"] == "0.045" and kw["max_position"] == "0.05" and kw["allowed"] == "0.005"


def test_rejection_streak_halts_once_and_resets_on_accept() -> None:
    lim = limits(max_rejections=3)
    assert lim.on_rejection() is None
    assert lim.on_rejection() is None
    ev = lim.on_rejection()
    assert ev is not None and ev.action is RiskAction.HALT and ev.kind == "max_rejections"
    assert ev.reason == "3 consecutive order rejections reached max_rejections 3"
    assert lim.on_rejection() is None  # once per streak
    lim.on_accepted()
    assert lim.rejections == 0


def test_update_settings_applies_new_limits() -> None:
    lim = limits()
    lim.update_settings(risk(max_position=D("0.005")))
    d = lim.check(req(), position=D(0), open_orders=[], market=HEALTHY)
    assert (d.action, d.order.amount if d.order else None) == (RiskAction.CLIP, D("0.00500"))


# --------------------------------------------------------------------------- property

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("place"), st.sampled_from([Side.BUY, Side.SELL]),
                  st.integers(min_value=1, max_value=4000), st.integers(min_value=-40, max_value=40)),
        st.tuples(st.just("fill"), st.integers(min_value=0, max_value=10), st.integers(min_value=1, max_value=100),
                  st.just(0)),
        st.tuples(st.just("cancel"), st.integers(min_value=0, max_value=10), st.just(0), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops=_ops, start=st.integers(min_value=-5000, max_value=5000))
def test_position_never_exceeds_max_position(ops: list[tuple[Any, ...]], start: int) -> None:
    """Through any sequence of accepted/clipped orders and partial fills, |position| <= max_position."""
    max_pos = D("0.05")
    lim = RiskLimits(risk(max_position=max_pos, max_open_orders=5, max_orders_per_minute=10_000,
                          max_order_notional=D("5000")), RULES, SimulatedClock(NOW))
    position = D(start) * D("0.00001")
    book: list[Order] = []
    n = 0
    for op in ops:
        if op[0] == "place":
            _, side, units, ticks = op
            price = D("60000") + D(ticks) * D("7.5")
            d = lim.check(req(side, str(D(units) * D("0.00001")), str(price)), position=position,
                          open_orders=book, market=HEALTHY)
            if d.order is not None:
                n += 1
                lim.on_order_sent(NOW)
                book.append(Order(client_id=str(n), symbol="BTC/USDT", side=d.order.side, type=OrderType.LIMIT,
                                  amount=d.order.amount, price=d.order.price, status=OrderStatus.ACKED))
        elif op[0] == "fill" and book:
            _, idx, pct, _ = op
            o = book[idx % len(book)]
            qty = RULES.amount_to_precision(o.remaining * pct / 100) or o.remaining
            position += o.side.sign * qty
            o = dataclasses.replace(o, filled=o.filled + qty)
            book[idx % len(book)] = o
            if o.remaining == 0:
                book.remove(o)
        elif op[0] == "cancel" and book:
            book.pop(op[1] % len(book))
        assert abs(position) <= max(max_pos, abs(D(start) * D("0.00001")))
        if abs(D(start) * D("0.00001")) <= max_pos:
            buys = sum((o.remaining for o in book if o.side is Side.BUY), D(0))
            sells = sum((o.remaining for o in book if o.side is Side.SELL), D(0))
            assert position + buys <= max_pos and position - sells >= -max_pos


# --------------------------------------------------------------------------- wall-clock steps
# The order-rate window is a duration: measured on the monotonic clock, a step of the wall clock
# (NTP, ``date -s``) neither freezes it (step back: every order refused for an hour, exits
# included) nor empties it (step forward: the limit lifted at once).


def _fill_window(lim: RiskLimits) -> None:
    for _ in range(3):  # max_orders_per_minute = 3
        assert lim.check(req(), position=D(0), open_orders=[], market=HEALTHY).allowed
        lim.on_order_sent()
    assert lim.check(req(), position=D(0), open_orders=[], market=HEALTHY).kind == "max_orders_per_minute"


@pytest.mark.parametrize("step_ms", [-3_600_000, 3_600_000], ids=["back_1h", "forward_1h"])
def test_order_rate_window_ignores_a_wall_clock_step(step_ms: int) -> None:
    clock = SteppableClock(wall0_ms=NOW)
    lim = RiskLimits(risk(), RULES, clock)
    _fill_window(lim)
    clock.step_wall(step_ms)
    clock.advance(59_999)  # still inside the minute: still full, whatever the wall clock says
    d = lim.check(req(), position=D(0), open_orders=[], market=HEALTHY)
    assert (d.action, d.kind) == (RiskAction.REJECT, "max_orders_per_minute")
    assert lim.orders_last_minute() == 3
    assert d.event is not None and d.event.ts == NOW + step_ms + 59_999  # rows keep the wall-clock stamp
    clock.advance(1)  # a minute of monotonic time after the orders: room again
    assert lim.orders_last_minute() == 0
    assert lim.check(req(), position=D(0), open_orders=[], market=HEALTHY).action is RiskAction.ACCEPT


def test_order_rate_window_with_a_stepped_live_clock() -> None:
    """``LiveClock(wall_ms=...)``: the wall clock injected and stepped, the monotonic side real."""
    wall = [NOW]
    lim = RiskLimits(risk(), RULES, LiveClock(wall_ms=lambda: wall[0]))
    _fill_window(lim)
    wall[0] -= 3_600_000
    assert lim.orders_last_minute() == 3
    wall[0] += 7_200_000
    assert lim.orders_last_minute() == 3
    assert lim.check(req(), position=D(0), open_orders=[], market=HEALTHY).kind == "max_orders_per_minute"
