"""The imbalance strategy: signal -> target -> at most one limit order toward it; pure logic."""

from __future__ import annotations

from decimal import Decimal as D

from bot.config import settings_from_dict
from bot.model import Direction, ImbalanceSignal, Order, OrderStatus, OrderType, Side
from bot.risk.market_rules import MarketRules
from bot.strategy import Cancel, ImbalanceStrategy, Place, VolatilityEstimator

SETTINGS = settings_from_dict(
    {"strategy": {"entry_z": 2.0, "exit_z": 0.5, "aggressive_z": 3.0, "order_ttl": "5s", "max_hold": "60s",
                  "cost_gate": False},
     "risk": {"max_position": 0.05, "max_order_notional": 5000}},
    env={},
)
RULES = MarketRules.binance_spot("BTC/USDT")
BID, ASK = 60000.0, 60000.5


def _strategy(**over: object) -> ImbalanceStrategy:
    s = SETTINGS
    if over:
        s = s.model_copy(update={"strategy": s.strategy.model_copy(update=over)})
    return ImbalanceStrategy(s, RULES)


def _sig(z: float, ts: int = 1_000, kind: str = "entry") -> ImbalanceSignal:
    d = Direction.FLAT if kind == "exit" else (Direction.LONG if z > 0 else Direction.SHORT)
    return ImbalanceSignal(ts, d, z, {"ofi": z}, kind=kind)


def _order(cid: str, side: Side, ts: int, status: OrderStatus = OrderStatus.ACKED) -> Order:
    return Order(cid, "BTC/USDT", side, OrderType.LIMIT, D("0.01"), D("60000"), status=status, created_ts=ts)


def test_moderate_long_signal_joins_the_bid_with_the_signal_attached() -> None:
    st = _strategy()
    assert st.on_signal(_sig(2.5), D(0), mid=60000.25)
    assert st.target > 0
    [intent] = st.decide(1_100, D(0), [], BID, ASK)
    assert isinstance(intent, Place)
    req = intent.request
    assert (req.side, req.price, req.type) == (Side.BUY, D("60000.0"), OrderType.LIMIT)
    assert req.amount == st.target  # flat -> target in one order
    assert req.signal_strength == 2.5 and req.reason.startswith("entry buy join z=+2.50")


def test_strong_short_signal_crosses_the_spread_at_the_bid() -> None:
    st = _strategy()
    st.on_signal(_sig(-3.5), D(0), mid=60000.25)
    assert st.target < 0
    [intent] = st.decide(1_100, D(0), [], BID, ASK)
    assert isinstance(intent, Place)
    assert (intent.request.side, intent.request.price) == (Side.SELL, D("60000.0"))
    assert "cross" in intent.request.reason


def test_one_working_order_at_a_time_until_order_ttl_then_cancel() -> None:
    st = _strategy()
    st.on_signal(_sig(2.5), D(0), mid=60000.25)
    working = [_order("a", Side.BUY, ts=1_000)]
    assert st.decide(3_000, D(0), working, BID, ASK) == []
    assert st.decide(6_000, D(0), working, BID, ASK) == [Cancel("a", "order older than order_ttl")]


def test_exit_signal_cancels_the_entry_and_then_flattens_across_the_spread() -> None:
    st = _strategy()
    st.on_signal(_sig(2.5), D(0), mid=60000.25)
    st.on_signal(_sig(0.1, ts=2_000, kind="exit"), D("0.01"), mid=60000.25)
    assert st.target == 0
    # the entry buy still working: cancel it first, place nothing in the same step
    assert st.decide(2_100, D("0.01"), [_order("a", Side.BUY, ts=1_500)], BID, ASK) == [
        Cancel("a", "target changed")]
    [intent] = st.decide(2_200, D("0.01"), [], BID, ASK)
    assert isinstance(intent, Place)
    assert (intent.request.side, intent.request.amount, intent.request.price) == (Side.SELL, D("0.01"), D("60000.0"))
    assert intent.request.reason.startswith("exit sell cross")


def test_max_hold_flattens_the_target() -> None:
    st = _strategy()
    st.on_signal(_sig(2.5, ts=1_000), D(0), mid=60000.25)
    st.on_tick(60_000, 60000.25)
    assert st.target != 0
    st.on_tick(61_001, 60000.25)
    assert st.target == 0


def test_cost_gate_skips_an_entry_that_cannot_pay_spread_and_fee() -> None:
    st = _strategy(cost_gate=True, edge_bps_per_z=0.5)  # expected move 0.5 bps per z
    assert not st.on_signal(_sig(2.5), D(0), mid=60000.25, half_spread_bps=0.04)
    assert st.target == 0 and st.last_skip
    assert st.decide(1_100, D(0), [], BID, ASK) == []


def test_no_order_without_a_two_sided_book() -> None:
    st = _strategy()
    st.on_signal(_sig(2.5), D(0), mid=60000.25)
    assert st.decide(1_100, D(0), [], None, ASK) == []


def test_volatility_estimator_floor_then_ewma_of_one_second_returns() -> None:
    v = VolatilityEstimator(halflife_s=10, floor_bps=1.0)
    assert v.bps == 1.0
    mid = 100.0
    for i in range(30):
        mid *= 1.001 if i % 2 else 0.999  # +-10 bps every second
        v.update(i * 1000, mid)
        v.update(i * 1000 + 500, mid * 1.5)  # inside the same second: ignored
    assert 9.0 < v.bps < 11.0


def test_max_hold_runs_on_the_monotonic_time_not_the_signal_stamp() -> None:
    """The engine passes monotonic ``now_ms``; the signal's (exchange/wall) ``ts`` may be an hour off."""
    st = _strategy()
    st.on_signal(_sig(2.5, ts=1_000 + 3_600_000), D(0), mid=60000.25, now_ms=5_000)
    st.on_tick(1_000 + 3_600_000, 60000.25, now_ms=65_000)
    assert st.target != 0  # held for 60 s of monotonic time: not past max_hold
    st.on_tick(1_000 + 3_600_000, 60000.25, now_ms=65_001)
    assert st.target == 0


def test_order_ttl_ages_orders_on_the_monotonic_placement_time() -> None:
    """``created_ts`` is a wall-clock stamp: an hour's step must not make an order old or young."""
    st = _strategy()
    st.on_signal(_sig(2.5), D(0), mid=60000.25)
    stamped_early = [_order("a", Side.BUY, ts=1_000 - 3_600_000)]  # wall clock stepped forward since
    stamped_late = [_order("a", Side.BUY, ts=1_000 + 3_600_000)]  # wall clock stepped back since
    for working in (stamped_early, stamped_late):
        assert st.decide(5_999, D(0), working, BID, ASK, placed_ms={"a": 1_000}) == []
        assert st.decide(6_000, D(0), working, BID, ASK, placed_ms={"a": 1_000}) == [
            Cancel("a", "order older than order_ttl")]
