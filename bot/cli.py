"""The ``bot`` command: one entry point per capability of the DESIGN.md contract.

Each command parses its options here and hands off to the module that owns the work,
imported lazily so ``bot --help`` stays fast and a broken optional part cannot stop the
others. Exit codes: 0 ok, 2 usage, 78 bad config, 1 anything else.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import typer

from bot.config import EX_CONFIG, ConfigError, Settings, load_config, render_effective
from bot.logging import configure_logging

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


@app.callback()
def _main(
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise typer.BadParameter(f"unknown log level {log_level!r}", param_hint="--log-level")
    configure_logging(log_level)


# --------------------------------------------------------------------------- config


@app.command("check-config")
def check_config(path: Path = typer.Argument(..., help="The TOML config file to validate.")) -> None:
    """Validate a config file and print the effective settings (secrets shown as ***)."""
    settings = load_settings_or_exit(path)
    typer.echo(render_effective(settings), nl=False)


# --------------------------------------------------------------------------- service


@app.command("run")
def run(
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML config file."),
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

    raise typer.Exit(run_demo(seconds, db, seed))


@app.command("replay")
def replay(
    recording: Path = typer.Argument(..., help="A bot-recording/1 file (.jsonl or .jsonl.gz)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML config file."),
    db: str | None = typer.Option(None, "--db", help="Database URL."),
) -> None:
    """Run the engine on a recording with a simulated clock and the paper broker; deterministic."""
    from bot.runner import run_replay_cli

    raise typer.Exit(run_replay_cli(recording, config, db))


@app.command("resume")
def resume(
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML config file."),
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
    replay_file: Path | None = typer.Option(None, "--replay", help="Drive the view from a recording instead."),
    refresh: str = typer.Option("250ms", "--refresh", help="Refresh interval."),
    speed: float = typer.Option(10.0, "--speed", help="Replay speed multiplier."),
) -> None:
    """Live terminal view of what a running bot sees and does."""
    import asyncio

    from bot.config import parse_duration
    from bot.monitor import run_monitor, run_replay_monitor

    try:
        refresh_s = parse_duration(refresh)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--refresh") from None
    if speed <= 0:
        raise typer.BadParameter(f"must be > 0 (got {speed:g})", param_hint="--speed")
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

    from bot.clock import LiveClock
    from bot.emulator.client import make_ccxt_client
    from bot.market.feed import MarketFeed, record_to_file

    if seconds <= 0:
        raise typer.BadParameter("must be > 0", param_hint="--seconds")
    if levels < 1:
        raise typer.BadParameter("must be >= 1", param_hint="--levels")
    if not (out.name.endswith(".jsonl") or out.name.endswith(".jsonl.gz")):
        raise typer.BadParameter("must end with .jsonl or .jsonl.gz", param_hint="--out")
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
    recording: Path = typer.Argument(..., help="A bot-recording/1 file."),
    interval: str = typer.Option("10s", "--interval", help="Interval(s), e.g. 10s or 1s,10s,60s."),
    levels: int = typer.Option(5, "--levels", help="Levels for multi-level OFI."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (DESIGN.md fields)."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a PNG with scatter and time series."),
) -> None:
    """Regress mid-price changes on OFI, multi-level OFI and trade-flow imbalance of a recording.

    With several intervals (--interval 1s,10s,60s) --json prints a list of objects, one per
    interval in the order given; with one interval, one object. See docs/signals.md.
    """
    from bot.signals.analyze import run_cli

    code = run_cli(recording, interval, levels, as_json, plot)
    if code:
        raise typer.Exit(code)


# --------------------------------------------------------------------------- store


@app.command("report")
def report(
    db: str | None = typer.Option(None, "--db", help="Database URL."),
    run_id: int | None = typer.Option(None, "--run", help="Only this run."),
    since: str | None = typer.Option(None, "--since", help="Only since this UTC date (YYYY-MM-DD)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML config file (for [store] url)."),
) -> None:
    """Trades, daily PnL and risk events, as tables."""
    from bot.store.report import ReportError, render_report

    settings = load_settings_or_exit(config, db)
    try:
        render_report(settings.store.url, run_id=run_id, since=since)
    except ReportError as exc:
        typer.echo(f"report: {exc}", err=True)
        raise typer.Exit(2 if str(exc).startswith("--") else 1) from None
    except Exception as exc:
        typer.echo(f"report: cannot read {settings.store.url.split('://')[0]} database: "
                   f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", err=True)
        raise typer.Exit(1) from None


@db_app.command("upgrade")
def db_upgrade(
    db: str | None = typer.Option(None, "--db", help="Database URL."),
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML config file (for [store] url)."),
) -> None:
    """Upgrade the database schema to the newest revision (Alembic)."""
    from bot.store.db import current_revision, run_coro_sync, upgrade_sync

    settings = load_settings_or_exit(config, db)
    url = settings.store.url
    try:
        before = run_coro_sync(current_revision(url))
        upgrade_sync(url)
        after = run_coro_sync(current_revision(url))
    except Exception as exc:
        typer.echo(f"db upgrade failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
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
    api_key: str = typer.Option("emulator-key", "--api-key", help="The one API key accepted."),
    api_secret: str = typer.Option("emulator-secret", "--api-secret", help="Its secret."),
) -> None:
    """Serve a Binance-spot-compatible exchange on 127.0.0.1 (REST, websockets, admin API)."""
    import asyncio
    import signal

    from bot.emulator import Emulator, FaultSpecError
    from bot.status_server import is_loopback

    if not is_loopback(host):
        typer.echo(f"--host {host}: refused, the emulator's admin API (/_emulator) has no authentication; "
                   "bind it to a loopback address (127.0.0.1, ::1 or localhost)", err=True)
        raise typer.Exit(2)
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


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except ConfigError as exc:  # pragma: no cover - commands convert these themselves
        for line in exc.problems:
            print(line, file=sys.stderr)
        sys.exit(EX_CONFIG)
