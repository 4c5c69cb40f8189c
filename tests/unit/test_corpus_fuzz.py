"""Fuzz the two input parsers: whatever a config or a recording line contains, the only error
that may come out is the documented one (ConfigError -> exit 78; RecordingError -> line number),
never a TypeError/KeyError traceback that would take the service down with an unclear message."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.config import ConfigError, Settings, settings_from_dict
from bot.market.recorder import RecordingError, RecordingReader

SECTIONS = {
    "exchange": ["id", "sandbox", "url", "account", "timeout", "api_key"],
    "store": ["url", "queue_size", "batch_ms", "max_buffered"],
    "signals": ["levels", "window", "halflife", "warmup", "sample_interval"],
    "strategy": ["entry_z", "exit_z", "persistence", "max_hold", "order_ttl", "aggressive_z"],
    "risk": ["max_position", "max_order_notional", "max_daily_loss", "max_drawdown", "max_orders_per_minute",
             "price_band_bps", "stale_after", "max_rejections"],
    "paper": ["taker_fee_bps", "maker_fee_bps", "latency_ms", "balances"],
    "execution": ["max_retries", "cancel_on_stop", "cancel_unknown", "reconcile_interval"],
    "metrics": ["port"],
}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["5s", "250ms", "1m", "-1s", "0", "paper", "live", "testnet", "BTC/USDT", "1e400", "NaN"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if draw(st.booleans()):
        data["mode"] = draw(st.one_of(st.sampled_from(["paper", "testnet", "live"]), values))
    if draw(st.booleans()):
        data["symbol"] = draw(st.one_of(st.just("BTC/USDT"), values))
    for section in draw(st.lists(st.sampled_from(sorted(SECTIONS)), max_size=4, unique=True)):
        if draw(st.integers(0, 9)) == 0:
            data[section] = draw(values)  # a section that is not a table
            continue
        keys = draw(st.lists(st.sampled_from(SECTIONS[section] + ["bogus"]), max_size=4, unique=True))
        data[section] = {k: draw(values) for k in keys}
    if draw(st.integers(0, 9)) == 0:
        data[draw(st.text(max_size=8))] = draw(values)
    return data


@settings(max_examples=400, deadline=None)
@given(configs(), st.dictionaries(st.sampled_from(["BOT_API_KEY", "BOT_API_SECRET", "BOT_LIVE_CONFIRM"]),
                                  st.text(max_size=8), max_size=3))
def test_config_loader_only_raises_config_error(data: dict[str, Any], env: dict[str, str]) -> None:
    try:
        s = settings_from_dict(data, env=env)
    except ConfigError as exc:
        assert exc.problems, "a ConfigError must say what is wrong"
    else:
        assert isinstance(s, Settings)


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64),
                         st.floats(allow_nan=False), st.text(max_size=6))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
event_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["snapshot", "delta", "trade", "header", "x"])},
    optional={"ts": json_values, "price": json_values, "amount": json_values, "side": json_scalars,
              "bids": json_values, "asks": json_values, "seq": json_values, "first_seq": json_values,
              "recv": json_values, "id": json_values, "format": st.just("bot-recording/1"), "tick": json_values},
)


# Regression: a JSON list/object as side used to raise TypeError (unhashable) instead of RecordingError.
@pytest.mark.parametrize("side", [[], {"a": 1}])
def test_recording_trade_with_unhashable_side_is_a_recording_error(tmp_path: Path, side: Any) -> None:
    path = tmp_path / "side.jsonl"
    path.write_bytes(orjson.dumps({"type": "trade", "ts": 1, "price": 1.0, "amount": 1.0, "side": side}) + b"\n")
    with pytest.raises(RecordingError) as ei:
        list(RecordingReader(path, on_error="stop"))
    assert ei.value.line_no == 1
    assert "'side' must be 'buy' or 'sell'" in str(ei.value)


def _line(obj: Any, raw: bytes | None) -> bytes:
    if raw is not None:
        return raw.replace(b"\n", b" ")
    return json.dumps(obj).encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.one_of(event_like, json_values), st.one_of(st.none(), st.binary(max_size=30))),
                min_size=1, max_size=6),
       st.booleans())
def test_recording_reader_only_raises_recording_error(
    tmp_path: Path, lines: list[tuple[Any, bytes | None]], trailing_newline: bool
) -> None:
    path = tmp_path / "fuzz.jsonl"
    body = b"\n".join(_line(o, r) for o, r in lines) + (b"\n" if trailing_newline else b"")
    path.write_bytes(body)
    try:
        reader = RecordingReader(path, on_error="stop")
        for ev in reader:
            assert ev.ts >= 0 or ev.ts < 0  # an int, not NaN
            for name in ("price", "amount"):
                v = getattr(ev, name, None)
                if v is not None:
                    assert math.isfinite(v) and v >= 0
    except RecordingError as exc:
        assert exc.line_no >= 1
    skipper = RecordingReader(path, on_error="skip") if body.split(b"\n", 1)[0] else None
    if skipper is not None:
        try:
            list(skipper)
        except RecordingError as exc:  # only a bad header line can stop a skipping reader
            assert exc.line_no == 1
