"""The commands that run the engine: ``bot run``, ``bot demo``, ``bot replay``.

Kept apart from ``cli.py`` so the CLI stays a thin parser, and apart from ``engine.py`` so the
engine knows nothing of processes, exit codes or terminals. Each function returns the exit
code: 0 ok, 78 bad config, 1 anything else (a risk halt of `bot run` is not a crash: 0; a replay
halted by its risk rules did not replay the recording as configured: 1, with the halt's reason).
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from pathlib import Path

from rich.console import Console

from bot.config import (
    ENV_API_KEY,
    ENV_API_SECRET,
    ENV_LIVE_CONFIRM,
    EX_CONFIG,
    ConfigError,
    Settings,
    load_config,
    redact,
    redact_url,
    settings_from_dict,
)
from bot.logging import configure_logging, get_logger, refresh_secrets
from bot.service import Notifier, catch_signals_early, load_credentials

log = get_logger("runner")


def _problems(lines: list[str]) -> int:
    for line in lines:
        print(line, file=sys.stderr)
    return EX_CONFIG


def live_gate(settings: Settings, live_flag: bool, env: dict[str, str] | None = None) -> list[str]:
    """The three confirmations live trading needs; returns the problems (empty: allowed)."""
    env = dict(os.environ) if env is None else env
    problems: list[str] = []
    if live_flag and settings.mode != "live":
        problems.append(f'--live: given, but the config says mode = "{settings.mode}"')
    if settings.mode == "live":
        if not live_flag:
            problems.append('mode: "live" trades real money; add --live on the command line to confirm')
        if env.get(ENV_LIVE_CONFIRM) != settings.exchange.account:
            problems.append(
                f"{ENV_LIVE_CONFIRM}: must equal [exchange] account ({settings.exchange.account!r}) to trade live"
            )
    return problems


def config_file_problems(path: Path | None) -> list[str]:
    """A config that others can read must not sit next to keys; refuse group/world-writable files."""
    if path is None or not path.exists():
        return []
    mode = path.stat().st_mode
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        return [f"{path}: writable by group or others (chmod go-w); anyone could change the risk limits"]
    return []


def authentication_failed(exc: BaseException) -> int:
    """Wrong API keys: one line on stderr naming them, one log line, exit 78 (no restart helps).

    ``exc`` is ccxt's ``AuthenticationError``; its text is the exchange's answer (code and
    message), redacted all the same: a secret never reaches a log or a terminal.
    """
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    detail = redact(lines[0])[:300]
    log.error("authentication_failed", error=detail,
              action=f"not retried; check {ENV_API_KEY} / {ENV_API_SECRET}, then start again")
    print(f"exchange: authentication failed (check {ENV_API_KEY} / {ENV_API_SECRET}): {detail}", file=sys.stderr)
    return EX_CONFIG


def run_service(config: Path | None, db: str | None, live: bool) -> int:
    # A SIGTERM/SIGINT/SIGHUP from here on is remembered until the engine takes the signals
    # over (LiveRunner.run): a stop while the modules load or the store opens exits 0 too.
    catch_signals_early()
    loaded = load_credentials()
    if loaded:
        refresh_secrets()
    try:
        settings = load_config(config, db_url=db)
    except ConfigError as exc:
        return _problems(exc.problems)
    problems = config_file_problems(config) + live_gate(settings, live)
    if problems:
        return _problems(problems)
    from bot.store.db import sqlite_write_problem

    unwritable = sqlite_write_problem(settings.store.url)
    if unwritable is not None:
        print(f"store: {unwritable}", file=sys.stderr)
        return 1
    from bot.engine import LiveRunner

    notifier = Notifier()
    runner = LiveRunner(settings, config_path=config, notifier=notifier)
    try:
        summary = asyncio.run(runner.run())
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        from bot.execution.broker import authentication_error

        refused = authentication_error(exc)
        if refused is not None:
            return authentication_failed(refused)
        log.error("fatal", error=redact(f"{type(exc).__name__}: {exc}")[:500])
        return 1
    finally:
        notifier.close()
    log.info("run_summary", **{"lines": summary.lines()})
    return 0


def run_replay_cli(recording: Path, config: Path | None, db: str | None) -> int:
    try:
        settings = load_config(config, db_url=db)
    except ConfigError as exc:
        return _problems(exc.problems)
    if not recording.exists():
        print(f"{recording}: file not found", file=sys.stderr)
        return 2
    if not recording.is_file():
        print(f"{recording}: not a recording file", file=sys.stderr)
        return 2
    from bot.store.db import sqlite_write_problem

    unusable = recording_problem(recording, settings) or sqlite_write_problem(db or settings.store.url)
    if unusable is not None:  # before any run row or database file is written
        print(f"replay failed: {unusable}", file=sys.stderr)
        return 1
    from bot.engine import run_replay
    from bot.market.recorder import RecordingError

    console = Console(stderr=False)
    try:
        summary = asyncio.run(run_replay(recording, settings, db, progress=sys.stderr.isatty()))
    except KeyboardInterrupt:
        print("replay interrupted", file=sys.stderr)
        return 1
    except Exception as exc:
        # one line: a bad line names the file and line (``path:line: what``), then the run it failed
        print(replay_failure_line(exc, isinstance(exc, RecordingError)), file=sys.stderr)
        return 1
    for line in summary.lines():
        console.print(line, highlight=False)
    if summary.halted:
        # Only the strategy's own risk rules halt a replay (the store never does): the replay did
        # not run as configured, so the exit code says so (a halt in `bot run` is not a crash: 0).
        print(f"replay halted by the risk engine ({summary.halt_kind}): {summary.halt_reason} "
              f"(run {summary.run_id})", file=sys.stderr)
        return 1
    return 0


def recording_problem(recording: Path, settings: Settings) -> str | None:
    """Why ``recording`` cannot be replayed, in one line; None when it can.

    Read before the replay opens the store: the file opens and decompresses, its header is
    valid and names a market with built-in rules (else the config's symbol), and it yields at
    least one event (random bytes or plain text named ``.gz`` yield none: an error, not an
    empty success).
    """
    from bot.market.recorder import RecordingError, RecordingReader
    from bot.risk.market_rules import MarketRules

    try:
        reader = RecordingReader(recording, on_error="stop")
        MarketRules.binance_spot(reader.header.symbol or settings.symbol)
        events = iter(reader)
        try:
            first = next(events, None)
        finally:
            events.close()  # type: ignore[attr-defined]
    except RecordingError as exc:
        return str(exc)
    except ValueError as exc:
        return f"{recording}: {exc}"
    except OSError as exc:
        return f"{recording}: cannot read ({exc.strerror or exc})"
    if first is None:
        why = reader.errors[0].message if reader.errors else "no snapshot, delta or trade line"
        return f"{recording}: no events to replay ({why})"
    return None


def replay_failure_line(exc: BaseException, recording_error: bool = False) -> str:
    """The one line ``bot replay`` prints for a failed replay (notes: the run marked failed)."""
    text = str(exc) if recording_error else redact(f"{type(exc).__name__}: {exc}")
    first = (text.splitlines() or [type(exc).__name__])[0][:500]
    notes = [n for n in getattr(exc, "__notes__", ()) if isinstance(n, str)]
    return f"replay failed: {first}" + (f" ({'; '.join(notes)})" if notes else "")


# --------------------------------------------------------------------------- demo


def demo_settings(base_url: str, db_url: str) -> Settings:
    """A config tuned so a short demo shows the whole path: quicker windows, lower thresholds."""
    return settings_from_dict(
        {
            "mode": "paper",
            "symbol": "BTC/USDT",
            "exchange": {"url": base_url, "sandbox": True, "account": "demo"},
            "store": {"url": db_url},
            "signals": {"levels": 5, "window": "5s", "halflife": "30s", "sample_interval": "1s"},
            "strategy": {"entry_z": 1.5, "exit_z": 0.3, "persistence": 1, "aggressive_z": 2.0,
                         "max_hold": "20s", "order_ttl": "3s",
                         # The demo shows the whole order path in 30 s; the cost gate (on by default)
                         # would rightly refuse most entries against real fees. See docs/signals.md.
                         "cost_gate": False},
            "risk": {"max_position": 0.05, "max_order_notional": 3500, "max_daily_loss": 200,
                     "max_drawdown": 300, "stale_after": "5s"},
            "paper": {"taker_fee_bps": 10, "maker_fee_bps": 2, "latency_ms": 20,
                      "balances": {"USDT": 10000, "BTC": 0.05}},
        },
        env={},
    )


async def _demo(seconds: float, db_url: str, seed: int, console: Console) -> int:
    from bot.emulator.server import Emulator
    from bot.engine import LiveRunner
    from bot.market.synthetic import DEMO_SCHEDULE
    from bot.store.report import render_report

    # a pressure episode from ~14 s on (after the 10 s warm-up), so even a 30 s demo trades
    emulator = Emulator(market="synthetic", seed=seed, schedule=DEMO_SCHEDULE)
    await emulator.start(host="127.0.0.1", port=0)
    try:
        settings = demo_settings(emulator.base_url, db_url)
        console.print(
            f"[bold]bot demo[/bold]: emulator on {emulator.base_url}, paper trading BTC/USDT through ccxt "
            f"for {seconds:g} s, store {redact_url(db_url)}",
            highlight=False,
        )
        runner = LiveRunner(settings, warmup_s=min(10.0, seconds / 3), duration_s=seconds)
        summary = await runner.run()
    finally:
        await emulator.stop()
    for line in summary.lines():
        console.print(line, highlight=False)
    await asyncio.to_thread(render_report, db_url, summary.run_id, None, console)
    path = db_url.split("///", 1)[-1] if db_url.startswith("sqlite") else None
    if path:
        console.print(f"\nReview it yourself:  sqlite3 {path} 'SELECT * FROM v_trades'   (queries: docs/sql.md)",
                      highlight=False)
    return 0


def run_demo(seconds: float, db: str | None, seed: int) -> int:
    if seconds <= 0:
        print(f"--seconds: must be > 0 (got {seconds})", file=sys.stderr)
        return 2
    db_url = db or os.environ.get("BOT_DB_URL") or "sqlite+aiosqlite:///demo.db"
    configure_logging("warning")
    console = Console()
    try:
        return asyncio.run(_demo(seconds, db_url, seed, console))
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        print(f"demo failed: {redact(f'{type(exc).__name__}: {exc}')}", file=sys.stderr)
        return 1
