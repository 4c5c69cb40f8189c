"""The single writer task: the only code that writes the trading records to the database.

Why one task: the trading path must never wait on disk, and SQLite allows one writer at a
time anyway. Producers call ``put`` (synchronous, never blocks: a deque append) and go on;
the writer takes what has accumulated, waits at most ``batch_ms`` (or until ``max_batch``
records or a ``durable`` request), and writes the batch in one transaction with
``executemany`` inserts. Every insert is idempotent (``ON CONFLICT DO NOTHING``, orders
``ON CONFLICT DO UPDATE``), so a batch retried after an ambiguous failure, or a fill
reported twice by the exchange, is stored once.

Scope: one writer writes for one (account, mode, venue) and puts them on every row. A fill
already stored is recognised by (venue, symbol, trade id), the unique key: the same trade id
at another venue (testnet and live number their trades independently) is another fill. The
running inventory (``position_after``) continues the newest fill of the same (account, mode,
venue, symbol), never another venue's or mode's.

Durability barrier: ``await writer.durable(fill)`` returns once the batch holding that fill
has committed (it puts the fill first when it was not put yet). The order manager awaits it
before it acts on a fill, so every fill the bot acted on survives a ``kill -9``.

Failures: when a batch fails the writer keeps it (and everything queued behind it) in
memory, reports ``on_health(False, "store_unavailable: ...")`` - the risk engine halts new
orders on it - and retries with exponential backoff (50 ms doubling to 5 s). Once a batch
commits again it reports ``on_health(True, "ok")``. If the records held in memory reach
``max_buffered``, ``put`` raises ``StoreOverflowError`` and the writer stops: losing records
silently is never an option. More than ``queue_size`` records waiting (the database keeps up
too slowly) is reported as unhealthy too (``store_backlog``), without dropping anything.

Backpressure (replay): a producer that may wait - a replay, whose clock is the recording's, not
the wall's - passes ``backlog_health=False`` and awaits ``flush()`` whenever ``backlog`` reaches
its high-water mark, so a backlog is the producer's pause, never a store "outage" that pauses or
halts trading. The live trading path never waits on disk and keeps the backlog report.
``run_inventory=True`` (replay too: every replay is its own simulation, starting flat) keeps the
running inventory of ``fills.position_after`` to this run's own fills.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import and_, case, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.logging import get_logger
from bot.model import (
    ZERO,
    Balance,
    Fill,
    ImbalanceSignal,
    Markout,
    Order,
    OrderEvent,
    OrderStatus,
    Position,
    ReconcileDifference,
    RiskEvent,
)
from bot.store import tables as t
from bot.store.db import make_engine
from bot.store.pnl import Inventory, apply_fill, fee_in_quote, split_symbol
from bot.store.types import ms_to_dt, quantize

log = get_logger("bot.store.writer")

Record = Order | OrderEvent | Fill | Position | Balance | ImbalanceSignal | RiskEvent | Markout | ReconcileDifference
RECORD_TYPES: tuple[type, ...] = (Order, OrderEvent, Fill, Position, Balance, ImbalanceSignal, RiskEvent, Markout,
                                  ReconcileDifference)
HealthCallback = Callable[[bool, str], None]

_IN_CHUNK = 500  # trade ids per "already stored?" query (below every engine's parameter limit)
_BACKOFF_START = 0.05
_BACKOFF_MAX = 5.0


class StoreOverflowError(RuntimeError):
    """More records held in memory than ``max_buffered`` while the database is unavailable."""


class StoreClosedError(RuntimeError):
    """``put`` after ``close``."""


@dataclass(slots=True)
class _Item:
    seq: int
    record: Record


class StoreWriter:
    """Owns all writes of one bot process; see the module docstring for the contract."""

    def __init__(
        self,
        engine_or_url: AsyncEngine | str,
        *,
        run_id: int,
        account: str,
        symbol: str,
        mode: str,
        venue: str,
        exchange: str = "binance",
        queue_size: int = 10_000,
        batch_ms: int = 50,
        max_buffered: int = 100_000,
        on_health: HealthCallback | None = None,
        max_batch: int = 5_000,
        backlog_health: bool = True,
        run_inventory: bool = False,
    ) -> None:
        if isinstance(engine_or_url, str):
            self._engine = make_engine(engine_or_url)
            self._owns_engine = True
        else:
            self._engine = engine_or_url
            self._owns_engine = False
        self._dialect = self._engine.dialect.name
        self.run_id = run_id
        self.account = account
        self.symbol = symbol
        self.mode = mode
        self.venue = venue
        self.exchange = exchange
        self.queue_size = queue_size
        self.batch_s = batch_ms / 1000
        self.max_buffered = max_buffered
        self.max_batch = max_batch
        self.on_health = on_health
        self.backlog_health = backlog_health  # False: the producer waits (flush) instead, see the module doc
        self.run_inventory = run_inventory

        self.healthy = True
        self.last_error: str | None = None
        self.written = 0  # records committed
        self.batches = 0

        self._queue: deque[_Item] = deque()
        self._inflight: list[_Item] = []  # the batch being written (or retried)
        self._seq = 0  # seq of the newest record put
        self._done = 0  # every record with seq <= _done is committed
        # (symbol, trade_id) -> seq: one writer writes one venue, so this is the (venue, symbol, trade_id) key
        self._pending_fills: dict[tuple[str, str], int] = {}
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._tiebreak = itertools.count()
        self._inventories: dict[str, Inventory] = {}
        self._has_data = asyncio.Event()
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._failed: BaseException | None = None
        self._backlogged = False

    @property
    def _scope(self) -> dict[str, str]:
        """The columns every row of this writer carries: whose and where (see ``bot.store.tables``)."""
        return {"account": self.account, "mode": self.mode, "venue": self.venue}

    # ------------------------------------------------------------------ producer side

    def put(self, record: object) -> None:
        """Hand a record to the writer. Never blocks; raises only on overflow or after close."""
        if self._failed is not None:
            raise self._failed
        if self._closing:
            raise StoreClosedError("store writer is closed")
        if not isinstance(record, RECORD_TYPES):
            raise TypeError(f"the store cannot write a {type(record).__name__}")
        held = len(self._queue) + len(self._inflight)
        if held >= self.max_buffered:
            exc = StoreOverflowError(
                f"store overflow: {held} records held in memory (max_buffered {self.max_buffered}); "
                f"database unavailable: {self.last_error}"
            )
            self._fail(exc)
            raise exc
        self._seq += 1
        self._queue.append(_Item(self._seq, record))  # type: ignore[arg-type]
        if isinstance(record, Fill):
            self._pending_fills[(record.symbol, record.trade_id)] = self._seq
        self._has_data.set()
        n = len(self._queue)
        if n >= self.max_batch:
            self._kick.set()
        if n > self.queue_size and self.backlog_health and not self._backlogged:
            self._backlogged = True
            self._set_health(False, f"store_backlog: {n} records waiting (queue_size {self.queue_size})")

    @property
    def backlog(self) -> int:
        """Records put and not committed yet (queued or in the batch being written)."""
        return self._seq - self._done

    async def durable(self, record: object) -> None:
        """Return once ``record`` is committed. A fill not put yet is put first.

        For other records this waits for everything put so far (put the record first).
        """
        if isinstance(record, Fill):
            seq = self._pending_fills.get((record.symbol, record.trade_id))
            if seq is None:
                self.put(record)
                seq = self._seq
        else:
            seq = self._seq
        await self._wait_for(seq)

    async def flush(self) -> None:
        """Return once everything put so far is committed."""
        await self._wait_for(self._seq)

    async def _wait_for(self, seq: int) -> None:
        if self._failed is not None:
            raise self._failed
        if seq <= self._done:
            return
        if self._task is None:
            raise RuntimeError("store writer not started (call start())")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (seq, next(self._tiebreak), fut))
        self._kick.set()
        await fut

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the writer task (or run ``run()`` in your own TaskGroup instead)."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="store-writer")

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def close(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - a deadline of its own, then a loud error
        """Write everything still queued, then stop. Raises if that cannot finish in ``timeout``."""
        self._closing = True
        self._kick.set()
        self._has_data.set()
        try:
            if self._task is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(self._task), timeout)
                except TimeoutError:
                    left = len(self._queue) + len(self._inflight)
                    self._task.cancel()
                    log.critical("store_close_timeout", unwritten=left, error=self.last_error)
                    raise StoreOverflowError(
                        f"store closed with {left} records unwritten: {self.last_error}"
                    ) from None
        finally:
            if self._owns_engine:
                await self._engine.dispose()
        if self._failed is not None:
            raise self._failed

    # ------------------------------------------------------------------ writer task

    async def run(self) -> None:
        """The writer loop: batch, write in one transaction, retry with backoff."""
        if self._task is None:
            self._task = asyncio.current_task()
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    self._has_data.clear()
                    await self._has_data.wait()
                    continue
                if not self._closing and len(self._queue) < self.max_batch and not self._kick.is_set():
                    try:
                        await asyncio.wait_for(self._kick.wait(), self.batch_s)
                    except TimeoutError:
                        pass
                self._kick.clear()
                n = min(len(self._queue), self.max_batch)
                self._inflight = [self._queue.popleft() for _ in range(n)]
                await self._write_with_retry(self._inflight)
                self._committed(self._inflight)
                self._inflight = []
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._fail(exc)
            raise

    async def _write_with_retry(self, batch: list[_Item]) -> None:
        backoff = _BACKOFF_START
        while True:
            try:
                await self._write(batch)
                return
            except Exception as exc:
                if isinstance(exc, StoreOverflowError):
                    raise
                msg = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                self.last_error = msg
                log.error("store_write_failed", error=msg, batch=len(batch), held=len(self._queue) + len(batch),
                          retry_in_s=backoff)
                self._set_health(False, f"store_unavailable: {msg}")
                # the commit may have happened before the error: re-read the running inventory
                self._inventories.clear()
                if self._failed is not None:
                    raise self._failed from exc
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)

    def _committed(self, batch: list[_Item]) -> None:
        self._done = batch[-1].seq
        self.written += len(batch)
        self.batches += 1
        for item in batch:
            r = item.record
            if isinstance(r, Fill):
                key = (r.symbol, r.trade_id)
                if self._pending_fills.get(key) == item.seq:
                    del self._pending_fills[key]
        while self._waiters and self._waiters[0][0] <= self._done:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)
        if not self.healthy and (not self._backlogged or len(self._queue) <= self.queue_size):
            self._backlogged = False
            self.last_error = None
            self._set_health(True, "ok")
        elif self._backlogged and len(self._queue) <= self.queue_size:
            self._backlogged = False

    def _set_health(self, healthy: bool, reason: str) -> None:
        if healthy == self.healthy:
            return
        self.healthy = healthy
        (log.info if healthy else log.error)("store_health", healthy=healthy, reason=reason)
        if self.on_health is not None:
            try:
                self.on_health(healthy, reason)
            except Exception as exc:  # a broken callback must not stop the writer
                log.error("store_health_callback_failed", error=repr(exc))

    def _fail(self, exc: BaseException) -> None:
        if self._failed is None:
            self._failed = exc
            log.critical("store_failed", error=f"{type(exc).__name__}: {exc}")
            self._set_health(False, f"store_failed: {exc}")
        for _, _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(exc)
        self._waiters.clear()

    # ------------------------------------------------------------------ one transaction

    def _insert(self, table: Any) -> Any:
        return (sqlite.insert if self._dialect == "sqlite" else postgresql.insert)(table)

    async def _write(self, batch: list[_Item]) -> None:
        orders: dict[str, Order] = {}
        events: list[OrderEvent] = []
        fills: list[Fill] = []
        other: dict[Any, list[dict[str, Any]]] = {}
        for item in batch:
            r = item.record
            if isinstance(r, Fill):
                fills.append(r)
            elif isinstance(r, Order):
                orders[r.client_id] = r  # the newest state of an order wins
            elif isinstance(r, OrderEvent):
                events.append(r)
            else:
                table, row = self._plain_row(r)
                other.setdefault(table, []).append(row)
        async with self._engine.begin() as conn:
            if orders:
                last_event: dict[str, int] = {}
                for e in events:
                    last_event[e.client_id] = max(e.ts, last_event.get(e.client_id, e.ts))
                await self._upsert_orders(conn, orders.values(), last_event)
            placeholders = self._placeholders(orders, events, fills)
            if placeholders:
                await conn.execute(self._insert(t.orders).on_conflict_do_nothing(index_elements=["client_id"]),
                                   placeholders)
            if events:
                await conn.execute(
                    self._insert(t.order_events).on_conflict_do_nothing(
                        index_elements=["client_id", "status", "filled"]),
                    [self._event_row(e) for e in events],
                )
            inventories: dict[str, Inventory] = {}
            if fills:
                inventories = await self._insert_fills(conn, fills)
            for table, rows in other.items():
                if table is t.markouts:  # idempotent: one row per (fill, horizon)
                    await conn.execute(self._insert(t.markouts).on_conflict_do_nothing(
                        index_elements=["venue", "symbol", "trade_id", "horizon_ms"]), rows)
                else:
                    await conn.execute(table.insert(), rows)
        self._inventories.update(inventories)  # only once the transaction committed

    async def _upsert_orders(self, conn: AsyncConnection, orders: Iterable[Order],
                             last_event: dict[str, int]) -> None:
        stmt = self._insert(t.orders)
        ex = stmt.excluded
        o = t.orders.c
        placeholder = o.amount.is_(None)
        stmt = stmt.on_conflict_do_update(
            index_elements=["client_id"],
            set_={
                "status": ex.status,
                "filled": ex.filled,
                "exchange_id": func.coalesce(ex.exchange_id, o.exchange_id),
                "updated_at": ex.updated_at,
                # a placeholder (fill seen before its order) takes the real order's request
                "side": func.coalesce(ex.side, o.side),
                "type": func.coalesce(o.type, ex.type),
                "amount": func.coalesce(o.amount, ex.amount),
                "price": func.coalesce(o.price, ex.price),
                "post_only": case((placeholder, ex.post_only), else_=o.post_only),
                "reason": case((placeholder, ex.reason), else_=o.reason),
                "signal_strength": func.coalesce(o.signal_strength, ex.signal_strength),
                "mid_price": func.coalesce(o.mid_price, ex.mid_price),
                "created_at": case((placeholder, ex.created_at), else_=o.created_at),
                "run_id": case((placeholder, ex.run_id), else_=o.run_id),
            },
        )
        await conn.execute(stmt, [self._order_row(r, last_event.get(r.client_id)) for r in orders])

    def _order_row(self, r: Order, updated_ts: int | None = None) -> dict[str, Any]:
        created = ms_to_dt(r.created_ts)
        updated = ms_to_dt(max(updated_ts, r.created_ts)) if updated_ts is not None else created
        return {
            "run_id": self.run_id, **self._scope, "symbol": r.symbol, "client_id": r.client_id,
            "exchange_id": r.exchange_id, "side": r.side.value, "type": r.type.value, "post_only": r.post_only,
            "price": r.price, "amount": r.amount, "filled": r.filled, "status": r.status.value,
            "reason": r.reason, "signal_strength": r.signal_strength, "mid_price": r.mid_price,
            "created_at": created, "updated_at": updated,
        }

    def _placeholders(self, orders: dict[str, Order], events: list[OrderEvent],
                      fills: list[Fill]) -> list[dict[str, Any]]:
        """Order rows for client ids seen only in fills/events, so no fill is ever refused."""
        rows: dict[str, dict[str, Any]] = {}
        for f in fills:
            if f.client_id not in orders and f.client_id not in rows:
                rows[f.client_id] = self._placeholder(f.client_id, f.symbol, f.side.value, f.ts, f.exchange_order_id)
        for e in events:
            if e.client_id not in orders and e.client_id not in rows:
                rows[e.client_id] = self._placeholder(e.client_id, self.symbol, None, e.ts, e.exchange_id)
        return list(rows.values())

    def _placeholder(self, client_id: str, symbol: str, side: str | None, ts: int,
                     exchange_id: str | None) -> dict[str, Any]:
        at = ms_to_dt(ts)
        return {
            "run_id": self.run_id, **self._scope, "symbol": symbol, "client_id": client_id,
            "exchange_id": exchange_id, "side": side, "type": None, "post_only": False, "price": None,
            "amount": None, "filled": ZERO, "status": OrderStatus.UNKNOWN.value, "reason": "external",
            "signal_strength": None, "mid_price": None, "created_at": at, "updated_at": at,
        }

    def _event_row(self, e: OrderEvent) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "client_id": e.client_id, "ts": ms_to_dt(e.ts), "status": e.status.value,
            "filled": e.filled, "exchange_id": e.exchange_id, "reason": e.reason,
        }

    async def _insert_fills(self, conn: AsyncConnection, fills: list[Fill]) -> dict[str, Inventory]:
        """Skip fills already stored, then insert the rest with their running inventory."""
        by_symbol: dict[str, list[Fill]] = {}
        for f in fills:
            by_symbol.setdefault(f.symbol, []).append(f)
        rows: list[dict[str, Any]] = []
        inventories: dict[str, Inventory] = {}
        for symbol, group in by_symbol.items():
            seen = await self._stored_trade_ids(conn, symbol, {f.trade_id for f in group})
            inv = await self._inventory(conn, symbol)
            base, quote = split_symbol(symbol)
            group.sort(key=lambda f: f.ts)  # stable: arrival order within one ms
            for f in group:
                if f.trade_id in seen:
                    continue
                seen.add(f.trade_id)
                realized = apply_fill(inv, f, base)
                rows.append({
                    "run_id": self.run_id, **self._scope, "exchange": self.exchange,
                    "symbol": symbol, "trade_id": f.trade_id, "client_id": f.client_id,
                    "exchange_order_id": f.exchange_order_id, "ts": ms_to_dt(f.ts), "side": f.side.value,
                    "price": f.price, "amount": f.amount, "notional": quantize(f.price * f.amount),
                    "fee": f.fee, "fee_currency": f.fee_currency, "fee_quote": fee_in_quote(f, base, quote),
                    "liquidity": f.liquidity.value, "position_after": inv.position,
                    "avg_price_after": inv.avg_price, "realized_pnl": realized,
                })
            inventories[symbol] = inv
        if rows:
            await conn.execute(
                self._insert(t.fills).on_conflict_do_nothing(index_elements=["venue", "symbol", "trade_id"]),
                rows,
            )
        return inventories

    async def _stored_trade_ids(self, conn: AsyncConnection, symbol: str, ids: set[str]) -> set[str]:
        found: set[str] = set()
        c = t.fills.c
        id_list = sorted(ids)
        for i in range(0, len(id_list), _IN_CHUNK):
            chunk = id_list[i : i + _IN_CHUNK]
            res = await conn.execute(
                select(c.trade_id).where(and_(c.venue == self.venue, c.symbol == symbol,
                                              c.trade_id.in_(chunk)))
            )
            found.update(res.scalars())
        return found

    async def _inventory(self, conn: AsyncConnection, symbol: str) -> Inventory:
        """A working copy of the running inventory (the cache changes only after commit)."""
        cached = self._inventories.get(symbol)
        if cached is not None:
            return Inventory(cached.position, cached.avg_price)
        c = t.fills.c
        scope = [c.account == self.account, c.mode == self.mode, c.venue == self.venue, c.symbol == symbol]
        if self.run_inventory:
            scope.append(c.run_id == self.run_id)
        row = (await conn.execute(
            select(c.position_after, c.avg_price_after).where(*scope).order_by(c.id.desc()).limit(1)
        )).first()
        if row is None:
            return Inventory()
        return Inventory(Decimal(row[0]), Decimal(row[1]))

    def _plain_row(self, r: Record) -> tuple[Any, dict[str, Any]]:
        if isinstance(r, Position):
            return t.positions, {
                "run_id": self.run_id, **self._scope, "symbol": r.symbol, "ts": ms_to_dt(r.ts),
                "amount": r.amount, "avg_price": r.avg_price, "realized_pnl": r.realized_pnl, "fees": r.fees,
            }
        if isinstance(r, Balance):
            return t.balances, {
                "run_id": self.run_id, **self._scope, "ts": ms_to_dt(r.ts), "currency": r.currency,
                "free": r.free, "locked": r.locked,
            }
        if isinstance(r, ImbalanceSignal):
            return t.signals, {
                "run_id": self.run_id, **self._scope, "symbol": self.symbol, "ts": ms_to_dt(r.ts),
                "kind": r.kind, "direction": int(r.direction), "strength": float(r.strength),
                "components": orjson.dumps(r.components, option=orjson.OPT_SORT_KEYS).decode(),
            }
        if isinstance(r, RiskEvent):
            return t.risk_events, risk_event_row(self.run_id, self.account, self.symbol, r, mode=self.mode,
                                                 venue=self.venue)
        if isinstance(r, ReconcileDifference):
            return t.reconcile_differences, {
                "run_id": self.run_id, **self._scope, "symbol": r.symbol, "ts": ms_to_dt(r.ts),
                "kind": r.kind, "detail": r.detail, "client_id": r.client_id,
            }
        if isinstance(r, Markout):
            return t.markouts, {
                "run_id": self.run_id, **self._scope, "exchange": self.exchange, "symbol": r.symbol,
                "trade_id": r.trade_id, "client_id": r.client_id, "side": r.side.value,
                "liquidity": r.liquidity.value, "price": r.price, "amount": r.amount,
                "fill_ts": ms_to_dt(r.fill_ts), "horizon_ms": r.horizon_ms, "ts": ms_to_dt(r.ts), "mid": r.mid,
                "microprice": r.microprice, "pnl": r.pnl, "bps": r.bps, "micro_bps": r.micro_bps,
                "signal_strength": r.signal_strength, "complete": r.complete,
            }
        raise TypeError(f"the store cannot write a {type(r).__name__}")


def risk_event_row(run_id: int, account: str, symbol: str, ev: RiskEvent, *, mode: str,
                   venue: str) -> dict[str, Any]:
    """The ``risk_events`` row of a ``RiskEvent`` (shared with ``queries.insert_risk_event``)."""
    return {
        "run_id": run_id, "account": account, "mode": mode, "venue": venue, "symbol": symbol, "ts": ms_to_dt(ev.ts),
        "action": ev.action.value, "kind": ev.kind, "reason": ev.reason, "client_id": ev.client_id,
        "details": orjson.dumps(ev.details, option=orjson.OPT_SORT_KEYS).decode(),
    }


def now_ms() -> int:
    """Wall-clock ms, for callers outside the engine's Clock (CLI tools)."""
    return int(time.time() * 1000)
