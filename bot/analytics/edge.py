"""Signal edge: after each entry signal of the detector, how far did the mid move its way?

Why: R² says OFI explains the contemporaneous mid change; a trade needs the move AFTER the
signal, larger than the costs. This replays a recording through the same streaming path the
bot trades on (``OrderBook`` -> ``SignalEngine`` -> ``Detector``, the call order of
``bot.signals.engine``) and measures, for each entry signal and horizon h:

* ``mid_0``: the mid when the signal fired (the book after the event that produced it);
* ``mid_h``: the first mid at or after ``signal.ts + h`` (the markout rule of
  ``bot.analytics.markouts``); a signal whose horizon runs past the end is left out
  (``incomplete``);
* ``move = direction * (mid_h - mid_0)``, in ticks and in bps of ``mid_0``.

Per horizon: ``n``, mean ticks and bps, the standard error of the mean bps (sample std / √n),
``t`` = mean/se, the hit rate (share of moves > 0 among the non-zero ones), the mean
half-spread at the signal (bps) and the break-even fee of a round trip priced by the one cost
model (``bot.analytics.cost.round_trip_cost``: cross in, cross out, the half-spread paid on each
crossing): ``(mean_bps - round-trip spread) / 2``, the largest fee per side at which the average
signal's round trip would not lose. It is measured from the signal's mid with no latency, so it
is an upper bound; ``bot analyze`` also reports the break-even of the engine's own zero-fee
replay (``bot.analytics.breakeven``), which counts latency, the exit rule and fills as traded. ``slope_bps_per_z`` is the through-origin least
squares slope of the move on |strength| (a calibration for ``CostGate``'s prior).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from pathlib import Path
from typing import Any

import numpy as np

from bot.analytics.cost import round_trip_cost
from bot.config import Settings
from bot.model import Direction, Trade

DEFAULT_HORIZONS_S: tuple[float, ...] = (1.0, 10.0, 60.0)


def _num(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def horizon_stats(moves_bps: list[float], moves_ticks: list[float], strengths: list[float],
                  half_spreads_bps: list[float]) -> dict[str, Any]:
    """The per-horizon figures (see the module docstring); nulls where undefined."""
    n = len(moves_bps)
    b = np.asarray(moves_bps, dtype=np.float64)
    tk = np.asarray(moves_ticks, dtype=np.float64)
    mean = float(b.mean()) if n else math.nan
    se = float(b.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    nz = b[b != 0]
    hs = float(np.mean(half_spreads_bps)) if n else math.nan
    s = np.abs(np.asarray(strengths, dtype=np.float64))
    ss = float(s @ s) if n else 0.0
    return {
        "n": n,
        "mean_ticks": _num(float(tk.mean()) if n else math.nan),
        "mean_bps": _num(mean),
        "se_bps": _num(se),
        "t": _num(mean / se if se and se > 0 else math.nan),
        "hit_rate": _num(float((nz > 0).mean()) if len(nz) else math.nan),
        "mean_half_spread_bps": _num(hs),
        "break_even_fee_bps": _num((mean - round_trip_cost(half_spread_bps=hs, entry_aggressive=True, taker_fee_bps=0.0,
                                                           maker_fee_bps=0.0).spread_bps) / 2),
        "slope_bps_per_z": _num(float(s @ b) / ss if ss > 0 else math.nan),
    }


def signal_edge(recording_path: str | Path, settings: Settings,
                horizons_s: tuple[float, ...] | list[float] = DEFAULT_HORIZONS_S) -> dict[str, Any]:
    """Replay ``recording_path`` and measure the mid move after each entry signal (see module doc)."""
    from bot.market.book import OrderBook
    from bot.market.recorder import RecordingReader
    from bot.signals.engine import SignalEngine

    reader = RecordingReader(recording_path)
    header = reader.header
    tick_h = getattr(header, "tick", None)
    tick = float(tick_h) if tick_h else None
    book = OrderBook(symbol=getattr(header, "symbol", "") or "", tick=tick)
    eng = SignalEngine(settings, tick=tick)
    mid_ts: list[int] = []
    mids: list[float] = []
    # (ts, direction, strength, mid_0, half_spread_bps)
    sigs: list[tuple[int, int, float, float, float]] = []
    min_step = math.inf
    cur_mid = math.nan
    cur_hs = math.nan
    for ev in reader:
        if type(ev) is Trade:
            eng.on_trade(ev)
        else:
            book.apply(ev)
            eng.on_book(book, ev, ev.ts)
            if book.healthy:
                bb, ba = book.best_bid_price(), book.best_ask_price()
                if bb == bb and ba == ba:
                    cur_mid = (bb + ba) * 0.5
                    cur_hs = (ba - bb) * 0.5 / cur_mid * 1e4
                    if tick is None and ba > bb:
                        min_step = min(min_step, ba - bb)
                    if mid_ts and ev.ts < mid_ts[-1]:
                        ts = mid_ts[-1]  # ts stepped back: keep the series sorted (clock never runs back)
                    else:
                        ts = ev.ts
                    mid_ts.append(ts)
                    mids.append(cur_mid)
                else:
                    cur_mid = math.nan
            else:
                cur_mid = math.nan
        sig = eng.detector.update(ev.ts)
        if sig is not None and sig.kind == "entry" and sig.direction is not Direction.FLAT and cur_mid == cur_mid:
            sigs.append((sig.ts, int(sig.direction), float(sig.strength), cur_mid, cur_hs))
    if tick is None:
        tick = eng.tick or (min_step if math.isfinite(min_step) else 1.0)
    assert tick is not None
    horizons: dict[str, Any] = {}
    for h in horizons_s:
        h_ms = round(h * 1000)
        bps: list[float] = []
        ticks: list[float] = []
        strengths: list[float] = []
        spreads: list[float] = []
        incomplete = 0
        for ts, d, strength, m0, hs in sigs:
            i = bisect_left(mid_ts, ts + h_ms)
            if i >= len(mid_ts):
                incomplete += 1
                continue
            mv = d * (mids[i] - m0)
            ticks.append(mv / tick)
            bps.append(mv / m0 * 1e4)
            strengths.append(strength)
            spreads.append(hs)
        stats = horizon_stats(bps, ticks, strengths, spreads)
        stats["horizon_s"] = h
        stats["incomplete"] = incomplete
        horizons[f"{h:g}s"] = stats
    return {
        "recording": str(recording_path),
        "symbol": getattr(header, "symbol", "") or "",
        "tick": tick,
        "signals": len(sigs),
        "long": sum(1 for s in sigs if s[1] > 0),
        "short": sum(1 for s in sigs if s[1] < 0),
        "entry_z": settings.strategy.entry_z,
        "horizons": horizons,
    }


def render_edge_table(edge: dict[str, Any]) -> Any:
    """A rich Table of ``signal_edge``'s result: one row per horizon."""
    from rich.table import Table

    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    title = (f"Signal edge: mid move after {edge['signals']} entry signals "
             f"({edge['long']} long, {edge['short']} short; entry_z {edge['entry_z']:g}), signed by direction")
    table = Table(title=title)
    for col in ("horizon", "n", "mean ticks", "mean bps", "se bps", "t", "hit rate", "half-spread bps",
                "break-even fee bps"):
        table.add_column(col, justify="right")
    for key, s in edge["horizons"].items():
        table.add_row(key, str(s["n"]), f(s["mean_ticks"], ".3f"), f(s["mean_bps"], ".3f"), f(s["se_bps"], ".3f"),
                      f(s["t"], ".2f"), f(s["hit_rate"], ".3f"), f(s["mean_half_spread_bps"], ".4f"),
                      f(s["break_even_fee_bps"], ".3f"))
    return table
