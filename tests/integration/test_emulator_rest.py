"""Real ccxt (pro binance, unmodified) against the emulator's REST API: every call, the
matching (walks, partial fills, queue position), balances, and each error path with the
exception class ccxt raises for it."""

from __future__ import annotations

import time
from decimal import Decimal as D
from typing import Any

import aiohttp
import ccxt.pro as ccxtpro
import pytest

from bot.emulator import Emulator, make_ccxt_client
from bot.model import BookSnapshot, Side, Trade

from fixtures_emulator import EMU_KEY, EMU_SECRET

PAUSED = [{"speed": 0}]
pytest_plugins = ["fixtures_emulator"]  # until tests/conftest.py registers it
SYM = "BTC/USDT"


def set_book(emu: Emulator, bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> None:
    emu.inject(SYM, BookSnapshot(ts=0, bids=bids, asks=asks))


BOOK_BIDS = [(59999.99, 0.1), (59999.98, 0.2), (59999.97, 0.3)]
BOOK_ASKS = [(60000.01, 0.002), (60000.02, 0.003), (60000.05, 0.5)]


def bal(emu: Emulator, asset: str) -> tuple[D, D]:
    b = emu.balances()[asset]
    return b["free"], b["locked"]


@pytest.mark.parametrize("emulator", PAUSED, indirect=True)
async def test_load_markets_has_real_filters(emulator: Emulator, ccxt_client: Any) -> None:
    markets = await ccxt_client.load_markets()
    assert {"BTC/USDT", "ETH/USDT"} <= set(markets)
    btc, eth = markets["BTC/USDT"], markets["ETH/USDT"]
    assert (btc["precision"]["price"], btc["precision"]["amount"]) == (0.01, 0.00001)
    assert (eth["precision"]["price"], eth["precision"]["amount"]) == (0.01, 0.0001)
    assert btc["limits"]["cost"]["min"] == 5.0 and btc["limits"]["amount"]["min"] == 0.00001
    assert btc["spot"] and btc["active"] and btc["id"] == "BTCUSDT"


@pytest.mark.parametrize("emulator", PAUSED, indirect=True)
async def test_time_book_trades_balance(emulator: Emulator, ccxt_client: Any) -> None:
    now = time.time() * 1000
    assert abs(await ccxt_client.fetch_time() - now) < 2000
    set_book(emulator, BOOK_BIDS, BOOK_ASKS)
    ob = await ccxt_client.fetch_order_book(SYM)
    assert [tuple(x) for x in ob["bids"]] == BOOK_BIDS
    assert [tuple(x) for x in ob["asks"]] == BOOK_ASKS
    assert ob["nonce"] == emulator.engine(SYM).update_id
    emulator.inject(SYM, Trade(ts=0, price=60000.01, amount=0.001, side=Side.BUY))
    trades = await ccxt_client.fetch_trades(SYM)
    assert (trades[-1]["price"], trades[-1]["amount"], trades[-1]["side"]) == (60000.01, 0.001, "buy")
    b = await ccxt_client.fetch_balance()
    assert (b["USDT"]["free"], b["BTC"]["total"], b["ETH"]["used"]) == (100000.0, 1.0, 0.0)


@pytest.mark.parametrize("emulator", PAUSED, indirect=True)
async def test_market_buy_walks_levels_and_settles_with_fees(emulator: Emulator, ccxt_client: Any) -> None:
    set_book(emulator, BOOK_BIDS, BOOK_ASKS)
    o = await ccxt_client.create_order(SYM, "market", "buy", 0.004)
    assert o["status"] == "closed" and o["filled"] == 0.004
    fills = emulator.fills(SYM)
    assert [(f.price, f.qty, f.maker) for f in fills] == [
        (D("60000.01"), D("0.002"), False),
        (D("60000.02"), D("0.002"), False),
    ]
    cost = D("60000.01") * D("0.002") + D("60000.02") * D("0.002")
    assert bal(emulator, "USDT") == (D(100000) - cost, 0)
    assert bal(emulator, "BTC") == (D(1) + D("0.004") - D("0.000004"), 0)  # 0.1% fee in BTC
    # the taken liquidity is gone from the public book
    _, asks = emulator.book(SYM)
    assert asks[0] == (60000.02, 0.001)
    mine = await ccxt_client.fetch_my_trades(SYM)
    assert [
        (t["price"], t["amount"], t["fee"]["cost"], t["fee"]["currency"], t["takerOrMaker"]) for t in mine
    ] == [
        (60000.01, 0.002, 0.000002, "BTC", "taker"),
        (60000.02, 0.002, 0.000002, "BTC", "taker"),
    ]


@pytest.mark.parametrize("emulator", PAUSED, indirect=True)
async def test_limit_partial_fill_then_rests_and_locks(emulator: Emulator, ccxt_client: Any) -> None:
    set_book(emulator, BOOK_BIDS, BOOK_ASKS)
    o = await ccxt_client.create_order(SYM, "limit", "buy", 0.01, 60000.02, {"newClientOrderId": "part-1"})
    assert o["clientOrderId"] == "part-1" and o["status"] == "open" and o["filled"] == 0.005
    assert emulator.orders(SYM)[0].status == "PARTIALLY_FILLED"
    bids, asks = emulator.book(SYM)
    assert bids[0] == (60000.02, 0.005) and asks[0] == (60000.05, 0.5)
    cost = D("60000.01") * D("0.002") + D("60000.02") * D("0.003")
    locked = D("60000.02") * D("0.005")
    assert bal(emulator, "USDT") == (D(100000) - cost - locked, locked)
    opened = await ccxt_client.fetch_open_orders(SYM)
    assert [(x["clientOrderId"], x["remaining"]) for x in opened] == [("part-1", 0.005)]
    c = await ccxt_client.cancel_order(o["id"], SYM)
    assert c["status"] == "canceled"
    assert bal(emulator, "USDT") == (D(100000) - cost, 0)
    got = await ccxt_client.fetch_order(o["id"], SYM)
    assert (got["status"], got["filled"], got["clientOrderId"]) == ("canceled", 0.005, "part-1")


@pytest.mark.parametrize("emulator", PAUSED, indirect=True)
async def test_resting_order_fills_after_queue_ahead_is_traded(emulator: Emulator, ccxt_client: Any) -> None:
    set_book(emulator, BOOK_BIDS, BOOK_ASKS)
    o = await ccxt_client.create_order(SYM, "limit", "buy", 0.05, 59999.99, {"newClientOrderId": "q-1"})
    assert emulator.book(SYM)[0][0] == (59999.99, 0.15)  # market 0.1 + ours 0.05
    emulator.inject(SYM, Trade(ts=0, price=59999.99, amount=0.08, side=Side.SELL))
    assert emulator.fills(SYM) == []  # 0.1 was ahead of us
    emulator.inject(SYM, Trade(ts=0, price=59999.99, amount=0.05, side=Side.SELL))
    by_cid = await ccxt_client.fetch_order(None, SYM, {"origClientOrderId": "q-1"})
    assert by_cid["id"] == o["id"] and by_cid["filled"] == 0.03 and by_cid["status"] == "open"
    emulator.inject(SYM, Trade(ts=0, price=59999.97, amount=0.01, side=Side.SELL))  # traded through
    done = await ccxt_client.fetch_order(o["id"], SYM)
    assert (done["status"], done["filled"]) == ("closed", 0.05)
    fills = emulator.fills(SYM)
    assert [(f.qty, f.maker, f.commission) for f in fills] == [
        (D("0.03"), True, D("0.00003")),
        (D("0.02"), True, D("0.00002")),
    ]
    assert bal(emulator, "BTC") == (D("1.04995"), 0)
    assert bal(emulator, "USDT") == (D(100000) - D("59999.99") * D("0.05"), 0)


@pytest.mark.parametrize("emulator", PAUSED, indirect=True)
async def test_post_only(emulator: Emulator, ccxt_client: Any) -> None:
    set_book(emulator, BOOK_BIDS, BOOK_ASKS)
    with pytest.raises(ccxtpro.OrderImmediatelyFillable):  # an InvalidOrder
        await ccxt_client.create_order(SYM, "limit", "buy", 0.001, 60000.01, {"postOnly": True})
    o = await ccxt_client.create_order(SYM, "limit", "buy", 0.001, 60000.0, {"postOnly": True})
    assert o["postOnly"] is True and emulator.orders(SYM)[-1].type == "LIMIT_MAKER"
    assert emulator.book(SYM)[0][0] == (60000.0, 0.001)


@pytest.mark.parametrize("emulator", PAUSED, indirect=True)
async def test_cancel_all_and_not_found(emulator: Emulator, ccxt_client: Any) -> None:
    set_book(emulator, BOOK_BIDS, BOOK_ASKS)
    for i in range(2):
        await ccxt_client.create_order(SYM, "limit", "sell", 0.001, 60100 + i)
    assert bal(emulator, "BTC") == (D("0.998"), D("0.002"))
    cancelled = await ccxt_client.cancel_all_orders(SYM)
    assert sorted(x["status"] for x in cancelled) == ["canceled", "canceled"]
    assert bal(emulator, "BTC") == (D(1), 0)
    with pytest.raises(ccxtpro.OrderNotFound):  # -2011, as Binance answers with nothing open
        await ccxt_client.cancel_all_orders(SYM)
    with pytest.raises(ccxtpro.OrderNotFound):  # -2011
        await ccxt_client.cancel_order("999999", SYM)
    with pytest.raises(ccxtpro.OrderNotFound):  # -2013
        await ccxt_client.fetch_order("999999", SYM)


@pytest.mark.parametrize("emulator", PAUSED, indirect=True)
async def test_order_rejections(emulator: Emulator, ccxt_client: Any) -> None:
    set_book(emulator, BOOK_BIDS, BOOK_ASKS)
    with pytest.raises(ccxtpro.InsufficientFunds):
        await ccxt_client.create_order(SYM, "limit", "buy", 5, 59000)
    with pytest.raises(ccxtpro.InsufficientFunds):
        await ccxt_client.create_order(SYM, "market", "sell", 2)
    with pytest.raises(ccxtpro.InvalidOrder, match="LOT_SIZE"):  # ccxt rounds; force a bad quantity
        await ccxt_client.create_order(SYM, "limit", "buy", 0.001, 59000, {"quantity": "0.0010001"})
    with pytest.raises(ccxtpro.InvalidOrder, match="PRICE_FILTER"):
        await ccxt_client.create_order(SYM, "limit", "buy", 0.001, 59000, {"price": "59000.005"})
    # ccxt maps -1013 "Filter failure: NOTIONAL" to BadRequest, against Binance too
    with pytest.raises(ccxtpro.BadRequest, match="NOTIONAL"):
        await ccxt_client.create_order(SYM, "limit", "buy", 0.00001, 59000)
    with pytest.raises(ccxtpro.InvalidOrder, match="Duplicate"):
        await ccxt_client.create_order(SYM, "limit", "buy", 0.001, 59000, {"newClientOrderId": "d"})
        await ccxt_client.create_order(SYM, "limit", "buy", 0.001, 59000, {"newClientOrderId": "d"})
    assert [o.client_id for o in emulator.orders(SYM)] == ["d"]
    assert bal(emulator, "USDT") == (D(100000) - D(59), D(59))


async def test_authentication_errors(emulator: Emulator) -> None:
    for key, secret, code in (("wrong-key", EMU_SECRET, -2015), (EMU_KEY, "wrong-secret", -1022)):
        ex = make_ccxt_client(emulator.base_url, key, secret, timeout_ms=3000)
        try:
            with pytest.raises(ccxtpro.AuthenticationError, match=str(code)):
                await ex.fetch_balance()
        finally:
            await ex.close()
    async with aiohttp.ClientSession() as s, s.get(f"{emulator.base_url}/api/v3/account?timestamp=1") as r:
        assert r.status == 401 and (await r.json())["code"] == -2014


async def test_timestamp_outside_recv_window(make_emulator: Any) -> None:
    emu = await make_emulator(faults="clock_skew=30s")
    ex = make_ccxt_client(emu.base_url, EMU_KEY, EMU_SECRET, timeout_ms=3000)
    try:
        assert abs(await ex.fetch_time() - (time.time() * 1000 + 30000)) < 3000
        with pytest.raises(ccxtpro.InvalidNonce, match="-1021"):
            await ex.fetch_balance()
        ex.options["recvWindow"] = 45000
        assert (await ex.fetch_balance())["BTC"]["free"] == 1.0
    finally:
        await ex.close()


@pytest.mark.parametrize("emulator", PAUSED, indirect=True)
async def test_rest_faults_raise_what_ccxt_raises_against_binance(
    emulator: Emulator, ccxt_client: Any
) -> None:
    await ccxt_client.load_markets()
    cases: list[tuple[str, type[Exception]]] = [
        ("rest_429=1", ccxtpro.DDoSProtection),  # binance.handle_errors: 418 and 429 -> DDoSProtection
        ("rest_418=1", ccxtpro.DDoSProtection),
        ("rest_500=1", ccxtpro.ExchangeNotAvailable),
        ("rest_502=1", ccxtpro.ExchangeNotAvailable),
        ("rest_503=1", ccxtpro.ExchangeNotAvailable),
        ("rest_504=1", ccxtpro.RequestTimeout),
    ]
    for spec, exc in cases:
        emulator.set_faults(spec)
        with pytest.raises(exc):
            await ccxt_client.fetch_order_book(SYM)
        await ccxt_client.fetch_order_book(SYM)  # spent after one
    emulator.set_faults("rest_429=1,retry_after=3s")
    async with aiohttp.ClientSession() as s, s.get(f"{emulator.base_url}/api/v3/time") as r:
        assert r.status == 429 and r.headers["Retry-After"] == "3"
        assert (await r.json())["code"] == -1003
    emulator.set_faults("reject_orders=2")
    for _ in range(2):
        with pytest.raises(ccxtpro.InvalidOrder, match="-2010"):
            await ccxt_client.create_order(SYM, "limit", "buy", 0.001, 59000)
    await ccxt_client.create_order(SYM, "limit", "buy", 0.001, 59000)


@pytest.mark.parametrize("emulator", PAUSED, indirect=True)
async def test_timeouts_and_accept_then_timeout(emulator: Emulator) -> None:
    ex = make_ccxt_client(emulator.base_url, EMU_KEY, EMU_SECRET, timeout_ms=400)
    try:
        await ex.load_markets()
        emulator.set_faults("rest_timeout=1")
        with pytest.raises(ccxtpro.RequestTimeout):
            await ex.fetch_time()
        emulator.set_faults("accept_then_timeout=1")
        with pytest.raises(ccxtpro.RequestTimeout):
            await ex.create_order(SYM, "limit", "buy", 0.001, 59000, {"newClientOrderId": "amb-1"})
        # the order exists although the client never saw the answer
        o = await ex.fetch_order(None, SYM, {"origClientOrderId": "amb-1"})
        assert o["status"] == "open"
        emulator.set_faults("cancel_accept_then_timeout=1")
        with pytest.raises(ccxtpro.RequestTimeout):
            await ex.cancel_order(o["id"], SYM)
        assert (await ex.fetch_order(o["id"], SYM))["status"] == "canceled"
    finally:
        await ex.close()


async def test_admin_api(emulator: Emulator, ccxt_client: Any) -> None:
    await ccxt_client.create_order(SYM, "limit", "buy", 0.001, 50000, {"newClientOrderId": "adm-1"})
    await ccxt_client.create_order(SYM, "market", "buy", 0.001)
    base = f"{emulator.base_url}/_emulator"
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/orders") as r:
            orders = await r.json()
        async with s.get(f"{base}/fills") as r:
            fills = await r.json()
        async with s.get(f"{base}/balances") as r:
            balances = await r.json()
        async with s.post(f"{base}/faults", data="nonsense=1") as r:
            assert r.status == 400 and "unknown fault 'nonsense'" in (await r.json())["error"]
        async with s.post(f"{base}/faults", data="rest_5xx=0.5,ws_drop_every=5s") as r:
            assert (await r.json())["rates"] == {"rest_5xx": {"count": 0, "prob": 0.5}}
        async with s.post(f"{base}/faults", data="") as r:
            assert (await r.json())["spec"] == ""
    assert (orders[0]["clientOrderId"], orders[0]["status"]) == ("adm-1", "NEW")
    assert orders[1]["status"] == "FILLED" and fills[0]["id"] == orders[1]["fills"][0]
    got = D(balances["BTC"]["free"]) + D(balances["BTC"]["locked"])
    assert got == D(1) + sum(D(f["qty"]) - D(f["commission"]) for f in fills)
    assert balances["USDT"]["locked"] == "50.00000000"
