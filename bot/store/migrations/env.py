"""Alembic environment, async-aware.

Two ways in: ``bot.store.db.upgrade`` hands over an open connection (taken from an async
engine with ``run_sync``) in ``config.attributes["connection"]``; the ``alembic`` command
line has only a URL, so this opens an async engine and runs the migrations in ``run_sync``.
SQLite gets batch mode (it cannot ALTER most things in place).

SQLite and foreign keys: batch mode changes a table by copying it to a new one, dropping the
old one and renaming the copy. Dropping ``runs`` or ``orders`` while other tables' rows refer
to them fails when foreign keys are enforced (``bot.store.db`` turns them on for every
connection), and ``PRAGMA foreign_keys`` cannot change inside a transaction. So on SQLite the
migrations run with foreign keys off, in one explicit transaction (SQLite's DDL is
transactional; without ``BEGIN`` the driver would autocommit each DDL statement, and a failed
revision could leave a half-changed schema), and ``PRAGMA foreign_key_check`` must come back
empty before that transaction commits.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from bot.store.db import make_engine, normalize_url
from bot.store.tables import metadata

config = context.config


def _do_run(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        _sqlite_begin_without_foreign_keys(connection)
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=sqlite,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
        if sqlite:
            _sqlite_check_foreign_keys(connection)


def _sqlite_begin_without_foreign_keys(connection: Connection) -> None:
    """Foreign keys off (only possible outside a transaction), then BEGIN (see the module doc)."""
    driver = connection.connection.driver_connection
    if getattr(driver, "in_transaction", False):
        raise RuntimeError("SQLite migrations must start outside a transaction (foreign keys cannot be "
                           "switched off inside one)")
    connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    connection.exec_driver_sql("BEGIN")


def _sqlite_check_foreign_keys(connection: Connection) -> None:
    bad = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if bad:
        raise RuntimeError(f"migration left {len(bad)} rows whose foreign key points nowhere, e.g. {tuple(bad[0])}")


def _url() -> str:
    return normalize_url(
        os.environ.get("BOT_DB_URL") or config.get_main_option("sqlalchemy.url") or "sqlite+aiosqlite:///bot.db"
    )


async def _run_async() -> None:
    engine = make_engine(_url())
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_do_run)
    finally:
        await engine.dispose()


def _run_offline() -> None:
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _run_offline()
else:
    existing = config.attributes.get("connection")
    if existing is not None:
        _do_run(existing)
    else:
        asyncio.run(_run_async())
