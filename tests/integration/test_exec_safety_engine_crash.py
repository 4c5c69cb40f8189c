"""A crashed task stops the live engine cleanly: orders cancelled, store flushed, one log line
naming the task, ``run()`` raises (``bot run`` exits 1).

``LiveRunner`` in paper mode against the emulator over real ccxt (public streams); the store
writer's batch bookkeeping is made to raise once the bot has a resting order, so the writer
task -- which runs outside the engine's TaskGroup -- dies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bot.clock import SimulatedClock
from bot.config import settings_from_dict
from bot.emulator import Emulator
from bot.engine import STORE_DOWN_HALT_MS, EngineTaskFailed, LiveRunner
from bot.logging import configure_logging
from bot.model import Balance, OrderRequest, OrderStatus, Side
from bot.store.writer import StoreWriter

from helpers import json_lines


def _json_lines(out: str) -> list[dict[str, Any]]:
    return json_lines(out, strict=True)


async def _until(cond: Callable[[], bool], what: str) -> None:
    for _ in range(600):  # at most ~30 s
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
async def test_a_dead_store_writer_stops_the_engine_and_cancels_its_orders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    emu = Emulator(seed=3)
    await emu.start(port=0)
    settings = settings_from_dict(
        {
            "mode": "paper",
            "symbol": "BTC/USDT",
            "exchange": {"url": emu.base_url},
            "store": {"url": f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"},
        },
        env={},
    )
    armed = False
    committed = StoreWriter._committed

    def crashing_committed(self: StoreWriter, batch: Any) -> None:
        if armed:
            raise RuntimeError("injected writer failure")
        committed(self, batch)

    monkeypatch.setattr(StoreWriter, "_committed", crashing_committed)
    runner = LiveRunner(settings, duration_s=120)
    try:
        configure_logging(json=True)
        task = asyncio.create_task(runner.run())
        await _until(lambda: task.done() or (runner.core is not None and runner.core.state == "trading"
                                              and runner.core.book.mid() is not None), "a trading core")
        assert not task.done(), task.result()
        core = runner.core
        assert core is not None and core.paper is not None
        mid = core.book.mid()
        assert mid is not None
        price = Decimal(str(round(mid * 0.98, 2)))  # well below the bid: it rests
        order = await core.om.submit(OrderRequest("BTC/USDT", Side.BUY, Decimal("0.001"), price))
        assert order.status.is_open  # paper: acked after its latency
        assert [o.client_id for o in core.om.open_orders] == [order.client_id]
        armed = True
        core.writer.put(Balance("USDT", Decimal("1"), Decimal("0"), core.clock.now_ms()))
        with pytest.raises(EngineTaskFailed) as failed:
            await asyncio.wait_for(task, 30)
    finally:
        await emu.stop()
    logs = _json_lines(capsys.readouterr().out)
    assert failed.value.task == "store-writer"
    assert "injected writer failure" in str(failed.value)
    lines = [e for e in logs if e.get("event") == "task_failed"]
    assert len(lines) == 1, lines
    assert lines[0]["task"] == "store-writer" and "injected writer failure" in lines[0]["error"]
    assert lines[0]["level"] == "error"
    # the clean-up ran: nothing left working, neither in the bot nor at the (paper) exchange
    assert core.om.open_orders == []
    assert core.om.orders[order.client_id].status is OrderStatus.CANCELLED
    assert await core.paper.fetch_open_orders("BTC/USDT") == []
    assert [e["reason"] for e in logs if e.get("event") == "stopped"] == ["task store-writer failed"]
    # and the watchdog would no longer be petted
    assert not LiveRunner._store_alive(core)


def test_watchdog_withheld_when_the_store_has_been_unavailable_too_long() -> None:
    clock = SimulatedClock(1_000_000)
    core: Any = SimpleNamespace(writer=SimpleNamespace(task=None), store_down_since=None, clock=clock)
    assert LiveRunner._store_alive(core)
    core.store_down_since = clock.now_ms() - 1_000  # a short outage is a pause: still alive
    assert LiveRunner._store_alive(core)
    core.store_down_since = clock.now_ms() - STORE_DOWN_HALT_MS
    assert not LiveRunner._store_alive(core)
