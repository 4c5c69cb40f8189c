"""Smoke test of the benchmark harness: each bench runs on a tiny size and returns its keys.

No timing is asserted (numbers depend on the machine); what a user relies on is that
``python -m bench --json`` produces one object with the documented keys, and that the
feed bench really reproduces ccxt's book (its correctness check runs inside ``run``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

# bench/ is a top-level package next to bot/, not installed: import it from the checkout
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import __main__ as bench_main
from bench import feed, latency, replay

HEADLINE = [
    "book_vs_ccxt_ratio",
    "signals_vs_book_ratio",
    "feed_overhead_vs_ccxt",
    "replay_events_per_s",
    "tick_to_order_p99_ms",
    "sqlite_fills_per_s",
]


@pytest.mark.skipif(not feed.CAPTURE.is_file(), reason="real Binance capture not present")
def test_feed_bench_keys_and_parity() -> None:
    res = feed.run(quick=True, limit=300)
    assert res["depth_messages"] + res["trade_messages"] == 300
    assert res["checked_messages"] == res["depth_messages"]  # ours == ccxt's top N after every message
    for k in ("ccxt_us_per_msg", "ours_us_per_msg", "feed_overhead_vs_ccxt"):
        assert res[k] > 0


def test_replay_bench_on_a_tiny_recording(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay, "BENCH_DIR", tmp_path)
    res = replay.run(events=3000)
    assert res["replay_events"] > 1000
    assert res["replay_events_per_s"] > 0
    assert res["replay_peak_rss_mb"] > 0
    assert res["replay_mode"] in ("engine (bot replay)", "reader+book+signals (no engine)")
    assert list(tmp_path.glob("synthetic_3000.jsonl.gz"))


def test_latency_bench_counts_every_order() -> None:
    res = latency.run(orders=100)
    assert res["tick_to_order_orders"] == 100
    assert 0 < res["tick_to_order_p50_ms"] <= res["tick_to_order_p99_ms"] <= res["tick_to_order_max_ms"]


def test_main_merges_results_and_judges_targets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake: dict[str, Any] = {
        "book": lambda q: {"book_vs_ccxt_ratio": 0.8, "book_us": 1.0, "data": "x"},
        "signals": lambda q: {"signals_vs_book_ratio": 1.5, "book_us": 2.0},
        "feed": lambda q: {"feed_overhead_vs_ccxt": 0.1},
        "replay": lambda q: {"replay_events_per_s": 150_000},
        "latency": lambda q: {"tick_to_order_p99_ms": 0.5},
        "store": lambda q: {"sqlite_fills_per_s": 25_000},
        "broken": lambda q: 1 / 0,
    }
    monkeypatch.setattr(bench_main, "_benches", lambda: fake)
    bench_main.main(["--quick", "--json"])
    out = json.loads(capsys.readouterr().out)  # exactly one JSON object
    for k in HEADLINE:
        assert k in out
    assert out["book_book_us"] == 1.0 and out["signals_book_us"] == 2.0  # clashing keys kept apart
    assert out["met"]["book_vs_ccxt_ratio"] is True
    assert out["met"]["signals_vs_book_ratio"] is False
    assert out["errors"] == {"broken": "ZeroDivisionError: division by zero"}
    assert out["machine"]["nproc"] >= 1 and out["machine"]["python"]
    assert out["command"] == "python -m bench --quick --json"
    bench_main.main(["--quick"])
    text = capsys.readouterr().out
    assert "signals_vs_book_ratio" in text and "NO" in text


@pytest.mark.slow
def test_loop_lag_bench_against_the_emulator() -> None:
    from bench import loop_lag

    res = loop_lag.run(seconds=1.0)
    # the shape of the result, not a timing: under CI load (drills beside it) a 1 s run may
    # get only a few of its 10 ms ticks in
    assert res["loop_lag_ticks"] > 0
    assert res["loop_lag_p99_ms"] >= res["loop_lag_p50_ms"] >= 0
    assert res["loop_lag_book_events_per_s"] > 0
