"""``bot report``: the trade review as rich tables (runs, trades, daily PnL, risk events, markouts).

Why it reads the views: the report shows exactly what a reviewer gets from ``v_trades``,
``v_daily_pnl`` and ``v_risk_summary`` in psql/sqlite3, so the two never disagree.
Money is converted with ``to_decimal`` (exact: see ``bot.store.views``).

Scope: with ``--run N`` every table is run N's own - its trades, its daily PnL and its risk
events (the same sums as the views, over that run's rows only: ``v_daily_pnl`` and
``v_risk_summary`` group by day across runs) - and every title says "run N"; without it the
tables cover all runs and say so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import func, make_url, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.store import tables as t
from bot.store.db import (
    current_revision,
    is_sqlite,
    known_revisions,
    make_engine,
    normalize_url,
    run_coro_sync,
)
from bot.store.queries import day_start, to_decimal
from bot.store.views import _dialect

TRADES_SHOWN = 50


class ReportError(Exception):
    """The database cannot be reviewed (not upgraded, unknown run, bad date); one line for the user."""


@dataclass
class ReportData:
    runs: list[dict[str, Any]] = field(default_factory=list)
    trades: list[dict[str, Any]] = field(default_factory=list)
    trade_count: int = 0
    daily: list[dict[str, Any]] = field(default_factory=list)
    risk: list[dict[str, Any]] = field(default_factory=list)
    # v_markouts averages (complete markouts only), by horizon and liquidity / strength bucket
    markouts_by_liquidity: list[dict[str, Any]] = field(default_factory=list)
    markouts_by_strength: list[dict[str, Any]] = field(default_factory=list)
    markouts_incomplete: int = 0
    scope: str = "all runs"  # what the tables cover: "run N" with --run, else every run


def _run_daily_sql(dialect: str, scoped: bool) -> str:
    """``v_daily_pnl``'s sums (exact, as the view: integer units on SQLite) over one run's fills."""
    d = _dialect(dialect)
    m = d.money
    keys = ["account", "mode", "venue", "symbol"] if scoped else ["account", "symbol"]
    day = d.day("f.ts")
    return f"""(
SELECT
    day, {", ".join(keys)},
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
FROM (
    SELECT {", ".join(f"f.{k}" for k in keys)}, f.side, f.amount, f.notional, f.realized_pnl, f.fee_quote,
           f.position_after, {day} AS day,
           ROW_NUMBER() OVER (PARTITION BY {", ".join(f"f.{k}" for k in keys)}, {day} ORDER BY f.id DESC) AS rn_last
    FROM fills f
    WHERE f.run_id = :run_id
) d
GROUP BY day, {", ".join(keys)}
) run_daily"""


def _run_risk_sql(dialect: str, scoped: bool) -> str:
    """``v_risk_summary`` over one run's risk events."""
    d = _dialect(dialect)
    keys = "account, mode, venue, symbol" if scoped else "account, symbol"
    return f"""(
SELECT
    {d.day("ts")} AS day, {keys}, action, kind,
    COUNT(*) AS events,
    COUNT(DISTINCT client_id) AS orders,
    MIN(ts) AS first_at,
    MAX(ts) AS last_at
FROM risk_events
WHERE run_id = :run_id
GROUP BY {d.day("ts")}, {keys}, action, kind
) run_risk"""


def _day_text(v: Any) -> str:
    return v.isoformat() if isinstance(v, date) else str(v)


def _ts_text(v: Any) -> str:
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return str(v)[:23] if v is not None else ""


def _money(v: Any) -> str:
    d = to_decimal(v)
    if d is None:
        return ""
    s = format(d.normalize(), "f")
    return s if s != "-0" else "0"


async def _rows(conn: AsyncConnection, sql: str, **params: Any) -> list[dict[str, Any]]:
    res = await conn.execute(text(sql), params)
    return [dict(r._mapping) for r in res]


async def collect(url: str, run_id: int | None = None, since: str | None = None) -> ReportData:
    """Read everything the report shows (also used by tests and ``bot demo``)."""
    since_dt = None
    if since is not None:
        try:
            since_dt = day_start(since)
        except ValueError as exc:
            raise ReportError(f"--since: {exc}") from None
    sqlite_path = make_url(normalize_url(url)).database if is_sqlite(url) else None
    if sqlite_path and sqlite_path != ":memory:" and not os.path.exists(sqlite_path):  # noqa: ASYNC240 - one stat
        raise ReportError(f"no database file at {sqlite_path}")
    revision = await current_revision(url)
    if revision is None:
        raise ReportError("the database has no schema yet; run `bot db upgrade --db URL` first")
    known, head = known_revisions()
    if revision not in known:  # written by a newer bot: its tables may mean something else
        raise ReportError(f"the database is at schema revision {revision!r}, which this bot does not know "
                          f"(newest known: {head}); use the bot version that wrote it")
    # revision 0004 keys rows by mode and venue; before it, a run's venue is its exchange id
    scoped = revision not in ("0001", "0002", "0003")
    has_status = scoped and revision != "0004"  # runs.status / end_reason: revision 0005
    engine = make_engine(url)
    data = ReportData()
    try:
        async with engine.connect() as conn:
            runs = t.runs.c
            fills = t.fills.c
            venue = runs.venue if scoped else runs.exchange
            cols: list[Any] = [runs.id, runs.started_at, runs.ended_at, runs.mode, runs.account, runs.symbol,
                               runs.exchange, venue, runs.version]
            if has_status:
                cols += [runs.status, runs.end_reason]
            q = (
                select(*cols[:7], venue.label("venue"), *cols[8:], func.count(fills.id).label("fills"))
                .select_from(t.runs.outerjoin(t.fills, fills.run_id == runs.id))
                .group_by(*cols)
                .order_by(runs.id)
            )
            if run_id is not None:
                q = q.where(runs.id == run_id)
            if since_dt is not None:
                q = q.where((runs.ended_at.is_(None)) | (runs.ended_at >= since_dt))
            data.runs = [dict(r._mapping) for r in await conn.execute(q)]
            if run_id is not None and not data.runs:
                raise ReportError(f"--run: no run with id {run_id}")
            if run_id is not None:
                data.scope = f"run {run_id}"

            where: list[str] = ["1 = 1"]
            params: dict[str, Any] = {}
            pair_where = ["1 = 1"]
            if run_id is not None:
                where.append("run_id = :run_id")
                params["run_id"] = run_id
                pair_where.append("account = :account AND symbol = :symbol")
                params["account"] = data.runs[0]["account"]
                params["symbol"] = data.runs[0]["symbol"]
                if scoped:  # the run's own book: not another mode's or venue's days of the pair
                    pair_where.append("mode = :mode AND venue = :venue")
                    params["mode"] = data.runs[0]["mode"]
                    params["venue"] = data.runs[0]["venue"]
            if since_dt is not None:
                where.append("ts >= :since")
                pair_where.append("day >= :since_day")
                params["since"] = since_dt
                params["since_day"] = since_dt.date() if engine.dialect.name != "sqlite" else since
            w, pw = " AND ".join(where), " AND ".join(pair_where)
            if since_dt is not None and engine.dialect.name == "sqlite":
                # SQLite compares the stored UTC text; bind the same text form
                params["since"] = since_dt.strftime("%Y-%m-%d %H:%M:%S.%f")
            data.trade_count = int((await conn.execute(text(f"SELECT COUNT(*) FROM v_trades WHERE {w}"),
                                                       params)).scalar_one())
            trades = await _rows(conn, f"SELECT * FROM v_trades WHERE {w} ORDER BY ts DESC, fill_id DESC "
                                       f"LIMIT {TRADES_SHOWN}", **params)
            data.trades = list(reversed(trades))
            key = "day, account, mode, venue, symbol" if scoped else "day, account, symbol"
            if run_id is None:
                daily_from, risk_from = "v_daily_pnl", "v_risk_summary"
            else:  # the run's own days and risk events, not the pair's over every run
                daily_from = _run_daily_sql(engine.dialect.name, scoped)
                risk_from = _run_risk_sql(engine.dialect.name, scoped)
                pw = "day >= :since_day" if since_dt is not None else "1 = 1"
            data.daily = await _rows(conn, f"SELECT * FROM {daily_from} WHERE {pw} ORDER BY {key}", **params)
            data.risk = await _rows(conn, f"SELECT * FROM {risk_from} WHERE {pw} ORDER BY {key}, action, kind",
                                    **params)
            if revision != "0001":  # v_markouts arrived in revision 0002
                await _collect_markouts(conn, data, w.replace("ts >=", "fill_ts >="), params)
    finally:
        await engine.dispose()
    return data


MARKOUT_AGG = (
    "COUNT(*) AS n, AVG(bps) AS avg_bps, AVG(COALESCE(fee_bps, 0)) AS avg_fee_bps, AVG(net_bps) AS avg_net_bps, "
    "SUM(pnl) AS pnl, SUM(net_pnl) AS net_pnl"
)


async def _collect_markouts(conn: AsyncConnection, data: ReportData, where: str, params: dict[str, Any]) -> None:
    """Average markouts by horizon x liquidity and horizon x signal-strength bucket, complete ones only."""
    data.markouts_by_liquidity = await _rows(
        conn, f"SELECT horizon_ms, liquidity, {MARKOUT_AGG} FROM v_markouts WHERE {where} AND complete "
              "GROUP BY horizon_ms, liquidity ORDER BY horizon_ms, liquidity", **params)
    data.markouts_by_strength = await _rows(
        conn, f"SELECT horizon_ms, strength_bucket, {MARKOUT_AGG} FROM v_markouts WHERE {where} AND complete "
              "GROUP BY horizon_ms, strength_bucket ORDER BY horizon_ms, strength_bucket", **params)
    data.markouts_incomplete = int((await conn.execute(
        text(f"SELECT COUNT(*) FROM v_markouts WHERE {where} AND NOT complete"), params)).scalar_one())


def _markout_table(title: str, key: str, label: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("horizon", label, "fills", "avg bps", "avg fee bps", "avg net bps", "pnl (quote)", "net (quote)"):
        table.add_column(col, justify="left" if col == label else "right")
    for r in rows:
        net = float(r["avg_net_bps"] or 0.0)
        style = "green" if net > 0 else "red" if net < 0 else None
        table.add_row(f"{int(r['horizon_ms']) / 1000:g}s", str(r[key]), str(r["n"]), f"{float(r['avg_bps']):.3f}",
                      f"{float(r['avg_fee_bps']):.3f}", f"{net:.3f}", f"{float(r['pnl']):.4f}",
                      f"{float(r['net_pnl']):.4f}", style=style)
    return table


def render(data: ReportData, console: Console) -> None:
    """Print the four tables."""
    scope = data.scope
    runs = Table(title="Runs", title_justify="left")
    for col in ("run", "started (UTC)", "ended (UTC)", "status", "mode", "venue", "account", "symbol", "version",
                "fills"):
        runs.add_column(col, justify="right" if col in ("run", "fills") else "left")
    for r in data.runs:
        status = r.get("status") or ""
        if r.get("end_reason"):
            status = f"{status}: {r['end_reason']}"
        runs.add_row(str(r["id"]), _ts_text(r["started_at"]), _ts_text(r["ended_at"]), status, r["mode"],
                     r["venue"], r["account"], r["symbol"], r["version"], str(r["fills"]))
    console.print(runs)

    shown = len(data.trades)
    title = (f"Trades ({shown} of {data.trade_count}, newest last; {scope})" if data.trade_count > shown
             else f"Trades ({scope})")
    trades = Table(title=title, title_justify="left")
    for col in ("time (UTC)", "run", "side", "price", "amount", "fee (quote)", "liq", "reason", "signal",
                "slip bps", "position", "realised"):
        trades.add_column(col, justify="left" if col in ("time (UTC)", "side", "liq", "reason") else "right")
    for r in data.trades:
        slip = r["slippage_bps"]
        sig = r["signal_strength"]
        trades.add_row(
            _ts_text(r["ts"]), str(r["run_id"]), r["side"], _money(r["price"]), _money(r["amount"]),
            _money(r["fee_quote"]), r["liquidity"], r["order_reason"] or "",
            "" if sig is None else f"{sig:.2f}", "" if slip is None else f"{float(slip):.2f}",
            _money(r["position_after"]), _money(r["realized_pnl"]),
        )
    console.print(trades)

    daily = Table(title=f"Daily PnL (UTC days, average cost; {scope})", title_justify="left")
    for col in ("day", "mode", "venue", "account", "symbol", "trades", "volume", "notional", "realised", "fees", "net",
                "end position"):
        daily.add_column(col, justify="left" if col in ("day", "mode", "venue", "account", "symbol") else "right")
    total = Decimal(0)
    for r in data.daily:
        net = to_decimal(r["net_pnl"]) or Decimal(0)
        total += net
        style = "green" if net > 0 else "red" if net < 0 else None
        daily.add_row(_day_text(r["day"]), r.get("mode", ""), r.get("venue", ""), r["account"], r["symbol"],
                      str(r["trade_count"]), _money(r["volume"]),
                      _money(r["notional"]), _money(r["realized_pnl"]), _money(r["fees"]), _money(r["net_pnl"]),
                      _money(r["end_position"]), style=style)
    if data.daily:
        daily.add_section()
        daily.add_row("total", "", "", "", "", str(sum(int(r["trade_count"]) for r in data.daily)), "", "", "",
                      "", _money(total), "")
    console.print(daily)

    risk = Table(title=f"Risk events ({scope})", title_justify="left")
    for col in ("day", "mode", "venue", "account", "symbol", "action", "kind", "events", "orders", "last (UTC)"):
        risk.add_column(col, justify="right" if col in ("events", "orders") else "left")
    for r in data.risk:
        style = "bold red" if r["action"] == "halt" else None
        risk.add_row(_day_text(r["day"]), r.get("mode", ""), r.get("venue", ""), r["account"], r["symbol"],
                     r["action"], r["kind"], str(r["events"]), str(r["orders"]), _ts_text(r["last_at"]), style=style)
    console.print(risk)

    if data.markouts_by_liquidity:
        console.print(_markout_table(
            f"Markouts by horizon and liquidity (mid after the fill, signed; net = minus fees; {scope})",
            "liquidity", "liquidity", data.markouts_by_liquidity))
        console.print(_markout_table(f"Markouts by horizon and signal strength |z| ({scope})", "strength_bucket",
                                     "strength", data.markouts_by_strength))
        if data.markouts_incomplete:
            console.print(f"[dim]{data.markouts_incomplete} markouts left out: the run ended before their "
                          "horizon[/dim]")
    if not data.trades and not data.risk:
        console.print("[dim]no trades or risk events recorded yet[/dim]")


def render_report(url: str, run_id: int | None = None, since: str | None = None,
                  console: Console | None = None) -> ReportData:
    """Collect and print the review; safe to call from sync code inside or outside an event loop."""
    data = run_coro_sync(collect(url, run_id=run_id, since=since))
    render(data, console or Console())
    return data
