"""The schema: one SQLAlchemy 2 model per table of DESIGN.md's persistence section.

Why these keys: a reviewer joins everything by ``run_id`` / ``account`` / ``symbol`` and
reads it by time, so each table has those and an index on time. Every row about trading also
carries ``mode`` (paper, testnet, live, replay) and ``venue`` (``Settings.venue``: where the
orders go, e.g. ``binance``, ``binance:sandbox``, ``binance@http://127.0.0.1:8765``), and the
start-up loads (fills, open orders, the persisted halt) read one (account, mode, venue, symbol)
only: a testnet run never takes a paper position for its own, nor the other way round
(revision 0004). Replays of the same fact are no-ops, never double counts: a fill is unique
per (venue, symbol, trade id) - a testnet trade id never makes a live fill with the same id a
"duplicate" - an order event per (client id, status, filled), an order per client id
(upserted as it changes).
Fills and order events reference ``orders.client_id`` so an orphan cannot exist; the writer
creates a placeholder order (``reason='external'``) when a fill arrives for an order it has
never seen, rather than lose the fill.

``fills`` also carries the running inventory after the fill (``position_after``,
``avg_price_after``, ``realized_pnl``), computed once by the single writer with the
average-cost method (see ``bot.store.pnl``), so the views are plain sums and stay fast.

The app creates this schema only through Alembic (``bot db upgrade``); ``create_all`` is
for the schema-equality test alone.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bot.store.types import Money, UtcDateTime

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# An integer primary key that is BIGINT on PostgreSQL and the rowid alias on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Run(Base):
    """One row per process start."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    mode: Mapped[str] = mapped_column(String(16))
    config_hash: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(32))
    account: Mapped[str] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(32))
    exchange: Mapped[str] = mapped_column(String(32))
    venue: Mapped[str] = mapped_column(String(160))  # Settings.venue (revision 0004; older runs: the exchange id)
    pid: Mapped[int | None] = mapped_column(Integer)
    # revision 0005: how the run ended - running (or killed), ended, halted (a replay stopped by
    # its risk rules), failed (end_reason says why, e.g. "rec.jsonl:20001: invalid JSON")
    status: Mapped[str | None] = mapped_column(String(16))
    end_reason: Mapped[str | None] = mapped_column(Text)


class OrderRow(Base):
    """Our orders, one row per client id, updated in place as the order changes."""

    __tablename__ = "orders"
    __table_args__ = (
        Index(None, "account", "mode", "venue", "symbol", "status"),
        Index(None, "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    account: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16))  # paper | testnet | live | replay (the run's)
    venue: Mapped[str] = mapped_column(String(160))  # where orders go: Settings.venue
    symbol: Mapped[str] = mapped_column(String(32))
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    exchange_id: Mapped[str | None] = mapped_column(String(64), index=True)
    side: Mapped[str | None] = mapped_column(String(4))  # NULL only on an order-event placeholder
    type: Mapped[str | None] = mapped_column(String(8))
    post_only: Mapped[bool] = mapped_column(Boolean, default=False)
    price: Mapped[Decimal | None] = mapped_column(Money)
    amount: Mapped[Decimal | None] = mapped_column(Money)  # NULL on a placeholder
    filled: Mapped[Decimal] = mapped_column(Money)
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text)
    signal_strength: Mapped[float | None] = mapped_column(Float)
    mid_price: Mapped[Decimal | None] = mapped_column(Money)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class OrderEventRow(Base):
    """Every state transition of every order; a replayed transition is a no-op."""

    __tablename__ = "order_events"
    __table_args__ = (UniqueConstraint("client_id", "status", "filled"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("orders.client_id"))
    ts: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    status: Mapped[str] = mapped_column(String(20))
    filled: Mapped[Decimal] = mapped_column(Money)
    exchange_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)


class FillRow(Base):
    """Executions of our orders, with the running average-cost inventory after each."""

    __tablename__ = "fills"
    __table_args__ = (
        UniqueConstraint("venue", "symbol", "trade_id"),
        Index(None, "account", "mode", "venue", "symbol", "ts"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    account: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16))
    venue: Mapped[str] = mapped_column(String(160))
    exchange: Mapped[str] = mapped_column(String(32))
    symbol: Mapped[str] = mapped_column(String(32))
    trade_id: Mapped[str] = mapped_column(String(64))
    client_id: Mapped[str] = mapped_column(ForeignKey("orders.client_id"), index=True)
    exchange_order_id: Mapped[str | None] = mapped_column(String(64))
    ts: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    side: Mapped[str] = mapped_column(String(4))
    price: Mapped[Decimal] = mapped_column(Money)
    amount: Mapped[Decimal] = mapped_column(Money)
    notional: Mapped[Decimal] = mapped_column(Money)  # price * amount, quote
    fee: Mapped[Decimal] = mapped_column(Money)
    fee_currency: Mapped[str] = mapped_column(String(16))
    fee_quote: Mapped[Decimal | None] = mapped_column(Money)  # NULL: fee in a third currency
    liquidity: Mapped[str] = mapped_column(String(5))
    position_after: Mapped[Decimal] = mapped_column(Money)
    avg_price_after: Mapped[Decimal] = mapped_column(Money)
    realized_pnl: Mapped[Decimal] = mapped_column(Money)  # realised by this fill, quote, before fees


class PositionRow(Base):
    """Position snapshots as the bot's inventory saw them."""

    __tablename__ = "positions"
    __table_args__ = (Index(None, "account", "symbol", "ts"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    account: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16))
    venue: Mapped[str] = mapped_column(String(160))
    symbol: Mapped[str] = mapped_column(String(32))
    ts: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    amount: Mapped[Decimal] = mapped_column(Money)
    avg_price: Mapped[Decimal] = mapped_column(Money)
    realized_pnl: Mapped[Decimal] = mapped_column(Money)
    fees: Mapped[Decimal] = mapped_column(Money)


class SignalRow(Base):
    """Sampled signals and every signal that caused an order."""

    __tablename__ = "signals"
    __table_args__ = (Index(None, "account", "symbol", "ts"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    account: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16))
    venue: Mapped[str] = mapped_column(String(160))
    symbol: Mapped[str] = mapped_column(String(32))
    ts: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    direction: Mapped[int] = mapped_column(Integer)
    strength: Mapped[float] = mapped_column(Float)
    components: Mapped[str] = mapped_column(Text)  # JSON object name -> z-score


class RiskEventRow(Base):
    """Every rejection, clip, halt and resume, with its reason and numbers."""

    __tablename__ = "risk_events"
    __table_args__ = (Index(None, "account", "mode", "venue", "symbol", "action", "ts"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    account: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16))
    venue: Mapped[str] = mapped_column(String(160))
    symbol: Mapped[str] = mapped_column(String(32))
    ts: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    action: Mapped[str] = mapped_column(String(8))
    kind: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    client_id: Mapped[str | None] = mapped_column(String(64), index=True)
    details: Mapped[str] = mapped_column(Text)  # JSON object


class ReconcileDifferenceRow(Base):
    """Every difference reconciliation found between the store and the exchange, and what it was."""

    __tablename__ = "reconcile_differences"
    __table_args__ = (Index(None, "account", "symbol", "ts"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    account: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16))
    venue: Mapped[str] = mapped_column(String(160))
    symbol: Mapped[str] = mapped_column(String(32))
    ts: Mapped[datetime] = mapped_column(UtcDateTime)
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    client_id: Mapped[str | None] = mapped_column(String(64))


class BalanceRow(Base):
    """Free and locked balance per currency at a moment."""

    __tablename__ = "balances"
    __table_args__ = (Index(None, "account", "currency", "ts"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    account: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16))
    venue: Mapped[str] = mapped_column(String(160))
    ts: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    currency: Mapped[str] = mapped_column(String(16))
    free: Mapped[Decimal] = mapped_column(Money)
    locked: Mapped[Decimal] = mapped_column(Money)


class MarkoutRow(Base):
    """Mid and microprice a fixed horizon after each fill, and the fill's markout PnL (revision 0002).

    One row per (fill, horizon); keyed like ``fills`` (venue, symbol, trade id) plus the horizon,
    so a markout written twice is stored once. No foreign key to ``fills``: the markout of a fill
    is computed seconds later and must not be refused if the fill's own batch is still retrying.
    """

    __tablename__ = "markouts"
    __table_args__ = (
        UniqueConstraint("venue", "symbol", "trade_id", "horizon_ms"),
        Index(None, "account", "symbol", "fill_ts"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    account: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16))
    venue: Mapped[str] = mapped_column(String(160))
    exchange: Mapped[str] = mapped_column(String(32))
    symbol: Mapped[str] = mapped_column(String(32))
    trade_id: Mapped[str] = mapped_column(String(64))
    client_id: Mapped[str] = mapped_column(String(64))
    side: Mapped[str] = mapped_column(String(4))
    liquidity: Mapped[str] = mapped_column(String(5))
    price: Mapped[Decimal] = mapped_column(Money)  # the fill's price
    amount: Mapped[Decimal] = mapped_column(Money)
    fill_ts: Mapped[datetime] = mapped_column(UtcDateTime)
    horizon_ms: Mapped[int] = mapped_column(Integer)
    ts: Mapped[datetime] = mapped_column(UtcDateTime)  # time of the book the mid was taken from
    mid: Mapped[Decimal] = mapped_column(Money)
    microprice: Mapped[Decimal | None] = mapped_column(Money)
    pnl: Mapped[Decimal] = mapped_column(Money)  # side sign * (mid - price) * amount, quote, before fees
    bps: Mapped[float] = mapped_column(Float)
    micro_bps: Mapped[float | None] = mapped_column(Float)
    signal_strength: Mapped[float | None] = mapped_column(Float)
    complete: Mapped[bool] = mapped_column(Boolean)  # False: the stream ended before the horizon


metadata = Base.metadata
runs = metadata.tables["runs"]
orders = metadata.tables["orders"]
order_events = metadata.tables["order_events"]
fills = metadata.tables["fills"]
positions = metadata.tables["positions"]
signals = metadata.tables["signals"]
risk_events = metadata.tables["risk_events"]
reconcile_differences = metadata.tables["reconcile_differences"]
balances = metadata.tables["balances"]
markouts = metadata.tables["markouts"]
