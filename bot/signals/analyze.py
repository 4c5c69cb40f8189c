"""``bot analyze``: how much of the mid-price change do OFI, multi-level OFI and TFI explain?

Why: before trading a signal, measure it. This replays a recording through the same
``OrderBook`` the bot uses (one sequential pass: the book is inherently sequential), keeps
the top-``levels`` view after every book event in numpy arrays, and does everything else
vectorised: per-event OFI (:func:`bot.signals.ofi.cks_e_array`), per-interval sums
(``np.bincount``), and OLS with intercept (``np.linalg.lstsq``).

Definitions (DESIGN.md, "bot analyze --json"): bucket = floor(ts / interval), every event
(book or trade) by its own ``ts``, whatever its arrival position (the book and trade streams
step back a few ms against each other); a book event is one delta line, OFI compares the
levels before and after it; a snapshot contributes no OFI (it only resets the book); buckets
before the first snapshot's bucket are left out. The mid of a bucket is the book *as of the
bucket's end*: the mid after the last book event (arrival order) whose ts is in the bucket; a
trade never sets it (a trade stamped in bucket k that arrives after bucket k+1's first delta
would otherwise carry k+1's book into k), and a bucket with trades only carries the previous
bucket's mid forward. The mid change of a bucket is its mid minus the previous non-empty
bucket's mid, in ticks, so the bucket of the first snapshot gives no row; empty buckets are
left out; the tick comes from the header, else from the smallest price increment seen; TFI is
buy minus sell aggressor volume; ``hit_rate_next`` is the share of rows k whose OFI sign
equals the sign of the mid change of bucket k+1, among pairs where bucket k+1 is a row and
both are non-zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bot.model import BookDelta, BookSnapshot, MarketEvent, Side, Trade
from bot.signals.ofi import INF, cks_e_array

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

KIND_SNAPSHOT, KIND_DELTA, KIND_TRADE = 0, 1, 2

PLOT_MISSING = "--plot needs matplotlib, which is not installed; install the optional extra: pip install 'ofi-bot[plot]'"


@dataclass
class EventArrays:
    """One row per event in arrival order: book events from the first snapshot on, every trade.

    A trade that arrives before the first snapshot is kept: it belongs to the bucket of its own
    ``ts``, and :func:`bucketize` leaves out the buckets before the first snapshot's bucket.
    """

    ts: IntArray
    kind: npt.NDArray[np.int8]
    ofi: FloatArray  # (n, levels) per-level OFI of the event (0 for snapshots and trades)
    tfi: FloatArray  # signed aggressor volume (0 for book events)
    mid: FloatArray  # mid after a book event (nan when the book is not usable; nan for trades)
    tick: float
    levels: int
    symbol: str = ""
    start_ts: int = -1  # ts of the first snapshot (arrival order); -1 when there is none


def _infer_tick(prices: FloatArray) -> float:
    """Smallest positive increment between distinct prices, cleaned of float noise."""
    u = np.unique(prices[np.isfinite(prices) & (prices > 0)])
    if len(u) < 2:
        return math.nan
    d = float(np.min(np.diff(u)))
    return round(d, -math.floor(math.log10(d)) + 6)


def extract(
    events: Iterable[MarketEvent],
    levels: int,
    *,
    tick: float | None = None,
    symbol: str = "",
    progress: Callable[[int], None] | None = None,
) -> EventArrays:
    """Replay ``events`` through an ``OrderBook`` and return per-event arrays (vectorised OFI)."""
    from bot.market.book import OrderBook

    book = OrderBook(symbol=symbol, tick=tick)
    L = levels
    ts_l: list[int] = []
    kind_l: list[int] = []
    tfi_l: list[float] = []
    healthy_l: list[bool] = []  # per event: book usable after it
    # top-L view after every event (trades repeat the last view: cheap, keeps arrays aligned)
    bp_l: list[list[float]] = []
    bq_l: list[list[float]] = []
    ap_l: list[list[float]] = []
    aq_l: list[list[float]] = []
    seen_prices: list[float] = []
    empty_bid = [0.0] * L
    empty_ask_p = [INF] * L
    view: tuple[list[float], list[float], list[float], list[float]] = (empty_bid, empty_bid, empty_ask_p, empty_bid)
    healthy = False
    started = False
    start_ts = -1
    count = 0
    for ev in events:
        count += 1
        if progress is not None and count % 20_000 == 0:
            progress(count)
        if isinstance(ev, Trade):
            ts_l.append(ev.ts)
            kind_l.append(KIND_TRADE)
            tfi_l.append(ev.amount if ev.side is Side.BUY else -ev.amount)
        else:
            if isinstance(ev, BookSnapshot):
                if not started:
                    started, start_ts = True, ev.ts
                k = KIND_SNAPSHOT
            elif isinstance(ev, BookDelta):
                if not started:
                    continue
                k = KIND_DELTA
            else:  # pragma: no cover - typed input
                continue
            book.apply(ev)
            if tick is None:
                seen_prices.extend(p for p, _ in ev.bids)
                seen_prices.extend(p for p, _ in ev.asks)
            healthy = bool(book.healthy)
            if healthy:
                bids = book.top_bids(L)
                asks = book.top_asks(L)
                view = (
                    [bids[i][0] if i < len(bids) else 0.0 for i in range(L)],
                    [bids[i][1] if i < len(bids) else 0.0 for i in range(L)],
                    [asks[i][0] if i < len(asks) else INF for i in range(L)],
                    [asks[i][1] if i < len(asks) else 0.0 for i in range(L)],
                )
            else:
                view = (empty_bid, empty_bid, empty_ask_p, empty_bid)
            ts_l.append(ev.ts)
            kind_l.append(k)
            tfi_l.append(0.0)
        healthy_l.append(healthy)
        bp_l.append(view[0])
        bq_l.append(view[1])
        ap_l.append(view[2])
        aq_l.append(view[3])
    if progress is not None:
        progress(count)

    n = len(ts_l)
    kind = np.array(kind_l, dtype=np.int8)
    ok = np.array(healthy_l, dtype=bool)
    bp = np.array(bp_l, dtype=np.float64).reshape(n, L)
    bq = np.array(bq_l, dtype=np.float64).reshape(n, L)
    ap = np.array(ap_l, dtype=np.float64).reshape(n, L)
    aq = np.array(aq_l, dtype=np.float64).reshape(n, L)
    ofi = np.zeros((n, L), dtype=np.float64)
    book_idx = np.flatnonzero(kind != KIND_TRADE)
    if len(book_idx) > 1:
        cur, prev = book_idx[1:], book_idx[:-1]
        e = cks_e_array(bp[cur], bq[cur], ap[cur], aq[cur], bp[prev], bq[prev], ap[prev], aq[prev])
        valid = (kind[cur] == KIND_DELTA) & ok[cur] & ok[prev]
        ofi[cur] = np.where(valid[:, None], e, 0.0)
    with np.errstate(invalid="ignore"):
        usable = ok & (kind != KIND_TRADE) & np.isfinite(ap[:, 0]) & (bp[:, 0] > 0)
        mid = np.where(usable, (bp[:, 0] + ap[:, 0]) * 0.5, np.nan)
    if tick is None:
        tick = _infer_tick(np.array(seen_prices, dtype=np.float64)) if seen_prices else math.nan
    return EventArrays(
        ts=np.array(ts_l, dtype=np.int64),
        kind=kind,
        ofi=ofi,
        tfi=np.array(tfi_l, dtype=np.float64),
        mid=mid,
        tick=float(tick),
        levels=L,
        symbol=symbol,
        start_ts=start_ts,
    )


def read_events(path: Path, levels: int, progress: Callable[[int], None] | None = None) -> EventArrays:
    """Read a bot-recording/1 file and extract its per-event arrays."""
    from bot.market.recorder import RecordingReader

    reader = RecordingReader(path)
    header = reader.header
    tick = getattr(header, "tick", None)
    symbol = getattr(header, "symbol", "") or ""
    return extract(reader, levels, tick=float(tick) if tick else None, symbol=symbol, progress=progress)


@dataclass
class Buckets:
    """Per-interval sums over the non-empty buckets from the first snapshot's bucket on (sorted by bucket)."""

    interval_ms: int
    bucket: IntArray
    ofi: FloatArray
    mlofi: FloatArray  # (n, levels)
    tfi: FloatArray
    mid: FloatArray  # the book as of the bucket's end: mid after its last book event, else carried forward
    dmid_ticks: FloatArray  # nan where not a row
    row: npt.NDArray[np.bool_]  # bucket enters the regression


def bucketize(ev: EventArrays, interval_ms: int) -> Buckets:
    """Per-bucket sums and the bucket mid (the book as of the bucket's end; see the module docstring)."""
    b = ev.ts // interval_ms
    # every event by its own ts; the buckets before the first snapshot's bucket are left out
    idx = np.flatnonzero(b >= ev.start_ts // interval_ms) if ev.start_ts >= 0 else np.zeros(0, dtype=np.int64)
    keys, inv = np.unique(b[idx], return_inverse=True)
    inv = inv.reshape(-1)
    m = len(keys)
    ofi = np.bincount(inv, weights=ev.ofi[idx, 0], minlength=m) if m else np.zeros(0)
    mlofi = np.stack([np.bincount(inv, weights=ev.ofi[idx, j], minlength=m) for j in range(ev.levels)], axis=1) if m else np.zeros((0, ev.levels))
    tfi = np.bincount(inv, weights=ev.tfi[idx], minlength=m) if m else np.zeros(0)
    mid = np.full(m, np.nan)
    if m:
        # the last *book* event (arrival order) whose ts is in the bucket; a trade never sets the
        # mid, so a late trade of bucket k cannot carry bucket k+1's book into k
        book = ev.kind[idx] != KIND_TRADE
        last = np.full(m, -1, dtype=np.int64)
        np.maximum.at(last, inv[book], idx[book])
        # buckets with trades only carry the previous bucket's mid forward (nan included)
        src = np.maximum.accumulate(np.where(last >= 0, np.arange(m, dtype=np.int64), -1))
        has = src >= 0
        mid[has] = ev.mid[last[src[has]]]
    dmid = np.full(m, np.nan)
    if m > 1:
        dmid[1:] = (mid[1:] - mid[:-1]) / ev.tick
    row = np.isfinite(dmid)
    f64 = np.float64
    return Buckets(
        interval_ms,
        keys.astype(np.int64),
        np.asarray(ofi, dtype=f64),
        np.asarray(mlofi, dtype=f64).reshape(m, ev.levels),
        np.asarray(tfi, dtype=f64),
        np.asarray(mid, dtype=f64),
        dmid,
        row,
    )


@dataclass
class Fit:
    r2: float
    beta: list[float]
    t: list[float]
    hit_rate_next: float
    names: list[str] = field(default_factory=list)


def ols(y: FloatArray, x: FloatArray) -> tuple[float, FloatArray, FloatArray]:
    """OLS with intercept: (R², slopes, their t-stats). nan where undefined."""
    n, p = len(y), (x.shape[1] if x.ndim == 2 else 1)
    x = x.reshape(n, p)
    a = np.column_stack([np.ones(n), x])
    if n <= p + 1:
        return math.nan, np.full(p, np.nan), np.full(p, np.nan)
    coef, _, _, _ = np.linalg.lstsq(a, y, rcond=None)
    resid = y - a @ coef
    ssr = float(resid @ resid)
    sst = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - ssr / sst if sst > 0 else math.nan
    s2 = ssr / (n - p - 1)
    cov = s2 * np.linalg.pinv(a.T @ a)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = coef / np.sqrt(np.diag(cov))
    return r2, np.asarray(coef[1:], dtype=np.float64), np.asarray(t[1:], dtype=np.float64)


def hit_rate(signal: FloatArray, bucket: IntArray, dmid: FloatArray) -> float:
    """Share of rows k with sign(signal_k) == sign(dmid of bucket k+1), both non-zero, k+1 a row."""
    if len(bucket) < 2:
        return math.nan
    nxt = bucket[1:] == bucket[:-1] + 1
    s, d = np.sign(signal[:-1][nxt]), np.sign(dmid[1:][nxt])
    both = (s != 0) & (d != 0)
    n = int(both.sum())
    return float((s[both] == d[both]).sum()) / n if n else math.nan


@dataclass
class IntervalResult:
    interval_s: float
    rows: int
    fits: dict[str, Fit]
    buckets: Buckets

    def to_json(self) -> dict[str, Any]:
        """Exactly the DESIGN.md fields (nan becomes null)."""

        def num(v: float) -> float | None:
            return None if v is None or not math.isfinite(v) else float(v)

        return {
            "rows": self.rows,
            "interval_s": self.interval_s,
            "r2_ofi": num(self.fits["OFI"].r2),
            "r2_mlofi": num(self.fits["MLOFI"].r2),
            "r2_tfi": num(self.fits["TFI"].r2),
            "r2_ofi_tfi": num(self.fits["OFI+TFI"].r2),
            "beta_ofi": num(self.fits["OFI"].beta[0]),
            "hit_rate_next": num(self.fits["OFI"].hit_rate_next),
        }


def analyze_interval(ev: EventArrays, interval_s: float) -> IntervalResult:
    interval_ms = max(1, round(interval_s * 1000))
    bk = bucketize(ev, interval_ms)
    r = bk.row
    y = bk.dmid_ticks[r]
    bucket = bk.bucket[r]
    ofi, tfi, ml = bk.ofi[r], bk.tfi[r], bk.mlofi[r]
    specs: dict[str, tuple[FloatArray, list[str]]] = {
        "OFI": (ofi[:, None], ["ofi"]),
        "MLOFI": (ml, [f"ofi{j + 1}" for j in range(ev.levels)]),
        "TFI": (tfi[:, None], ["tfi"]),
        "OFI+TFI": (np.column_stack([ofi, tfi]), ["ofi", "tfi"]),
    }
    fits: dict[str, Fit] = {}
    for name, (x, names) in specs.items():
        r2, beta, t = ols(y, x)
        if x.shape[1] == 1:
            direction = x[:, 0]  # the raw signal's sign (DESIGN.md's hit_rate_next for OFI)
        else:
            direction = x @ np.nan_to_num(beta)  # the fitted direction, intercept left out
        fits[name] = Fit(r2, beta.tolist(), t.tolist(), hit_rate(direction, bucket, y), names)
    return IntervalResult(interval_s, int(r.sum()), fits, bk)


def analyze_events(ev: EventArrays, intervals: list[float]) -> list[IntervalResult]:
    return [analyze_interval(ev, s) for s in intervals]


# --------------------------------------------------------------------------- streaming replay (plot)


def replay_signals(path: Path, settings: Any) -> tuple[list[Any], list[tuple[int, float, float]]]:
    """Run the streaming ``SignalEngine`` over a recording: (entry/exit signals, (ts, mid, cvd) per second)."""
    from bot.market.book import OrderBook
    from bot.market.recorder import RecordingReader
    from bot.signals.engine import SignalEngine

    reader = RecordingReader(path)
    tick = getattr(reader.header, "tick", None)
    book = OrderBook(symbol=getattr(reader.header, "symbol", "") or "", tick=tick)
    eng = SignalEngine(settings, tick=float(tick) if tick else None)
    signals: list[Any] = []
    series: list[tuple[int, float, float]] = []
    next_s = -1
    for ev in reader:
        if isinstance(ev, Trade):
            eng.on_trade(ev)
        else:
            book.apply(ev)
            eng.on_book(book, ev, ev.ts)
        sig = eng.detector.update(ev.ts)
        if sig is not None:
            signals.append(sig)
        if ev.ts >= next_s:
            next_s = ev.ts - ev.ts % 1000 + 1000
            series.append((ev.ts, eng._mid(), eng.cvd))
    return signals, series


def plot_analysis(path: Path, results: list[IntervalResult], out: Path, settings: Any) -> None:
    """PNG: OFI vs mid-change scatter with the OLS line; mid, CVD and detector signals over time."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError(PLOT_MISSING) from exc
    res = results[0]
    bk = res.buckets
    x, y = bk.ofi[bk.row], bk.dmid_ticks[bk.row]
    signals, series = replay_signals(path, settings)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 9))
    ax1.scatter(x, y, s=8, alpha=0.5)
    if len(x) > 2:
        slope, icpt = np.polyfit(x, y, 1)
        xs = np.linspace(float(x.min()), float(x.max()), 50)
        ax1.plot(xs, icpt + slope * xs, color="red", label=f"OLS: R²={res.fits['OFI'].r2:.3f}, β={slope:.4g}")
        ax1.legend()
    ax1.set_xlabel(f"OFI per {res.interval_s:g}s interval")
    ax1.set_ylabel("mid change (ticks)")
    ax1.set_title(f"{path.name}: OFI vs mid change")
    if series:
        t = (np.array([s[0] for s in series]) - series[0][0]) / 1000.0
        ax2.plot(t, [s[1] for s in series], color="black", lw=0.8, label="mid")
        ax2.set_xlabel("seconds")
        ax2.set_ylabel("mid")
        ax3 = ax2.twinx()
        ax3.plot(t, [s[2] for s in series], color="tab:blue", lw=0.8, label="CVD")
        ax3.set_ylabel("CVD")
        mids = dict(zip((s[0] // 1000 for s in series), (s[1] for s in series), strict=False))
        for sig in signals:
            ts = (sig.ts - series[0][0]) / 1000.0
            m = mids.get(sig.ts // 1000, np.nan)
            marker = {1: "^", -1: "v", 0: "x"}[int(sig.direction)]
            color = {1: "green", -1: "red", 0: "grey"}[int(sig.direction)]
            ax2.scatter([ts], [m], marker=marker, color=color, s=60, zorder=5)
        ax2.set_title("mid (black), CVD (blue), detector entries ▲▼ and exits ×")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- command line


def parse_intervals(text: str) -> list[float]:
    """'10s' or '1s,10s,60s' -> seconds; ValueError naming the bad part."""
    from bot.config import parse_duration

    out: list[float] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(parse_duration(part))
        except ValueError as exc:
            raise ValueError(f"--interval: {exc}") from None
    if not out:
        raise ValueError("--interval: give at least one interval, e.g. 10s or 1s,10s,60s")
    return out


def render_table(path: Path, ev: EventArrays, results: list[IntervalResult]) -> Any:
    """A rich Table: one row per (interval, regressor set)."""
    from rich.table import Table

    def f(v: float, fmt: str = ".4f") -> str:
        return "-" if v is None or not math.isfinite(v) else format(v, fmt)

    table = Table(title=f"{path.name}: OLS of mid change (ticks, tick={ev.tick:g}) per interval, with intercept")
    for col in ("interval", "rows", "regressors", "R²", "beta", "t-stat", "hit next"):
        table.add_column(col, justify="right" if col not in ("regressors",) else "left")
    for res in results:
        for i, (name, fit) in enumerate(res.fits.items()):
            table.add_row(
                f"{res.interval_s:g}s" if i == 0 else "",
                str(res.rows) if i == 0 else "",
                name,
                f(fit.r2),
                ", ".join(f(b, ".4g") for b in fit.beta),
                ", ".join(f(t, ".2f") for t in fit.t),
                f(fit.hit_rate_next, ".3f"),
            )
    return table


def run_cli(recording: Path, interval: str, levels: int, as_json: bool, plot: Path | None,
            settings: Any = None) -> int:
    """The body of ``bot analyze``; returns the exit code (2 for usage errors).

    ``settings`` (``--config``): the strategy whose signal edge and zero-fee replay break-even are
    reported; defaults with ``--levels`` when None.
    """
    import json
    import sys

    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    err = Console(stderr=True, soft_wrap=True)
    try:
        intervals = parse_intervals(interval)
    except ValueError as exc:
        err.print(str(exc), markup=False, highlight=False)
        return 2
    if levels < 1:
        err.print(f"--levels: must be >= 1 (got {levels})", markup=False, highlight=False)
        return 2
    if not recording.is_file():
        err.print(f"RECORDING: no such file: {recording}", markup=False, highlight=False)
        return 2
    if plot is not None:
        try:
            import matplotlib  # noqa: F401  (fail before the long read, not after it)
        except ImportError:
            err.print(PLOT_MISSING, markup=False, highlight=False)
            return 1
    # a progress bar on long files (an animated one only on a terminal)
    big = recording.stat().st_size > 5_000_000
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]reading[/] {task.description}"),
        TextColumn("{task.completed:,} events"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not (big and err.is_terminal),
    ) as prog:
        task = prog.add_task(recording.name, total=None)
        try:
            ev = read_events(recording, levels, progress=lambda n: prog.update(task, completed=n))
        except Exception as exc:
            err.print(f"{recording}: cannot read recording: {exc}", markup=False, highlight=False)
            return 1
    if ev.start_ts < 0:
        err.print(f"{recording}: no book snapshot in the recording, nothing to analyze", markup=False, highlight=False)
        return 1
    results = analyze_events(ev, intervals)
    # signal edge (bot.analytics.edge): the mid move after the detector's entries; and the break-even
    # fee of the engine's own zero-fee replay (bot.analytics.breakeven): the number to decide on
    import asyncio

    from bot.analytics.breakeven import replay_break_even
    from bot.analytics.edge import render_edge_table, signal_edge
    from bot.config import Settings, SignalSettings
    from bot.logging import configure_logging

    if settings is None:
        settings = Settings(signals=SignalSettings(levels=levels))
    try:
        edge = signal_edge(recording, settings)
        configure_logging("error", stream=sys.stderr)  # the replay's decisions are not analyze's output
        be = asyncio.run(replay_break_even(recording, settings))
    except Exception as exc:
        err.print(f"{recording}: cannot measure the signal edge: {exc}", markup=False, highlight=False)
        return 1
    if as_json:
        objs = [{**r.to_json(), "edge": edge, "break_even": be} for r in results]
        sys.stdout.write(json.dumps(objs[0] if len(objs) == 1 else objs) + "\n")
    else:
        out = Console()
        if not out.is_terminal:
            out = Console(width=140)
        out.print(render_table(recording, ev, results))
        out.print(render_edge_table(edge))
        fee = be["break_even_fee_bps"]
        out.print(
            f"zero-fee replay of this config: {be['fills']} fills, {be['round_trips']} round trips, gross PnL "
            f"{be['gross_pnl']} on {be['notional']} notional -> break-even fee "
            + (f"{fee:.3f} bps per side" if fee is not None else "n/a (no fills)"),
            markup=False, highlight=False,
        )
    if plot is not None:
        try:
            plot_analysis(recording, results, plot, settings)
        except RuntimeError as exc:
            err.print(str(exc), markup=False, highlight=False)
            return 1
        if not as_json:
            err.print(f"plot written to {plot}", markup=False, highlight=False)
    return 0
