"""Benchmark: `bot replay` throughput end to end, and its memory as the recording grows.

    python -m bench.replay [--quick] [--events N] [--big N]

Why: research replays hours of market data; the replay must run far faster than real time
(target >= 100k events/s) and its memory must not grow with the recording (a leak there
is a leak in the live bot, which runs the same engine for weeks).

Recordings are synthetic (``bot.market.synthetic.write_synthetic_recording`` with 10 ms
steps, ~300 events per simulated second), written once to ``/tmp/bot-bench/`` and reused.
Each replay runs in a fresh child process (``python -m bench.replay --child PATH``) so the
peak RSS (``ru_maxrss``) belongs to that replay alone.

What runs in the child, stated in the result's ``replay_mode``:

* ``engine``: ``bot.engine.run_replay(recording, Settings(), db_url)`` - reader, book,
  signals, strategy, risk, paper broker and the store (SQLite in a temp dir), i.e.
  ``bot replay``;
* ``reader+book+signals (no engine)``: while ``bot.engine.run_replay`` does not exist, the
  part of it that is there: ``RecordingReader`` -> ``OrderBook.apply`` ->
  ``SignalEngine.on_book``/``on_trade`` -> ``detector.update`` per event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(os.environ.get("BOT_BENCH_DIR", tempfile.gettempdir())) / "bot-bench"
STEP_MS = 10


def has_engine() -> bool:
    """True once ``bot.engine.run_replay`` exists (the lead's engine landed)."""
    try:
        from bot import engine
    except ImportError:
        return False
    return callable(getattr(engine, "run_replay", None))


def recording(n_events: int) -> Path:
    """A synthetic recording of about ``n_events`` events (cached by size in ``BENCH_DIR``)."""
    from bot.market.synthetic import write_synthetic_recording

    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    path = BENCH_DIR / f"synthetic_{n_events}.jsonl.gz"
    if not path.is_file():
        # ~1 snapshot + (1 delta + ~2 trades) per step: calibrate on 60 s, then size the run
        cal = BENCH_DIR / "calibrate.jsonl.gz"
        write_synthetic_recording(cal, 60, seed=7, step_ms=STEP_MS)
        per_s = max(1, sum(1 for _ in _lines(cal)) - 1) / 60
        tmp = path.with_suffix(".part.gz")
        write_synthetic_recording(tmp, n_events / per_s, seed=7, step_ms=STEP_MS)
        tmp.rename(path)
        cal.unlink()
    return path


def _lines(path: Path) -> Any:
    import gzip

    with gzip.open(path, "rb") as f:
        yield from f


def _rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _child_no_engine(path: Path) -> dict[str, Any]:
    from bot.config import Settings
    from bot.logging import configure_logging

    configure_logging("error")
    from bot.market.book import OrderBook
    from bot.market.recorder import RecordingReader
    from bot.model import Trade
    from bot.signals.engine import SignalEngine

    reader = RecordingReader(path)
    tick = getattr(reader.header, "tick", None)
    book = OrderBook(tick=tick)
    eng = SignalEngine(Settings(), sink=None, tick=tick)
    apply, on_book, on_trade, update = book.apply, eng.on_book, eng.on_trade, eng.detector.update
    n = 0
    rss_marks: list[int] = []
    t0 = time.perf_counter()
    for ev in reader:
        if type(ev) is Trade:
            on_trade(ev)
        else:
            apply(ev)
            on_book(book, ev, ev.ts)
        update(ev.ts)
        n += 1
        if n & 0xFFFFF == 0:  # every ~1M events
            rss_marks.append(_rss_kb())
    dt = time.perf_counter() - t0
    return {
        "events": n,
        "seconds": dt,
        "mode": "reader+book+signals (no engine)",
        "entries": eng.detector.entries,
        "rss_marks_kb": rss_marks,
    }


def _child_engine(path: Path) -> dict[str, Any]:
    from bot.config import Settings
    from bot.engine import run_replay
    from bot.logging import configure_logging

    configure_logging("error")
    with tempfile.TemporaryDirectory() as d:
        url = f"sqlite+aiosqlite:///{Path(d) / 'replay.db'}"
        t0 = time.perf_counter()
        summary = asyncio.run(run_replay(path, Settings(), url))
        wall = time.perf_counter() - t0
    events = int(summary.events)
    seconds = float(getattr(summary, "seconds", wall) or wall)
    return {
        "events": events,
        "seconds": seconds,
        "wall_seconds": wall,
        "mode": "engine (bot replay)",
        "rss_marks_kb": [],
    }


def child(path: Path, mode: str) -> dict[str, Any]:
    res = _child_engine(path) if mode == "engine" else _child_no_engine(path)
    res["peak_rss_kb"] = _rss_kb()
    return res


def replay_in_child(path: Path, mode: str, timeout: float = 1800.0) -> dict[str, Any]:
    """One replay in a fresh interpreter; its result dict (events, seconds, peak_rss_kb, ...)."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.replay", "--child", str(path), "--mode", mode],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if out.returncode != 0:
        raise RuntimeError(f"replay child failed ({out.returncode}): {out.stderr[-2000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run(quick: bool = False, events: int | None = None, big: int | None = None) -> dict[str, Any]:
    """``events``: the measured replay (default 1M, quick 200k); ``big``: a second, larger one for memory."""
    n = events or (200_000 if quick else 1_000_000)
    mode = "engine" if has_engine() else "no-engine"
    small = replay_in_child(recording(n), mode)
    res: dict[str, Any] = {
        "replay_mode": small["mode"],
        "replay_events": small["events"],
        "replay_seconds": round(small["seconds"], 3),
        "replay_events_per_s": round(small["events"] / small["seconds"]) if small["seconds"] else None,
        "replay_peak_rss_mb": round(small["peak_rss_kb"] / 1024, 1),
    }
    if big:
        large = replay_in_child(recording(big), mode, timeout=7200)
        grow = (
            (large["peak_rss_kb"] - small["peak_rss_kb"]) * 1024 / max(1, large["events"] - small["events"])
        )
        res.update(
            {
                "replay_big_events": large["events"],
                "replay_big_events_per_s": round(large["events"] / large["seconds"]),
                "replay_big_peak_rss_mb": round(large["peak_rss_kb"] / 1024, 1),
                "replay_rss_growth_bytes_per_event": round(grow, 4),
                "replay_big_rss_marks_mb": [round(k / 1024, 1) for k in large.get("rss_marks_kb", [])],
            }
        )
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200k events (< 20 s once the file exists)")
    ap.add_argument("--events", type=int, default=None, help="events in the measured replay")
    ap.add_argument(
        "--big", type=int, default=None, help="also replay this many events (memory check), e.g. 10000000"
    )
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="no-engine", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child, args.mode)))
        return
    res = run(args.quick, args.events, args.big)
    width = max(len(k) for k in res)
    for k, v in res.items():
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
