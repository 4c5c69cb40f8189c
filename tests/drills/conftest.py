"""Fixtures for the fault drills: a ``drill`` factory that starts the emulator and the bot as
subprocesses in the test's tmp dir and always stops both, even when the drill fails."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from drills.audit import Bot, Emulator, Traffic, write_config

SECRET = "drill-SeCrEt-7f3a9c1e5b"  # distinctive, so a leak is found by a plain substring search


@dataclass
class Drill:
    workdir: Path
    emu: Emulator
    bot: Bot
    db: Path
    extra: dict[str, Any] = field(default_factory=dict)
    traffic: Traffic | None = None

    def start_traffic(self, period: float = 4.0) -> None:
        """Alternating pressure episodes from now on (idempotent), so the bot keeps trading."""
        if self.traffic is None:
            self.traffic = Traffic(self.emu, period)

    def stop_traffic(self) -> None:
        if self.traffic is not None:
            self.traffic.stop()
            self.traffic = None


@pytest.fixture
def drill(tmp_path: Path) -> Iterator[Callable[..., Drill]]:
    made: list[Drill] = []

    def _make(faults: str = "", **config: Any) -> Drill:
        """``config``: write_config's keywords (warmup, max_notional, store_url, ...)."""
        emu = Emulator(tmp_path, faults=faults, api_secret=SECRET)
        cfg = write_config(tmp_path, emu, **config)
        bot = Bot(cfg, SECRET, tmp_path / "bot.out")
        d = Drill(tmp_path, emu, bot, tmp_path / "drill.db")
        made.append(d)
        return d

    yield _make
    for d in made:
        d.stop_traffic()
        if d.bot.alive():
            assert d.bot.proc is not None
            d.bot.proc.kill()
            d.bot.proc.wait()
        d.emu.stop()
