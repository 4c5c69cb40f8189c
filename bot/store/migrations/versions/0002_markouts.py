"""Markouts: the ``markouts`` table (mid and microprice +1 s/+10 s/+60 s after each fill) and
the review view ``v_markouts`` (markout PnL in quote and bps, minus fees, by liquidity and
signal-strength bucket).

Why the view's SQL lives here and not in ``bot.store.views``: a revision is immutable, and this
text is exactly what the revision created on both engines (the money and float conventions of
``bot.store.views``: on SQLite money is integer 1e-8 units, divided by 1e8 once).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 12:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.store.types

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def v_markouts(dialect_name: str) -> str:
    """CREATE VIEW v_markouts for ``dialect_name`` (sqlite or postgresql)."""
    sqlite = dialect_name == "sqlite"

    def m(x: str) -> str:
        return f"(({x}) / 100000000.0)" if sqlite else f"({x})"

    fl = "REAL" if sqlite else "DOUBLE PRECISION"
    fee_bps = (f"CASE WHEN f.fee_quote IS NOT NULL AND m.price <> 0 AND m.amount <> 0 THEN "
               f"CAST({m('f.fee_quote')} AS {fl}) * 10000.0 / "
               f"(CAST({m('m.price')} AS {fl}) * CAST({m('m.amount')} AS {fl})) END")
    return f"""
CREATE VIEW v_markouts AS
SELECT
    m.id AS markout_id, m.run_id, m.account, m.exchange, m.symbol, m.trade_id, m.client_id,
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
LEFT JOIN fills f ON f.exchange = m.exchange AND f.symbol = m.symbol AND f.trade_id = m.trade_id
"""


def upgrade() -> None:
    op.create_table(
        "markouts",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("exchange", sa.String(length=32), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("trade_id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("liquidity", sa.String(length=5), nullable=False),
        sa.Column("price", bot.store.types.Money(precision=38, scale=8), nullable=False),
        sa.Column("amount", bot.store.types.Money(precision=38, scale=8), nullable=False),
        sa.Column("fill_ts", bot.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("horizon_ms", sa.Integer(), nullable=False),
        sa.Column("ts", bot.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("mid", bot.store.types.Money(precision=38, scale=8), nullable=False),
        sa.Column("microprice", bot.store.types.Money(precision=38, scale=8), nullable=True),
        sa.Column("pnl", bot.store.types.Money(precision=38, scale=8), nullable=False),
        sa.Column("bps", sa.Float(), nullable=False),
        sa.Column("micro_bps", sa.Float(), nullable=True),
        sa.Column("signal_strength", sa.Float(), nullable=True),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_markouts_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_markouts")),
        sa.UniqueConstraint(
            "exchange", "symbol", "trade_id", "horizon_ms", name=op.f("uq_markouts_exchange_symbol_trade_id_horizon_ms")
        ),
    )
    with op.batch_alter_table("markouts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_markouts_account_symbol_fill_ts"), ["account", "symbol", "fill_ts"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_markouts_run_id"), ["run_id"], unique=False)
    op.execute(v_markouts(op.get_bind().dialect.name))


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS v_markouts")
    with op.batch_alter_table("markouts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_markouts_run_id"))
        batch_op.drop_index(batch_op.f("ix_markouts_account_symbol_fill_ts"))
    op.drop_table("markouts")
