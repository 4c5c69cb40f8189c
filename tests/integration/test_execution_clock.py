"""Exchange clock skew beyond recvWindow: the broker measures the exchange's clock and signs with it.

Real ccxt (pro binance) against the emulator with ``clock_skew`` switched on at run time; the
first signed request after the switch fails with -1021, the broker resyncs, and the order is
placed exactly once (looked up by client id before it is sent again).
"""

from __future__ import annotations

from decimal import Decimal as D

from bot.clock import LiveClock
from bot.emulator import Emulator, make_ccxt_client
from bot.execution.ccxt_broker import CcxtBroker
from bot.model import Order, OrderStatus, OrderType, Side

KEY, SECRET = "emulator-key", "emulator-secret"


def _order(cid: str, price: D) -> Order:
    return Order(client_id=cid, symbol="BTC/USDT", side=Side.BUY, type=OrderType.LIMIT,
                 amount=D("0.001"), price=price, status=OrderStatus.NEW, created_ts=0, reason="test")


async def test_skew_beyond_recv_window_is_resynced_and_the_order_placed_once() -> None:
    emu = Emulator(market="synthetic", seed=7, speed=0, api_key=KEY, api_secret=SECRET)
    await emu.start(port=0)
    ex = make_ccxt_client(emu.base_url, KEY, SECRET, timeout_ms=3000)
    broker = CcxtBroker(ex, "BTC/USDT", LiveClock(), backoff_base=0.01, use_websocket=False)
    try:
        await broker.start()
        assert broker.time_offset_ms is not None and abs(broker.time_offset_ms) < 1000
        # The exchange's clock jumps 20 s ahead: our stamps fall outside ccxt's 10 s recvWindow.
        emu.set_faults("clock_skew=20s")
        bids, _ = emu.book("BTC/USDT")
        bid = D(str(bids[0][0]))
        placed = await broker.create_order(_order("skew-1", (bid * D("0.95")).quantize(D("0.01"))))
        assert placed.status is OrderStatus.ACKED, placed.reason
        assert broker.stats["time_resyncs"] == 2  # startup + the -1021
        assert broker.time_offset_ms is not None and -21000 < broker.time_offset_ms < -19000
        on_exchange = [o for o in emu.orders("BTC/USDT") if o.client_id == "skew-1"]
        assert len(on_exchange) == 1
        # and the exchange's clock going back behind ours (our stamps 3 s in its future):
        emu.set_faults("clock_skew=-3s")
        cancelled = await broker.cancel_order(placed)
        assert cancelled.status is OrderStatus.CANCELLED, cancelled.reason
        assert broker.stats["time_resyncs"] == 3
        assert broker.time_offset_ms is not None and 2000 < broker.time_offset_ms < 4000
    finally:
        await broker.close()
        await emu.stop()
