"""`bot resume` and the sticky halt against the real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
from typing import Any

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.clock import SimulatedClock
from bot.config import RiskSettings, Settings
from bot.logging import configure_logging
from bot.model import RiskAction, RiskEvent
from bot.risk.killswitch import KillSwitch


def _store() -> tuple[Any, Any]:
    for mod in ("bot.store.db", "bot.store.queries"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} not available yet (store issue): the resume command is written against "
                        "queries.latest_halt / queries.insert_risk_event / db.make_engine / db.upgrade")
    return importlib.import_module("bot.store.db"), importlib.import_module("bot.store.queries")


async def _maybe(x: Any) -> Any:
    return await x if inspect.isawaitable(x) else x


T0 = 1_723_111_200_000
# the scope `bot resume` without --config reads: the default config's mode and venue
SCOPE = {"mode": Settings().mode, "venue": Settings().venue}
HALT = RiskEvent(ts=T0, action=RiskAction.HALT, kind="max_daily_loss",
                 reason="daily loss 100.00 USDT reached max_daily_loss 100",
                 details={"daily_pnl": "-100.00"})


def test_halt_survives_restart_until_bot_resume(db_url: str) -> None:
    db, queries = _store()

    async def setup() -> RiskEvent | None:
        await _maybe(db.upgrade(db_url))
        engine = db.make_engine(db_url)
        try:
            await queries.insert_risk_event(engine, None, "default", "BTC/USDT", HALT, **SCOPE)
            return await queries.latest_halt(engine, "default", "BTC/USDT", **SCOPE)  # type: ignore[no-any-return]
        finally:
            await engine.dispose()

    persisted = asyncio.run(setup())
    # the "restart": a fresh kill switch restored from what the store returns
    ks = KillSwitch(RiskSettings(daily_loss_resume="manual"), SimulatedClock(T0 + 3_600_000))
    assert ks.restore(persisted, T0 + 3_600_000) is not None and ks.halted

    runner = CliRunner()
    out = runner.invoke(app, ["resume", "--db", db_url])
    assert out.exit_code == 0, out.output
    assert "lifted max_daily_loss halt of 2024-08-08 10:00:00 UTC for default BTC/USDT" in out.output
    assert "resumed by operator after daily loss 100.00 USDT reached max_daily_loss 100" in out.output

    again = runner.invoke(app, ["resume", "--db", db_url])
    configure_logging()  # the CLI pointed structlog at CliRunner's (now closed) stream
    assert again.exit_code == 0
    assert [ln for ln in again.output.splitlines() if not ln.startswith("{")] == ["not halted"]
