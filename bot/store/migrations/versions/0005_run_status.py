"""Run status: how a run ended, so a failed or halted run is told from a finished one in SQL.

Adds two nullable columns to ``runs``:

* ``status``: ``running`` (set when the run starts; a run killed with -9 keeps it), ``ended``
  (the process stopped and closed its run), ``halted`` (a replay that its own risk rules halted:
  ``bot replay`` exits 1), ``failed`` (a replay that stopped on an error, e.g. a bad line in the
  middle of the recording; its open orders were cancelled first, so the tables are final);
* ``end_reason``: why, for ``halted`` and ``failed`` (``path:line: what is wrong``, the halt's
  reason); NULL otherwise.

Backfill: a run with ``ended_at`` becomes ``ended``; the others stay NULL (running, or killed
before revision 0005: nothing recorded says which). Both are plain ADD COLUMNs (no table copy
on SQLite), and no view reads ``runs``, so the views stay as they are.

Downgrade drops the two columns.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("end_reason", sa.Text(), nullable=True))
    op.execute("UPDATE runs SET status = 'ended' WHERE ended_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("end_reason")
        batch_op.drop_column("status")
