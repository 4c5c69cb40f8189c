"""Prometheus text rendered from the status dict, and the loopback-only rule of the status server."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from bot.status_server import StatusServer, dumps_status, is_loopback, prometheus_text

from fixtures_monitor import halted_status, sample_status

SAMPLE_LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? \S+$')


def samples(text: str) -> dict[str, str]:
    return {ln.rsplit(" ", 1)[0]: ln.rsplit(" ", 1)[1] for ln in text.splitlines() if not ln.startswith("#")}


def test_metrics_carry_the_status_values() -> None:
    m = samples(prometheus_text(sample_status()))
    assert m['bot_info{run_id="3",mode="paper",symbol="BTC/USDT",account="default",state="trading"}'] == "1"
    assert m["bot_book_healthy"] == "1"
    assert m["bot_book_mid"] == "60000.005"
    assert m["bot_book_spread"] == "0.01"
    assert m["bot_book_microprice"] == "60000.007"
    assert m["bot_book_updates_total"] == "12345"
    assert m['bot_signal{name="ofi"}'] == "1.2"
    assert m['bot_signal{name="cvd"}'] == "10.5"
    assert m['bot_signal_zscore{name="combined"}'] == "1.3"
    assert m['bot_detector_state{state="long"}'] == "1"
    assert m['bot_detector_state{state="flat"}'] == "0"
    assert m["bot_position_amount"] == "0.01"
    assert m["bot_position_avg_price"] == "59950"
    assert m["bot_pnl_realized"] == "1.23"
    assert m["bot_pnl_unrealized"] == "-0.4"
    assert m["bot_equity"] == "10000.71"
    assert m['bot_open_orders{status="all"}'] == "2"
    assert m['bot_open_orders{status="acked"}'] == "1"
    assert m['bot_open_orders{status="partially_filled"}'] == "1"
    assert m['bot_halted{kind=""}'] == "0"
    assert m['bot_risk_limit_used_percent{limit="position"}'] == "20"
    assert m['bot_risk_limit_used_percent{limit="drawdown"}'] == "1.5"
    assert m['bot_feed_state{state="up"}'] == "1"
    assert m['bot_feed_state{state="down"}'] == "0"
    assert m["bot_store_ok"] == "1"
    assert m["bot_loop_lag_seconds"] == "0.0004"


def test_halted_is_one_with_its_kind() -> None:
    m = samples(prometheus_text(halted_status()))
    assert m['bot_halted{kind="daily_loss"}'] == "1"
    assert m['bot_risk_limit_used_percent{limit="daily_loss"}'] == "101.2"


def test_exposition_format_is_well_formed() -> None:
    text = prometheus_text(sample_status())
    assert text.endswith("\n")
    seen_type: set[str] = set()
    for ln in text.splitlines():
        if ln.startswith("# TYPE "):
            name = ln.split()[2]
            assert name not in seen_type, f"TYPE twice for {name}"
            seen_type.add(name)
            assert ln.split()[3] in ("gauge", "counter")
        elif not ln.startswith("# HELP "):
            assert SAMPLE_LINE.match(ln), ln
            assert ln.split("{")[0].split(" ")[0] in seen_type  # TYPE comes before the samples


def test_missing_values_are_left_out_not_zero() -> None:
    text = prometheus_text({"state": "starting", "book": {"healthy": False, "mid": None}})
    m = samples(text)
    assert m["bot_book_healthy"] == "0"
    assert not any(k.startswith(("bot_book_mid", "bot_position", "bot_halted")) for k in m)
    assert prometheus_text({}).startswith("# HELP bot_info ")


def test_label_values_are_escaped() -> None:
    s = halted_status()
    s["risk"]["halt_kind"] = 'odd "kind"\\x\nnext'
    line = next(ln for ln in prometheus_text(s).splitlines() if ln.startswith("bot_halted{"))
    assert line == 'bot_halted{kind="odd \\"kind\\"\\\\x\\nnext"} 1'


def test_status_json_keeps_decimals_exact() -> None:
    assert dumps_status({"pnl": Decimal("0.10"), "x": 1.5}) == b'{"pnl":"0.10","x":1.5}'


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_are_accepted(host: str) -> None:
    assert is_loopback(host)
    StatusServer(dict, 0, host=host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "10.0.0.1", "example.com", ""])
def test_other_hosts_are_refused(host: str) -> None:
    with pytest.raises(ValueError, match="only a loopback address"):
        StatusServer(dict, 0, host=host)
