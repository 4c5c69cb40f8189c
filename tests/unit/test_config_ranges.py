"""Every config key is strictly typed, finite and within the range declared once on the settings
model (``bot.config.Range``): whatever wrong value a TOML file gives a key - another TOML type, NaN
or infinity, a number outside the range, a quoted number - the result is a ConfigError (exit 78)
whose lines name that key. Driven through ``settings_from_dict`` for speed, and a few examples
through ``bot check-config``."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import subprocess
import sys
import typing
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from bot.config import ConfigError, Range, Settings, field_ranges, parse_duration, settings_from_dict

RANGES = field_ranges()
SECRETS = {"exchange.api_key", "exchange.api_secret"}  # never from the file (refused separately)

# Invalid strings for the string keys that have a shape.
BAD_STRINGS = {
    "symbol": ["BTCUSDT", "../../etc", "", "btc/usdt/x"],
    "exchange.id": ["nosuchexchange", "Binance", "", "../binance"],
    "exchange.url": ["ftp://127.0.0.1", "127.0.0.1:8765", "http://"],
    "exchange.account": ["", "a b", "x" * 65, "acct\n2"],
    "store.url": ["mysql://u:p@h/db", "", "bot.db"],
    "execution.client_id_prefix": ["too-long-prefix", "a b", "ü"],
}


def _kinds(model: type[BaseModel] = Settings, prefix: str = "") -> dict[str, tuple[str, Any]]:
    """Every file key of the settings: path -> (kind, detail)."""
    out: dict[str, tuple[str, Any]] = {}
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(_kinds(ann, f"{path}."))
        elif path in SECRETS:
            continue
        elif path in RANGES:
            out[path] = ("range", RANGES[path])
        elif f"{path}.*" in RANGES:
            out[path] = ("table", RANGES[f"{path}.*"])
        elif ann is bool:
            out[path] = ("bool", None)
        elif typing.get_origin(ann) is typing.Literal:
            out[path] = ("literal", typing.get_args(ann))
        elif ann is str:
            out[path] = ("str", None)
        else:
            raise AssertionError(f"{path}: no rule for {ann!r}; give the key a Range or a kind here")
    return out


KEYS = _kinds()


def test_every_number_key_declares_its_range() -> None:
    numbers = {p for p, (kind, _) in KEYS.items() if kind in ("range", "table")}
    assert numbers == {p.removesuffix(".*") for p in RANGES}
    assert {"signals.levels", "signals.window", "store.queue_size", "store.max_buffered", "paper.taker_fee_bps",
            "strategy.entry_z", "metrics.port", "risk.stale_after"} <= numbers
    for path, rng in RANGES.items():
        assert math.isfinite(rng.lo) and math.isfinite(rng.hi) and rng.lo < rng.hi, path
        assert rng.text()


def _valid_duration(text: str) -> bool:
    try:
        parse_duration(text)
    except ValueError:
        return False
    return True


toml_dates = st.one_of(st.dates(), st.datetimes(), st.times(), st.datetimes(timezones=st.just(dt.UTC)))
tables = st.dictionaries(st.sampled_from(["a", "x"]), st.integers(), min_size=0, max_size=2)
arrays = st.lists(st.integers(0, 10), max_size=3)
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])


def _below(rng: Range) -> st.SearchStrategy[Any]:
    if rng.kind == "int":
        return st.integers(max_value=math.ceil(rng.lo) - 1)
    floor = st.floats(max_value=rng.lo, exclude_max=not rng.lo_open, allow_nan=False, allow_infinity=False)
    if rng.kind == "duration":
        return floor.filter(lambda x: x < rng.lo)  # 0 and below: "must be > 0"; above 0: out of range
    return st.one_of(floor, st.integers(max_value=math.ceil(rng.lo) - (0 if rng.lo_open else 1)))


def _above(rng: Range) -> st.SearchStrategy[Any]:
    big = st.one_of(st.integers(min_value=math.floor(rng.hi) + 1),
                    st.sampled_from([2**63 - 1, 10**20, 2**64]))
    if rng.kind == "int":
        return big
    floats = st.floats(min_value=rng.hi, exclude_min=True, allow_infinity=False, allow_nan=False)
    if rng.kind == "duration":
        return st.one_of(floats, big, floats.map(lambda x: f"{math.floor(x) + 1}s"))
    return st.one_of(floats, big)


def _wrong_for_range(rng: Range) -> st.SearchStrategy[Any]:
    wrong_types: list[st.SearchStrategy[Any]] = [st.booleans(), arrays, tables, toml_dates, non_finite,
                                                _below(rng), _above(rng)]
    if rng.kind == "duration":
        wrong_types.append(st.text(max_size=12).filter(lambda t: not _valid_duration(t)))
    else:
        # any string, and above all a quoted number ("-1", "0.05"): not a number in TOML
        wrong_types += [st.text(max_size=12), st.floats(-1e6, 1e6).map(repr), st.integers(-10, 10**6).map(str)]
    if rng.kind == "int":
        wrong_types.append(st.floats(allow_nan=False))  # 5.0 is not an integer either
    return st.one_of(*wrong_types)


def _wrong(path: str) -> st.SearchStrategy[Any]:
    kind, detail = KEYS[path]
    others = st.one_of(st.integers(), st.floats(), st.booleans(), arrays, tables, toml_dates)
    if kind == "range":
        return _wrong_for_range(detail)
    if kind == "table":
        return st.one_of(st.integers(), st.text(max_size=5), st.booleans(), arrays)  # not a table
    if kind == "bool":
        return st.one_of(st.integers(), st.floats(), st.text(max_size=8), arrays, tables, toml_dates)
    if kind == "literal":
        return st.one_of(others, st.text(max_size=10).filter(lambda t: t not in detail))
    bad = BAD_STRINGS.get(path)
    return st.one_of(others, st.sampled_from(bad)) if bad else others


@st.composite
def bad_configs(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A config with one key given a wrong value; returns (config, the key path the error must name)."""
    path = draw(st.sampled_from(sorted(KEYS)))
    kind, detail = KEYS[path]
    if kind == "table" and draw(st.booleans()):  # one currency's amount is wrong
        currency = draw(st.sampled_from(["USDT", "BTC", "ETH"]))
        value: Any = {currency: draw(_wrong_for_range(detail))}
        named = f"{path}.{currency}"
    else:
        value = draw(_wrong(path))
        named = path
    data: dict[str, Any] = {}
    section, _, key = path.rpartition(".")
    (data.setdefault(section, {}) if section else data)[key] = value
    return data, named


@settings(max_examples=1500, deadline=None)
@given(bad_configs())
def test_any_wrong_value_for_any_key_is_a_config_error_naming_it(case: tuple[dict[str, Any], str]) -> None:
    data, named = case
    with pytest.raises(ConfigError) as info:
        settings_from_dict(data, env={})
    problems = info.value.problems
    assert any(line.startswith(f"{named}:") or line.startswith(f"{named.rsplit('.', 1)[0]}:")
               if named.startswith("paper.balances.") else line.startswith(f"{named}:")
               for line in problems), (data, problems)
    assert all("\n" not in line and line for line in problems)


@st.composite
def good_values(draw: st.DrawFn) -> tuple[str, Any, Any]:
    """A number key and a value inside its range (and what the settings must then hold)."""
    path = draw(st.sampled_from(sorted(p for p in RANGES if not p.endswith(".*"))))
    rng = RANGES[path]
    lo, hi = rng.lo, rng.hi
    if rng.kind == "int":
        v: Any = draw(st.integers(int(lo) + (1 if rng.lo_open else 0), int(hi)))
        return path, v, v
    x = draw(st.floats(lo, hi, exclude_min=rng.lo_open, allow_nan=False))
    if rng.kind == "duration":
        x = max(x, 1e-3)
        return path, x, x
    if rng.kind == "decimal":
        return path, x, Decimal(repr(x))
    return path, x, x


@settings(max_examples=400, deadline=None)
@given(good_values())
def test_any_value_inside_the_range_is_accepted(case: tuple[str, Any, Any]) -> None:
    path, value, held = case
    assume(path != "strategy.exit_z" or value < 100)  # exit_z must stay below entry_z (<= 100)
    section, _, key = path.rpartition(".")
    data: dict[str, Any] = {section: {key: value}}
    if path == "strategy.exit_z":
        data["strategy"]["entry_z"] = 100.0
    if path == "strategy.entry_z":
        data["strategy"]["exit_z"] = 0.0
    s = settings_from_dict(data, env={})
    assert getattr(getattr(s, section), key) == held


# --------------------------------------------------------------------------- through the CLI


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f'"{k}" = {_toml(x)}' for k, x in v.items()) + " }"
    raise TypeError(v)


def _toml_document(data: dict[str, Any]) -> str:
    lines = [f"{k} = {_toml(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            lines.extend(f"{kk} = {_toml(vv)}" for kk, vv in v.items())
    return "\n".join(lines) + "\n"


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad_configs())
def test_check_config_exits_78_naming_the_key(tmp_path: Path, case: tuple[dict[str, Any], str]) -> None:
    data, named = case
    cfg = tmp_path / "fuzz.toml"
    cfg.write_text(_toml_document(data))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}
    proc = subprocess.run([sys.executable, "-m", "bot", "check-config", str(cfg)], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 78, (cfg.read_text(), proc.stdout, proc.stderr)
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert any(line.startswith((f"{named}:", "paper.balances:")) for line in proc.stderr.splitlines()), proc.stderr


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("[strategy]\nentry_z = nan", "strategy.entry_z: must be a finite number (got nan)"),
        ("[signals]\nlevels = 9223372036854775807", "signals.levels: must be <= 100 (got 9223372036854775807)"),
        ("[strategy]\npersistence = true", "strategy.persistence: must be an integer, not true/false (got true)"),
        ('[risk]\nmax_position = "-1"',
         "risk.max_position: must be a number, not a quoted string: write it without quotes (got '-1')"),
        ('[risk]\nstale_after = "2d"', "risk.stale_after: must be between 1ms and 1h (got '2d')"),
        ("[paper]\nbalances = { USDT = -5 }", "paper.balances.USDT: must be >= 0 (got -5)"),
        ('[exchange]\nid = "nosuchexchange"',
         "exchange.id: must be an exchange id ccxt knows, like 'binance' (got 'nosuchexchange')"),
    ],
)
def test_check_config_messages(tmp_path: Path, text: str, line: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}
    proc = subprocess.run([sys.executable, "-m", "bot", "check-config", str(cfg)], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 78
    assert proc.stderr.splitlines() == [line]
