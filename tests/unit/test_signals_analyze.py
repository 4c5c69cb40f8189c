"""`bot analyze` on a hand-computed recording: buckets, OFI/MLOFI/TFI, rows, JSON fields, errors."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.signals.analyze import analyze_interval, read_events

pytest.importorskip("bot.market.recorder", reason="bot.market (book, recorder) is not in this checkout yet")

LINES = [
    {"type": "header", "format": "bot-recording/1", "exchange": "binance", "symbol": "BTC/USDT", "tick": 1.0},
    {"type": "trade", "ts": 900, "price": 100.0, "amount": 9.0, "side": "buy"},  # bucket before the snapshot's: left out
    {"type": "snapshot", "ts": 1000, "bids": [[100.0, 5.0], [99.0, 5.0]], "asks": [[101.0, 5.0], [102.0, 5.0]]},
    {"type": "delta", "ts": 1500, "bids": [[100.0, 7.0]], "asks": []},  # OFI +2 (first bucket: no row)
    {"type": "trade", "ts": 1600, "price": 101.0, "amount": 1.0, "side": "buy"},
    {"type": "delta", "ts": 2100, "bids": [], "asks": [[101.0, 0.0]]},  # ask 101 gone: L1 +5, L2 +5
    {"type": "trade", "ts": 2200, "price": 102.0, "amount": 2.0, "side": "buy"},
    {"type": "delta", "ts": 3300, "bids": [[100.0, 0.0]], "asks": []},  # bid 100 gone: L1 -7, L2 -5
    {"type": "trade", "ts": 3400, "price": 99.0, "amount": 3.0, "side": "sell"},
    # bucket 4 empty
    {"type": "delta", "ts": 5100, "bids": [[100.0, 4.0]], "asks": []},  # new best bid: L1 +4, L2 +5
    {"type": "trade", "ts": 5200, "price": 100.0, "amount": 1.0, "side": "buy"},
    {"type": "delta", "ts": 6100, "bids": [], "asks": [[101.0, 3.0]]},  # new best ask: L1 -3, L2 -5
    {"type": "trade", "ts": 6200, "price": 100.0, "amount": 1.0, "side": "sell"},
]
OFI = [5.0, -7.0, 4.0, -3.0]
OFI2 = [5.0, -5.0, 5.0, -5.0]
TFI = [2.0, -3.0, 1.0, -1.0]
DMID = [0.5, -0.5, 0.5, -0.5]  # mids 100.5 | 101, 100.5, 101, 100.5 (ticks of 1.0)

DESIGN_FIELDS = {"rows", "interval_s", "r2_ofi", "r2_mlofi", "r2_tfi", "r2_ofi_tfi", "beta_ofi", "hit_rate_next"}


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    p = tmp_path / "hand.jsonl.gz"
    with gzip.open(p, "wt") as f:
        for line in LINES:
            f.write(json.dumps(line) + "\n")
    return p


def test_buckets_and_rows_match_the_hand_computation(recording: Path) -> None:
    ev = read_events(recording, levels=2)
    assert ev.tick == 1.0
    res = analyze_interval(ev, 1.0)
    bk = res.buckets
    assert bk.bucket.tolist() == [1, 2, 3, 5, 6]  # bucket 0 (pre-snapshot trade) and empty 4 left out
    assert bk.row.tolist() == [False, True, True, True, True]
    assert bk.ofi[bk.row].tolist() == OFI
    assert bk.mlofi[bk.row][:, 1].tolist() == OFI2
    assert bk.tfi[bk.row].tolist() == TFI
    assert bk.dmid_ticks[bk.row].tolist() == DMID
    assert res.rows == 4
    assert res.fits["OFI"].r2 == pytest.approx(np.corrcoef(OFI, DMID)[0, 1] ** 2)
    assert res.fits["TFI"].r2 == pytest.approx(np.corrcoef(TFI, DMID)[0, 1] ** 2)
    assert res.fits["MLOFI"].r2 == pytest.approx(1.0)  # level 2 alone explains every move here
    slope = np.polyfit(OFI, DMID, 1)[0]
    assert res.fits["OFI"].beta[0] == pytest.approx(slope)
    # pairs (2,3) and (5,6): OFI +5 then mid down, OFI +4 then mid down
    assert res.fits["OFI"].hit_rate_next == 0.0


def test_tick_falls_back_to_the_smallest_price_increment(tmp_path: Path) -> None:
    p = tmp_path / "notick.jsonl"
    header = dict(LINES[0])
    del header["tick"]
    p.write_text("\n".join(json.dumps(x) for x in [header, *LINES[1:]]) + "\n")
    assert read_events(p, levels=2).tick == 1.0


def test_cli_json_has_exactly_the_design_fields(recording: Path) -> None:
    r = CliRunner().invoke(app, ["analyze", str(recording), "--interval", "1s", "--levels", "2", "--json"])
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert set(obj) == DESIGN_FIELDS | {"edge", "break_even"}
    assert obj["rows"] == 4 and obj["interval_s"] == 1.0 and obj["hit_rate_next"] == 0.0
    assert obj["r2_mlofi"] == pytest.approx(1.0)


def test_cli_json_with_several_intervals_is_a_list(recording: Path) -> None:
    r = CliRunner().invoke(app, ["analyze", str(recording), "--interval", "1s,2s", "--levels", "2", "--json"])
    assert r.exit_code == 0, r.output
    objs = json.loads(r.stdout)
    assert [o["interval_s"] for o in objs] == [1.0, 2.0]
    assert all(set(o) == DESIGN_FIELDS | {"edge", "break_even"} for o in objs)


def test_cli_table(recording: Path) -> None:
    r = CliRunner().invoke(app, ["analyze", str(recording), "--interval", "1s", "--levels", "2"])
    assert r.exit_code == 0, r.output
    for word in ("OFI", "MLOFI", "TFI", "OFI+TFI", "R²", "hit next"):
        assert word in r.stdout


def test_cli_usage_errors(recording: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["analyze", str(recording), "--interval", "soon"])
    assert r.exit_code == 2
    assert "--interval" in r.output
    r = CliRunner().invoke(app, ["analyze", str(tmp_path / "missing.jsonl.gz")])
    assert r.exit_code == 2
    assert "no such file" in r.output


def test_plot_writes_a_png(recording: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "a.png"
    r = CliRunner().invoke(app, ["analyze", str(recording), "--interval", "1s", "--levels", "2", "--plot", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_is_a_clear_error(recording: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    r = CliRunner().invoke(app, ["analyze", str(recording), "--plot", str(tmp_path / "a.png")])
    assert r.exit_code == 1
    assert "pip install 'ofi-bot[plot]'" in r.output


# Arrival order != ts order between the book and trade streams: a trade stamped in bucket 1
# arrives after bucket 2's first delta. The mid of bucket 1 is the book as of bucket 1's end.
LOOKAHEAD = [
    {"type": "header", "format": "bot-recording/1", "exchange": "binance", "symbol": "BTC/USDT", "tick": 1.0},
    {"type": "snapshot", "ts": 1000, "bids": [[100.0, 5.0]], "asks": [[102.0, 5.0]]},  # mid 101 (bucket 1)
    {"type": "delta", "ts": 1500, "bids": [[100.0, 6.0]], "asks": []},  # mid 101, the book at bucket 1's end
    {"type": "delta", "ts": 2100, "bids": [[101.0, 2.0]], "asks": []},  # bucket 2: mid 101.5
    {"type": "trade", "ts": 1900, "price": 102.0, "amount": 1.0, "side": "buy"},  # late trade of bucket 1
    {"type": "trade", "ts": 3500, "price": 101.0, "amount": 3.0, "side": "sell"},  # bucket 3: trades only
    {"type": "delta", "ts": 4200, "bids": [], "asks": [[102.0, 0.0], [103.0, 5.0]]},  # bucket 4: mid 102
    {"type": "trade", "ts": 4150, "price": 103.0, "amount": 2.0, "side": "buy"},  # late again, same bucket
    {"type": "delta", "ts": 5100, "bids": [[102.0, 1.0]], "asks": []},  # bucket 5: mid 102.5
]


def test_a_late_trade_never_carries_the_next_buckets_book_back(tmp_path: Path) -> None:
    p = tmp_path / "late.jsonl"
    p.write_text("\n".join(json.dumps(x) for x in LOOKAHEAD) + "\n")
    bk = analyze_interval(read_events(p, levels=1), 1.0).buckets
    assert bk.bucket.tolist() == [1, 2, 3, 4, 5]
    # bucket 1's mid is 101 (after the 1500 delta), not the 101.5 the late trade arrived on
    assert bk.mid.tolist() == [101.0, 101.5, 101.5, 102.0, 102.5]  # bucket 3 carries bucket 2's mid
    assert bk.row.tolist() == [False, True, True, True, True]
    assert bk.dmid_ticks[bk.row].tolist() == [0.5, 0.0, 0.5, 0.5]
    assert bk.tfi.tolist() == [1.0, 0.0, -3.0, 2.0, 0.0]  # every trade in the bucket of its own ts
    assert bk.ofi.tolist() == [1.0, 2.0, 0.0, 5.0, 1.0]


def test_a_trade_arriving_before_the_snapshot_counts_in_the_bucket_of_its_ts(tmp_path: Path) -> None:
    lines = [
        LOOKAHEAD[0],
        {"type": "trade", "ts": 2050, "price": 101.0, "amount": 4.0, "side": "buy"},  # bucket 2, arrives first
        {"type": "trade", "ts": 950, "price": 101.0, "amount": 7.0, "side": "buy"},  # bucket 0: left out
        *LOOKAHEAD[1:4],
    ]
    p = tmp_path / "early.jsonl"
    p.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    bk = analyze_interval(read_events(p, levels=1), 1.0).buckets
    assert bk.bucket.tolist() == [1, 2]
    assert bk.tfi.tolist() == [0.0, 4.0]
    assert bk.mid.tolist() == [101.0, 101.5]
