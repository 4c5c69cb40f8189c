"""A create whose every attempt ended ambiguously stays UNKNOWN (open for risk) until reconciled.

The story: every create attempt timed out and every lookup by client id said "not found", but
an exchange can still process one of those requests late. Giving the order a final status then
would leave a live order the bot no longer counts. So it stays ``unknown``; the reconciler
adopts it if the exchange lists it (or has a fill with its client id), and closes it only when
the lookup still says "not found" after the settle delay.

Scripted stand-in exchange from ``test_execution_ccxt_broker`` (exact counts of what was sent).
"""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from test_execution_ccxt_broker import REQ, FakeExchange, _make

from bot.config import RiskSettings
from bot.execution.ccxt_broker import CcxtBroker
from bot.execution.client_ids import ClientIdFactory
from bot.execution.orders import OrderManager
from bot.execution.reconcile import SETTLE_UNKNOWN_MS, Reconciler
from bot.model import OrderEvent, OrderStatus, RiskAction
from bot.risk.limits import MarketState, RiskLimits
from bot.risk.market_rules import MarketRules

from helpers import ListSink, SteppableClock

S = OrderStatus
CID = "ofi-5-1"


async def _unknown_order(fake: FakeExchange):  # type: ignore[no-untyped-def]
    fake.script["create_order"] = ["timeout"] * 4  # every attempt of max_retries=3 times out
    broker, om, sink = _make(fake, max_retries=3)
    o = await om.submit(REQ)
    assert o.status is S.UNKNOWN and o.status.is_open
    assert "fate unknown after 4 ambiguous attempts" in o.reason
    assert fake.calls["create_order"] == 4 and fake.orders == {}  # same client id each time, none arrived
    assert [x.client_id for x in om.open_orders] == [CID]
    return broker, om, sink


async def test_create_that_never_arrived_is_closed_by_reconcile_after_the_settle_delay() -> None:
    fake = FakeExchange()
    broker, om, sink = await _unknown_order(fake)
    # the poller's single "not found" does not settle it
    await broker.poll_once()
    await om.drain()
    assert om.orders[CID].status is S.UNKNOWN
    rec = Reconciler(om, broker, om.clock)
    first = await rec.reconcile_once()
    assert first.kinds() == ["order_unsettled"] and om.orders[CID].status is S.UNKNOWN
    om.clock.advance(om.clock.now_ms() + SETTLE_UNKNOWN_MS)  # type: ignore[attr-defined]
    second = await rec.reconcile_once()
    assert second.kinds() == ["order_never_arrived"]
    closed = om.orders[CID]
    assert closed.status is S.EXPIRED and "never reached the exchange" in closed.reason
    assert om.open_orders == [] and om.unknown_since == {}
    events = [r for r in sink.records if isinstance(r, OrderEvent) and r.client_id == CID]
    assert [e.status for e in events] == [S.NEW, S.SUBMITTED, S.UNKNOWN, S.EXPIRED]
    assert "never reached the exchange" in events[-1].reason
    assert fake.calls["create_order"] == 4  # nothing re-sent by the reconciler
    assert (await rec.reconcile_once()).clean


@pytest.mark.parametrize("after_settle_delay", [False, True])
async def test_create_that_arrived_late_is_adopted_and_its_fill_booked_once(after_settle_delay: bool) -> None:
    fake = FakeExchange()
    broker, om, sink = await _unknown_order(fake)
    # the exchange processes one of the timed-out requests late, and the order then fills
    await fake.create_order("BTC/USDT", "limit", "buy", "0.01", "50000", {"newClientOrderId": CID})
    if after_settle_delay:  # the reconciler's fill sweep and listing come before any closing
        om.clock.advance(om.clock.now_ms() + SETTLE_UNKNOWN_MS)  # type: ignore[attr-defined]
    rec = Reconciler(om, broker, om.clock)
    report = await rec.reconcile_once()
    assert report.kinds() == ["order_status"]
    adopted = om.orders[CID]
    assert adopted.status is S.ACKED and adopted.exchange_id == "1"
    fake.fill(CID, "50000", "0.01", 2_000)
    # the fill arrives through the poller and again through reconciliation: booked once
    await broker.poll_once()
    await om.drain()
    again = await rec.reconcile_once()
    assert again.clean
    await broker.poll_once()
    await om.drain()
    assert om.orders[CID].status is S.FILLED and om.open_orders == []
    assert [f.trade_id for f in sink.fills()] == ["1000"]
    assert om.position.amount == D("0.01")
    assert list(fake.orders) == [CID]


async def test_unknown_order_counts_for_max_position_meanwhile() -> None:
    fake = FakeExchange()
    _broker, om, _ = await _unknown_order(fake)
    limits = RiskLimits(RiskSettings(max_position=D("0.015")), MarketRules.binance_spot("BTC/USDT"), om.clock)
    market = MarketState(mid=50000.0, best_bid=49999.99, best_ask=50000.01, book_healthy=True, book_reason=None)
    d = limits.check(REQ, position=om.position.amount, open_orders=om.open_orders, market=market)
    assert d.action is RiskAction.CLIP and d.order is not None and d.order.amount == D("0.005")
    assert d.event is not None and d.event.details["open_buys"] == "0.01"
    tight = RiskLimits(RiskSettings(max_position=D("0.01")), MarketRules.binance_spot("BTC/USDT"), om.clock)
    d = tight.check(REQ, position=om.position.amount, open_orders=om.open_orders, market=market)
    assert d.action is RiskAction.REJECT and d.kind == "max_position"


async def test_cancel_of_an_unknown_order_keeps_it_open_until_it_is_settled() -> None:
    fake = FakeExchange()
    broker, om, _ = await _unknown_order(fake)
    c = await om.cancel(CID)
    assert c.status is S.UNKNOWN and c.status.is_open  # "not found" on cancel is not final either
    sent = fake.calls["cancel_order"]
    await om.cancel(CID)
    assert fake.calls["cancel_order"] == sent  # parked: not re-sent on every decision
    await fake.create_order("BTC/USDT", "limit", "buy", "0.01", "50000", {"newClientOrderId": CID})
    await Reconciler(om, broker, om.clock).reconcile_once()
    assert om.orders[CID].status is S.ACKED
    c = await om.cancel(CID)  # settled: the cancel goes out again
    assert c.status is S.CANCELLED and fake.orders[CID]["info"]["status"] == "CANCELED"


@pytest.mark.parametrize("step_ms", [-3_600_000, 3_600_000], ids=["back_1h", "forward_1h"])
async def test_the_settle_delay_is_monotonic(step_ms: int) -> None:
    """A wall-clock step neither closes an unknown order early (forward: a late create could
    still land) nor keeps it open for an extra hour (back)."""
    fake = FakeExchange()
    fake.script["create_order"] = ["timeout"] * 4
    clock = SteppableClock(wall0_ms=1_000)
    broker = CcxtBroker(fake, "BTC/USDT", clock, max_retries=3, backoff_base=0.0, use_websocket=False)
    om = OrderManager(broker, ListSink(), clock, ClientIdFactory(5), "BTC/USDT")
    assert (await om.submit(REQ)).status is S.UNKNOWN
    rec = Reconciler(om, broker, clock)
    clock.step_wall(step_ms)
    clock.advance(SETTLE_UNKNOWN_MS - 1)
    assert (await rec.reconcile_once()).kinds() == ["order_unsettled"]
    assert om.orders[CID].status is S.UNKNOWN
    clock.advance(1)
    assert (await rec.reconcile_once()).kinds() == ["order_never_arrived"]
    assert om.orders[CID].status is S.EXPIRED
