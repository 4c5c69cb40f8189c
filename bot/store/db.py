"""Engines and schema upgrades.

Why here: every process opens the database the same way. SQLite runs in WAL mode with a
``busy_timeout`` so a reviewer's ``sqlite3 bot.db`` can read (and even briefly write) while
the bot writes, foreign keys are enforced, and ``synchronous=FULL`` makes a committed batch
survive a power cut, not only a crash. PostgreSQL sessions run in UTC.

The schema is created only by Alembic (``upgrade``), never by ``create_all``. The migration
scripts live inside the package (``bot/store/migrations``) so an installed bot (wheel, not
only ``pip install -e .``) finds them; ``alembic.ini`` at the repository root points there for
developers who run ``alembic revision --autogenerate``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA busy_timeout=5000",
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=FULL",
)

T = TypeVar("T")


def normalize_url(url: str) -> str:
    """Accept the sync spellings users type (sqlite:///x.db, postgresql://...) and pick the async driver."""
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    if url.startswith("postgres://"):
        return "postgresql+asyncpg://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        return "postgresql+asyncpg://" + url[len("postgresql://") :]
    return url


def is_sqlite(url: str) -> bool:
    return make_url(normalize_url(url)).get_backend_name() == "sqlite"


def create_private_sqlite_file(url: str) -> None:
    """Create a new SQLite database file as 0600 (owner only), whatever the umask.

    The file holds orders, fills and PnL; SQLite itself would create it with the process umask
    (0644 outside systemd). Its ``-wal``/``-shm`` files take the database file's permissions.
    An existing file, an in-memory database or a ``file:`` URI is left alone, and a missing
    directory is left for SQLite to report.
    """
    u = make_url(normalize_url(url))
    path = u.database
    if not path or path == ":memory:" or path.startswith("file:") or u.query.get("uri"):
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:  # exists already (left as it is), or cannot be created (SQLite says why)
        return
    os.close(fd)


def sqlite_write_problem(url: str) -> str | None:
    """Why the bot could not write this SQLite database, in one line (None: it can, or not SQLite).

    Checked before a command opens the store, so a read-only file or a missing directory fails
    first, with nothing written (no run row, no ``-wal``/``-shm`` beside a read-only file).
    """
    try:
        u = make_url(normalize_url(url))
    except Exception as exc:
        return f"not a database URL ({type(exc).__name__})"
    if u.get_backend_name() != "sqlite":
        return None
    path = u.database or ""
    if u.query.get("mode") in ("ro", ("ro",)):
        return f"the database URL opens {path} read-only (mode=ro)"
    if path.startswith("file:"):
        path = path[len("file:"):]
    if not path or path == ":memory:":
        return None
    p = Path(path)
    parent = p.parent
    if p.exists():
        if p.is_dir():
            return f"{p} is a directory, not a database file"
        if not os.access(p, os.W_OK):
            return f"{p}: the database file is read-only"
        if not os.access(parent, os.W_OK | os.X_OK):
            return f"{parent}: directory not writable (SQLite keeps its journal beside {p.name})"
    elif not parent.is_dir():
        return f"{p}: no such directory {parent}"
    elif not os.access(parent, os.W_OK | os.X_OK):
        return f"{p}: cannot create the database (directory {parent} not writable)"
    return None


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine; SQLite gets WAL, busy_timeout=5000 and foreign_keys=ON on every connection.

    A SQLite file the bot creates is private (0600, ``create_private_sqlite_file``)."""
    url = normalize_url(url)
    if is_sqlite(url):
        create_private_sqlite_file(url)
        engine = create_async_engine(url, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            for pragma in SQLITE_PRAGMAS:
                cur.execute(pragma)
            cur.close()

        return engine
    connect_args = kwargs.pop("connect_args", {})
    connect_args.setdefault("server_settings", {"timezone": "UTC"})
    return create_async_engine(url, connect_args=connect_args, pool_pre_ping=True, **kwargs)


def alembic_config(url: str | None = None) -> Config:
    """The Alembic configuration, built in code (no ini file needed at runtime)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def _upgrade_on(conn: Connection, cfg: Config, revision: str) -> None:
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)


async def upgrade(url: str, revision: str = "head") -> None:
    """Alembic ``upgrade head`` on ``url`` (used by ``bot db upgrade`` and at app start)."""
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade_on, alembic_config(url), revision)
    finally:
        await engine.dispose()


def run_coro_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even when an event loop is already running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: list[T] = []
    error: list[BaseException] = []

    def _worker() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            error.append(exc)

    t = threading.Thread(target=_worker, name="bot-store-sync")
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def upgrade_sync(url: str, revision: str = "head") -> None:
    """``upgrade`` for sync callers (the CLI)."""
    run_coro_sync(upgrade(url, revision))


def known_revisions() -> tuple[set[str], str | None]:
    """(every schema revision this bot's migrations know, the head revision)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    return {r.revision for r in script.walk_revisions()}, script.get_current_head()


async def current_revision(url: str) -> str | None:
    """The revision the database is at (None: never upgraded)."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
    finally:
        await engine.dispose()
