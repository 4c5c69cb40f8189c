"""One halt, one ``risk_halt`` line, carrying the numbers that caused it.

The real TradingCore with the paper broker and a StoreWriter on a SQLite file, under a
simulated clock; the JSON log lines are read back from stdout.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bot.config import settings_from_dict
from bot.logging import configure_logging
from bot.model import BookSnapshot, Fill, Liquidity, Side

from helpers import json_lines, paper_core

T0 = 1_723_075_200_000


def _events(out: str, name: str) -> list[dict[str, Any]]:
    return [e for e in json_lines(out, strict=True) if e.get("event") == name]


async def test_a_daily_loss_halt_logs_risk_halt_once_with_its_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(json=True)
    settings = settings_from_dict({"store": {"url": f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"},
                                   "risk": {"max_daily_loss": 100}}, env={})
    core, engine = await paper_core(settings, T0)
    writer = core.writer
    try:
        await core.om.on_fill_update(Fill("t1", core.om.ids.next(), "BTC/USDT", Side.BUY, Decimal("60000.5"),
                                          Decimal("0.01"), Decimal("0"), "USDT", Liquidity.TAKER, T0))
        capsys.readouterr()
        # the mid falls 12,000: 0.01 BTC loses 120 USDT, beyond max_daily_loss 100
        t1 = T0 + 2_000
        await core.on_event(BookSnapshot(ts=t1, bids=[(48000.0, 1.0)], asks=[(48001.0, 1.0)], seq=2, recv=t1))
        assert core.killswitch.halted and core.killswitch.halt_kind == "max_daily_loss"
        halts = _events(capsys.readouterr().out, "risk_halt")
        assert len(halts) == 1, halts
        (line,) = halts
        assert line["kind"] == "max_daily_loss" and line["level"] == "error"
        assert Decimal(line["daily_pnl"]) == Decimal("-120") and line["max_daily_loss"] == "100"
        assert "equity" in line and line["mark"] == "48000.5"
        # a later guard pass does not halt (or log) again
        await core._guard(force=True)
        assert _events(capsys.readouterr().out, "risk_halt") == []
    finally:
        await writer.close()
        await engine.dispose()
