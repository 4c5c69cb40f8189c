"""The review views, one definition rendered for SQLite and PostgreSQL.

Why generated: the two engines differ in three places only, and a single text keeps them
in step. (1) Money: PostgreSQL columns are NUMERIC and used as is; SQLite columns are integer
1e-8 units (see ``bot.store.types``), which the views sum as integers and divide by 1e8 once,
so every figure a view shows is exact to 8 places (a REAL nearest to the exact decimal;
``round(x, 8)`` prints it). (2) The UTC day of a timestamp. (3) Milliseconds between two
timestamps.

Revisions are immutable: a migration calls ``views_v1`` and a later change to a view adds a
``views_v2`` for its own migration instead of editing this one. ``views_v2`` (revision 0004)
adds ``mode`` and ``venue`` to every view, so a reviewer tells paper from testnet from live in
plain SQL, and takes over ``v_markouts`` (revision 0002 kept its text in the migration).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

VIEW_NAMES = ("v_trades", "v_daily_pnl", "v_order_latency", "v_risk_summary")
VIEW_NAMES_V2 = (*VIEW_NAMES, "v_markouts")  # the views of revision 0004, in dependency order


@dataclass(frozen=True)
class _Dialect:
    money: Callable[[str], str]
    day: Callable[[str], str]
    ms_between: Callable[[str, str], str]
    float_type: str


_SQLITE = _Dialect(
    money=lambda x: f"(({x}) / 100000000.0)",
    day=lambda x: f"date({x})",
    ms_between=lambda a, b: f"CAST(ROUND((julianday({b}) - julianday({a})) * 86400000.0) AS INTEGER)",
    float_type="REAL",
)
_POSTGRES = _Dialect(
    money=lambda x: f"({x})",
    day=lambda x: f"(({x}) AT TIME ZONE 'UTC')::date",
    ms_between=lambda a, b: f"CAST(ROUND(EXTRACT(EPOCH FROM ({b}) - ({a})) * 1000) AS BIGINT)",
    float_type="DOUBLE PRECISION",
)


def _dialect(name: str) -> _Dialect:
    return _SQLITE if name == "sqlite" else _POSTGRES


def views_v1(dialect_name: str) -> list[str]:
    """CREATE VIEW statements of revision 0001, in dependency order."""
    d = _dialect(dialect_name)
    m = d.money
    fl = d.float_type
    v_trades = f"""
CREATE VIEW v_trades AS
SELECT
    f.id AS fill_id, f.run_id, f.account, f.exchange, f.symbol, f.ts, {d.day("f.ts")} AS day,
    f.trade_id, f.client_id, f.exchange_order_id, f.side,
    {m("f.price")} AS price, {m("f.amount")} AS amount, {m("f.notional")} AS notional,
    {m("f.fee")} AS fee, f.fee_currency, {m("f.fee_quote")} AS fee_quote, f.liquidity,
    o.reason AS order_reason, o.type AS order_type, {m("o.price")} AS order_price,
    o.signal_strength, {m("o.mid_price")} AS mid_at_signal,
    CASE WHEN o.mid_price IS NOT NULL AND o.mid_price <> 0 THEN
        CAST((CASE WHEN f.side = 'buy' THEN 1 ELSE -1 END) * (f.price - o.mid_price) AS {fl})
        * 10000.0 / CAST(o.mid_price AS {fl})
    END AS slippage_bps,
    {m("f.position_after")} AS position_after, {m("f.avg_price_after")} AS avg_price_after,
    {m("f.realized_pnl")} AS realized_pnl,
    {m("f.realized_pnl - COALESCE(f.fee_quote, 0)")} AS net_pnl
FROM fills f
JOIN orders o ON o.client_id = f.client_id
"""
    v_daily_pnl = f"""
CREATE VIEW v_daily_pnl AS
WITH d AS (
    SELECT f.account, f.symbol, f.side, f.amount, f.notional, f.realized_pnl, f.fee_quote,
           f.position_after, {d.day("f.ts")} AS day,
           ROW_NUMBER() OVER (PARTITION BY f.account, f.symbol, {d.day("f.ts")} ORDER BY f.id DESC) AS rn_last
    FROM fills f
)
SELECT
    day, account, symbol,
    COUNT(*) AS trade_count,
    SUM(CASE WHEN side = 'buy' THEN 1 ELSE 0 END) AS buys,
    SUM(CASE WHEN side = 'sell' THEN 1 ELSE 0 END) AS sells,
    {m("SUM(amount)")} AS volume,
    {m("SUM(notional)")} AS notional,
    {m("SUM(realized_pnl)")} AS realized_pnl,
    {m("SUM(COALESCE(fee_quote, 0))")} AS fees,
    {m("SUM(realized_pnl) - SUM(COALESCE(fee_quote, 0))")} AS net_pnl,
    {m("MAX(CASE WHEN rn_last = 1 THEN position_after END)")} AS end_position,
    SUM(CASE WHEN fee_quote IS NULL THEN 1 ELSE 0 END) AS fills_fee_other_currency
FROM d
GROUP BY day, account, symbol
"""
    v_order_latency = f"""
CREATE VIEW v_order_latency AS
SELECT
    o.client_id, o.run_id, o.account, o.symbol, o.side, o.type, o.status, o.reason,
    o.created_at, e.submitted_at, e.acked_at, ff.first_fill_at,
    {d.ms_between("e.submitted_at", "e.acked_at")} AS submit_to_ack_ms,
    {d.ms_between("e.acked_at", "ff.first_fill_at")} AS ack_to_fill_ms,
    {d.ms_between("e.submitted_at", "ff.first_fill_at")} AS submit_to_fill_ms
FROM orders o
LEFT JOIN (
    SELECT client_id,
           MIN(CASE WHEN status = 'submitted' THEN ts END) AS submitted_at,
           MIN(CASE WHEN status IN ('acked', 'partially_filled', 'filled', 'rejected') THEN ts END) AS acked_at
    FROM order_events
    GROUP BY client_id
) e ON e.client_id = o.client_id
LEFT JOIN (
    SELECT client_id, MIN(ts) AS first_fill_at FROM fills GROUP BY client_id
) ff ON ff.client_id = o.client_id
"""
    v_risk_summary = f"""
CREATE VIEW v_risk_summary AS
SELECT
    {d.day("ts")} AS day, account, symbol, action, kind,
    COUNT(*) AS events,
    COUNT(DISTINCT client_id) AS orders,
    MIN(ts) AS first_at,
    MAX(ts) AS last_at
FROM risk_events
GROUP BY {d.day("ts")}, account, symbol, action, kind
"""
    return [v_trades, v_daily_pnl, v_order_latency, v_risk_summary]


def drop_views_v1() -> list[str]:
    return [f"DROP VIEW IF EXISTS {name}" for name in reversed(VIEW_NAMES)]


def views_v2(dialect_name: str) -> list[str]:
    """CREATE VIEW statements of revision 0004 (``VIEW_NAMES_V2``, in that order).

    As ``views_v1`` plus ``v_markouts``, every view with the ``mode`` and ``venue`` of its rows;
    ``v_daily_pnl`` and ``v_risk_summary`` group by them, and ``v_markouts`` joins its fill on
    (venue, symbol, trade id), the fill's unique key.
    """
    d = _dialect(dialect_name)
    m = d.money
    fl = d.float_type
    v_trades = f"""
CREATE VIEW v_trades AS
SELECT
    f.id AS fill_id, f.run_id, f.account, f.mode, f.venue, f.exchange, f.symbol, f.ts, {d.day("f.ts")} AS day,
    f.trade_id, f.client_id, f.exchange_order_id, f.side,
    {m("f.price")} AS price, {m("f.amount")} AS amount, {m("f.notional")} AS notional,
    {m("f.fee")} AS fee, f.fee_currency, {m("f.fee_quote")} AS fee_quote, f.liquidity,
    o.reason AS order_reason, o.type AS order_type, {m("o.price")} AS order_price,
    o.signal_strength, {m("o.mid_price")} AS mid_at_signal,
    CASE WHEN o.mid_price IS NOT NULL AND o.mid_price <> 0 THEN
        CAST((CASE WHEN f.side = 'buy' THEN 1 ELSE -1 END) * (f.price - o.mid_price) AS {fl})
        * 10000.0 / CAST(o.mid_price AS {fl})
    END AS slippage_bps,
    {m("f.position_after")} AS position_after, {m("f.avg_price_after")} AS avg_price_after,
    {m("f.realized_pnl")} AS realized_pnl,
    {m("f.realized_pnl - COALESCE(f.fee_quote, 0)")} AS net_pnl
FROM fills f
JOIN orders o ON o.client_id = f.client_id
"""
    v_daily_pnl = f"""
CREATE VIEW v_daily_pnl AS
WITH d AS (
    SELECT f.account, f.mode, f.venue, f.symbol, f.side, f.amount, f.notional, f.realized_pnl, f.fee_quote,
           f.position_after, {d.day("f.ts")} AS day,
           ROW_NUMBER() OVER (PARTITION BY f.account, f.mode, f.venue, f.symbol, {d.day("f.ts")}
                              ORDER BY f.id DESC) AS rn_last
    FROM fills f
)
SELECT
    day, account, mode, venue, symbol,
    COUNT(*) AS trade_count,
    SUM(CASE WHEN side = 'buy' THEN 1 ELSE 0 END) AS buys,
    SUM(CASE WHEN side = 'sell' THEN 1 ELSE 0 END) AS sells,
    {m("SUM(amount)")} AS volume,
    {m("SUM(notional)")} AS notional,
    {m("SUM(realized_pnl)")} AS realized_pnl,
    {m("SUM(COALESCE(fee_quote, 0))")} AS fees,
    {m("SUM(realized_pnl) - SUM(COALESCE(fee_quote, 0))")} AS net_pnl,
    {m("MAX(CASE WHEN rn_last = 1 THEN position_after END)")} AS end_position,
    SUM(CASE WHEN fee_quote IS NULL THEN 1 ELSE 0 END) AS fills_fee_other_currency
FROM d
GROUP BY day, account, mode, venue, symbol
"""
    v_order_latency = f"""
CREATE VIEW v_order_latency AS
SELECT
    o.client_id, o.run_id, o.account, o.mode, o.venue, o.symbol, o.side, o.type, o.status, o.reason,
    o.created_at, e.submitted_at, e.acked_at, ff.first_fill_at,
    {d.ms_between("e.submitted_at", "e.acked_at")} AS submit_to_ack_ms,
    {d.ms_between("e.acked_at", "ff.first_fill_at")} AS ack_to_fill_ms,
    {d.ms_between("e.submitted_at", "ff.first_fill_at")} AS submit_to_fill_ms
FROM orders o
LEFT JOIN (
    SELECT client_id,
           MIN(CASE WHEN status = 'submitted' THEN ts END) AS submitted_at,
           MIN(CASE WHEN status IN ('acked', 'partially_filled', 'filled', 'rejected') THEN ts END) AS acked_at
    FROM order_events
    GROUP BY client_id
) e ON e.client_id = o.client_id
LEFT JOIN (
    SELECT client_id, MIN(ts) AS first_fill_at FROM fills GROUP BY client_id
) ff ON ff.client_id = o.client_id
"""
    v_risk_summary = f"""
CREATE VIEW v_risk_summary AS
SELECT
    {d.day("ts")} AS day, account, mode, venue, symbol, action, kind,
    COUNT(*) AS events,
    COUNT(DISTINCT client_id) AS orders,
    MIN(ts) AS first_at,
    MAX(ts) AS last_at
FROM risk_events
GROUP BY {d.day("ts")}, account, mode, venue, symbol, action, kind
"""
    fee_bps = (f"CASE WHEN f.fee_quote IS NOT NULL AND m.price <> 0 AND m.amount <> 0 THEN "
               f"CAST({m('f.fee_quote')} AS {fl}) * 10000.0 / "
               f"(CAST({m('m.price')} AS {fl}) * CAST({m('m.amount')} AS {fl})) END")
    v_markouts = f"""
CREATE VIEW v_markouts AS
SELECT
    m.id AS markout_id, m.run_id, m.account, m.mode, m.venue, m.exchange, m.symbol, m.trade_id, m.client_id,
    m.side, m.liquidity, m.fill_ts, m.horizon_ms, CAST(m.horizon_ms AS {fl}) / 1000.0 AS horizon_s,
    m.ts AS mark_ts, {m("m.price")} AS price, {m("m.amount")} AS amount, {m("m.mid")} AS mid,
    {m("m.microprice")} AS microprice, {m("m.pnl")} AS pnl, m.bps, m.micro_bps, m.signal_strength,
    CASE
        WHEN m.signal_strength IS NULL THEN 'none'
        WHEN ABS(m.signal_strength) < 2 THEN '<2'
        WHEN ABS(m.signal_strength) < 3 THEN '2-3'
        WHEN ABS(m.signal_strength) < 4 THEN '3-4'
        ELSE '>=4'
    END AS strength_bucket,
    m.complete,
    {m("f.fee_quote")} AS fee_quote,
    {fee_bps} AS fee_bps,
    {m("m.pnl - COALESCE(f.fee_quote, 0)")} AS net_pnl,
    m.bps - COALESCE({fee_bps}, 0) AS net_bps
FROM markouts m
LEFT JOIN fills f ON f.venue = m.venue AND f.symbol = m.symbol AND f.trade_id = m.trade_id
"""
    return [v_trades, v_daily_pnl, v_order_latency, v_risk_summary, v_markouts]


def drop_views_v2() -> list[str]:
    """DROP VIEW statements for every view of revisions 0001-0004, dependents first."""
    return [f"DROP VIEW IF EXISTS {name}" for name in reversed(VIEW_NAMES_V2)]
