"""Detector: persistence, hysteresis and the sampled stream, on hand-written score sequences."""

from __future__ import annotations

from collections.abc import Mapping

from bot.config import Settings, StrategySettings
from bot.model import Direction, ImbalanceSignal
from bot.signals.detector import Detector


def run(scores: list[float | None], **kw: object) -> tuple[list[ImbalanceSignal | None], list[ImbalanceSignal]]:
    """Feed one score per step (ts = 250 ms apart); None = no new step closed."""
    it = iter(scores)

    def source(ts: int) -> Mapping[str, float] | None:
        v = next(it)
        return None if v is None else {"combined": v, "ofi": v / 2}

    sunk: list[ImbalanceSignal] = []
    det = Detector(source, sink=sunk.append, **kw)  # type: ignore[arg-type]
    out = [det.update(1_000_000 + 250 * i) for i in range(len(scores))]
    return out, sunk


def test_entry_needs_persistence_consecutive_confirmations() -> None:
    out, _ = run([2.5, 2.5, 1.0, 2.5, 2.5, 2.6], entry_z=2.0, exit_z=0.5, persistence=3)
    assert out[:5] == [None] * 5  # the 1.0 broke the first streak
    sig = out[5]
    assert sig is not None
    assert (sig.kind, sig.direction, sig.strength, sig.ts) == ("entry", Direction.LONG, 2.6, 1_001_250)
    assert sig.components == {"combined": 2.6, "ofi": 1.3}


def test_exit_only_under_exit_z_hysteresis() -> None:
    out, _ = run([-3.0, -3.0, -3.0, -1.9, -0.6, -0.4, 3.0], entry_z=2.0, exit_z=0.5, persistence=3)
    assert out[2] is not None and out[2].direction is Direction.SHORT
    assert out[3] is None and out[4] is None  # back inside entry_z but not under exit_z: hold
    ex = out[5]
    assert ex is not None and (ex.kind, ex.direction) == ("exit", Direction.FLAT)
    assert out[6] is None  # a new entry again needs persistence


def test_direction_flip_counts_from_scratch() -> None:
    out, _ = run([2.1, 2.1, -2.1, -2.1, -2.1], persistence=3)
    assert out[:4] == [None] * 4
    assert out[4] is not None and out[4].direction is Direction.SHORT


def test_sampled_rows_once_per_sample_interval_and_every_signal_to_the_sink() -> None:
    scores: list[float | None] = [0.1, None, None, None, 3.0, None, None, None, 0.2]
    _, sunk = run(scores, persistence=1, sample_interval_ms=1000)
    kinds = [(s.kind, s.ts) for s in sunk]
    assert kinds == [("sample", 1_000_000), ("entry", 1_001_000), ("sample", 1_001_000), ("exit", 1_002_000), ("sample", 1_002_000)]
    assert sunk[2].direction is Direction.LONG and sunk[2].strength == 3.0


def test_from_settings_reads_strategy_and_signals_sections() -> None:
    s = Settings(strategy=StrategySettings(entry_z=3.0, exit_z=1.0, persistence=5))
    det = Detector.from_settings(s, lambda ts: None)
    assert (det.entry_z, det.exit_z, det.persistence, det.sample_interval_ms) == (3.0, 1.0, 5, 1000)
