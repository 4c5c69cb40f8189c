"""v_daily_pnl equals an independent average-cost computation, to the exact decimal."""

from __future__ import annotations

import sys
from collections import defaultdict
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

from bot.model import Fill, Liquidity, Side
from bot.store.queries import to_decimal
from bot.store.writer import StoreWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (no package): the store helpers
from fixtures_store import ACCOUNT, DAY_MS, MODE, SYMBOL, T0, VENUE, fill, fresh_store, rows

Q = Decimal("1e-8")

# (day, side, price, amount, fee in USDT): adds, partial closes, flips both ways, a
# non-terminating average (100.66666667), and a day that ends flat.
SEQ = [
    (0, Side.BUY, "100", "1", "0.1"),
    (0, Side.BUY, "101", "2", "0.202"),
    (0, Side.SELL, "102.5", "0.7", "0.07175"),
    (0, Side.SELL, "99.9", "3.3", "0.32967"),  # closes 2.3, flips to -1 @ 99.9
    (1, Side.SELL, "98", "0.5", "0.049"),
    (1, Side.BUY, "97.12345678", "2", "0.19424691"),  # closes 1.5 short, flips to +0.5
    (1, Side.SELL, "97.5", "0.5", "0.04875"),  # flat
    (2, Side.BUY, "50000.01", "0.00123", "0.06150001"),
    (2, Side.SELL, "50100.99", "0.00023", "0.01152323"),
]


def expected() -> dict[int, dict[str, Decimal]]:
    """Average cost written out independently of bot.store.pnl."""
    pos, avg = Decimal(0), Decimal(0)
    out: dict[int, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for day, side, price_s, amount_s, fee_s in SEQ:
        price, amount, fee = Decimal(price_s), Decimal(amount_s), Decimal(fee_s)
        qty = amount if side is Side.BUY else -amount
        realised = Decimal(0)
        if pos == 0 or (pos > 0) == (qty > 0):
            avg = ((avg * abs(pos) + price * amount) / abs(pos + qty)).quantize(Q, ROUND_HALF_EVEN)
            pos += qty
        else:
            closed = min(abs(qty), abs(pos))
            realised = ((price - avg) * closed * (1 if pos > 0 else -1)).quantize(Q, ROUND_HALF_EVEN)
            left = abs(qty) - closed
            pos += qty
            if pos == 0:
                avg = Decimal(0)
            elif left > 0:
                avg = price
        d = out[day]
        d["realized_pnl"] += realised
        d["fees"] += fee
        d["volume"] += amount
        d["notional"] += (price * amount).quantize(Q, ROUND_HALF_EVEN)
        d["trade_count"] += 1
        d["end_position"] = pos
    for d in out.values():
        d["net_pnl"] = d["realized_pnl"] - d["fees"]
    return out


def seeded_fills() -> list[Fill]:
    return [
        fill(f"t{i}", f"c{i}", side, price, amount, fee=fee, liq=Liquidity.MAKER if i % 2 else Liquidity.TAKER,
             ts=T0 + day * DAY_MS + i * 1000)
        for i, (day, side, price, amount, fee) in enumerate(SEQ)
    ]


async def test_daily_pnl_view_equals_independent_average_cost(db_url: str) -> None:
    engine, run_id = await fresh_store(db_url)
    w = StoreWriter(engine, run_id=run_id, account=ACCOUNT, symbol=SYMBOL, mode=MODE, venue=VENUE)
    await w.start()
    fills = seeded_fills()
    for f in fills[:4]:
        await w.durable(f)  # batch by batch ...
    await w.close()
    w = StoreWriter(engine, run_id=run_id, account=ACCOUNT, symbol=SYMBOL, mode=MODE, venue=VENUE)  # ... and across a restart
    await w.start()
    for f in fills[4:]:
        w.put(f)
    await w.close()

    got = await rows(engine, "SELECT * FROM v_daily_pnl ORDER BY day")
    exp = expected()
    assert [str(r["day"]) for r in got] == ["2024-08-08", "2024-08-09", "2024-08-10"]
    # the sequence really exercises losses, gains and flips
    # day 0: +1.28333333 (0.7 at 102.5 over 100.66666667), -1.76333334 (2.3 at 99.9), then short 1
    assert (exp[0]["realized_pnl"], exp[0]["end_position"]) == (Decimal("-0.48000001"), -1)
    for i, r in enumerate(got):
        for col in ("realized_pnl", "fees", "net_pnl", "volume", "notional", "end_position"):
            assert to_decimal(r[col]) == exp[i][col], (i, col, r[col], exp[i][col])
        assert r["trade_count"] == exp[i]["trade_count"]
    await engine.dispose()
