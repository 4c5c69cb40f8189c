"""``signal_edge``: the mid move after the detector's entries, on synthetic recordings with a known answer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.analytics.edge import horizon_stats, signal_edge
from bot.config import Settings, StrategySettings
from bot.market.book import OrderBook
from bot.market.recorder import RecordingReader, RecordingWriter
from bot.market.synthetic import write_synthetic_recording
from bot.model import BookDelta, BookSnapshot, Direction, Level, MarketEvent, Trade
from bot.signals.analyze import replay_signals

# a lively detector: ~100 entries in 20 minutes of noise, so the statistics mean something
SETTINGS = Settings(strategy=StrategySettings(entry_z=1.0, exit_z=0.3, persistence=1))
TICK = 0.01
DRIFT_TICKS = 10


@pytest.fixture(scope="module")
def noise(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("edge") / "noise.jsonl.gz"
    write_synthetic_recording(path, 1200, seed=3, pressure=False)
    return path


def _shift(levels: list[Level], off: int) -> list[Level]:
    return [(round(p + off * TICK, 2), q) for p, q in levels]


def inject_drift(src: Path, dst: Path, settings: Settings, drift_ticks: int) -> int:
    """Copy ``src`` with every price moved ``direction * drift_ticks`` for good, 500 ms after each entry.

    The move is a fresh snapshot of the shifted book followed by shifted events. OFI, TFI and
    depth imbalance do not depend on the price level, so the detector fires at the same times
    on the copy; the signed move after each entry is then the noise move plus exactly the drift.
    """
    entries = [s for s in replay_signals(src, settings)[0] if s.kind == "entry"]
    shifts = [(s.ts + 500, int(s.direction) * drift_ticks) for s in entries]
    book = OrderBook(tick=TICK)
    off = 0
    i = 0
    reader = RecordingReader(src)
    with RecordingWriter(dst, "synthetic", reader.header.symbol, TICK) as w:
        for ev in reader:
            if i < len(shifts) and ev.ts >= shifts[i][0] and book.has_snapshot:
                while i < len(shifts) and ev.ts >= shifts[i][0]:
                    off += shifts[i][1]
                    i += 1
                w.write(BookSnapshot(ev.ts, _shift(book.bids(), off), _shift(book.asks(), off), seq=book.seq))
            out: MarketEvent
            if isinstance(ev, Trade):
                out = Trade(ev.ts, round(ev.price + off * TICK, 2), ev.amount, ev.side, ev.trade_id)
            elif isinstance(ev, BookDelta):
                book.apply(ev)
                out = BookDelta(ev.ts, _shift(ev.bids, off), _shift(ev.asks, off), ev.seq, ev.first_seq)
            else:
                book.apply(ev)
                out = BookSnapshot(ev.ts, _shift(ev.bids, off), _shift(ev.asks, off), ev.seq)
            w.write(out)
    return len(entries)


def test_pure_noise_has_no_edge(noise: Path) -> None:
    """On a market without any information, the mean move after entries is within 3 standard errors of 0."""
    edge = signal_edge(noise, SETTINGS)
    assert edge["signals"] > 80
    for key, h in edge["horizons"].items():
        assert h["n"] > 80, key
        assert h["se_bps"] > 0
        assert abs(h["mean_bps"]) < 3 * h["se_bps"], (key, h)
        assert h["hit_rate"] is not None and 0.3 < h["hit_rate"] < 0.7, (key, h)
        # a one- to few-tick spread on a 60 000 market: half a tick is ~0.0008 bps
        assert 0.5 * TICK / 60000 * 1e4 <= h["mean_half_spread_bps"] < 2 * TICK / 60000 * 1e4
        # a round trip crosses twice: (mean move - 2 half-spreads) / 2 per side
        assert h["break_even_fee_bps"] == pytest.approx((h["mean_bps"] - 2 * h["mean_half_spread_bps"]) / 2)


def test_injected_drift_after_signals_is_measured_within_10_percent(noise: Path, tmp_path: Path) -> None:
    dst = tmp_path / "drift.jsonl.gz"
    n_entries = inject_drift(noise, dst, SETTINGS, DRIFT_TICKS)
    base = signal_edge(noise, SETTINGS)
    edge = signal_edge(dst, SETTINGS)
    assert edge["signals"] == base["signals"] == n_entries  # same entries on the shifted copy
    h1 = edge["horizons"]["1s"]
    assert h1["n"] == n_entries
    assert h1["mean_ticks"] == pytest.approx(DRIFT_TICKS, rel=0.10)
    # exactly the drift on top of the noise move, entry by entry
    assert h1["mean_ticks"] - base["horizons"]["1s"]["mean_ticks"] == pytest.approx(DRIFT_TICKS, abs=1e-6)
    assert h1["hit_rate"] == 1.0
    assert h1["t"] > 10
    assert h1["mean_bps"] == pytest.approx(DRIFT_TICKS * TICK / 60000 * 1e4, rel=0.15)
    assert h1["break_even_fee_bps"] > 0


def test_horizon_stats_by_hand() -> None:
    s = horizon_stats([1.0, 3.0, -1.0, 0.0], [10.0, 30.0, -10.0, 0.0], [2.0, 2.0, -2.0, 2.0], [0.5] * 4)
    assert s["n"] == 4
    assert s["mean_bps"] == 0.75
    assert s["mean_ticks"] == 7.5
    assert s["se_bps"] == pytest.approx(math.sqrt(((0.25**2 + 2.25**2 + 1.75**2 + 0.75**2) / 3) / 4))
    assert s["hit_rate"] == pytest.approx(2 / 3)  # zero moves are left out
    assert s["break_even_fee_bps"] == pytest.approx((0.75 - 2 * 0.5) / 2)  # both legs cross: -0.125 per side
    assert s["slope_bps_per_z"] == pytest.approx((2 + 6 - 2 + 0) / 16)
    empty = horizon_stats([], [], [], [])
    assert empty["n"] == 0 and empty["mean_bps"] is None and empty["se_bps"] is None


def test_signals_are_signed_by_direction(noise: Path) -> None:
    """Long and short entries both appear, so the sign convention is exercised."""
    edge = signal_edge(noise, SETTINGS)
    assert edge["long"] > 10 and edge["short"] > 10
    assert edge["long"] + edge["short"] == edge["signals"]
    assert Direction.LONG == 1


def test_analyze_json_has_edge_and_table_prints(noise: Path) -> None:
    from bot.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["analyze", str(noise), "--interval", "10s", "--json"])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)
    edge = obj["edge"]
    assert set(edge["horizons"]) == {"1s", "10s", "60s"}
    assert edge["signals"] == signal_edge(noise, Settings())["signals"]
    res = runner.invoke(app, ["analyze", str(noise), "--interval", "10s"])
    assert res.exit_code == 0, res.output
    assert "Signal edge" in res.stdout and "break-even" in res.stdout
