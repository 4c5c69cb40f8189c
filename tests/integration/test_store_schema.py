"""The schema comes from Alembic, equals the models, and SQLite runs in WAL mode."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from bot.store.db import alembic_config, current_revision, make_engine, upgrade
from bot.store.tables import metadata
from bot.store.views import VIEW_NAMES

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()

TABLES = {"runs", "orders", "order_events", "fills", "positions", "signals", "risk_events", "balances"}


async def test_upgrade_creates_tables_and_views_and_is_repeatable(db_url: str) -> None:
    assert await current_revision(db_url) is None
    await upgrade(db_url)
    await upgrade(db_url)  # a second upgrade is a no-op
    assert await current_revision(db_url) == HEAD
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: (set(inspect(c).get_table_names()), set(inspect(c).get_view_names())))
            for v in VIEW_NAMES:
                assert (await conn.execute(text(f"SELECT COUNT(*) FROM {v}"))).scalar() == 0
    finally:
        await engine.dispose()
    tables, views = names
    assert TABLES <= tables
    assert set(VIEW_NAMES) <= views


async def test_migrated_schema_equals_the_models(db_url: str) -> None:
    """Autogenerate against the migrated database finds nothing to change."""
    await upgrade(db_url)
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), metadata)
            )
    finally:
        await engine.dispose()
    assert diff == []


async def test_models_create_all_matches_migration_tables(sqlite_url: str, tmp_path: Path) -> None:
    """The converse: a create_all database (test only) has the same indexes as the migrated one."""
    other = f"sqlite+aiosqlite:///{tmp_path / 'create_all.db'}"
    e1 = make_engine(other)
    async with e1.begin() as conn:
        await conn.run_sync(metadata.create_all)
    await e1.dispose()
    await upgrade(sqlite_url)

    def indexes(path: str) -> set[tuple[str, str]]:
        with sqlite3.connect(path) as c:
            return set(c.execute("SELECT tbl_name, name FROM sqlite_master WHERE type = 'index' "
                                 "AND name NOT LIKE 'sqlite_autoindex%'").fetchall())

    assert indexes(str(tmp_path / "create_all.db")) == indexes(sqlite_url.split("///", 1)[1])


async def test_sqlite_wal_busy_timeout_and_foreign_keys(sqlite_url: str) -> None:
    await upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() == 5000
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
    finally:
        await engine.dispose()


def test_bot_db_upgrade_command(tmp_path: Path) -> None:
    """`bot db upgrade --db URL` migrates from the installed package (sync URL spelling accepted)."""
    db = tmp_path / "cli.db"
    res = subprocess.run([sys.executable, "-m", "bot", "db", "upgrade", "--db", f"sqlite:///{db}"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert HEAD in res.stdout
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT version_num FROM alembic_version").fetchone() == (HEAD,)
        names = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
    assert TABLES | set(VIEW_NAMES) <= names
