"""Mode and venue: orders, fills, positions and halts are kept apart by mode and venue.

Adds ``mode`` (paper, testnet, live, replay) and ``venue`` (``Settings.venue``: the exchange id,
``@<url>`` when ``[exchange] url`` is set, else ``:sandbox`` when sandbox is on) to every table
that has ``account`` (orders, fills, positions, signals, risk_events, reconcile_differences,
balances, markouts), and ``venue`` to ``runs``. The start-up loads (fills, open orders, the
persisted halt) read one (account, mode, venue, symbol), so their indexes lead with those
columns, and the fill and markout keys become (venue, symbol, trade id[, horizon]): a testnet
trade id must never make a live fill with the same id a "duplicate", which would lose it.

Backfill: every existing row takes its run's ``mode`` (``runs.mode``), and, because revisions
0001-0003 did not record ``sandbox`` or ``url``, the run's exchange id (``runs.exchange``,
e.g. ``binance``) as its venue, the venue of the real exchange. Rows written by a testnet or
emulator run before this revision therefore look like ``binance`` until an operator re-keys
them (docs/operations.md, "Upgrading to revision 0004"), e.g.::

    UPDATE orders SET venue = 'binance:sandbox' WHERE mode = 'testnet' AND venue = 'binance';

for each of the tables above and ``runs``. The columns are NOT NULL after the backfill.

The review views are dropped first and created again (``bot.store.views.views_v2``) with
``mode`` and ``venue``: SQLite changes a table in batch mode by copying it and renaming the
copy, and refuses the rename while a view refers to the table.

Downgrade drops the columns and restores the old keys, indexes and views; it fails (and
changes nothing) if the same trade id is stored at two venues, which the old key cannot hold.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08 09:00:00.000000
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from bot.store.views import drop_views_v2, views_v1, views_v2

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MODE = sa.String(length=16)
VENUE = sa.String(length=160)
SCOPED = ("orders", "fills", "positions", "signals", "risk_events", "reconcile_differences", "balances",
          "markouts")
# (table, old columns, new columns): the indexes the start-up loads use
INDEXES = (
    ("orders", ["account", "symbol", "status"], ["account", "mode", "venue", "symbol", "status"]),
    ("fills", ["account", "symbol", "ts"], ["account", "mode", "venue", "symbol", "ts"]),
    ("risk_events", ["account", "symbol", "action", "ts"], ["account", "mode", "venue", "symbol", "action", "ts"]),
)
UNIQUES = (
    ("fills", ["exchange", "symbol", "trade_id"], ["venue", "symbol", "trade_id"]),
    ("markouts", ["exchange", "symbol", "trade_id", "horizon_ms"], ["venue", "symbol", "trade_id", "horizon_ms"]),
)


def _name(prefix: str, table: str, columns: list[str]) -> str:
    return f"{prefix}_{table}_{'_'.join(columns)}"


def _drop_views() -> None:
    for sql in drop_views_v2():  # every view of 0001-0004 (v_markouts of 0002 included)
        op.execute(sql)


def upgrade() -> None:
    _drop_views()
    # 1. the columns, nullable while they are filled in (an ADD COLUMN, no table copy on SQLite)
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("venue", VENUE, nullable=True))
    for table in SCOPED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("mode", MODE, nullable=True))
            batch_op.add_column(sa.Column("venue", VENUE, nullable=True))
    # 2. backfill from the run: its mode, and its exchange id as the venue (sandbox/url were not recorded)
    op.execute("UPDATE runs SET venue = exchange")
    for table in SCOPED:
        op.execute(
            f"UPDATE {table} SET "
            f"mode = (SELECT r.mode FROM runs r WHERE r.id = {table}.run_id), "
            f"venue = (SELECT r.venue FROM runs r WHERE r.id = {table}.run_id)"
        )
    # 3. NOT NULL, the new indexes and unique keys (one table copy per table on SQLite)
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.alter_column("venue", existing_type=VENUE, nullable=False)
    indexes = {t: (old, new) for t, old, new in INDEXES}
    uniques = {t: (old, new) for t, old, new in UNIQUES}
    for table in SCOPED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column("mode", existing_type=MODE, nullable=False)
            batch_op.alter_column("venue", existing_type=VENUE, nullable=False)
            if table in indexes:
                old, new = indexes[table]
                batch_op.drop_index(_name("ix", table, old))
                batch_op.create_index(_name("ix", table, new), new, unique=False)
            if table in uniques:
                old, new = uniques[table]
                batch_op.drop_constraint(_name("uq", table, old), type_="unique")
                batch_op.create_unique_constraint(_name("uq", table, new), new)
    for sql in views_v2(op.get_bind().dialect.name):
        op.execute(sql)


def downgrade() -> None:
    _drop_views()
    indexes = {t: (old, new) for t, old, new in INDEXES}
    uniques = {t: (old, new) for t, old, new in UNIQUES}
    for table in SCOPED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            if table in uniques:
                old, new = uniques[table]
                batch_op.drop_constraint(_name("uq", table, new), type_="unique")
                batch_op.create_unique_constraint(_name("uq", table, old), old)
            if table in indexes:
                old, new = indexes[table]
                batch_op.drop_index(_name("ix", table, new))
                batch_op.create_index(_name("ix", table, old), old, unique=False)
            batch_op.drop_column("venue")
            batch_op.drop_column("mode")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("venue")
    dialect = op.get_bind().dialect.name
    for sql in views_v1(dialect):
        op.execute(sql)
    markouts_0002 = importlib.import_module("bot.store.migrations.versions.0002_markouts")
    op.execute(markouts_0002.v_markouts(dialect))
