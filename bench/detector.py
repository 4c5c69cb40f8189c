"""Detector quality on the seeded synthetic market: false fires on noise, detection of pressure.

    python -m bench.detector [--quick] [--seeds N] [--minutes M] [--json]

Not a timing: this is the measurement behind docs/signals.md's "false-fire rate" table, so a
reader can reproduce it. Each run is ``bot.market.synthetic.SyntheticMarket`` (the same model
the emulator and the tests use) fed event by event through ``OrderBook`` -> ``SignalEngine`` ->
``Detector`` with the default settings (window 10 s, halflife 5 min, step 1 s, persistence 3,
warm-up 60 s) and ``entry_z`` set per row:

- noise: ``pressure=False``; every entry is a false fire; reported per hour of market time;
- pressure: the default regime schedule (episodes of 20-45 s every 65-135 s); an episode counts
  as detected when an entry in its direction happens between its start and 10 s after its end;
  the latency is from the episode's start to that entry. Entries outside any episode (and its
  10 s tail) count as false fires of the pressure market; an entry *against* an episode's direction
  between its start and end counts as an opposite entry (the bot trading into the pressure it
  sees: issue "Exact numbers", item 6).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from bot.config import Settings, settings_from_dict
from bot.market.book import OrderBook
from bot.market.synthetic import SyntheticMarket
from bot.model import Trade
from bot.signals.engine import SignalEngine

TAIL_MS = 10_000


def _settings(entry_z: float) -> Settings:
    return settings_from_dict({"strategy": {"entry_z": entry_z, "exit_z": min(0.5, entry_z / 2)}}, env={})


def run_one(seed: int, minutes: float, entry_z: float, pressure: bool) -> dict[str, Any]:
    st = _settings(entry_z)
    m = SyntheticMarket(seed=seed, pressure=pressure)
    book = OrderBook()
    se = SignalEngine(st, warmup_s=st.signals.warmup)
    snap = m.snapshot()
    book.apply(snap)
    se.on_book(book, snap, snap.ts)
    end = m.start_ms + int(minutes * 60_000)
    entries: list[tuple[int, int]] = []
    while m.now_ms < end:
        for ev in m.step():
            if type(ev) is Trade:
                se.on_trade(ev)
            else:
                book.apply(ev)
                se.on_book(book, ev, ev.ts)
            sig = se.update(ev.ts)
            if sig is not None and sig.kind == "entry":
                entries.append((ev.ts, int(sig.direction)))
    warm_end = m.start_ms + int(st.signals.warmup * 1000)
    regimes = [r for r in m.regimes if r.start_ms >= warm_end and r.end_ms <= end]
    detected: list[float] = []
    false = 0
    opposite = sum(
        1 for ts, d in entries for r in m.regimes if r.start_ms <= ts <= r.end_ms and d == -r.direction
    )
    for ts, _d in entries:
        if not any(r.start_ms <= ts <= r.end_ms + TAIL_MS for r in m.regimes):
            false += 1
    for r in regimes:
        hits = [ts for ts, d in entries if d == r.direction and r.start_ms <= ts <= r.end_ms + TAIL_MS]
        if hits:
            detected.append((hits[0] - r.start_ms) / 1000.0)
    hours = (end - warm_end) / 3_600_000
    return {"entries": len(entries), "false": false, "hours": hours, "episodes": len(regimes), "detected": detected,
            "opposite": opposite}


def run(quick: bool = False, seeds: int | None = None, minutes: float | None = None) -> dict[str, Any]:
    seeds = seeds or (2 if quick else 4)
    minutes = minutes or (10.0 if quick else 30.0)
    out: dict[str, Any] = {"detector_seeds": seeds, "detector_minutes_per_seed": minutes}
    t0 = time.perf_counter()
    for z in (3.0, 2.5, 2.0):
        tag = f"z{z:g}"
        noise = [run_one(1000 + s, minutes, z, False) for s in range(seeds)]
        h = sum(r["hours"] for r in noise)
        n = sum(r["false"] for r in noise)
        out[f"noise_{tag}_false_entries"] = n
        out[f"noise_{tag}_hours"] = round(h, 3)
        out[f"noise_{tag}_false_per_hour"] = round(n / h, 3) if h else None
        press = [run_one(2000 + s, minutes, z, True) for s in range(seeds)]
        eps = sum(r["episodes"] for r in press)
        lat = [x for r in press for x in r["detected"]]
        ph = sum(r["hours"] for r in press)
        out[f"pressure_{tag}_episodes"] = eps
        out[f"pressure_{tag}_detected"] = len(lat)
        out[f"pressure_{tag}_latency_median_s"] = round(statistics.median(lat), 2) if lat else None
        out[f"pressure_{tag}_latency_max_s"] = round(max(lat), 2) if lat else None
        out[f"pressure_{tag}_false_per_hour"] = round(sum(r["false"] for r in press) / ph, 3) if ph else None
        out[f"pressure_{tag}_opposite_entries"] = sum(r["opposite"] for r in press)
    out["detector_bench_s"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.detector", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int)
    ap.add_argument("--minutes", type=float)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    res = run(a.quick, a.seeds, a.minutes)
    if a.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:36s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
