"""The emulator's pressure episodes: the detector never enters against the pressure (issue "Exact
numbers", item 6).

Against the emulator, during a 40 s buy-pressure episode (mid rising, every raw flow positive)
the bot went SHORT at combined z -1.03: the z-scores were measured against adaptive means that
earlier buying had raised. Here the emulator (in-process, not served: market time runs as fast
as the CPU, as in ``bench.detector``) makes its synthetic BTC/USDT market - the one ``bot
emulator serve`` publishes - and episodes are started with ``Emulator.pressure``, the call behind
``POST /_emulator/pressure``. The market's events go through ``OrderBook`` -> ``SignalEngine`` ->
``Detector`` as the trading engine feeds them. For several seeds, buy and sell episodes, back
to back in one direction (the case that tripped the drifting mean) and alternating, under the
default settings, ``bot demo``'s and an eager detector (entry_z 1, persistence 1; the old code
went long in 3 of these sell episodes): no entry against the episode's direction while it lasts.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

import bot.emulator.market
from bot.config import Settings, settings_from_dict
from bot.emulator.server import Emulator
from bot.logging import configure_logging
from bot.market.synthetic import Regime, RegimeSchedule
from bot.model import MarketEvent
from bot.runner import demo_settings

from helpers import feed_signals

SYMBOL = "BTC/USDT"
# the market's own schedule starts its first episode in ~4 months: only the test's episodes happen
ONLY_OURS = RegimeSchedule(first_s=(1e7, 1e7 + 1))

# (start offset from the end of warm-up in s, direction, seconds)
BACK_TO_BACK = [(10, 1, 40), (52, 1, 40), (94, 1, 40), (160, -1, 40), (202, -1, 40), (244, -1, 40)]
ALTERNATING = [(10, 1, 40), (70, -1, 40), (130, 1, 40), (190, -1, 40)]


def _demo(**strategy: Any) -> Settings:
    st = demo_settings("http://127.0.0.1:1", "sqlite+aiosqlite:///unused.db")
    return st.model_copy(update={"strategy": st.strategy.model_copy(update=strategy)})


CONFIGS: dict[str, tuple[Settings, float]] = {
    "defaults": (settings_from_dict({}, env={}), 60.0),
    "demo": (_demo(), 10.0),  # bot demo: window 5 s, halflife 30 s, entry_z 1.5, persistence 1, warm-up 10 s
    "eager": (_demo(entry_z=1.0, exit_z=0.2), 10.0),
}


def run(seed: int, settings: Settings, warmup_s: float,
        plan: list[tuple[int, int, int]]) -> tuple[list[Regime], list[tuple[int, int, float]]]:
    emu = Emulator(seed=seed, symbols=(SYMBOL,), schedule=ONLY_OURS)
    src = emu.sources[SYMBOL]
    todo = [(int((warmup_s + at) * 1000), d, s) for at, d, s in plan]
    end_ms = todo[-1][0] + plan[-1][2] * 1000 + 10_000
    regimes: list[Regime] = []

    def events() -> Iterator[MarketEvent]:
        yield src.initial()
        for offset, ev in src.stream():
            while todo and offset >= todo[0][0]:
                _, d, s = todo.pop(0)
                regimes.append(emu.pressure(SYMBOL, d, s))
            if offset > end_ms:
                return
            yield ev

    _, sunk = feed_signals(events(), settings, warmup_s=warmup_s)
    entries = [(s.ts, int(s.direction), s.strength) for s in sunk if s.kind == "entry"]
    return regimes, entries


def groups(regimes: list[Regime]) -> list[list[Regime]]:
    """Runs of consecutive episodes in one direction."""
    out: list[list[Regime]] = []
    for r in regimes:
        if out and out[-1][-1].direction == r.direction:
            out[-1].append(r)
        else:
            out.append([r])
    return out


@pytest.fixture(autouse=True)
def _quiet_logs() -> None:
    configure_logging("warning")  # Emulator.pressure logs one line per episode


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("plan", [BACK_TO_BACK, ALTERNATING], ids=["back_to_back", "alternating"])
def test_no_entry_against_a_pressure_episode(config: str, plan: list[tuple[int, int, int]],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    settings, warmup_s = CONFIGS[config]
    detected = runs = 0
    for seed in (1, 2, 3, 4):
        # the emulator starts its market at the wall clock; a fixed start (a different 100 ms
        # phase against the 1 s evaluation grid per seed) makes the run reproducible
        start_s = 1_700_000_000.0 + seed * 0.1
        monkeypatch.setattr(bot.emulator.market, "time", SimpleNamespace(time=lambda t=start_s: t))
        regimes, entries = run(seed, settings, warmup_s, plan)
        assert [r.direction for r in regimes] == [d for _, d, _ in plan]
        for r in regimes:
            during = [(ts - r.start_ms, d, round(z, 2)) for ts, d, z in entries if r.start_ms <= ts <= r.end_ms]
            against = [e for e in during if e[1] == -r.direction]
            assert not against, f"seed {seed}: entries against a {r.direction:+d} episode (ms in, dir, z): {against}"
        # not vacuous: the detector trades the episodes (a position is held across back-to-back
        # episodes of one direction, so each run of them counts once)
        for g in groups(regimes):
            runs += 1
            detected += any(d == g[0].direction and g[0].start_ms <= ts <= g[-1].end_ms for ts, d, _ in entries)
    assert detected >= 0.5 * runs, f"{detected} of {runs} runs of episodes traded in their direction"
