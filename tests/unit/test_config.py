"""Config: every validation rule has a failing case with its exact message and exit code 78."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.config import ConfigError, load_config, parse_duration, render_effective, settings_from_dict

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-ABCDEFGH-never-print-me"
KEY = "key-ZYXWVUT-never-print-me"

runner = CliRunner()


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def _check(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    p = _write(tmp_path, text)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}
    full_env.update(env or {})
    r = subprocess.run(
        [sys.executable, "-m", "bot", "check-config", str(p)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )
    return r.returncode, r.stdout, r.stderr


def test_example_config_is_valid() -> None:
    s = load_config(ROOT / "config.example.toml", env={})
    assert s.mode == "paper"
    assert s.symbol == "BTC/USDT"
    assert s.risk.max_position == Decimal("0.05")
    assert s.risk.stale_after == 5.0
    assert s.signals.window == 10.0
    assert s.paper.balances == {"USDT": Decimal(10000), "BTC": Decimal(0)}


def test_valid_config_round_trips(tmp_path: Path) -> None:
    original = settings_from_dict(
        {"symbol": "ETH/USDT", "risk": {"max_position": 0.5, "stale_after": "250ms"}, "strategy": {"entry_z": 3}},
        env={},
    )
    text = render_effective(original)
    again = load_config(_write(tmp_path, text.replace('api_key = "(not set)"\n', "").replace('api_secret = "(not set)"\n', "")), env={})
    assert again == original
    assert again.risk.max_position == Decimal("0.5")
    assert again.risk.stale_after == 0.25


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('mode = "yolo"', "mode: must be one of 'paper', 'testnet' or 'live' (got 'yolo')"),
        ('symbol = "BTCUSDT"', "symbol: must look like BASE/QUOTE, e.g. BTC/USDT (got 'BTCUSDT')"),
        ("[risk]\nmax_position = -1", "risk.max_position: must be > 0 (got -1)"),
        ("[risk]\nmax_daily_loss = 0", "risk.max_daily_loss: must be > 0 (got 0)"),
        ("[risk]\nmax_orders_per_minute = -5", "risk.max_orders_per_minute: must be > 0 (got -5)"),
        ("[risk]\nmax_order_notional = 0", "risk.max_order_notional: must be > 0 (got 0)"),
        ("[risk]\nmax_drawdown = -2", "risk.max_drawdown: must be > 0 (got -2)"),
        ("[risk]\nmax_open_orders = 0", "risk.max_open_orders: must be > 0 (got 0)"),
        ("[risk]\nmax_rejections = 0", "risk.max_rejections: must be > 0 (got 0)"),
        ("[risk]\nprice_band_bps = -1", "risk.price_band_bps: must be > 0 (got -1)"),
        ('[risk]\nstale_after = "0s"', "risk.stale_after: must be > 0 (got '0s')"),
        ('[risk]\nstale_after = "soon"', "risk.stale_after: expected a duration like '5s' or '250ms' (got 'soon')"),
        ("[strategy]\nentry_z = 1.0\nexit_z = 1.5", "strategy.exit_z: must be < strategy.entry_z (got exit_z=1.5, entry_z=1.0)"),
        ("[risk]\nmax_postion = 1", "risk.max_postion: unknown key"),
        ("colour = 1", "colour: unknown key"),
        ('mode = "live"\n[exchange]\nsandbox = false', "exchange: live mode needs BOT_API_KEY and BOT_API_SECRET in the environment"),
        ("[exchange]\nsandbox = 3", "exchange.sandbox: must be true or false (got 3)"),
        ('mode = "testnet"', "exchange: testnet mode needs BOT_API_KEY and BOT_API_SECRET in the environment"),
        ('[risk]\nmax_position = "lots"', "risk.max_position: must be a number (got 'lots')"),
    ],
)
def test_each_rule_fails_with_its_message_and_78(tmp_path: Path, text: str, line: str) -> None:
    code, out, err = _check(tmp_path, text)
    assert code == 78
    assert out == ""
    assert line in err.splitlines(), err


def test_several_problems_one_line_each(tmp_path: Path) -> None:
    code, _, err = _check(tmp_path, "[risk]\nmax_position = -1\nmax_drawdown = -2\ntypo = 3\n")
    assert code == 78
    assert sorted(err.splitlines()) == [
        "risk.max_drawdown: must be > 0 (got -2)",
        "risk.max_position: must be > 0 (got -1)",
        "risk.typo: unknown key",
    ]


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    r = runner.invoke(app, ["check-config", str(tmp_path / "nope.toml")])
    assert r.exit_code == 78
    assert f"{tmp_path / 'nope.toml'}: file not found" in r.output
    code, _, err = _check(tmp_path, 'mode = "paper"\nsymbol = \n')
    assert code == 78
    assert "invalid TOML" in err and "line 2" in err


def test_secret_in_file_is_refused_without_echoing_it(tmp_path: Path) -> None:
    code, out, err = _check(tmp_path, f'[exchange]\napi_secret = "{SECRET}"\n')
    assert code == 78
    assert "exchange.api_secret: secrets must not be in the config file" in err
    assert SECRET not in out + err


def test_secret_from_env_never_printed(tmp_path: Path) -> None:
    code, out, err = _check(
        tmp_path, 'mode = "testnet"\n', env={"BOT_API_KEY": KEY, "BOT_API_SECRET": SECRET}
    )
    assert code == 0, err
    assert 'api_key = "***"' in out and 'api_secret = "***"' in out
    assert SECRET not in out + err and KEY not in out + err


def test_secret_never_in_exception_or_repr() -> None:
    s = settings_from_dict({"mode": "testnet"}, env={"BOT_API_KEY": KEY, "BOT_API_SECRET": SECRET})
    assert SECRET not in repr(s) and SECRET not in str(s)
    with pytest.raises(ConfigError) as ei:
        settings_from_dict({"mode": "testnet", "risk": {"max_position": -1}}, env={"BOT_API_KEY": KEY, "BOT_API_SECRET": SECRET})
    assert SECRET not in str(ei.value) and KEY not in str(ei.value)


def test_secret_never_in_a_log_line() -> None:
    code = (
        "from bot.logging import configure_logging, get_logger, bind_run\n"
        "configure_logging('info')\n"
        "bind_run(7, 'testnet', 'BTC/USDT')\n"
        "log = get_logger('t')\n"
        "import os\n"
        "log.info('connecting', url='https://x/?apiKey=' + os.environ['BOT_API_KEY'])\n"
        "try:\n"
        "    raise RuntimeError('auth failed for ' + os.environ['BOT_API_SECRET'])\n"
        "except RuntimeError:\n"
        "    log.exception('boom')\n"
    )
    env = {**os.environ, "BOT_API_KEY": KEY, "BOT_API_SECRET": SECRET}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["event"] for x in lines] == ["connecting", "boom"]
    assert all(x["run_id"] == "7" and x["mode"] == "testnet" and x["symbol"] == "BTC/USDT" for x in lines)
    assert SECRET not in r.stdout and KEY not in r.stdout
    assert "***" in lines[0]["url"] and "***" in lines[1]["exception"]


def test_db_url_env_and_flag_override(tmp_path: Path) -> None:
    p = _write(tmp_path, '[store]\nurl = "sqlite+aiosqlite:///file.db"\n')
    assert load_config(p, env={}).store.url == "sqlite+aiosqlite:///file.db"
    assert load_config(p, env={"BOT_DB_URL": "postgresql+asyncpg://u@h/db"}).store.url == "postgresql+asyncpg://u@h/db"
    assert (
        load_config(p, env={"BOT_DB_URL": "postgresql+asyncpg://u@h/db"}, db_url="sqlite+aiosqlite:///x.db").store.url
        == "sqlite+aiosqlite:///x.db"
    )


@pytest.mark.parametrize(("text", "seconds"), [("250ms", 0.25), ("5s", 5.0), ("1m", 60.0), ("2h", 7200.0), (3, 3.0)])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_every_contract_command_has_help() -> None:
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("run", "demo", "replay", "record", "analyze", "report", "db", "emulator", "check-config", "resume", "monitor"):
        assert cmd in r.output
    for sub in (["db", "upgrade", "--help"], ["emulator", "serve", "--help"]):
        assert runner.invoke(app, sub).exit_code == 0


def test_usage_error_exits_2() -> None:
    assert runner.invoke(app, ["check-config"]).exit_code == 2
    assert runner.invoke(app, ["no-such-command"]).exit_code == 2
