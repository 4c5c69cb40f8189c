"""Every query in docs/sql.md runs on both databases and answers correctly on a seeded day."""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from bot.model import Liquidity, OrderEvent, OrderStatus, RiskAction, RiskEvent, Side
from bot.store.queries import to_decimal
from bot.store.writer import StoreWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (no package): the store helpers
from fixtures_store import ACCOUNT, DAY_MS, MODE, SYMBOL, VENUE, fill, fresh_store, order, rows

DOC = Path(__file__).resolve().parents[2] / "docs" / "sql.md"


def doc_queries() -> dict[str, str]:
    blocks = re.findall(r"```sql\n-- name: (\w+)\n(.*?)```", DOC.read_text(), flags=re.S)
    return {name: sql.strip().rstrip(";") for name, sql in blocks}


def _today_ms() -> int:
    now = datetime.now(UTC)
    return int(datetime(now.year, now.month, now.day, tzinfo=UTC).timestamp() * 1000)


async def _seed(url: str) -> Any:
    engine, run_id = await fresh_store(url)
    today = _today_ms()
    yday = today - DAY_MS
    w = StoreWriter(engine, run_id=run_id, account=ACCOUNT, symbol=SYMBOL, mode=MODE, venue=VENUE)
    await w.start()
    specs = [  # client id, side, price, amount, mid, reason, strength, liquidity, fee, ts
        ("o1", Side.BUY, "100", "1", "99.95", "entry", 2.5, Liquidity.MAKER, "0.02", yday + 3_600_000),
        ("o2", Side.SELL, "99", "1", "99.10", "exit", -1.0, Liquidity.TAKER, "0.099", yday + 7_200_000),
        ("o3", Side.SELL, "101", "2", "101.02", "entry", -3.0, Liquidity.TAKER, "0.202", today + 1_000),
        ("o4", Side.BUY, "100", "1", "100", "exit", 1.2, Liquidity.MAKER, "0.02", today + 2_000),
    ]
    for cid, side, price, amount, mid, reason, strength, liq, fee, ts in specs:
        w.put(order(cid, side, amount, price, ts=ts, status=OrderStatus.FILLED, filled=amount, reason=reason,
                    strength=strength, mid=mid))
        await w.durable(fill(f"t-{cid}", cid, side, price, amount, fee=fee, liq=liq, ts=ts + 100))
    for cid, ack, at in (("o1", 12, yday + 3_600_000), ("o3", 20, today + 1_000)):
        w.put(OrderEvent(cid, OrderStatus.SUBMITTED, at))
        w.put(OrderEvent(cid, OrderStatus.ACKED, at + ack))
    w.put(order("o6", Side.BUY, "1", "99", ts=today + 3_000, status=OrderStatus.CANCELLED, reason="entry"))
    for i, (action, kind) in enumerate([(RiskAction.REJECT, "max_position"), (RiskAction.REJECT, "max_position"),
                                        (RiskAction.REJECT, "price_band"), (RiskAction.CLIP, "max_position"),
                                        (RiskAction.HALT, "max_daily_loss")]):
        w.put(RiskEvent(today + 4_000 + i, action, kind, f"{kind} breached #{i}", client_id=f"r{i}"))
    await w.close()
    return engine


@pytest.fixture
def queries() -> dict[str, str]:
    q = doc_queries()
    assert len(q) >= 10
    return q


def _d(rows_: list[dict[str, Any]], *cols: str) -> list[tuple[Any, ...]]:
    out = []
    for r in rows_:
        out.append(tuple(to_decimal(r[c]) if isinstance(r[c], float | D) else r[c] for c in cols))
    return out


async def test_the_documented_queries_answer_correctly(db_url: str, queries: dict[str, str]) -> None:
    engine = await _seed(db_url)
    got = {name: await rows(engine, sql) for name, sql in queries.items()}
    await engine.dispose()

    assert _d(got["todays_pnl"], "trade_count", "realized_pnl", "fees", "net_pnl", "end_position") == [
        (2, D(1), D("0.222"), D("0.778"), D(-1))]
    assert _d(got["pnl_by_day"], "trade_count", "volume", "realized_pnl", "fees", "net_pnl", "end_position") == [
        (2, D(2), D(-1), D("0.119"), D("-1.119"), D(0)),
        (2, D(3), D(1), D("0.222"), D("0.778"), D(-1)),
    ]
    assert _d(got["fees_by_liquidity"], "liquidity", "fills", "fees", "notional", "fee_bps") == [
        ("maker", 2, D("0.04"), D(200), D(2)),
        ("taker", 2, D("0.301"), D(301), D(10)),
    ]
    assert _d(got["worst_trades"], "side", "realized_pnl", "order_reason", "signal_strength") == [
        ("sell", D(-1), "exit", D(-1))]
    assert _d(got["risk_rejections"], "kind", "rejections", "example_reason") == [
        ("max_position", 2, "max_position breached #0"), ("price_band", 1, "price_band breached #2")]
    slip = {(r["side"], r["liquidity"]): to_decimal(r["avg_slippage_bps"]) for r in got["slippage_vs_mid"]}
    buy = (D(100) - D("99.95")) / D("99.95") * 10_000 / 2  # o1 paid 5.0025 bps over mid, o4 none
    sell = (-(D(99) - D("99.10")) / D("99.10") - (D(101) - D("101.02")) / D("101.02")) * 10_000 / 2
    assert slip == {("buy", "maker"): round(buy, 2), ("sell", "taker"): round(sell, 2)}
    assert [to_decimal(r["position_after"]) for r in got["position_over_time"]] == [1, 0, -2, -1]
    assert _d(got["order_latency"], "orders", "avg_ack_ms", "max_ack_ms", "avg_fill_ms") == [
        (2, D(16), 20, D(100))]  # fills land 100 ms after submit
    assert [(r["reason"], r["status"], r["orders"]) for r in got["order_outcomes"]] == [
        ("entry", "cancelled", 1), ("entry", "filled", 2), ("exit", "filled", 2)]
    assert [(r["account"], r["kind"]) for r in got["current_halt"]] == [(ACCOUNT, "max_daily_loss")]
    assert _d(got["signal_vs_outcome"], "outcome", "fills", "avg_abs_signal") == [
        ("loss", 1, D(1)), ("opening", 2, D("2.75")), ("win", 1, D("1.2"))]
