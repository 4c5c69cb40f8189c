"""``bot monitor``: a full-screen terminal view of what a running bot sees and does.

Why a separate process polling ``GET /status`` rather than a view inside the bot: the
monitor can start, crash or be quit at any time without touching the trading loop, and the
same view works on a replay (``--replay``), where ``bot.engine.replay_with_status`` feeds the
status dicts directly.

Why ``render`` is a pure function of (status, history, flags): the view is tested by
rendering a fixed status JSON on rich's recording console and reading the numbers off the
text, with no terminal, network or clock involved. Everything impure (polling, keys, the
``Live`` display) sits in ``run_monitor`` / ``run_replay_monitor``.

Every field of the status may be missing while the bot starts; the view shows ``-`` for
it and never raises on an odd value.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import math
import os
import re
import signal
import sys
import tempfile
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import orjson
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.layout import Layout
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from bot.config import Settings

SPARK = "▁▂▃▄▅▆▇█"
_EIGHTHS = " ▏▎▍▌▋▊▉█"
HISTORY_LEN = 240
_SERIES = ("ofi", "mlofi", "tfi", "cvd", "imbalance", "combined", "mid")


# --------------------------------------------------------------------------- history


@dataclass
class MonitorHistory:
    """Rings of recent values for the sparklines, one per series.

    A status with the same ``ts`` as the previous one is not added twice, so a bot that
    stands still (or a paused poll) does not stretch the sparklines flat.
    """

    maxlen: int = HISTORY_LEN
    series: dict[str, deque[float]] = field(default_factory=dict)
    last_ts: Any = None
    pushed: int = 0

    def push(self, status: Mapping[str, Any] | None) -> bool:
        """Record one status; returns False when it was a repeat (same ``ts``) or empty."""
        if not isinstance(status, Mapping):
            return False
        ts = status.get("ts")
        if ts is not None and ts == self.last_ts:
            return False
        self.last_ts = ts
        signals = _map(status.get("signals"))
        zscores = _map(status.get("zscores"))
        detector = _map(status.get("detector"))
        values = {
            "ofi": signals.get("ofi"),
            "mlofi": signals.get("mlofi"),
            "tfi": signals.get("tfi"),
            "cvd": signals.get("cvd"),
            "imbalance": signals.get("imbalance"),
            "combined": zscores.get("combined", detector.get("combined_z")),
            "mid": _map(status.get("book")).get("mid"),
        }
        for name, raw in values.items():
            v = _float(raw)
            if v is not None:
                self.series.setdefault(name, deque(maxlen=self.maxlen)).append(v)
        self.pushed += 1
        return True

    def values(self, name: str) -> list[float]:
        return list(self.series.get(name, ()))


# --------------------------------------------------------------------------- formatting


def _map(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _float(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _dec(v: Any) -> Decimal | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        d = Decimal(str(v))
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


def fmt_num(v: Any, max_decimals: int = 8) -> str:
    """A market value (float) in its shortest plain form: 60000.005, 0.01, 12345; '-' if missing."""
    f = _float(v)
    if f is None:
        return "-"
    s = f"{f:.{max_decimals}f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _fmt_fixed(v: float, decimals: int) -> str:
    return f"{v:.{decimals}f}"


def _decimals(values: Sequence[float], cap: int = 8) -> int:
    """Decimals needed to show every value exactly (up to ``cap``), for an aligned column."""
    best = 0
    for v in values:
        s = fmt_num(v, cap)
        if "." in s:
            best = max(best, len(s) - s.index(".") - 1)
    return best


def fmt_signal(v: Any) -> str:
    f = _float(v)
    if f is None:
        return "-"
    return f"{f:+.1f}" if abs(f) >= 1000 else f"{f:+.4g}"


def fmt_z(v: Any) -> str:
    f = _float(v)
    return "-" if f is None else f"{f:+.2f}"


def fmt_money(v: Any) -> str:
    """Money as the exact decimal string the bot sent ('-' when missing)."""
    d = _dec(v)
    return "-" if d is None else str(v).strip() if isinstance(v, str) else str(d)


def _money_style(v: Any) -> str:
    d = _dec(v)
    if d is None or d == 0:
        return ""
    return "green" if d > 0 else "red"


def fmt_ts(ts: Any) -> str:
    f = _float(ts)
    if f is None:
        return "--:--:--.---"
    try:
        t = dt.datetime.fromtimestamp(f / 1000.0, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        return "--:--:--.---"
    return t.strftime("%H:%M:%S.") + f"{t.microsecond // 1000:03d}"


def sparkline(values: Sequence[float], width: int, *, lo: float | None = None, hi: float | None = None) -> str:
    """The last ``width`` values as block characters, scaled to [lo, hi] (default: their range)."""
    vals = [v for v in values[-width:] if math.isfinite(v)] if width > 0 else []
    if not vals:
        return ""
    lo = min(vals) if lo is None else lo
    hi = max(vals) if hi is None else hi
    if hi <= lo:
        return SPARK[len(SPARK) // 2 - 1] * len(vals)
    top = len(SPARK) - 1
    return "".join(SPARK[min(top, max(0, round((v - lo) / (hi - lo) * top)))] for v in vals)


def bar(fraction: float, width: int) -> str:
    """A horizontal bar of ``width`` cells filled to ``fraction`` (eighth-cell resolution)."""
    if width <= 0:
        return ""
    fraction = min(1.0, max(0.0, fraction))
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    s = "█" * full + (_EIGHTHS[part] if part and full < width else "")
    return s.ljust(width)


# --------------------------------------------------------------------------- pieces


@dataclass
class _Spark:
    """A sparkline that takes the width it is given (a table cell or panel)."""

    values: list[float]
    style: str = "cyan"
    lo: float | None = None
    hi: float | None = None
    z_entry: float | None = None
    z_exit: float | None = None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = max(1, options.max_width)
        line = sparkline(self.values, width, lo=self.lo, hi=self.hi)
        if self.z_entry is None:
            yield Text(line, style=self.style, no_wrap=True, overflow="crop")
            return
        # combined z: colour each cell by where it sits against the thresholds
        text = Text(no_wrap=True, overflow="crop")
        for ch, v in zip(line, self.values[-width:], strict=False):
            a = abs(v)
            if a >= self.z_entry:
                text.append(ch, style="bold green" if v > 0 else "bold red")
            elif self.z_exit is not None and a >= self.z_exit:
                text.append(ch, style="yellow")
            else:
                text.append(ch, style="dim")
        yield text


@dataclass
class _Ladder:
    """The book ladder: asks above, bids below, depth bars, our resting orders marked.

    The number of levels follows the height it is given, so a taller terminal shows a
    deeper book.
    """

    book: Mapping[str, Any]
    orders: list[Mapping[str, Any]]
    levels: int | None = None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        bids = _levels(self.book.get("bids"))
        asks = _levels(self.book.get("asks"))
        n = self.levels
        if n is None:
            n = max(1, (options.height - 5) // 2) if options.height else 10
        bids, asks = bids[:n], asks[:n]
        decimals = _decimals([p for p, _ in bids + asks] + [p for p in _order_prices(self.orders)])
        size_dec = min(_decimals([q for _, q in bids + asks], 8), 8)
        biggest = max([q for _, q in bids + asks], default=0.0)
        width = max(20, options.max_width)
        price_w = max([len(_fmt_fixed(p, decimals)) for p, _ in bids + asks] + [5])
        size_w = max([len(_fmt_fixed(q, size_dec)) for _, q in bids + asks] + [4])
        mine_w = min(12, max(6, width - 4 - price_w - size_w - 3 - 4))
        bar_w = max(3, width - 4 - mine_w - price_w - size_w - 3)
        ours = _orders_by_price(self.orders)

        def grid(header: bool) -> Table:
            t = Table.grid(padding=(0, 1))
            t.add_column("ours", width=mine_w, no_wrap=True, justify="right")
            t.add_column("price", width=price_w, justify="right", no_wrap=True)
            t.add_column("size", width=size_w, justify="right", no_wrap=True)
            t.add_column("depth", no_wrap=True, width=bar_w)
            if header:
                t.add_row(*(Text(h, style="dim") for h in ("ours", "price", "size", "depth")))
            return t

        def row(t: Table, p: float, q: float, style: str) -> None:
            t.add_row(_mine(ours.get(_key(p))), Text(_fmt_fixed(p, decimals), style=style),
                      _fmt_fixed(q, size_dec), Text(bar(q / biggest if biggest else 0, bar_w), style=style))

        ask_t, bid_t = grid(True), grid(False)
        for p, q in reversed(asks):
            row(ask_t, p, q, "red")
        for p, q in bids:
            row(bid_t, p, q, "green")
        mid_line = Text.assemble(("── mid ", "dim"), (fmt_num(self.book.get("mid")), "bold"),
                                 ("  spread ", "dim"), (fmt_num(self.book.get("spread")), "bold"), (" ──", "dim"),
                                 justify="center", no_wrap=True, overflow="ellipsis")
        parts: list[RenderableType] = [ask_t, mid_line, bid_t]
        if not bids and not asks:
            parts.append(Text("no book yet", style="dim", justify="center"))
        healthy = self.book.get("healthy")
        border = "green" if healthy is True else "red" if healthy is False else "dim"
        yield Panel(Group(*parts), title="book", border_style=border, padding=(0, 1))


def _levels(raw: Any) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for lvl in _list(raw):
        if isinstance(lvl, list | tuple) and len(lvl) >= 2:
            p, q = _float(lvl[0]), _float(lvl[1])
            if p is not None and q is not None:
                out.append((p, q))
    return out


def _key(price: float) -> str:
    return fmt_num(price, 10)


def _order_prices(orders: list[Mapping[str, Any]]) -> list[float]:
    return [p for o in orders if (p := _float(o.get("price"))) is not None]


def _orders_by_price(orders: list[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for o in orders:
        p = _float(o.get("price"))
        if p is not None:
            out.setdefault(_key(p), []).append(o)
    return out


def _mine(orders: list[Mapping[str, Any]] | None) -> Text:
    if not orders:
        return Text("")
    o = orders[0]
    side = str(o.get("side", "?"))
    style = "bold black on green" if side == "buy" else "bold black on red"
    remaining = _dec(o.get("amount"))
    filled = _dec(o.get("filled")) or Decimal(0)
    amount = fmt_money(remaining - filled) if remaining is not None else "-"
    more = f"+{len(orders) - 1}" if len(orders) > 1 else ""
    return Text(f"◀{side[:1].upper()} {amount}{more}", style=style)


def _header(status: Mapping[str, Any] | None, paused: bool, source: str) -> Text:
    s = _map(status)
    health = _map(s.get("health"))
    state = str(s.get("state") or "-")
    state_style = {"trading": "bold green", "halted": "bold white on red", "reconciling": "yellow",
                   "starting": "yellow", "stopping": "yellow"}.get(state, "bold")
    feed = str(health.get("feed") or "-")
    store = str(health.get("store") or "-")
    lag = _float(health.get("loop_lag_ms"))
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(f" {s.get('symbol') or '-'} ", style="bold reverse")
    t.append(f"  {s.get('mode') or '-'}  run {s.get('run_id') if s.get('run_id') is not None else '-'}  ")
    t.append(state.upper(), style=state_style)
    t.append("  feed ")
    t.append(feed, style="green" if feed == "up" else "red" if feed == "down" else "yellow")
    t.append("  store ")
    t.append(store, style="green" if store == "ok" else "red")
    t.append(f"  lag {fmt_num(lag, 1) + ' ms' if lag is not None else '-'}")
    t.append(f"  {fmt_ts(s.get('ts'))} UTC", style="dim")
    if paused:
        t.append("  PAUSED", style="bold black on yellow")
    t.append("   q quit · p pause", style="dim")
    if source:
        t.append(f"   {source}", style="dim")
    return t


def _banners(status: Mapping[str, Any] | None, error: str | None, notice: str | None) -> list[Text]:
    out: list[Text] = []
    if error:
        out.append(Text(f" ⚠ {error} ", style="bold white on red"))
    s = _map(status)
    risk = _map(s.get("risk"))
    if risk.get("halted") is True:
        kind = risk.get("halt_kind") or "halt"
        reason = risk.get("halt_reason") or "no reason given"
        out.append(Text(f" HALTED ({kind}): {reason} — no new orders; `bot resume` after review ",
                        style="bold white on red"))
    book = _map(s.get("book"))
    if book.get("healthy") is False:
        out.append(Text(f" book unhealthy: {book.get('reason') or 'unknown'} — no new orders until resynced ",
                        style="bold black on yellow"))
    if notice:
        out.append(Text(f" {notice} ", style="bold black on cyan"))
    return out


def _market_panel(status: Mapping[str, Any], history: MonitorHistory) -> Panel:
    book = _map(status.get("book"))
    signals = _map(status.get("signals"))
    zs = _map(status.get("zscores"))
    det = _map(status.get("detector"))
    entry = _float(det.get("entry_z"))
    exit_ = _float(det.get("exit_z"))

    top = Text.assemble(
        ("mid ", "dim"), (fmt_num(book.get("mid")), "bold"),
        ("  spread ", "dim"), (fmt_num(book.get("spread")), "bold"),
        ("  micro ", "dim"), (fmt_num(book.get("microprice")), "bold"),
        ("  updates ", "dim"), (fmt_num(book.get("updates"), 0), ""),
    )
    top.no_wrap = True
    top.overflow = "ellipsis"

    table = Table.grid(padding=(0, 1), expand=True)
    table.add_column("signal", no_wrap=True, min_width=9)
    table.add_column("value", justify="right", no_wrap=True, min_width=9)
    table.add_column("z", justify="right", no_wrap=True, min_width=6)
    table.add_column("history", ratio=1, no_wrap=True)
    rows = [("OFI", "ofi"), ("MLOFI", "mlofi"), ("TFI", "tfi"), ("CVD", "cvd"), ("imbalance", "imbalance")]
    for label, key in rows:
        z = zs.get(key)
        zf = _float(z)
        zstyle = "" if zf is None or entry is None or abs(zf) < entry else ("bold green" if zf > 0 else "bold red")
        table.add_row(label, fmt_signal(signals.get(key)), Text(fmt_z(z), style=zstyle),
                      _Spark(history.values(key), style="cyan"))
    combined = zs.get("combined", det.get("combined_z"))
    zmax = max([abs(v) for v in history.values("combined")] + [entry * 1.25 if entry else 1.0])
    table.add_row(Text("combined z", style="bold"), "", Text(fmt_z(combined), style="bold"),
                  _Spark(history.values("combined"), lo=-zmax, hi=zmax, z_entry=entry or math.inf, z_exit=exit_))
    state = str(det.get("state") or "-")
    det_line = Text.assemble(
        ("detector ", "dim"),
        (state.upper(), {"long": "bold green", "short": "bold red"}.get(state, "bold")),
        ("  z ", "dim"), (fmt_z(det.get("combined_z", combined)), "bold"),
        ("  entry ±", "dim"), (f"{entry:.2f}" if entry is not None else "-", ""),
        ("  exit ±", "dim"), (f"{exit_:.2f}" if exit_ is not None else "-", ""),
        ("  persistence ", "dim"), (fmt_num(det.get("persistence"), 0), ""),
    )
    det_line.no_wrap = True
    det_line.overflow = "ellipsis"
    others = [k for k in signals if k not in {k for _, k in rows} | {"microprice", "mid", "spread"}]
    extra = Text(no_wrap=True, overflow="ellipsis")
    for k in others:
        extra.append(f"{k} ", style="dim")
        extra.append(f"{fmt_signal(signals.get(k))}  ")
    parts: list[RenderableType] = [top, table, det_line]
    if others:
        parts.append(extra)
    return Panel(Group(*parts), title="market & signals", border_style="cyan", padding=(0, 1))


@dataclass
class _Pairs:
    """Label/value pairs laid out 3, 2 or 1 to a row, whatever fits without cutting a number."""

    pairs: list[tuple[str, Text]]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        label_w = max(len(k) for k, _ in self.pairs)
        value_w = max(len(v.plain) for _, v in self.pairs)
        cell = label_w + value_w + 3
        per_row = max(1, min(3, (options.max_width + 2) // cell))
        g = Table.grid(padding=(0, 1), expand=per_row > 1)
        for _ in range(per_row):
            g.add_column(no_wrap=True, style="dim", min_width=label_w)
            g.add_column(no_wrap=True, justify="right", min_width=value_w)
        for i in range(0, len(self.pairs), per_row):
            chunk = self.pairs[i:i + per_row]
            cells: list[RenderableType] = []
            for k, v in chunk:
                cells += [k, v]
            cells += [""] * (2 * per_row - len(cells))
            g.add_row(*cells)
        yield g


def _position_panel(status: Mapping[str, Any]) -> Panel:
    pos = _map(status.get("position"))
    amount = pos.get("amount")
    realized, unrealized = pos.get("realized_pnl"), pos.get("unrealized_pnl")
    total = None
    r, u = _dec(realized), _dec(unrealized)
    if r is not None or u is not None:
        total = (r or Decimal(0)) + (u or Decimal(0))
    pairs = [
        ("position", Text(fmt_money(amount), style=f"bold {_money_style(amount)}".strip())),
        ("avg price", Text(fmt_money(pos.get("avg_price")))),
        ("equity", Text(fmt_money(pos.get("equity")), style="bold")),
        ("realised", Text(fmt_money(realized), style=_money_style(realized))),
        ("unrealised", Text(fmt_money(unrealized), style=_money_style(unrealized))),
        ("fees", Text(fmt_money(pos.get("fees")))),
        ("total PnL", Text(fmt_money(total), style=f"bold {_money_style(total)}".strip())),
    ]
    return Panel(_Pairs(pairs), title="position & PnL", border_style="magenta", padding=(0, 1))


_LIMIT_NAMES = {"position_pct": "position", "daily_loss_pct": "daily loss", "drawdown_pct": "drawdown",
                "orders_per_minute_pct": "orders/min"}


@dataclass
class _Gauges:
    risk: Mapping[str, Any]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        limits = _map(self.risk.get("limits"))
        width = max(10, options.max_width)
        bar_w = max(4, width - 12 - 8 - 2)
        g = Table.grid(padding=(0, 1))
        g.add_column(no_wrap=True, width=12, style="dim")
        g.add_column(no_wrap=True, width=bar_w)
        g.add_column(no_wrap=True, justify="right", width=8)
        for key, value in limits.items():
            pct = _float(value)
            label = _LIMIT_NAMES.get(str(key), str(key).removesuffix("_pct").replace("_", " "))
            if pct is None:
                g.add_row(label, Text("·" * bar_w, style="dim"), "-")
                continue
            style = "red" if pct >= 90 else "yellow" if pct >= 60 else "green"
            g.add_row(label, Text(bar(pct / 100.0, bar_w), style=style), Text(f"{pct:.1f}%", style=style))
        if not limits:
            g.add_row("limits", Text("-", style="dim"), "")
        halted = self.risk.get("halted")
        if halted is True:
            line = Text(f"HALTED ({self.risk.get('halt_kind') or 'halt'}): {self.risk.get('halt_reason') or '-'}",
                        style="bold red")
        elif halted is False:
            line = Text("trading allowed", style="green")
        else:
            line = Text("risk state -", style="dim")
        yield Group(g, line)


def _risk_panel(status: Mapping[str, Any]) -> Panel:
    risk = _map(status.get("risk"))
    border = "red" if risk.get("halted") is True else "green" if risk.get("halted") is False else "dim"
    return Panel(_Gauges(risk), title="risk limits (used)", border_style=border, padding=(0, 1))


def _orders_panel(orders: list[Mapping[str, Any]]) -> Panel:
    t = Table(box=None, padding=(0, 1), show_edge=False, expand=True, header_style="dim")
    for name, justify in (("client id", "left"), ("side", "left"), ("price", "right"), ("amount", "right"),
                          ("filled", "right"), ("status", "left"), ("age", "right")):
        t.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for o in orders:
        side = str(o.get("side") or "-")
        age = _float(o.get("age_ms"))
        t.add_row(str(o.get("client_id") or "-"), Text(side, style="green" if side == "buy" else "red"),
                  fmt_money(o.get("price")), fmt_money(o.get("amount")), fmt_money(o.get("filled")),
                  str(o.get("status") or "-"), f"{age / 1000:.1f}s" if age is not None else "-")
    body: RenderableType = t if orders else Text("none", style="dim")
    return Panel(body, title=f"open orders ({len(orders)})", border_style="blue", padding=(0, 1))


_KIND_STYLE = {"signal": "cyan", "order": "blue", "fill": "bold green", "risk": "bold red"}


@dataclass
class _Decisions:
    """The tail of the decision log, newest at the bottom, as many as the height allows."""

    decisions: list[Mapping[str, Any]]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        room = max(1, (options.height or 12) - 2)
        g = Table.grid(padding=(0, 1))
        g.add_column(no_wrap=True, style="dim")
        g.add_column(no_wrap=True, width=6)
        g.add_column(no_wrap=True, overflow="ellipsis")
        for d in self.decisions[-room:]:
            kind = str(d.get("kind") or "-")
            g.add_row(fmt_ts(d.get("ts")), Text(kind, style=_KIND_STYLE.get(kind, "")), str(d.get("text") or ""))
        body: RenderableType = g if self.decisions else Text("no decisions yet", style="dim")
        yield Panel(body, title="decisions", border_style="white", padding=(0, 1), height=options.height)


def render(
    status: Mapping[str, Any] | None,
    history: MonitorHistory,
    *,
    paused: bool = False,
    error: str | None = None,
    notice: str | None = None,
    source: str = "",
    width: int | None = None,
    height: int | None = None,
) -> RenderableType:
    """The whole screen for one status snapshot (pure: no I/O, no clock).

    ``error`` shows a red banner above the last known status (e.g. the bot is unreachable);
    ``notice`` a neutral one (e.g. the replay finished). ``width``/``height`` are hints for
    the split (the layout otherwise fills whatever console renders it).
    """
    s = _map(status)
    orders = [o for o in _list(s.get("open_orders")) if isinstance(o, Mapping)]
    decisions = [d for d in _list(s.get("decisions")) if isinstance(d, Mapping)]
    banners = _banners(status, error, notice)
    top = Group(_header(status, paused, source), *banners)

    w = width or 120
    measure = Console(width=w, file=io.StringIO(), color_system=None)  # only to count wrapped lines
    banner_lines = sum(len(b.wrap(measure, w)) for b in banners)
    ladder_w = 50 if w >= 110 else max(40, w * 2 // 5)
    h = height or 40
    decisions_h = max(5, min(14, h // 4))

    root = Layout(name="root")
    root.split_column(
        Layout(top, name="top", size=1 + banner_lines),
        Layout(name="main", ratio=1, minimum_size=12),
        Layout(_Decisions(decisions), name="decisions", size=decisions_h),
    )
    right = Group(_market_panel(s, history), _position_panel(s), _risk_panel(s), _orders_panel(orders))
    root["main"].split_row(
        Layout(_Ladder(_map(s.get("book")), orders), name="book", size=ladder_w),
        Layout(right, name="right", ratio=1),
    )
    return root


# --------------------------------------------------------------------------- keys


class KeyReader:
    """Single-key input (q, p) from a terminal in cbreak mode, via the event loop's reader.

    Does nothing when stdin is not a TTY (piped, or under a test harness), so the monitor
    still runs there; Ctrl-C/SIGTERM always quit cleanly.
    """

    def __init__(self, on_key: Callable[[str], None], stream: Any = None) -> None:
        self.on_key = on_key
        self.stream = sys.stdin if stream is None else stream
        self._fd: int | None = None
        self._saved: Any = None

    @property
    def active(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> KeyReader:
        try:
            if not self.stream.isatty():
                return self
            fd = self.stream.fileno()
        except (AttributeError, ValueError, OSError):
            return self
        import termios
        import tty

        try:
            self._saved = termios.tcgetattr(fd)
            tty.setcbreak(fd)
        except termios.error:
            return self
        self._fd = fd
        asyncio.get_running_loop().add_reader(fd, self._readable)
        return self

    def _readable(self) -> None:
        if self._fd is None:
            return
        try:
            data = os.read(self._fd, 64)
        except OSError:
            return
        for ch in data.decode("utf-8", "replace"):
            self.on_key(ch)

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        import termios

        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(fd)
        with contextlib.suppress(termios.error):
            termios.tcsetattr(fd, termios.TCSADRAIN, self._saved)


@contextlib.contextmanager
def _quit_on_signals(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


@dataclass
class _View:
    """What the screen currently shows; the loops mutate it, ``frame`` renders it."""

    console: Console
    history: MonitorHistory = field(default_factory=MonitorHistory)
    status: dict[str, Any] | None = None
    error: str | None = None
    notice: str | None = None
    paused: bool = False
    source: str = ""
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    resumed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.resumed.set()

    def key(self, ch: str) -> None:
        if ch in ("q", "Q", "\x03"):
            self.stop.set()
        elif ch in ("p", "P", " "):
            self.paused = not self.paused
            if self.paused:
                self.resumed.clear()
            else:
                self.resumed.set()
        self.wake.set()

    def frame(self) -> RenderableType:
        size = self.console.size
        try:
            return render(self.status, self.history, paused=self.paused, error=self.error, notice=self.notice,
                          source=self.source, width=size.width, height=size.height)
        except Exception as exc:  # an odd status must never kill the view
            return render(None, MonitorHistory(), error=f"cannot render status: {type(exc).__name__}: {exc}",
                          source=self.source, width=size.width, height=size.height)

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` or until a key or quit wakes the loop."""
        self.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), timeout=seconds)


class _LogTail:
    """Stands in for stdout while the view is up, so log lines do not scribble over the screen.

    The bot's logger writes to whatever ``sys.stdout`` is at the time; the view's console
    keeps the real terminal. Warnings and errors are printed to stderr once the view closes.
    """

    def __init__(self) -> None:
        self.lines: deque[str] = deque(maxlen=500)
        self._partial = ""

    def write(self, text: str) -> int:
        data = self._partial + text
        *done, self._partial = data.split("\n")
        self.lines.extend(ln for ln in done if ln.strip())
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def important(self) -> list[str]:
        keep = re.compile(r'"level":\s*"(warning|error|critical)"|\[(warning|error|critical)\s*\]', re.I)
        return [ln for ln in [*self.lines, self._partial] if keep.search(ln)]


@contextlib.contextmanager
def _quiet_stdout(console: Console) -> Iterator[None]:
    if console.file is not sys.stdout:
        yield
        return
    tail = _LogTail()
    with contextlib.redirect_stdout(tail):  # type: ignore[type-var]
        yield
    for line in tail.important():
        print(line, file=sys.stderr)


def _live(console: Console, first: RenderableType) -> Live:
    return Live(first, console=console, screen=console.is_terminal, auto_refresh=False,
                redirect_stdout=False, redirect_stderr=False, transient=False)


def status_url(url: str) -> str:
    """Accept the bot's base URL or its /status URL."""
    u = url.rstrip("/")
    return u if u.endswith("/status") else u + "/status"


def _describe(exc: BaseException, timeout: float) -> str:
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorError):
        err = exc.os_error
        if isinstance(err, ConnectionRefusedError):
            return "connection failed (refused: is the bot running with [metrics] port set?)"
        return f"connection failed ({err.strerror or err})" if err is not None else "connection failed"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status} {exc.message}"
    if isinstance(exc, orjson.JSONDecodeError | ValueError):
        return "the answer is not a status JSON object"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def run_monitor(
    url: str, refresh_s: float = 0.25, console: Console | None = None, *, max_polls: int | None = None
) -> int:
    """Poll ``url`` (the bot's status endpoint) and redraw until q / Ctrl-C; returns the exit code.

    When the bot cannot be reached the last known status stays on screen under a red banner
    and the poll is retried with a growing pause (up to 5 s). ``max_polls`` ends the loop after
    that many polls (for tests and non-interactive use).
    """
    import aiohttp

    console = console or Console(file=sys.stdout)
    target = status_url(url)
    view = _View(console, source=target)
    timeout = max(1.0, min(5.0, refresh_s * 4))
    failures = 0
    polls = 0
    with _quiet_stdout(console), _quit_on_signals(view.stop), KeyReader(view.key), \
            _live(console, view.frame()) as live:
        from bot.status_server import status_token

        token = status_token()  # BOT_STATUS_TOKEN: the bot's status server may want it
        headers = {"Authorization": f"Bearer {token}"} if token else None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout), headers=headers) as session:
            while not view.stop.is_set():
                delay = refresh_s
                if not view.paused:
                    try:
                        async with session.get(target) as resp:
                            if resp.status != 200:
                                body = (await resp.text())[:120].strip()
                                raise RuntimeError(f"HTTP {resp.status}{': ' + body if body else ''}")
                            data = orjson.loads(await resp.read())
                        if not isinstance(data, dict):
                            raise ValueError("not an object")
                        view.status = data
                        view.history.push(data)
                        view.error = None
                        failures = 0
                    except Exception as exc:
                        failures += 1
                        delay = min(5.0, max(refresh_s, 0.5) * failures)
                        why = _describe(exc, timeout) if not isinstance(exc, RuntimeError) else str(exc)
                        view.error = (f"bot unreachable at {target}: {why} — retrying in {delay:.1f} s "
                                      f"(attempt {failures}); q quits")
                    polls += 1
                live.update(view.frame(), refresh=True)
                if max_polls is not None and polls >= max_polls:
                    break
                await view.sleep(delay)
    return 0


async def run_replay_monitor(
    recording: Path,
    settings: Settings,
    speed: float = 10.0,
    console: Console | None = None,
    *,
    db_url: str | None = None,
    refresh_s: float = 0.1,
    wait_at_end: bool | None = None,
) -> int:
    """Drive the same view from a replay of ``recording`` (``bot.engine.replay_with_status``).

    The replay writes to ``db_url`` (default: a throw-away SQLite file), so watching a
    recording never touches the configured database. ``p`` pauses the replay itself (the
    status callback waits); at the end the final state stays on screen until q, unless stdin
    is not a terminal (``wait_at_end`` overrides). Returns 0, or 1 when the replay failed.
    """
    replay_with_status = resolve_replay()

    console = console or Console(file=sys.stdout)
    view = _View(console, source=f"replay {recording.name} ×{speed:g}")
    code = 0

    async def on_status(status: dict[str, Any]) -> None:
        view.status = status
        view.history.push(status)
        if view.paused:
            await view.resumed.wait()

    with contextlib.ExitStack() as stack:
        if db_url is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bot-monitor-"))
            db_url = f"sqlite+aiosqlite:///{Path(tmp) / 'replay.db'}"
        with _quiet_stdout(console), _quit_on_signals(view.stop), KeyReader(view.key) as keys, \
                _live(console, view.frame()) as live:
            replay: asyncio.Task[None] = asyncio.create_task(
                _as_coro(replay_with_status(recording, settings, db_url, on_status, speed)))
            while not view.stop.is_set() and not replay.done():
                live.update(view.frame(), refresh=True)
                await view.sleep(refresh_s)
            if replay.done() and not view.stop.is_set():
                failure = replay.exception()
                if failure is not None:
                    view.error = f"replay failed: {type(failure).__name__}: {failure}"
                    code = 1
                else:
                    view.notice = f"replay of {recording.name} finished" + (" — q quits" if keys.active else "")
                live.update(view.frame(), refresh=True)
                if wait_at_end if wait_at_end is not None else keys.active:
                    while not view.stop.is_set():
                        await view.sleep(1.0)
                        live.update(view.frame(), refresh=True)
            if not replay.done():
                replay.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await replay
    return code


async def _as_coro(aw: Awaitable[Any]) -> None:
    await aw


StatusCallback = Callable[[dict[str, Any]], Awaitable[None] | None]
ReplayWithStatus = Callable[[Path, "Settings", str, StatusCallback, float], Awaitable[Any]]


def resolve_replay() -> ReplayWithStatus:
    """The engine's replay-with-status entry point.

    ``bot.engine.replay_with_status(recording, settings, db_url, on_status, speed)`` when the
    engine has it; else ``bot.engine.run_replay`` when that takes ``on_status``/``speed``.
    Raises RuntimeError with a clear sentence when neither exists (engine not built yet).
    """
    import importlib
    import inspect

    try:
        engine = importlib.import_module("bot.engine")
    except ImportError as exc:
        raise RuntimeError(f"the replay monitor needs bot.engine, which cannot be imported ({exc})") from None
    fn = getattr(engine, "replay_with_status", None)
    if callable(fn):
        return fn  # type: ignore[no-any-return]
    run_replay = getattr(engine, "run_replay", None)
    if callable(run_replay):
        params = inspect.signature(run_replay).parameters
        if "on_status" in params and "speed" in params:

            async def via_run_replay(recording: Path, settings: Settings, db_url: str,
                                     on_status: StatusCallback, speed: float) -> None:
                await run_replay(recording, settings, db_url, on_status=on_status, speed=speed)

            return via_run_replay
    raise RuntimeError("the replay monitor needs bot.engine.replay_with_status (or run_replay with on_status "
                       "and speed), which this build does not have yet")
