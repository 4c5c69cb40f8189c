"""Streaming SignalEngine == vectorised `bot analyze`, and the detector on synthetic markets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.config import Settings, StrategySettings
from bot.model import Direction, ImbalanceSignal, Trade
from bot.signals.analyze import bucketize, read_events
from bot.signals.engine import SignalEngine

pytest.importorskip("bot.market.recorder", reason="bot.market (book, recorder) is not in this checkout yet")


def stream(path: Path, settings: Settings, record_interval_ms: int | None = None) -> tuple[SignalEngine, list[ImbalanceSignal]]:
    """Feed a recording through OrderBook + SignalEngine exactly as the trading engine does."""
    from bot.market.book import OrderBook
    from bot.market.recorder import RecordingReader

    reader = RecordingReader(path)
    tick = reader.header.tick
    book = OrderBook(tick=tick)
    sunk: list[ImbalanceSignal] = []
    eng = SignalEngine(settings, sink=sunk.append, tick=tick, record_interval_ms=record_interval_ms)
    for ev in reader:
        if isinstance(ev, Trade):
            eng.on_trade(ev)
        else:
            book.apply(ev)
            eng.on_book(book, ev, ev.ts)
        eng.detector.update(ev.ts)
    return eng, sunk


def assert_parity(path: Path, interval_ms: int, levels: int = 5) -> int:
    ev = read_events(path, levels)
    bk = bucketize(ev, interval_ms)
    eng, _ = stream(path, Settings(), record_interval_ms=interval_ms)
    s = eng.bucket_sums()
    idx = np.searchsorted(s["bucket"], bk.bucket[bk.row])
    assert np.array_equal(s["bucket"][idx], bk.bucket[bk.row])
    np.testing.assert_allclose(s["ofi"][idx], bk.ofi[bk.row], rtol=0, atol=1e-9)
    np.testing.assert_allclose(s["tfi"][idx], bk.tfi[bk.row], rtol=0, atol=1e-9)
    np.testing.assert_allclose(s["mlofi"][idx], bk.mlofi[bk.row], rtol=0, atol=1e-9)
    np.testing.assert_allclose(s["mid"][idx], bk.mid[bk.row], rtol=0, atol=1e-9)
    return int(bk.row.sum())


def _synthetic(tmp_path: Path, name: str, seconds: int, **kw: Any) -> tuple[Path, list[Any]]:
    synthetic = pytest.importorskip("bot.market.synthetic", reason="bot.market.synthetic is not in this checkout yet")
    write_synthetic_recording = synthetic.write_synthetic_recording

    p = tmp_path / name
    regimes = write_synthetic_recording(p, seconds, **kw)
    return p, list(regimes)


def _is_long(direction: Any) -> bool:
    v = getattr(direction, "value", direction)
    return v in (1, "long", "buy", "LONG", "BUY")


@pytest.mark.parametrize("interval_ms", [1000, 10_000])
def test_streaming_equals_analyze_on_a_real_recording(real_recordings: dict[str, Path], interval_ms: int) -> None:
    rows = assert_parity(real_recordings["btcusdt"], interval_ms)
    assert rows > 60


def test_streaming_equals_analyze_on_a_synthetic_recording(tmp_path: Path) -> None:
    p, _ = _synthetic(tmp_path, "syn.jsonl.gz", 240, seed=11, pressure=True)
    assert assert_parity(p, 1000) > 100


def test_detector_fires_long_within_injected_buy_pressure(tmp_path: Path) -> None:
    p, regimes = _synthetic(tmp_path, "pressure.jsonl.gz", 600, seed=7, pressure=True)
    longs = [r for r in regimes if _is_long(r.direction)]
    assert longs, "the synthetic market injected no buy pressure"
    _, sunk = stream(p, Settings())
    entries = [s for s in sunk if s.kind == "entry"]
    hits = [s for s in entries if s.direction is Direction.LONG and any(r.start_ms <= s.ts <= r.end_ms for r in longs)]
    assert hits, f"no long entry inside {[(r.start_ms, r.end_ms) for r in longs]}; entries: {[(s.ts, s.direction) for s in entries]}"
    # samples (1/s) and every entry/exit went to the sink
    assert sum(s.kind == "sample" for s in sunk) > 400


def test_detector_stays_quiet_on_pure_noise_at_entry_z_3(tmp_path: Path) -> None:
    p, regimes = _synthetic(tmp_path, "noise.jsonl.gz", 600, seed=7, pressure=False)
    assert not regimes
    settings = Settings(strategy=StrategySettings(entry_z=3.0, exit_z=0.5, persistence=3))
    eng, sunk = stream(p, settings)
    assert [s for s in sunk if s.kind == "entry"] == []
    snap = eng.snapshot()
    assert {"combined", "ofi", "mlofi", "tfi", "imbalance", "absorption", "cvd", "microprice"} <= set(snap)
