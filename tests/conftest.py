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


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def require_pg() -> bool:
    """``BOT_REQUIRE_PG=1`` (set by .ci/run): PostgreSQL being down fails the test, never skips it."""
    return _truthy("BOT_REQUIRE_PG")


def require_systemd_analyze() -> bool:
    """Under CI (``CI=true``) the unit-file test must run: a missing systemd-analyze fails it."""
    return _truthy("CI") or _truthy("BOT_REQUIRE_SYSTEMD_ANALYZE")


# Skip reasons that hide a broken CI environment rather than an optional extra (the fixtures
# below and tests/drills use the first; tests/unit/test_service.py's skipif the second).
_PG_SKIP = "PostgreSQL not reachable"
_SYSTEMD_SKIP = "systemd-analyze not installed"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Turn a "PostgreSQL down" / "systemd-analyze missing" skip into a failure when CI requires them.

    The fixtures fail by themselves; this catches the skips written elsewhere (the drills'
    own PostgreSQL check, the unit-file test's ``skipif``), so CI can never go green with
    either silently left out.
    """
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not report.skipped or getattr(report, "wasxfail", None) is not None:
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    why = None
    if _PG_SKIP in reason and require_pg():
        why = f"BOT_REQUIRE_PG is set but the test skipped: {reason}"
    elif _SYSTEMD_SKIP in reason and require_systemd_analyze():
        why = (f"CI is set but the test skipped: {reason} "
               "(.ci/run installs it with `apt-get install -y systemd`)")
    if why is not None:
        report.outcome = "failed"
        report.longrepr = why


def _pg_unavailable(reason: str) -> None:
    if require_pg():
        pytest.fail(f"BOT_REQUIRE_PG is set: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema-less database URL; each test gets its own database.

    PostgreSQL down: skipped with the reason, or failed when ``BOT_REQUIRE_PG`` is set (CI).
    """
    if not _pg_reachable(PG_URL):
        _pg_unavailable(f"{_PG_SKIP} at {PG_URL} (set BOT_TEST_PG_URL or start the server)")
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

    try:
        asyncio.run(_exec(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:  # port open, server not accepting (starting, auth)
        _pg_unavailable(f"{_PG_SKIP} at {PG_URL}: cannot create a database: {type(exc).__name__}: {exc}")
    try:
        yield f"postgresql+asyncpg://{u.username or 'postgres'}@{u.hostname}:{u.port or 5432}/{name}"
    finally:
        asyncio.run(_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Run a store test on both dialects (PostgreSQL skipped with a reason when down, failed
    when ``BOT_REQUIRE_PG`` is set)."""
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
