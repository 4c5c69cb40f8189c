"""The ``bot`` command: one entry point per capability of the DESIGN.md contract.

Each command parses its options here and hands off to the module that owns the work,
imported lazily so ``bot --help`` stays fast and a broken optional part cannot stop the
others. Exit codes: 0 ok, 2 usage, 78 bad config, 1 anything else.
"""

from __future__ import annotations

import math
import os
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

import typer

from bot.config import (
    EX_CONFIG,
    MAX_LEVELS,
    ConfigError,
    Settings,
    load_config,
    parse_duration,
    redact,
    render_effective,
    settings_from_dict,
)
from bot.logging import configure_logging, logs_to_stderr

app = typer.Typer(
    name="bot",
    help="Order-flow imbalance trading bot: live L2 book, microstructure signals, risk limits, ccxt execution.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema management (Alembic).", no_args_is_help=True)
emulator_app = typer.Typer(help="The built-in Binance-spot-compatible exchange emulator.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(emulator_app, name="emulator")

ISSUE_STORE = "Store: schema, Alembic migrations, single writer task, SQL trade review on SQLite and PostgreSQL"
ISSUE_MARKET = "Market data: L2 order book, ccxt feed, record and replay"
ISSUE_EMULATOR = "Exchange emulator: a Binance-spot-compatible exchange on 127.0.0.1"
ISSUE_SIGNALS = "Signals, imbalance detector and `bot analyze`"
ISSUE_RISK = "Risk: inventory accounting, position sizing, pre-trade limits and the kill switch"
ISSUE_ENGINE = "Engine and service: `bot run`, `bot demo`, `bot replay`, systemd unit, graceful stop, crash recovery"
ISSUE_MONITOR = "Live microstructure monitor: `bot monitor`"


def _not_implemented(title: str) -> NoReturn:
    typer.echo(f"not implemented yet: {title}", err=True)
    raise typer.Exit(1)


def _config_exit(exc: ConfigError) -> NoReturn:
    for line in exc.problems:
        typer.echo(line, err=True)
    raise typer.Exit(EX_CONFIG)


def load_settings_or_exit(config: Path | None, db: str | None = None) -> Settings:
    """Load the config for a command; on any problem print one line each and exit 78."""
    try:
        return load_config(config, db_url=db)
    except ConfigError as exc:
        _config_exit(exc)


# --------------------------------------------------------------------------- argument checks
#
# Every option is checked before any work starts, the same way the config keys are (finite,
# in range, paths writable); a bad one is a usage error: one line, exit 2 (``main``).

MAX_SECONDS = 7 * 86400.0  # --seconds of demo and record
MAX_SEED = 2**63 - 1
MAX_RUN_ID = 2**63 - 1  # runs.id is a 64-bit integer
MAX_RECORD_LEVELS = 5000  # the deepest book snapshot an exchange serves (Binance: 5000)
# Config paths are declared ``readable=False``: an unreadable config is a config error (78,
# ``load_config`` says why), not a usage error.


def _number(value: float, hint: str, *, gt: float | None = None, ge: float | None = None,
            le: float | None = None) -> float:
    """A finite number within the bounds, else a usage error naming the option."""
    if not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number (got {value:g})", param_hint=hint)
    if gt is not None and not value > gt:
        raise typer.BadParameter(f"must be > {gt:g} (got {value:g})", param_hint=hint)
    if ge is not None and not value >= ge:
        raise typer.BadParameter(f"must be >= {ge:g} (got {value:g})", param_hint=hint)
    if le is not None and not value <= le:
        raise typer.BadParameter(f"must be <= {le:g} (got {value:g})", param_hint=hint)
    return value


def _integer(value: int, hint: str, lo: int, hi: int) -> int:
    if not lo <= value <= hi:
        raise typer.BadParameter(f"must be {lo}..{hi} (got {value})", param_hint=hint)
    return value


def _writable_file(path: Path, hint: str, suffixes: tuple[str, ...]) -> None:
    """An output file: the right suffix, its directory exists and is writable, not a directory."""
    if not path.name.endswith(suffixes):
        raise typer.BadParameter(f"must end with {' or '.join(suffixes)} (got {path})", param_hint=hint)
    if path.is_dir():
        raise typer.BadParameter(f"{path} is a directory", param_hint=hint)
    parent = path.parent
    if not parent.is_dir():
        raise typer.BadParameter(f"no such directory: {parent}", param_hint=hint)
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise typer.BadParameter(f"cannot write {path} (permission denied)", param_hint=hint)


def _db_url(db: str | None, hint: str = "--db") -> None:
    """A --db URL that ``[store] url`` would accept (for commands without a config)."""
    if db is None:
        return
    try:
        settings_from_dict({"store": {"url": db}}, env={})
    except ConfigError as exc:
        raise typer.BadParameter(exc.problems[0].removeprefix("store.url: "), param_hint=hint) from None


_STATE: dict[str, Any] = {"log_level": "info"}


@app.callback()
def _main(
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise typer.BadParameter(f"unknown log level {log_level!r}", param_hint="--log-level")
    _STATE["log_level"] = log_level.lower()
    configure_logging(log_level)


# --------------------------------------------------------------------------- config


@app.command("check-config")
def check_config(path: Path = typer.Argument(..., help="The TOML config file to validate.", readable=False)) -> None:
    """Validate a config file and print the effective settings (secrets shown as ***)."""
    settings = load_settings_or_exit(path)
    typer.echo(render_effective(settings), nl=False)


# --------------------------------------------------------------------------- service


@app.command("run")
def run(
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML config file.", readable=False),
    db: str | None = typer.Option(None, "--db", help="Database URL; overrides [store] url and BOT_DB_URL."),
    live: bool = typer.Option(False, "--live", help="Required (with mode = \"live\" and BOT_LIVE_CONFIRM) to trade real money."),
) -> None:
    """Run the bot as a service; the mode (paper, testnet, live) comes from the config."""
    from bot.runner import run_service

    raise typer.Exit(run_service(config, db, live))


@app.command("demo")
def demo(
    seconds: float = typer.Option(60.0, "--seconds", help="How long the demo trades."),
    db: str | None = typer.Option(None, "--db", help="Database URL (default: a sqlite file demo.db)."),
    seed: int = typer.Option(7, "--seed", help="Seed of the synthetic market."),
) -> None:
    """Offline demo: start the emulator, paper-trade against it through real ccxt, print the review."""
    from bot.runner import run_demo

    _number(seconds, "--seconds", gt=0, le=MAX_SECONDS)
    _integer(seed, "--seed", 0, MAX_SEED)
    _db_url(db)

    raise typer.Exit(run_demo(seconds, db, seed))


@app.command("replay")
def replay(
    recording: Path = typer.Argument(..., help="A bot-recording/1 file (.jsonl or .jsonl.gz).", dir_okay=False),
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML config file.", readable=False),
    db: str | None = typer.Option(None, "--db", help="Database URL."),
) -> None:
    """Run the engine on a recording with a simulated clock and the paper broker; deterministic."""
    from bot.runner import run_replay_cli

    raise typer.Exit(run_replay_cli(recording, config, db))


@app.command("resume")
def resume(
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML config file.", readable=False),
    db: str | None = typer.Option(None, "--db", help="Database URL."),
) -> None:
    """Lift a persisted risk halt, after a person has looked at why it happened."""
    import asyncio
    import datetime as dt
    import time

    from bot.risk.killswitch import resume_persisted

    settings = load_settings_or_exit(config, db)
    now_ms = time.time_ns() // 1_000_000
    try:
        halt, ev = asyncio.run(
            resume_persisted(settings.store.url, settings.exchange.account, settings.symbol, now_ms,
                             mode=settings.mode, venue=settings.venue)
        )
    except Exception as exc:  # the store is unreachable or has no schema: say so, exit 1
        typer.echo(f"cannot read the risk state from the store: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None
    if halt is None or ev is None:
        typer.echo("not halted")
        return
    when = dt.datetime.fromtimestamp(halt.ts / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    typer.echo(
        f"lifted {halt.kind} halt of {when} for {settings.exchange.account} {settings.symbol}: {halt.reason}"
    )
    typer.echo(ev.reason)


@app.command("monitor")
def monitor(
    url: str = typer.Option("http://127.0.0.1:9464", "--url", help="Status endpoint of a running bot."),
    replay_file: Path | None = typer.Option(None, "--replay", help="Drive the view from a recording instead.",
                                            dir_okay=False),
    refresh: str = typer.Option("250ms", "--refresh", help="Refresh interval."),
    speed: float = typer.Option(10.0, "--speed", help="Replay speed multiplier."),
) -> None:
    """Live terminal view of what a running bot sees and does."""
    import asyncio

    from bot.monitor import run_monitor, run_replay_monitor

    try:
        refresh_s = parse_duration(refresh)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--refresh") from None
    _number(refresh_s, "--refresh", ge=0.01, le=3600)
    _number(speed, "--speed", gt=0, le=1e6)
    if replay_file is None and not url.startswith(("http://", "https://")):
        raise typer.BadParameter(f"must be an http:// URL like http://127.0.0.1:9464 (got {url!r})",
                                 param_hint="--url")
    if replay_file is not None and not replay_file.is_file():
        typer.echo(f"--replay: no such recording file: {replay_file}", err=True)
        raise typer.Exit(2)
    try:
        if replay_file is not None:
            code = asyncio.run(run_replay_monitor(replay_file, load_settings_or_exit(None), speed))
        else:
            code = asyncio.run(run_monitor(url, refresh_s))
    except KeyboardInterrupt:
        code = 0
    except Exception as exc:  # the view is gone by now; one line, never a traceback
        typer.echo(f"monitor: {type(exc).__name__}: {exc}" if not isinstance(exc, RuntimeError)
                   else f"monitor: {exc}", err=True)
        raise typer.Exit(1) from None
    if code:
        raise typer.Exit(code)


# --------------------------------------------------------------------------- market data


@app.command("record")
def record(
    symbol: str = typer.Option(..., "--symbol", help="Symbol, e.g. BTC/USDT."),
    exchange: str = typer.Option("binance", "--exchange", help="ccxt exchange id."),
    seconds: float = typer.Option(60.0, "--seconds", help="How long to record."),
    out: Path = typer.Option(..., "--out", help="Output file (.jsonl or .jsonl.gz)."),
    url: str = typer.Option("", "--url", help="Base URL override (e.g. the emulator http://127.0.0.1:8765)."),
    levels: int = typer.Option(20, "--levels", help="Book depth to record."),
) -> None:
    """Record the book and trades of a symbol into the bot-recording/1 format."""
    import asyncio
    import re

    from bot.clock import LiveClock
    from bot.emulator.client import make_ccxt_client
    from bot.market.feed import MarketFeed, record_to_file

    _number(seconds, "--seconds", gt=0, le=MAX_SECONDS)
    _integer(levels, "--levels", 1, MAX_RECORD_LEVELS)
    if not re.fullmatch(r"[A-Za-z0-9]{1,20}/[A-Za-z0-9]{1,20}(:[A-Za-z0-9]{1,20})?", symbol):
        raise typer.BadParameter(f"must look like BASE/QUOTE, e.g. BTC/USDT (got {symbol!r})", param_hint="--symbol")
    if url and not re.match(r"^https?://[^/\s]+", url):
        raise typer.BadParameter(f"must be an http(s) base URL like http://127.0.0.1:8765 (got {url!r})",
                                 param_hint="--url")
    _writable_file(out, "--out", (".jsonl", ".jsonl.gz"))
    import ccxt.pro

    if exchange not in ccxt.pro.exchanges:
        raise typer.BadParameter(f"ccxt has no websocket exchange {exchange!r}", param_hint="--exchange")
    tty = sys.stderr.isatty()

    def progress(elapsed: float, feed: MarketFeed, written: int) -> None:
        line = (f"recording {symbol}: {min(elapsed, seconds):5.1f}/{seconds:g} s, {written} events "
                f"({feed.snapshots} snapshots, {feed.deltas} deltas, {feed.trades} trades), "
                f"{feed.errors} errors{'' if feed.healthy else f' [{feed.reason}]'}")
        typer.echo(("\r" + line) if tty else line, err=True, nl=not tty)

    async def _run() -> tuple[int, list[Path]]:
        # public market data only: no API keys; --url points ccxt at the emulator (or a proxy)
        ex = make_ccxt_client(url or None, None, None, pro=True, sandbox=False, exchange_id=exchange)
        try:
            return await record_to_file(ex, symbol, seconds, out, levels, LiveClock(),
                                        exchange_id=exchange, progress=progress)
        finally:
            await ex.close()

    try:
        written, files = asyncio.run(_run())
    except ValueError as exc:  # unknown symbol
        typer.echo(f"\nrecord: {exc}" if tty else f"record: {exc}", err=True)
        raise typer.Exit(2) from None
    except Exception as exc:
        typer.echo(f"\nrecord failed: {type(exc).__name__}: {exc}" if tty else
                   f"record failed: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None
    if tty:
        typer.echo("", err=True)
    typer.echo(f"recorded {written} events to {', '.join(str(f) for f in files)}")


@app.command("analyze")
def analyze(
    recording: Path = typer.Argument(..., help="A bot-recording/1 file.", dir_okay=False),
    interval: str = typer.Option("10s", "--interval", help="Interval(s), e.g. 10s or 1s,10s,60s."),
    levels: int = typer.Option(5, "--levels", help="Levels for multi-level OFI."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (DESIGN.md fields)."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a PNG with scatter and time series."),
    config: Path | None = typer.Option(None, "--config", "-c", readable=False,
                                       help="The strategy whose signal edge and zero-fee break-even are measured."),
) -> None:
    """Regress mid-price changes on OFI, multi-level OFI and trade-flow imbalance of a recording.

    With several intervals (--interval 1s,10s,60s) --json prints a list of objects, one per
    interval in the order given; with one interval, one object. Also the signal edge and the
    break-even fee of the engine's zero-fee replay of the config. See docs/signals.md.
    """
    from bot.signals.analyze import parse_intervals, run_cli

    try:
        intervals = parse_intervals(interval)
    except ValueError as exc:
        raise typer.BadParameter(str(exc).removeprefix("--interval: "), param_hint="--interval") from None
    if len(intervals) > 20:
        raise typer.BadParameter(f"at most 20 intervals (got {len(intervals)})", param_hint="--interval")
    for seconds in intervals:
        _number(seconds, "--interval", ge=0.001, le=86400)
    _integer(levels, "--levels", 1, MAX_LEVELS)
    if plot is not None:
        _writable_file(plot, "--plot", (".png",))
    settings = load_settings_or_exit(config, None) if config is not None else None
    # with --json stdout carries exactly one JSON document: every log line goes to stderr
    previous = logs_to_stderr(True) if as_json else None
    try:
        code = run_cli(recording, interval, levels, as_json, plot, settings)
    finally:
        if previous is not None:
            logs_to_stderr(previous)
    if code:
        raise typer.Exit(code)


# --------------------------------------------------------------------------- store


@app.command("report")
def report(
    db: str | None = typer.Option(None, "--db", help="Database URL."),
    run_id: int | None = typer.Option(None, "--run", help="Only this run."),
    since: str | None = typer.Option(None, "--since", help="Only since this UTC date (YYYY-MM-DD)."),
    config: Path | None = typer.Option(None, "--config", "-c", readable=False,
                                       help="TOML config file (for [store] url)."),
) -> None:
    """Trades, daily PnL and risk events, as tables."""
    from bot.store.report import ReportError, render_report

    if run_id is not None:
        _integer(run_id, "--run", 1, MAX_RUN_ID)
    settings = load_settings_or_exit(config, db)
    try:
        render_report(settings.store.url, run_id=run_id, since=since)
    except ReportError as exc:
        typer.echo(f"report: {exc}", err=True)
        raise typer.Exit(2 if str(exc).startswith("--") else 1) from None
    except Exception as exc:
        typer.echo(f"report: cannot read {settings.store.url.split('://')[0]} database: "
                   f"{type(exc).__name__}: {redact(str(exc).splitlines()[0]) if str(exc) else ''}", err=True)
        raise typer.Exit(1) from None


@db_app.command("upgrade")
def db_upgrade(
    db: str | None = typer.Option(None, "--db", help="Database URL."),
    config: Path | None = typer.Option(None, "--config", "-c", readable=False,
                                       help="TOML config file (for [store] url)."),
) -> None:
    """Upgrade the database schema to the newest revision (Alembic)."""
    from bot.store.db import current_revision, run_coro_sync, sqlite_write_problem, upgrade_sync

    settings = load_settings_or_exit(config, db)
    url = settings.store.url
    unwritable = sqlite_write_problem(url)
    if unwritable is not None:
        typer.echo(f"db upgrade failed: {unwritable}", err=True)
        raise typer.Exit(1)
    try:
        before = run_coro_sync(current_revision(url))
        upgrade_sync(url)
        after = run_coro_sync(current_revision(url))
    except Exception as exc:
        typer.echo(f"db upgrade failed: {type(exc).__name__}: {redact(str(exc).splitlines()[0]) if str(exc) else ''}",
                   err=True)
        raise typer.Exit(1) from None
    typer.echo(f"database at revision {after} (was {before or 'empty'})")


# --------------------------------------------------------------------------- emulator


@emulator_app.command("serve")
def emulator_serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address; loopback only (127.0.0.1, ::1, localhost)."),
    port: int = typer.Option(8765, "--port", help="TCP port."),
    market: str = typer.Option("synthetic", "--market", help="'synthetic' or a recording file."),
    seed: int = typer.Option(7, "--seed", help="Seed of the synthetic market."),
    faults: str = typer.Option("", "--faults", help="Fault spec, e.g. 'ws_drop_every=5,rest_5xx=0.1'."),
    api_key: str = typer.Option("emulator-key", "--api-key", envvar="BOT_EMULATOR_API_KEY",
                                help="The one API key accepted (or BOT_EMULATOR_API_KEY)."),
    api_secret: str = typer.Option("emulator-secret", "--api-secret", envvar="BOT_EMULATOR_API_SECRET",
                                   show_default=False,
                                   help="Its secret; prefer BOT_EMULATOR_API_SECRET (a command line shows in ps)."),
) -> None:
    """Serve a Binance-spot-compatible exchange on 127.0.0.1 (REST, websockets, admin API)."""
    import asyncio
    import signal

    from bot.emulator import Emulator, FaultSpecError
    from bot.status_server import is_loopback

    _integer(port, "--port", 1, 65535)
    _integer(seed, "--seed", 0, MAX_SEED)
    if not is_loopback(host):
        typer.echo(f"--host {host}: refused, the emulator's admin API (/_emulator) has no authentication; "
                   "bind it to a loopback address (127.0.0.1, ::1 or localhost)", err=True)
        raise typer.Exit(2)
    if not api_key or not api_secret:
        raise typer.BadParameter("must not be empty", param_hint="--api-key/--api-secret")
    if market != "synthetic" and not Path(market).is_file():
        typer.echo(f"--market: no such recording file: {market}", err=True)
        raise typer.Exit(2)
    try:
        emu = Emulator(market=market, seed=seed, faults=faults, api_key=api_key, api_secret=api_secret)
    except FaultSpecError as exc:
        typer.echo(f"--faults: {exc}", err=True)
        raise typer.Exit(2) from None

    async def _serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await emu.start(host=host, port=port)
        except OSError as exc:
            typer.echo(f"cannot listen on {host}:{port}: {exc}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"emulator listening on {emu.base_url} (symbols {', '.join(emu.symbols)})", err=True)
        try:
            await stop.wait()
        finally:
            await emu.stop()

    asyncio.run(_serve())


def _command_name(args: list[str]) -> str:
    """The command a command line names, for error lines: ``bot replay``, ``bot db upgrade``."""
    words: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--log-level":
            skip = True
        elif not arg.startswith("-"):
            words.append(arg)
            if words[0] not in ("db", "emulator") or len(words) == 2:
                break
    return " ".join(["bot", *words])


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return redact(" ".join(lines))[:500]


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: every outcome is an exit code and, on failure, one line on stderr.

    Usage errors (bad options, out-of-range values) print one line and exit 2, config errors
    one line per problem and 78; anything unexpected that a command did not handle itself
    prints one line naming the command and the error and exits 1 (the traceback only with
    ``--log-level debug``), never a traceback on its own.
    """
    try:
        from typer._click.exceptions import ClickException, UsageError
    except ImportError:  # pragma: no cover - a typer that uses click itself
        from click.exceptions import ClickException, UsageError  # type: ignore[no-redef]

    args = list(sys.argv[1:] if argv is None else argv)
    name = _command_name(args)
    try:
        rc = app(args=args, prog_name="bot", standalone_mode=False)
    except UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # plain `bot`: the help, as before
            print(exc.format_message(), file=sys.stderr)
            sys.exit(exc.exit_code)
        where = exc.ctx.command_path if exc.ctx is not None else name
        print(f"{where}: {_one_line(exc.format_message())} (see '{where} --help')", file=sys.stderr)
        sys.exit(exc.exit_code)
    except ClickException as exc:
        print(f"{name}: {_one_line(exc.format_message())}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:
        print(f"{name}: aborted", file=sys.stderr)
        sys.exit(1)
    except ConfigError as exc:  # commands convert these themselves; this is the safety net
        for line in exc.problems:
            print(line, file=sys.stderr)
        sys.exit(EX_CONFIG)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        if _STATE["log_level"] == "debug":
            traceback.print_exception(exc, file=sys.stderr)
        detail = _one_line(str(exc)) or "(no message)"
        print(f"{name}: unexpected error: {type(exc).__name__}: {detail} "
              "(--log-level debug shows the traceback)", file=sys.stderr)
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)
