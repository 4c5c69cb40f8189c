"""Reads (and the few writes outside the trading path) other layers need from the store.

Why here and not in the writer: these run at start-up (recovery: fills, open orders, the
persisted halt), from ``bot resume`` and from the report, outside the single writer's
batching. Each returns the shared model types, not rows.

Every read about trading state takes the scope (account, ``mode``, ``venue``, symbol) and the
scope arguments are required keywords: a paper or replay run must never read a testnet or live
position or halt, nor the other way round (``venue`` is ``Settings.venue``; a replay's rows
have mode ``replay``).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.model import (
    Fill,
    Liquidity,
    Order,
    OrderStatus,
    OrderType,
    RiskAction,
    RiskEvent,
    Side,
)
from bot.store import tables as t
from bot.store.types import UNIT, dt_to_ms, ms_to_dt
from bot.store.writer import risk_event_row

_TERMINAL = [s.value for s in OrderStatus if s.is_terminal]


async def create_run(
    engine: AsyncEngine,
    *,
    mode: str,
    config_hash: str,
    version: str,
    account: str,
    symbol: str,
    exchange: str,
    venue: str,
    started_ms: int,
    pid: int | None = None,
    status: str = "running",
) -> int:
    """Insert the ``runs`` row of this process start; returns its id (every row carries it).

    ``started_ms`` is the run's clock: the wall clock live, the first event's time in a replay.
    """
    async with engine.begin() as conn:
        res = await conn.execute(
            insert(t.runs).values(
                started_at=ms_to_dt(started_ms), mode=mode, config_hash=config_hash, version=version,
                account=account, symbol=symbol, exchange=exchange, venue=venue,
                pid=os.getpid() if pid is None else pid, status=status,
            ).returning(t.runs.c.id)
        )
        return int(res.scalar_one())


RUN_STATUSES = ("running", "ended", "halted", "failed")


async def end_run(engine: AsyncEngine, run_id: int, ended_ms: int, status: str = "ended",
                  reason: str | None = None) -> None:
    """Close the run: ``ended_at`` (the run's clock: market time in a replay), ``status``
    (``ended``, ``halted`` or ``failed``, see revision 0005) and ``end_reason``."""
    if status not in RUN_STATUSES:
        raise ValueError(f"run status must be one of {RUN_STATUSES}, got {status!r}")
    async with engine.begin() as conn:
        await conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(
            ended_at=ms_to_dt(ended_ms), status=status, end_reason=reason))


async def latest_run_id(engine: AsyncEngine, account: str, symbol: str, *, mode: str, venue: str) -> int | None:
    """The newest run of (account, mode, venue, symbol), e.g. to attach a ``bot resume`` event to."""
    c = t.runs.c
    async with engine.connect() as conn:
        res = await conn.execute(
            select(c.id).where(c.account == account, c.mode == mode, c.venue == venue, c.symbol == symbol)
            .order_by(c.id.desc()).limit(1)
        )
        v = res.scalar()
        return None if v is None else int(v)


def _risk_event(row: Any) -> RiskEvent:
    details = orjson.loads(row.details) if row.details else {}
    return RiskEvent(
        ts=dt_to_ms(row.ts), action=RiskAction(row.action), kind=row.kind, reason=row.reason,
        client_id=row.client_id, details={str(k): str(v) for k, v in details.items()},
    )


async def latest_halt_or_resume(engine: AsyncEngine, account: str, symbol: str, *, mode: str,
                                venue: str) -> RiskEvent | None:
    """The newest ``halt`` or ``resume`` row of (account, mode, venue, symbol), or None."""
    c = t.risk_events.c
    async with engine.connect() as conn:
        row = (await conn.execute(
            select(t.risk_events)
            .where(c.account == account, c.mode == mode, c.venue == venue, c.symbol == symbol,
                   c.action.in_(("halt", "resume")))
            .order_by(c.ts.desc(), c.id.desc()).limit(1)
        )).first()
    return None if row is None else _risk_event(row)


async def latest_halt(engine: AsyncEngine, account: str, symbol: str, *, mode: str, venue: str) -> RiskEvent | None:
    """The persisted halt: the newest ``halt`` of (account, mode, venue, symbol) not followed by a ``resume``."""
    ev = await latest_halt_or_resume(engine, account, symbol, mode=mode, venue=venue)
    return ev if ev is not None and ev.action is RiskAction.HALT else None


async def insert_risk_event(engine: AsyncEngine, run_id: int | None, account: str, symbol: str,
                            ev: RiskEvent, *, mode: str, venue: str) -> None:
    """Write one risk event of (account, mode, venue, symbol) directly (``bot resume``).

    ``run_id`` None: the newest run of that scope, else a ``manual`` run created for it.
    """
    if run_id is None:
        run_id = await latest_run_id(engine, account, symbol, mode=mode, venue=venue)
    if run_id is None:
        run_id = await create_run(engine, mode="manual", config_hash="", version="", account=account,
                                  symbol=symbol, exchange="", venue=venue, started_ms=ev.ts, status="ended")
    async with engine.begin() as conn:
        await conn.execute(insert(t.risk_events),
                           [risk_event_row(run_id, account, symbol, ev, mode=mode, venue=venue)])


def _fill(row: Any) -> Fill:
    return Fill(
        trade_id=row.trade_id, client_id=row.client_id, symbol=row.symbol, side=Side(row.side),
        price=row.price, amount=row.amount, fee=row.fee, fee_currency=row.fee_currency,
        liquidity=Liquidity(row.liquidity), ts=dt_to_ms(row.ts), exchange_order_id=row.exchange_order_id,
    )


async def load_fills(engine: AsyncEngine, account: str, symbol: str, *, mode: str, venue: str) -> list[Fill]:
    """All fills of (account, mode, venue, symbol) over all runs, oldest first (exchange time, then arrival)."""
    c = t.fills.c
    async with engine.connect() as conn:
        res = await conn.execute(
            select(t.fills)
            .where(c.account == account, c.mode == mode, c.venue == venue, c.symbol == symbol)
            .order_by(c.ts, c.id)
        )
        return [_fill(r) for r in res]


def _order(row: Any) -> Order:
    return Order(
        client_id=row.client_id, symbol=row.symbol, side=Side(row.side),
        type=OrderType(row.type) if row.type else OrderType.LIMIT,
        amount=row.amount if row.amount is not None else row.filled,
        price=row.price, status=OrderStatus(row.status), filled=row.filled,
        exchange_id=row.exchange_id, post_only=bool(row.post_only), reason=row.reason,
        created_ts=dt_to_ms(row.created_at), signal_strength=row.signal_strength, mid_price=row.mid_price,
    )


async def load_orders(engine: AsyncEngine, account: str, symbol: str, open_only: bool = False, *, mode: str,
                      venue: str) -> list[Order]:
    """Orders of (account, mode, venue, symbol), oldest first; ``open_only``: not filled/cancelled/rejected/expired.

    A placeholder row created for an unknown order's fill has status ``unknown`` (open: the
    reconciler looks it up) and ``amount`` = what was filled; one created from an order event
    alone has no side and is left out.
    """
    c = t.orders.c
    q = select(t.orders).where(c.account == account, c.mode == mode, c.venue == venue, c.symbol == symbol,
                               c.side.is_not(None))
    if open_only:
        q = q.where(c.status.not_in(_TERMINAL))
    async with engine.connect() as conn:
        res = await conn.execute(q.order_by(c.created_at, c.id))
        return [_order(r) for r in res]


async def load_own_client_ids(engine: AsyncEngine, account: str, mode: str, venue: str, symbol: str) -> set[str]:
    """Every client id of the bot's own orders in (account, mode, venue, symbol), over all runs.

    Own: a row with a side (one made from an order event alone has none) that is not a
    ``reason = 'external'`` placeholder (the writer's row for a fill or event of an order it
    never placed). Ownership by table, beside ownership by client-id prefix (DESIGN.md).
    """
    c = t.orders.c
    q = select(c.client_id).where(c.account == account, c.mode == mode, c.venue == venue, c.symbol == symbol,
                                  c.side.is_not(None), c.reason != "external")
    async with engine.connect() as conn:
        return set((await conn.execute(q)).scalars())


async def unfinished_run_start(engine: AsyncEngine, account: str, mode: str, venue: str, symbol: str,
                               before_run_id: int) -> int | None:
    """Start (ms) of the newest earlier run of the scope that never closed its row (killed), or None.

    The start-up fill sweep reaches back to it: that run may have sent an order whose row was
    still in the writer's queue when it died, and the order may have filled since.
    """
    c = t.runs.c
    q = (select(c.started_at, c.ended_at)
         .where(c.account == account, c.mode == mode, c.venue == venue, c.symbol == symbol, c.id < before_run_id)
         .order_by(c.id.desc()).limit(1))
    async with engine.connect() as conn:
        row = (await conn.execute(q)).first()
    return None if row is None or row.ended_at is not None else dt_to_ms(row.started_at)


async def fill_count(engine: AsyncEngine, account: str | None = None) -> int:
    q = select(func.count()).select_from(t.fills)
    if account is not None:
        q = q.where(t.fills.c.account == account)
    async with engine.connect() as conn:
        return int((await conn.execute(q)).scalar_one())


def to_decimal(value: Any) -> Decimal | None:
    """A view's money value -> Decimal: NUMERIC arrives as Decimal (PostgreSQL), REAL as float (SQLite).

    A SQLite view divides an exact integer sum by 1e8 once, so the float is the double nearest
    to an 8-place decimal and its shortest repr, rounded to 8 places, is that decimal.
    """
    if value is None:
        return None
    if isinstance(value, Decimal):
        d = value
    else:
        d = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    return d.quantize(UNIT)


def day_start(date: str) -> datetime:
    """'YYYY-MM-DD' -> that UTC midnight (for ``--since``); ValueError names the expected form."""
    try:
        return datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"expected a UTC date YYYY-MM-DD (got {date!r})") from None


__all__ = [
    "create_run",
    "day_start",
    "end_run",
    "fill_count",
    "insert_risk_event",
    "latest_halt",
    "latest_run_id",
    "load_fills",
    "load_orders",
    "load_own_client_ids",
    "to_decimal",
    "unfinished_run_start",
]
