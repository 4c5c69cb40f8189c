"""Reconcile differences: one row per difference reconciliation found between the store and the
exchange (missing fill, order gone, unknown order, balance, ...), so a reviewer sees them in SQL
and not only in the journal.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 09:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.store.types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reconcile_differences",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("ts", bot.store.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_reconcile_differences_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconcile_differences")),
    )
    with op.batch_alter_table("reconcile_differences", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_reconcile_differences_account_symbol_ts"), ["account", "symbol", "ts"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_reconcile_differences_run_id"), ["run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("reconcile_differences", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reconcile_differences_run_id"))
        batch_op.drop_index(batch_op.f("ix_reconcile_differences_account_symbol_ts"))
    op.drop_table("reconcile_differences")
