"""Markouts of seeded fills against a known book path: exact values in ``markouts``/``v_markouts``
on SQLite and PostgreSQL, idempotent writes, and the markouts section of ``bot report``."""

from __future__ import annotations

import io
from decimal import Decimal

from rich.console import Console
from sqlalchemy import select

from bot.analytics.markouts import MarkoutTracker
from bot.model import Liquidity, Markout, Side
from bot.store import tables as t
from bot.store.report import collect, render
from bot.store.types import dt_to_ms
from bot.store.writer import StoreWriter

from fixtures_store import MODE, T0, VENUE, fill, fresh_store, rows, scalar

D = Decimal

# the fills: (fill, signal strength)
F1 = fill("t1", "c1", Side.BUY, "100.00", "0.5", fee="0.05", liq=Liquidity.TAKER, ts=T0)
F2 = fill("t2", "c2", Side.SELL, "100.02", "0.25", fee="0.005", liq=Liquidity.MAKER, ts=T0 + 500)
F3 = fill("t3", "c3", Side.BUY, "100.00", "1", fee="0.1", liq=Liquidity.TAKER, ts=T0 + 30_000)
# the book path: (ms after T0, mid, microprice); NaN = book not usable
PATH = [
    (0, 100.00, 100.001),
    (900, 100.02, 100.021),
    (1000, 100.05, 100.052),  # F1 +1 s is due exactly now: this mid counts
    (1600, 100.04, 100.035),  # F2 +1 s (due 1500)
    (10_000, 100.10, 100.104),  # F1 +10 s
    (10_400, float("nan"), None),  # skipped
    (10_600, 99.98, 99.975),  # F2 +10 s (due 10 500)
    (61_000, 100.20, 100.2),  # F1 +60 s, F2 +60 s, F3 +1 s and +10 s
]  # F3 +60 s (due 90 000) never comes: flushed incomplete against 100.20


def run_tracker() -> list[Markout]:
    tr = MarkoutTracker()
    out: list[Markout] = []
    fills = [(F1, 2.5), (F2, -3.5), (F3, None)]
    for dt, mid, micro in PATH:
        while fills and fills[0][0].ts <= T0 + dt:
            tr.add_fill(*fills.pop(0))
        out += tr.on_mid(T0 + dt, mid, micro)
    out += tr.flush_pending()
    return out


def bps(move: str, price: str) -> float:
    return float(D(move) * 10000 / D(price))


# (trade, horizon_ms) -> (mark ts after T0, mid, microprice, pnl, bps, micro_bps, complete)
EXPECTED = {
    ("t1", 1000): (1000, "100.05", "100.052", "0.025", bps("0.05", "100"), bps("0.052", "100"), True),
    ("t1", 10_000): (10_000, "100.1", "100.104", "0.05", bps("0.10", "100"), bps("0.104", "100"), True),
    ("t1", 60_000): (61_000, "100.2", "100.2", "0.1", bps("0.20", "100"), bps("0.2", "100"), True),
    ("t2", 1000): (1600, "100.04", "100.035", "-0.005", bps("-0.02", "100.02"), bps("-0.015", "100.02"), True),
    ("t2", 10_000): (10_600, "99.98", "99.975", "0.01", bps("0.04", "100.02"), bps("0.045", "100.02"), True),
    ("t2", 60_000): (61_000, "100.2", "100.2", "-0.045", bps("-0.18", "100.02"), bps("-0.18", "100.02"), True),
    ("t3", 1000): (61_000, "100.2", "100.2", "0.2", bps("0.2", "100"), bps("0.2", "100"), True),
    ("t3", 10_000): (61_000, "100.2", "100.2", "0.2", bps("0.2", "100"), bps("0.2", "100"), True),
    ("t3", 60_000): (61_000, "100.2", "100.2", "0.2", bps("0.2", "100"), bps("0.2", "100"), False),
}


def test_tracker_matches_hand_computed_values() -> None:
    got = {(m.trade_id, m.horizon_ms): m for m in run_tracker()}
    assert set(got) == set(EXPECTED)
    for key, (dt, mid, micro, pnl, b, mb, complete) in EXPECTED.items():
        m = got[key]
        assert (m.ts, m.mid, m.microprice, m.pnl, m.bps, m.micro_bps, m.complete) == (
            T0 + dt, D(mid), D(micro), D(pnl), b, mb, complete), key
    assert got[("t1", 1000)].signal_strength == 2.5 and got[("t2", 1000)].signal_strength == -3.5
    assert got[("t2", 1000)].liquidity is Liquidity.MAKER


async def test_markouts_stored_exactly_and_view_nets_fees(db_url: str) -> None:
    engine, run_id = await fresh_store(db_url)
    writer = StoreWriter(engine, run_id=run_id, account="acct1", symbol="BTC/USDT", mode=MODE, venue=VENUE)
    await writer.start()
    for f in (F1, F2, F3):
        writer.put(f)
    markouts = run_tracker()
    for m in markouts:
        writer.put(m)
    for m in markouts[:3]:
        writer.put(m)  # a markout written twice is stored once
    await writer.close()
    try:
        assert await scalar(engine, "SELECT COUNT(*) FROM markouts") == 9
        async with engine.connect() as conn:  # through the Money type: exact decimals on both engines
            stored = [r._mapping for r in await conn.execute(select(t.markouts))]
        got = {(r["trade_id"], r["horizon_ms"]): r for r in stored}
        for key, (dt, mid, micro, pnl, b, mb, complete) in EXPECTED.items():
            r = got[key]
            assert (dt_to_ms(r["ts"]) - T0, r["mid"], r["microprice"], r["pnl"], r["bps"], r["micro_bps"],
                    r["complete"]) == (dt, D(mid), D(micro), D(pnl), b, mb, complete), key
            assert r["price"] in (D("100"), D("100.02")) and dt_to_ms(r["fill_ts"]) in (T0, T0 + 500, T0 + 30_000)
        view = {(r["trade_id"], r["horizon_ms"]): r for r in await rows(engine, "SELECT * FROM v_markouts")}
        v = view[("t1", 1000)]
        assert round(float(v["pnl"]), 8) == 0.025
        assert round(float(v["fee_quote"]), 8) == 0.05
        assert round(float(v["net_pnl"]), 8) == -0.025  # 0.025 markout minus the 0.05 taker fee
        assert float(v["fee_bps"]) == 10.0
        assert float(v["net_bps"]) == bps("0.05", "100") - 10.0
        assert v["strength_bucket"] == "2-3" and v["liquidity"] == "taker" and float(v["horizon_s"]) == 1.0
        assert float(v["mid"]) == 100.05 and float(v["microprice"]) == 100.052
        v2 = view[("t2", 10_000)]
        assert round(float(v2["net_pnl"]), 8) == 0.005  # 0.01 - 0.005
        assert v2["strength_bucket"] == "3-4" and v2["liquidity"] == "maker"
        assert view[("t3", 1000)]["strength_bucket"] == "none"
        # exact sums in SQL
        total = await scalar(engine, "SELECT SUM(pnl) FROM markouts WHERE complete")
        exact = sum(D(e[3]) for e in EXPECTED.values() if e[6])
        assert (D(total).scaleb(-8) if "sqlite" in db_url else D(total)) == exact
    finally:
        await engine.dispose()


async def test_report_shows_markout_averages(db_url: str) -> None:
    engine, run_id = await fresh_store(db_url)
    writer = StoreWriter(engine, run_id=run_id, account="acct1", symbol="BTC/USDT", mode=MODE, venue=VENUE)
    await writer.start()
    for f in (F1, F2, F3):
        writer.put(f)
    for m in run_tracker():
        writer.put(m)
    await writer.close()
    await engine.dispose()
    data = await collect(db_url)
    by_liq = {(r["horizon_ms"], r["liquidity"]): r for r in data.markouts_by_liquidity}
    assert set(by_liq) == {(1000, "maker"), (1000, "taker"), (10_000, "maker"), (10_000, "taker"),
                           (60_000, "maker"), (60_000, "taker")}
    t1s = by_liq[(1000, "taker")]  # F1 (+5 bps, fee 10 bps) and F3 (+20 bps, fee 10 bps)
    assert t1s["n"] == 2
    assert float(t1s["avg_bps"]) == (bps("0.05", "100") + bps("0.2", "100")) / 2
    assert float(t1s["avg_net_bps"]) == (bps("0.05", "100") + bps("0.2", "100")) / 2 - 10.0
    assert round(float(t1s["net_pnl"]), 8) == round(0.025 + 0.2 - 0.05 - 0.1, 8)
    assert by_liq[(60_000, "taker")]["n"] == 1  # F3's 60 s markout is incomplete: left out
    assert data.markouts_incomplete == 1
    by_strength = {(r["horizon_ms"], r["strength_bucket"]) for r in data.markouts_by_strength}
    assert (1000, "2-3") in by_strength and (1000, "3-4") in by_strength and (1000, "none") in by_strength
    buf = io.StringIO()
    render(data, Console(file=buf, width=160))
    out = buf.getvalue()
    assert "Markouts by horizon and liquidity" in out and "Markouts by horizon and signal strength" in out
    assert "1 markouts left out" in out
