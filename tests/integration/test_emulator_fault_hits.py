"""The emulator's fault bookkeeping and the admin actions the fault drills rely on, with real
ccxt: hit counts per fault (kept across fault sets), Binance's real rejections, the
``partial_fill`` fault, ``POST /_emulator/fill``, the Retry-After window check and
``POST /_emulator/pressure``."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path
from typing import Any

import aiohttp
import ccxt.pro as ccxtpro
import pytest

from bot.emulator import Emulator, Faults
from bot.market.synthetic import write_synthetic_recording
from bot.model import BookSnapshot

PAUSED = [{"speed": 0}]
pytest_plugins = ["fixtures_emulator"]  # until tests/conftest.py registers it
SYM = "BTC/USDT"


def _book(emu: Emulator) -> None:
    emu.inject(SYM, BookSnapshot(ts=0, bids=[(59999.99, 0.5)], asks=[(60000.01, 0.5)]))


async def _admin(emu: Emulator, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.request(method, f"{emu.base_url}/_emulator/{path}", **kw) as r:
        return r.status, await r.json()


def test_hits_are_counted_per_fault_and_survive_a_new_spec() -> None:
    f = Faults.parse("rest_429=2,reject_notional=1")
    assert [f.rest_status(), f.rest_status(), f.rest_status()] == [429, 429, None]
    assert f.hit("reject_notional") and not f.hit("reject_notional")
    g = Faults.parse("").carry_hits(f)
    g.record("ws_gap", 3)
    assert g.describe()["hits"] == {"reject_notional": 1, "rest_429": 2, "ws_gap": 3}
    assert Faults.parse("partial_fill=1,ws_malformed_depth=0.5,reject_insufficient=2").rates.keys() == {
        "partial_fill", "ws_malformed_depth", "reject_insufficient"}


@pytest.mark.parametrize("emulator", PAUSED, indirect=True)
async def test_real_binance_rejections_map_to_ccxt_classes(emulator: Emulator, ccxt_client: Any) -> None:
    _book(emulator)
    emulator.set_faults("reject_insufficient=1,reject_notional=1")
    with pytest.raises(ccxtpro.InsufficientFunds, match="Account has insufficient balance for requested action"):
        await ccxt_client.create_order(SYM, "limit", "buy", 0.001, 59000)
    with pytest.raises(ccxtpro.BadRequest, match="Filter failure: NOTIONAL"):
        await ccxt_client.create_order(SYM, "limit", "buy", 0.001, 59000)
    order = await ccxt_client.create_order(SYM, "limit", "buy", 0.001, 59000)  # both spent
    assert order["status"] == "open"
    status, view = await _admin(emulator, "GET", "faults")
    assert status == 200 and view["hits"] == {"reject_insufficient": 1, "reject_notional": 1}


@pytest.mark.parametrize("emulator", PAUSED, indirect=True)
async def test_partial_fill_fault_and_admin_fill(emulator: Emulator, ccxt_client: Any) -> None:
    _book(emulator)
    emulator.set_faults("partial_fill=1")
    o = await ccxt_client.create_order(SYM, "limit", "buy", 0.00101, 59000, {"newClientOrderId": "pf-1"})
    assert (o["status"], o["filled"]) == ("open", 0.0005)
    assert emulator.engine(SYM).by_client["pf-1"].status == "PARTIALLY_FILLED"
    o2 = await ccxt_client.create_order(SYM, "limit", "buy", 0.001, 59000, {"newClientOrderId": "pf-2"})
    assert o2["filled"] == 0.0, "the fault was spent by the first order"
    status, fill = await _admin(emulator, "POST", "fill", json={"symbol": SYM, "clientOrderId": "pf-2",
                                                               "qty": "0.001"})
    assert status == 200 and (fill["qty"], fill["price"], fill["isMaker"]) == ("0.00100000", "59000.00000000", True)
    got = await ccxt_client.fetch_order(o2["id"], SYM)
    assert got["status"] == "closed" and got["filled"] == 0.001
    trades = await ccxt_client.fetch_my_trades(SYM)
    assert sorted(t["amount"] for t in trades) == [0.0005, 0.001]
    status, err = await _admin(emulator, "POST", "fill", json={"symbol": SYM, "clientOrderId": "pf-2"})
    assert status == 400 and "not a resting limit order" in err["error"]
    btc = emulator.balances()["BTC"]
    assert btc["free"] + btc["locked"] == D(1) + D("0.0015") - D("0.0000015")  # maker fee in BTC


@pytest.mark.parametrize("emulator", PAUSED, indirect=True)
async def test_requests_inside_retry_after_are_counted(emulator: Emulator) -> None:
    emulator.set_faults("rest_429=1,retry_after=3s")
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{emulator.base_url}/api/v3/time") as r:
            assert r.status == 429 and r.headers["Retry-After"] == "3"
        async with s.get(f"{emulator.base_url}/api/v3/time") as r:  # within the grace: on its way already
            assert r.status == 200
        emulator._quiet_from -= 1.0  # as if this request came a second later, still inside the 3 s
        async with s.get(f"{emulator.base_url}/api/v3/time") as r:
            assert r.status == 200
    _, view = await _admin(emulator, "GET", "faults")
    assert view["retry_after_ignored"] == 1 and view["hits"] == {"rest_429": 1}


async def test_pressure_starts_an_episode_now(make_emulator: Any, tmp_path: Path) -> None:
    emu = await make_emulator(symbols=("BTC/USDT",))
    status, reg = await _admin(emu, "POST", "pressure", json={"symbol": SYM, "direction": -1, "seconds": 5})
    assert status == 200 and reg["direction"] == -1 and reg["end_ms"] - reg["start_ms"] == 5000
    m = emu.sources[SYM].m  # type: ignore[attr-defined]
    assert m.direction_at(reg["start_ms"] + 100) == -1
    assert m.direction_at(reg["end_ms"] + 1) != -1 or any(r.start_ms > reg["end_ms"] for r in m.regimes)
    status, err = await _admin(emu, "POST", "pressure", json={"symbol": SYM, "direction": 2})
    assert status == 400
    rec = tmp_path / "rec.jsonl.gz"
    write_synthetic_recording(rec, seconds=2, seed=1, symbol="SOL/USDT", start_price=100.0)
    emu2 = await make_emulator(market=str(rec), symbols=())
    status, err = await _admin(emu2, "POST", "pressure", json={"symbol": "SOL/USDT", "direction": 1})
    assert status == 400 and "synthetic" in err["error"]
