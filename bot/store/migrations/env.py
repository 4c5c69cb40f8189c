"""Alembic environment, async-aware.

Two ways in: ``bot.store.db.upgrade`` hands over an open connection (taken from an async
engine with ``run_sync``) in ``config.attributes["connection"]``; the ``alembic`` command
line has only a URL, so this opens an async engine and runs the migrations in ``run_sync``.
SQLite gets batch mode (it cannot ALTER most things in place).
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
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


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
