"""Shared fixtures: database URLs (SQLite always, PostgreSQL when reachable) and real data."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
RECORDINGS = SHARED_DATA / "recordings"

PG_URL = os.environ.get("BOT_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


def pytest_configure(config: pytest.Config) -> None:
    """The controller names a file where every drill appends its audit line (workers inherit it)."""
    if not hasattr(config, "workerinput") and "BOT_DRILL_AUDIT_FILE" not in os.environ:
        path = Path(tempfile.gettempdir()) / f"bot-drill-audit-{os.getpid()}.log"
        path.unlink(missing_ok=True)
        os.environ["BOT_DRILL_AUDIT_FILE"] = str(path)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Print the drills' audit lines (fills checked, duplicates, lost) at the end of the run."""
    path = Path(os.environ.get("BOT_DRILL_AUDIT_FILE", "/nonexistent"))
    if not path.is_file():
        return
    terminalreporter.section("drill audit")
    for line in sorted(path.read_text().splitlines()):
        terminalreporter.write_line(line)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything but the fault drills shares one xdist worker (see addopts in pyproject.toml)."""
    for item in items:
        if "/drills/" not in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.xdist_group("serial"))


def _pg_reachable(url: str) -> bool:
    u = urlparse(url.replace("+asyncpg", ""))
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", u.port or 5432), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real market data not present at {SHARED_DATA} (../shared/data beside the checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def real_recordings() -> dict[str, Path]:
    files = {p.name.split("_")[0]: p for p in sorted(RECORDINGS.glob("*.jsonl.gz"))} if RECORDINGS.is_dir() else {}
    if not files:
        pytest.skip(f"real recordings not present at {RECORDINGS}")
    return files


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema-less database URL; each test gets its own database."""
    if not _pg_reachable(PG_URL):
        pytest.skip(f"PostgreSQL not reachable at {PG_URL} (set BOT_TEST_PG_URL or start the server)")
    import asyncpg

    u = urlparse(PG_URL.replace("+asyncpg", ""))
    name = f"bot_test_{uuid.uuid4().hex[:12]}"
    admin = f"postgresql://{u.username or 'postgres'}@{u.hostname}:{u.port or 5432}/{u.path.lstrip('/') or 'test'}"

    async def _exec(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(_exec(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+asyncpg://{u.username or 'postgres'}@{u.hostname}:{u.port or 5432}/{name}"
    finally:
        asyncio.run(_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Run a store test on both dialects (PostgreSQL skipped with a reason when down)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    return str(request.getfixturevalue("pg_url"))


from helpers import free_port  # noqa: E402  (re-exported for older imports)

__all__ = ["free_port"]


@pytest.fixture(autouse=True)
def _fresh_logging() -> None:
    """Every test starts with logging on the current stdout (CLI tests swap stdout)."""
    from bot.logging import configure_logging

    configure_logging("info")
