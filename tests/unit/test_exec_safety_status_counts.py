"""``skipped_for_cost`` (entries the cost gate refused) in ``TradingCore.status()`` and /metrics."""

from __future__ import annotations

from typing import Any

import orjson

from bot.clock import SimulatedClock
from bot.config import settings_from_dict
from bot.engine import TradingCore
from bot.execution.paper_broker import PaperBroker
from bot.model import BookSnapshot, Direction, ImbalanceSignal
from bot.risk.market_rules import MarketRules
from bot.status_server import dumps_status, prometheus_text

from helpers import ListSink

T0 = 1_723_075_200_000


def _samples(text: str) -> dict[str, str]:
    return {ln.rsplit(" ", 1)[0]: ln.rsplit(" ", 1)[1] for ln in text.splitlines() if not ln.startswith("#")}


async def test_skipped_for_cost_is_in_status_and_prometheus() -> None:
    settings = settings_from_dict({"strategy": {"cost_gate": True}}, env={})
    clock = SimulatedClock(T0)
    sink: Any = ListSink()
    core = TradingCore(settings, clock=clock, broker=PaperBroker(clock, settings.paper, settings.symbol),
                       writer=sink, run_id=1, rules=MarketRules.binance_spot(settings.symbol))
    core.state = "trading"
    await core.on_event(BookSnapshot(ts=T0, bids=[(60000.0, 1.0)], asks=[(60001.0, 1.0)], seq=1, recv=T0))
    status = core.status()
    assert status["counts"]["skipped_for_cost"] == 0
    assert _samples(prometheus_text(status))["bot_skipped_for_cost_total"] == "0"
    # two weak entries: the conservative prior (0.1 bps per z) never pays a 10 bps taker fee
    for i in range(2):
        sig = ImbalanceSignal(T0 + i, Direction.LONG, 2.5, {"ofi": 2.5}, kind="entry")
        core._on_detector(sig, core.book.mid())
    assert core.strategy.gate is not None and core.strategy.gate.skipped_for_cost == 2
    status = core.status()
    assert status["counts"]["skipped_for_cost"] == 2 == core.summary(0.0).extra["skipped_for_cost"]
    assert orjson.loads(dumps_status(status))["counts"]["skipped_for_cost"] == 2
    text = prometheus_text(status)
    assert _samples(text)["bot_skipped_for_cost_total"] == "2"
    assert "# TYPE bot_skipped_for_cost_total counter" in text
    assert [r.kind for r in sink.records if isinstance(r, ImbalanceSignal)].count("skipped_for_cost") == 2


def test_prometheus_leaves_skipped_for_cost_out_when_the_status_has_no_counts() -> None:
    assert "skipped_for_cost" not in prometheus_text({"state": "starting"})
