"""CcxtBroker's retry rules against a scripted stand-in exchange (the failure stories).

The integration tests run real ccxt against the emulator; these pin down each rule on its
own, with exact counts of what was sent.
"""

from __future__ import annotations

import itertools
from decimal import Decimal as D
from typing import Any

import ccxt.async_support as ccxt_async
import pytest

from bot.clock import SimulatedClock
from bot.execution.broker import ExchangeHalted
from bot.execution.ccxt_broker import CcxtBroker
from bot.execution.client_ids import ClientIdFactory
from bot.execution.orders import OrderManager
from bot.execution.reconcile import Reconciler
from bot.model import Fill, Liquidity, Order, OrderRequest, OrderStatus, ReconcileDifference, Side

from helpers import ListSink

S = OrderStatus


class FakeExchange:
    """Binance-shaped responses; ``script`` holds the fault for each next call of a method."""

    def __init__(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.trades: list[dict[str, Any]] = []
        self.script: dict[str, list[str]] = {}
        self.calls: dict[str, int] = {}
        self._ids = itertools.count(1)
        self.base_btc = D("0")

    def _fault(self, method: str) -> str | None:
        self.calls[method] = self.calls.get(method, 0) + 1
        queue = self.script.get(method) or []
        return queue.pop(0) if queue else None

    def on_rest_response(
        self, code: int, reason: str, url: str, method: str, headers: Any, body: Any, rh: Any, rb: Any
    ) -> Any:
        return body

    def _raise(self, fault: str) -> None:
        if fault == "timeout":
            raise ccxt_async.RequestTimeout("binance POST /api/v3/order timed out")
        if fault == "503":
            raise ccxt_async.ExchangeNotAvailable("binance 503 Service Unavailable")
        if fault == "429":
            self.on_rest_response(
                429, "Too Many Requests", "u", "GET", {"Retry-After": "0.3"}, "", None, None
            )
            raise ccxt_async.DDoSProtection("binance 429 Too Many Requests")
        if fault == "418":
            self.on_rest_response(418, "I'm a teapot", "u", "GET", {"Retry-After": "120"}, "", None, None)
            raise ccxt_async.DDoSProtection("binance 418 I'm a teapot")

    async def load_markets(self) -> dict[str, Any]:
        return {}

    async def close(self) -> None:
        return None

    async def create_order(
        self, symbol: str, type: str, side: str, amount: str, price: str | None, params: dict[str, Any]
    ) -> dict[str, Any]:
        fault = self._fault("create_order")
        cid = params["newClientOrderId"]
        if fault in ("timeout", "503"):
            self._raise(fault)
        if cid in self.orders and self.orders[cid]["info"]["status"] == "NEW":
            raise ccxt_async.InvalidOrder('binance {"code":-2010,"msg":"Duplicate order sent."}')
        xid = str(next(self._ids))
        raw = {
            "id": xid,
            "clientOrderId": cid,
            "symbol": symbol,
            "type": type,
            "side": side,
            "status": "open",
            "info": {"status": "NEW", "origQty": amount, "executedQty": "0", "price": price},
        }
        self.orders[cid] = raw
        if fault == "accept_timeout":
            raise ccxt_async.RequestTimeout("binance POST /api/v3/order timed out")
        return dict(raw)

    async def fetch_order(self, id: str, symbol: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        fault = self._fault("fetch_order")
        if fault:
            self._raise(fault)
        cid = (params or {}).get("origClientOrderId")
        raw = self.orders.get(cid or "") or next((o for o in self.orders.values() if o["id"] == id), None)
        if raw is None:
            raise ccxt_async.OrderNotFound('binance {"code":-2013,"msg":"Order does not exist."}')
        return dict(raw)

    async def cancel_order(self, id: str, symbol: str, params: dict[str, Any]) -> dict[str, Any]:
        fault = self._fault("cancel_order")
        if fault:
            self._raise(fault)
        raw = self.orders.get(params["origClientOrderId"])
        if raw is None or raw["info"]["status"] != "NEW":
            raise ccxt_async.OrderNotFound('binance {"code":-2011,"msg":"Unknown order sent."}')
        raw["info"]["status"] = "CANCELED"
        raw["status"] = "canceled"
        # Binance's answer: ``clientOrderId`` is the cancel request's own id (ccxt's parse_order
        # takes it), ``origClientOrderId`` the order's
        cancel_id = f"cancel-{raw['id']}"
        return raw | {"clientOrderId": cancel_id,
                      "info": raw["info"] | {"clientOrderId": cancel_id, "origClientOrderId": raw["clientOrderId"]}}

    async def fetch_open_orders(self, symbol: str) -> list[dict[str, Any]]:
        fault = self._fault("fetch_open_orders")
        if fault:
            self._raise(fault)
        return [dict(o) for o in self.orders.values() if o["info"]["status"] == "NEW"]

    async def fetch_my_trades(self, symbol: str, since: int | None, limit: int) -> list[dict[str, Any]]:
        self._fault("fetch_my_trades")
        return [t for t in self.trades if since is None or t["timestamp"] >= since]

    async def fetch_orders(self, symbol: str, since: int | None, limit: int) -> list[dict[str, Any]]:
        self._fault("fetch_orders")  # allOrders: every order, the client id with it
        return [dict(o) for o in self.orders.values()]

    async def fetch_balance(self) -> dict[str, Any]:
        self._fault("fetch_balance")
        return {"info": {"balances": [{"asset": "BTC", "free": str(self.base_btc), "locked": "0"}]}}

    def fill(self, cid: str, price: str, amount: str, ts: int) -> None:
        """The exchange fills an order (e.g. a stop while the bot is down)."""
        raw = self.orders[cid]
        raw["info"]["executedQty"] = amount
        raw["info"]["status"] = "FILLED"
        raw["status"] = "closed"
        self.trades.append(
            {
                "id": str(1000 + len(self.trades)),
                "order": raw["id"],
                "symbol": "BTC/USDT",
                "side": raw["side"],
                "price": float(price),
                "amount": float(amount),
                "timestamp": ts,
                "takerOrMaker": "taker",
                "fee": {"cost": 0.0, "currency": "USDT"},
                "info": {"price": price, "qty": amount, "commission": "0", "commissionAsset": "USDT"},
            }
        )
        self.base_btc += D(amount) * (1 if raw["side"] == "buy" else -1)


Sink = ListSink


def _make(fake: FakeExchange, max_retries: int = 3) -> tuple[CcxtBroker, OrderManager, Sink]:
    clock = SimulatedClock(1_000)
    broker = CcxtBroker(
        fake, "BTC/USDT", clock, max_retries=max_retries, backoff_base=0.0, use_websocket=False
    )
    sink = Sink()
    return broker, OrderManager(broker, sink, clock, ClientIdFactory(5), "BTC/USDT"), sink


REQ = OrderRequest("BTC/USDT", Side.BUY, D("0.01"), D("50000"))


async def test_ack_lost_order_is_adopted_not_sent_twice() -> None:
    fake = FakeExchange()
    fake.script["create_order"] = ["accept_timeout"]
    broker, om, _ = _make(fake)
    o = await om.submit(REQ)
    assert o.status is S.ACKED and o.exchange_id == "1"
    assert fake.calls["create_order"] == 1 and fake.calls["fetch_order"] == 1
    assert list(fake.orders) == ["ofi-5-1"]
    assert broker.stats["adopted"] == 1


async def test_create_that_never_arrived_is_resent_with_the_same_client_id() -> None:
    fake = FakeExchange()
    fake.script["create_order"] = ["timeout", "503"]
    _broker, om, _ = _make(fake)
    o = await om.submit(REQ)
    assert o.status is S.ACKED
    assert fake.calls["create_order"] == 3 and fake.calls["fetch_order"] == 2  # a lookup before each retry
    assert list(fake.orders) == ["ofi-5-1"]


async def test_create_gives_up_after_retry_limit_without_duplicates() -> None:
    fake = FakeExchange()
    fake.script["create_order"] = ["timeout"] * 10
    _broker, om, _ = _make(fake, max_retries=3)
    o = await om.submit(REQ)
    # not REJECTED: a timed-out request may still be processed late; reconciliation settles it
    assert o.status is S.UNKNOWN and o.reason.startswith("fate unknown after 4 ambiguous attempts")
    assert fake.calls["create_order"] == 4 and fake.orders == {}


async def test_lookup_failures_leave_the_order_unknown_and_open() -> None:
    fake = FakeExchange()
    fake.script["create_order"] = ["accept_timeout"]
    fake.script["fetch_order"] = ["timeout"] * 20
    broker, om, _ = _make(fake, max_retries=2)
    o = await om.submit(REQ)
    assert o.status is S.UNKNOWN and o.status.is_open
    assert fake.calls["create_order"] == 1  # never re-sent without a successful lookup
    # reconciliation later finds it live on the exchange
    fake.script["fetch_order"] = []
    report = await Reconciler(om, broker, om.clock).reconcile_once()
    assert om.orders["ofi-5-1"].status is S.ACKED and "order_status" in report.kinds()


async def test_cancel_is_never_assumed() -> None:
    fake = FakeExchange()
    _broker, om, _ = _make(fake, max_retries=2)
    o = await om.submit(REQ)
    fake.script["cancel_order"] = ["timeout"] * 10
    c = await om.cancel(o.client_id)
    assert c.status is S.UNKNOWN and c.status.is_open  # still counts as live
    assert fake.orders[o.client_id]["info"]["status"] == "NEW"
    fake.script["cancel_order"] = []
    c = await om.cancel(o.client_id)
    assert c.status is S.CANCELLED


async def test_cancel_of_a_filled_order_reports_filled() -> None:
    fake = FakeExchange()
    _broker, om, _ = _make(fake)
    o = await om.submit(REQ)
    fake.fill(o.client_id, "50000", "0.01", 2_000)
    c = await om.cancel(o.client_id)
    assert c.status is S.FILLED and c.filled == D("0.01")


async def test_poller_stops_polling_an_order_the_exchange_never_received() -> None:
    fake = FakeExchange()
    broker, om, _ = _make(fake)
    ghost = om.new_order(REQ)
    om.adopt(
        ghost.__class__(**{**{f: getattr(ghost, f) for f in ghost.__slots__}, "status": S.SUBMITTED}), "test"
    )
    broker.track(om.orders[ghost.client_id])
    await broker.poll_once()
    await om.drain()
    assert om.orders[ghost.client_id].status is S.REJECTED
    n = fake.calls["fetch_order"]
    await broker.poll_once()
    assert fake.calls["fetch_order"] == n  # not polled again


async def test_stop_filled_on_exchange_while_bot_was_down_is_reconciled() -> None:
    fake = FakeExchange()
    broker, om, sink = _make(fake)
    o = await om.submit(OrderRequest("BTC/USDT", Side.SELL, D("0.01"), D("49000"), reason="stop"))
    fake.fill(o.client_id, "49000", "0.01", 5_000)  # executed while we were not listening
    report = await Reconciler(om, broker, om.clock).reconcile_once()
    assert report.kinds() == ["missing_fill"]
    assert om.orders[o.client_id].status is S.FILLED
    assert om.position.amount == D("-0.01")
    assert [f.trade_id for f in sink.fills()] == ["1000"]
    again = await Reconciler(om, broker, om.clock).reconcile_once()
    assert again.clean and len(sink.fills()) == 1


@pytest.mark.parametrize("cancel_unknown", [False, True])
async def test_foreign_open_order_never_adopted_cancelled_only_when_configured(cancel_unknown: bool) -> None:
    fake = FakeExchange()
    broker, om, sink = _make(fake)
    await fake.create_order("BTC/USDT", "limit", "buy", "0.5", "100", {"newClientOrderId": "web_123"})
    rec = Reconciler(om, broker, om.clock, cancel_unknown=cancel_unknown)
    report = await rec.reconcile_once()
    assert report.kinds() == ["foreign_order"]
    assert "web_123" not in om.orders and om.open_orders == []  # never adopted, no row
    assert fake.orders["web_123"]["info"]["status"] == ("CANCELED" if cancel_unknown else "NEW")
    rows = [r for r in sink.records if isinstance(r, ReconcileDifference)]
    assert [(r.kind, r.client_id) for r in rows if r.kind != "baseline"] == [("foreign_order", "web_123")]
    again = await rec.reconcile_once()  # reported once, not on every pass
    assert "foreign_order" not in again.kinds()
    await om.cancel_all()  # shutdown / kill switch: the person's order is not touched
    assert fake.orders["web_123"]["info"]["status"] == ("CANCELED" if cancel_unknown else "NEW")


async def test_previous_runs_open_order_is_adopted() -> None:
    fake = FakeExchange()
    broker, om, _ = _make(fake)
    theirs = "ofi-zz-1"  # this bot's prefix, another run: ours (a row lost in a crash)
    await fake.create_order("BTC/USDT", "limit", "buy", "0.5", "100", {"newClientOrderId": theirs})
    report = await Reconciler(om, broker, om.clock).reconcile_once()
    assert report.kinds() == ["unknown_order"]
    assert om.orders[theirs].status is S.ACKED
    await om.cancel_all()
    assert fake.orders[theirs]["info"]["status"] == "CANCELED"


async def test_cancel_answer_carries_the_cancel_requests_id_and_no_order_row_comes_of_it() -> None:
    fake = FakeExchange()
    _broker, om, sink = _make(fake)
    a = await om.submit(REQ)
    b = await om.submit(REQ)
    c = await om.cancel(a.client_id)
    assert (c.client_id, c.status) == (a.client_id, S.CANCELLED)
    left = await om.cancel_all()  # SIGTERM and the kill switch take this path
    assert [(o.client_id, o.status) for o in left] == [(b.client_id, S.CANCELLED)]
    assert set(om.orders) == {a.client_id, b.client_id}
    stored = {r.client_id for r in sink.records if isinstance(r, Order)}
    assert stored == {a.client_id, b.client_id}  # no "cancel-..." row


async def test_a_persons_fill_is_reported_never_booked() -> None:
    fake = FakeExchange()
    broker, om, sink = _make(fake)
    rec = Reconciler(om, broker, om.clock)
    await rec.reconcile_once()  # fresh: position 0
    mine = await om.submit(REQ)
    await fake.create_order("BTC/USDT", "market", "buy", "0.03", None, {"newClientOrderId": "web_hand"})
    fake.fill("web_hand", "50010", "0.03", 2_000)  # a person's market buy on the same account
    fake.fill(mine.client_id, "50000", "0.01", 2_100)
    report = await rec.reconcile_once()
    # the person's 0.03 moves the BTC balance, which the bot's fills do not explain: reported too
    assert sorted(report.kinds()) == ["balance", "foreign_fill", "missing_fill"]
    assert om.position.amount == D("0.01")  # the bot's own fill only
    assert [f.client_id for f in sink.fills()] == [mine.client_id]
    assert "web_hand" not in om.orders
    # the same trade through the user stream: still not booked, not reported twice
    person = next(t for t in fake.trades if t["order"] == fake.orders["web_hand"]["id"])
    fill = await broker.to_fill(person)
    assert fill is not None and fill.client_id == "web_hand"
    assert await om.on_fill_update(fill) is False
    assert om.position.amount == D("0.01") and om.foreign == {"orders": 0, "fills": 1}
    again = await rec.reconcile_once()
    assert "foreign_fill" not in again.kinds()
    kinds = [r.kind for r in sink.records if isinstance(r, ReconcileDifference)]
    assert kinds.count("foreign_fill") == 1


async def test_fresh_database_books_none_of_the_accounts_history() -> None:
    fake = FakeExchange()
    broker, om, sink = _make(fake)
    om.clock.advance(10_000_000)
    for i in range(200):  # the account's past: a person's trades, all before the bot started
        cid = f"web_{i}"
        await fake.create_order("BTC/USDT", "market", "buy", "0.001", None, {"newClientOrderId": cid})
        fake.fill(cid, "50000", "0.001", 1_000 + i * 1_000)
    fake.calls.clear()
    report = await Reconciler(om, broker, om.clock).reconcile_once()
    assert report.fills_checked == 0 and om.position.amount == 0 and sink.fills() == []
    assert fake.calls.get("fetch_order", 0) == 0  # no lookups of somebody else's orders
    base = [r for r in sink.records if isinstance(r, ReconcileDifference) and r.kind == "baseline"]
    assert len(base) == 1 and "BTC 0.200" in base[0].detail


async def test_a_busy_account_is_attributed_with_one_order_listing_not_a_lookup_per_trade() -> None:
    fake = FakeExchange()
    broker, om, sink = _make(fake)
    for i in range(50):  # a person trades in the seconds before the bot starts (inside the lookback)
        cid = f"web_{i}"
        await fake.create_order("BTC/USDT", "market", "buy", "0.001", None, {"newClientOrderId": cid})
        fake.fill(cid, "50000", "0.001", 900 - i)
    fake.calls.clear()
    report = await Reconciler(om, broker, om.clock).reconcile_once()
    assert report.fills_checked == 50 and report.kinds().count("foreign_fill") == 50
    assert om.position.amount == 0 and sink.fills() == []
    assert fake.calls.get("fetch_order", 0) == 0 and fake.calls["fetch_orders"] == 1


async def test_429_pauses_all_requests_and_418_halts() -> None:
    fake = FakeExchange()
    broker, om, _ = _make(fake)
    fake.script["fetch_open_orders"] = ["429"]
    orders = await broker.fetch_open_orders("BTC/USDT")  # retried after the pause
    assert orders == [] and fake.calls["fetch_open_orders"] == 2
    fake.script["fetch_open_orders"] = ["418"]
    with pytest.raises(ExchangeHalted, match="418"):
        await broker.fetch_open_orders("BTC/USDT")
    with pytest.raises(ExchangeHalted):
        await om.submit(REQ)
    assert fake.calls.get("create_order", 0) == 0


async def test_startup_reconcile_retries_until_the_exchange_answers() -> None:
    fake = FakeExchange()
    broker, om, _ = _make(fake, max_retries=0)
    fake.script["fetch_open_orders"] = ["503", "503"]
    failures: list[int] = []
    rec = Reconciler(om, broker, om.clock)
    report = await rec.startup(backoff_base=0.0, on_failure=lambda n, e: failures.append(n))
    assert failures == [1, 2] and report.clean


class FillsAtOnce(FakeExchange):
    """A marketable order: the create answer already says FILLED; the trade comes later
    (over the user stream or the poller), as on Binance."""

    async def create_order(
        self, symbol: str, type: str, side: str, amount: str, price: str | None, params: dict[str, Any]
    ) -> dict[str, Any]:
        await super().create_order(symbol, type, side, amount, price, params)
        self.orders[params["newClientOrderId"]]["info"].update(status="FILLED", executedQty=amount)
        self.orders[params["newClientOrderId"]]["status"] = "closed"
        return dict(self.orders[params["newClientOrderId"]])


async def test_filled_by_the_create_answer_counts_as_exposure_until_its_trade_is_booked() -> None:
    """Found by a drill: the create answer said FILLED (the order left the open set) but its
    trade was not booked yet, so the next decision saw position 0 and sold the same 0.05 again."""
    fake = FillsAtOnce()
    _, om, _ = _make(fake)
    sell = OrderRequest("BTC/USDT", Side.SELL, D("0.05"), D("60000"))
    order = await om.submit(sell)
    assert order.status is S.FILLED and om.open_orders == []
    assert om.position.amount == 0 and om.unbooked() == D("-0.05")
    fake.fill(order.client_id, "60000", "0.05", 2_000)
    fake.trades[-1]["side"] = "sell"
    trade = fake.trades[-1]
    await om.on_fill_update(Fill(trade["id"], order.client_id, "BTC/USDT", Side.SELL, D("60000"), D("0.05"),
                                 D("0"), "USDT", Liquidity.TAKER, 2_000, exchange_order_id=order.exchange_id))
    assert om.position.amount == D("-0.05") and om.unbooked() == 0
