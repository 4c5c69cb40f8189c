"""The monitor view, rendered to text from a fixed status JSON: the numbers a person reads."""

from __future__ import annotations

import io
import re
from typing import Any

from rich.console import Console

from bot.monitor import MonitorHistory, bar, fmt_num, fmt_signal, render, sparkline

from fixtures_monitor import halted_status, sample_status

W, H = 120, 44


def screen(status: dict[str, Any] | None, history: MonitorHistory | None = None, *, width: int = W,
           height: int = H, **kw: Any) -> str:
    console = Console(record=True, width=width, height=height, file=io.StringIO(), color_system=None)
    console.print(render(status, history or MonitorHistory(), width=width, height=height, **kw))
    return console.export_text()


def ladder(text: str) -> list[str]:
    """The book panel's rows (left column of the screen), borders stripped."""
    rows = []
    for line in text.splitlines():
        if line.startswith("│"):
            rows.append(line[1:line.index("│", 1)].strip())
    return rows


def test_ladder_shows_best_bid_and_ask_around_the_mid() -> None:
    rows = ladder(screen(sample_status()))
    i = next(k for k, r in enumerate(rows) if r.startswith("── mid"))
    assert rows[i] == "── mid 60000.005  spread 0.01 ──"
    # the ask just above the mid is the best ask, the bid just below is the best bid
    assert rows[i - 1].split()[:2] == ["60000.00", "0.30"]
    assert rows[i + 1].split()[:2] == ["59999.99", "0.50"]
    # asks are listed highest first, bids highest first: the ladder reads top to bottom
    asks = [r.split()[-3] if r.startswith("◀") else r.split()[0] for r in rows[1:i]]
    assert asks == ["60002.00", "60001.00", "60000.50", "60000.00"]
    bids = [r.split()[-3] if r.startswith("◀") else r.split()[0] for r in rows[i + 1:i + 5]]
    assert bids == ["59999.99", "59999.50", "59999.00", "59998.00"]


def test_our_orders_are_marked_at_their_price_with_the_remaining_amount() -> None:
    rows = ladder(screen(sample_status()))
    buy = next(r for r in rows if "59999.50" in r)
    sell = next(r for r in rows if "60001.00" in r)
    assert buy.startswith("◀B 0.001 ")
    assert sell.startswith("◀S 0.0015 ")  # 0.002 ordered, 0.0005 filled
    assert not any(r.startswith("◀") for r in rows if "59999.99" in r or "60000.00" in r)


def test_depth_bars_are_proportional_to_size() -> None:
    rows = ladder(screen(sample_status()))
    biggest = next(r for r in rows if "60001.00" in r)  # 3.0, the largest level
    half = next(r for r in rows if "59999.00" in r)  # 2.0
    full = biggest.count("█")
    assert full >= 10
    assert abs(half.count("█") - full * 2 / 3) <= 1.01


def test_market_position_pnl_and_risk_numbers() -> None:
    text = screen(sample_status())
    assert "mid 60000.005  spread 0.01  micro 60000.007  updates 12345" in text
    assert re.search(r"position\s+0\.01 ", text)
    assert re.search(r"avg price\s+59950\.00 ", text)
    assert re.search(r"realised\s+1\.23 ", text)
    assert re.search(r"unrealised\s+-0\.40 ", text)
    assert re.search(r"fees\s+0\.12 ", text)
    assert re.search(r"equity\s+10000\.71 ", text)
    assert re.search(r"total PnL\s+0\.83 ", text)  # 1.23 + (-0.40), exact decimal
    assert re.search(r"OFI\s+\+1\.2\s+\+0\.80", text)
    assert re.search(r"TFI\s+-0\.5\s+-0\.20", text)
    assert re.search(r"combined z\s+\+1\.30", text)
    assert "detector LONG  z +1.30  entry ±2.00  exit ±0.50  persistence 3" in text
    assert re.search(r"position\s+█+▊?\s+20\.0%", text)
    assert re.search(r"orders/min\s+█+.?\s+90\.0%", text)
    assert "trading allowed" in text
    assert " BTC/USDT   paper  run 3  TRADING  feed up  store ok  lag 0.4 ms  00:00:12.345 UTC" in text
    assert "HALTED" not in text


def test_open_orders_and_decision_tail() -> None:
    text = screen(sample_status())
    assert "open orders (2)" in text
    assert re.search(r"ofi-3-1a\s+buy\s+59999\.5\s+0\.001\s+0\s+acked\s+1\.2s", text)
    assert re.search(r"ofi-3-1b\s+sell\s+60001\.0\s+0\.002\s+0\.0005\s+partially_filled\s+0\.3s", text)
    lines = [ln for ln in text.splitlines() if re.search(r"\d\d:\d\d:\d\d\.\d{3} (signal|order|fill|risk) ", ln)]
    assert [re.sub(r"\s+│$", "", ln).split(" ", 2)[2].strip() for ln in lines] == [
        "signal entry long z=+2.31",
        "order  buy 0.01 @ 60000.00 ofi-3-19",
        "fill   bought 0.01 @ 59950.00 taker fee 0.12",
        "risk   clip order 0.02 -> 0.01 (max_position)",
    ]


def test_decision_tail_keeps_the_newest_when_there_is_no_room() -> None:
    s = sample_status()
    s["decisions"] = [{"ts": 1_723_075_200_000 + i, "kind": "signal", "text": f"decision number {i}"}
                      for i in range(50)]
    text = screen(s, height=40)
    assert "decision number 49" in text
    assert "decision number 0 " not in text


def test_halted_banner_names_kind_and_reason() -> None:
    text = screen(halted_status())
    top = text.splitlines()[:3]
    assert any("HALTED (daily_loss): daily loss 101.20 USDT >= max_daily_loss 100" in ln for ln in top)
    assert "HALTED  feed up" in top[0]
    assert re.search(r"daily loss\s+█+\s+101\.2%", text)
    assert "trading allowed" not in text


def test_unreachable_banner_over_the_last_known_status() -> None:
    text = screen(sample_status(), error="bot unreachable at http://127.0.0.1:9/status: connection failed")
    assert "⚠ bot unreachable at http://127.0.0.1:9/status: connection failed" in text.splitlines()[1]
    assert "── mid 60000.005" in text  # the last status stays visible


def test_paused_and_unhealthy_book_are_shown() -> None:
    s = sample_status()
    s["book"]["healthy"] = False
    s["book"]["reason"] = "sequence gap 101 -> 105"
    text = screen(s, paused=True)
    assert "PAUSED" in text.splitlines()[0]
    assert "book unhealthy: sequence gap 101 -> 105 — no new orders until resynced" in text


def test_missing_or_odd_values_render_as_dashes_never_crash() -> None:
    text = screen(None)
    assert re.search(r"position\s+- ", text)
    assert "no book yet" in text
    assert "no decisions yet" in text
    odd: dict[str, Any] = {
        "book": {"bids": "garbage", "asks": [[1, None], ["x", 2], [2.5, 1]], "mid": "nan?"},
        "signals": {"ofi": None, "tfi": "bad"}, "zscores": None, "detector": {"state": None},
        "position": {"amount": "abc", "realized_pnl": None},
        "open_orders": [None, {"price": None}], "risk": {"limits": {"position_pct": None}},
        "health": [], "decisions": [{"ts": "x"}, 5],
    }
    text = screen(odd)
    assert "2.5" in text
    assert re.search(r"position\s+- ", text)


def test_narrow_terminal_does_not_cut_money_values() -> None:
    text = screen(sample_status(), width=80, height=30)
    assert re.search(r"equity\s+10000\.71", text)
    assert re.search(r"avg price\s+59950\.00", text)


def test_history_skips_repeats_and_keeps_a_bounded_ring() -> None:
    h = MonitorHistory(maxlen=5)
    s = sample_status()
    assert h.push(s) is True
    assert h.push(s) is False  # same ts: the bot did not move
    for i in range(10):
        s = sample_status()
        s["ts"] += i + 1
        s["signals"]["ofi"] = float(i)
        h.push(s)
    assert h.values("ofi") == [5.0, 6.0, 7.0, 8.0, 9.0]
    assert h.values("combined") == [1.3] * 5
    assert h.values("nothing") == []
    assert h.push(None) is False


def test_sparkline_and_bar_shapes() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7], 8) == "▁▂▃▄▅▆▇█"
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7], 4) == "▁▃▆█"  # the newest values, rescaled
    assert sparkline([2, 2, 2], 10) == "▄▄▄"
    assert sparkline([0.0], 5, lo=-1, hi=1) == "▅"
    assert sparkline([], 5) == ""
    assert bar(0.5, 8) == "████    "
    assert bar(1.5, 4) == "████"
    assert bar(0.0625, 4) == "▎   "


def test_number_formats() -> None:
    assert fmt_num(60000.005) == "60000.005"
    assert fmt_num(0.01) == "0.01"
    assert fmt_num(12345) == "12345"
    assert fmt_num(None) == "-"
    assert fmt_num(float("nan")) == "-"
    assert fmt_signal(1.2) == "+1.2"
    assert fmt_signal(-123456.7) == "-123456.7"
