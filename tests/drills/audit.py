"""Fault drills: the emulator and the bot as real subprocesses, and the audit every drill ends with.

Why subprocesses and not the engine in-process: the failure rules are promises about the
*process* (SIGKILL, SIGTERM, exit codes, what reaches stdout), so the drills exercise exactly
what systemd would run: ``bot emulator serve`` and ``bot run --config X``.

The audit compares the exchange's truth (the emulator's admin API) with the bot's store:

* every emulator fill is in ``fills`` exactly once (emulator trade ``id`` -> ``fills.trade_id``,
  ccxt maps Binance's ``id``/``t``/``tradeId`` to the unified trade id, a decimal string);
* no fill in the store that the exchange does not know (a phantom);
* no client order id was used twice on the exchange;
* the store position (``position_after`` of the last fill, and independently the signed sum
  of fills minus base-currency fees) equals the change of the emulator's BTC balance;
* no order is left open on the exchange after the bot stopped;
* the position never went beyond ``risk.max_position`` on the exchange: the running net
  position over the exchange's fills, in time order (what the bot may hold at worst);
* the fault happened: every emulator fault the drill names (``expect_hits``) fired at least
  once (the emulator counts hits, ``GET /_emulator/faults``);
* the log explains it: every event the drill names (``expect_events``) is in the bot's log at
  least once. An expectation is ``"event"`` or ``"event field=value field~part"``: ``=`` is
  equality (numbers compared as numbers), ``~`` a substring of the field's text. The same
  strings are the "what you see" column of docs/operations.md's table (a test compares them);
* no request reached the exchange inside a ``Retry-After`` window it had sent (the emulator
  counts those as ``retry_after_ignored``).

The drill configuration keeps the bot busy (small orders, a short ``order_ttl`` and
``max_hold``, low thresholds) and the drill pushes alternating pressure episodes into the
synthetic market (``POST /_emulator/pressure``), so orders are flowing while a fault is on.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

SCALE = Decimal("0.00000001")  # SQLite money columns are integers in units of 1e-8 (docs/sql.md)
START_BTC = Decimal(1)
MAX_POSITION = Decimal("0.05")  # risk.max_position: the drills' config keeps the default
MAX_ORDER_NOTIONAL = "600"  # about 0.01 BTC an order: five orders to reach max_position
API_KEY = "emulator-key"
OPEN_STATUSES = ("NEW", "PARTIALLY_FILLED")
BOT = [sys.executable, "-m", "bot"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Emulator:
    """``bot emulator serve`` on a free port; the admin API as plain HTTP calls."""

    def __init__(self, workdir: Path, faults: str = "", api_secret: str = "emulator-secret",
                 seed: int | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_secret = api_secret
        self.log_path = workdir / f"emulator-{self.port}.log"
        cmd = [*BOT, "emulator", "serve", "--port", str(self.port), "--api-key", API_KEY, "--api-secret", api_secret]
        if seed is not None:
            cmd += ["--seed", str(seed)]
        if faults:
            cmd += ["--faults", faults]
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=workdir)
        deadline = time.monotonic() + 15
        while True:
            try:
                self.balances()
                break
            except (OSError, urllib.error.URLError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"emulator did not start: {self.log_path.read_text()[-2000:]}") from None
                time.sleep(0.1)

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}/_emulator/{path}", timeout=5) as r:
            return json.loads(r.read())

    def orders(self) -> list[dict[str, Any]]:
        return list(self._get("orders?symbol=BTC/USDT"))

    def fills(self) -> list[dict[str, Any]]:
        return list(self._get("fills?symbol=BTC/USDT"))

    def balances(self) -> dict[str, Any]:
        return dict(self._get("balances"))

    def btc_total(self) -> Decimal:
        b = self.balances()["BTC"]
        return Decimal(b["free"]) + Decimal(b["locked"])

    def open_orders(self) -> list[dict[str, Any]]:
        return [o for o in self.orders() if o["status"] in OPEN_STATUSES]

    def faults(self) -> dict[str, Any]:
        """``GET /_emulator/faults``: spec, armed faults, ``hits`` per key, ``retry_after_ignored``."""
        return dict(self._get("faults"))

    def hits(self) -> dict[str, int]:
        """How often each fault fired since the emulator started (kept across fault sets)."""
        return {str(k): int(v) for k, v in self.faults().get("hits", {}).items()}

    def pressure(self, direction: int, seconds: float) -> dict[str, Any]:
        """A buy (+1) or sell (-1) pressure episode in the synthetic market, starting now."""
        body = json.dumps({"symbol": "BTC/USDT", "direction": direction, "seconds": seconds}).encode()
        req = urllib.request.Request(f"{self.url}/_emulator/pressure", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return dict(json.loads(r.read()))

    def fill(self, client_id: str, qty: str | None = None) -> dict[str, Any]:
        """A counterparty trades ``qty`` (default half the remainder) against a resting order now."""
        payload: dict[str, Any] = {"symbol": "BTC/USDT", "clientOrderId": client_id}
        if qty is not None:
            payload["qty"] = qty
        req = urllib.request.Request(f"{self.url}/_emulator/fill", data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return dict(json.loads(r.read()))

    def set_faults(self, spec: str) -> dict[str, Any]:
        """Replace the whole fault set at run time (an empty SPEC clears it)."""
        req = urllib.request.Request(f"{self.url}/_emulator/faults", data=spec.encode(), method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            return dict(json.loads(r.read()))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


CONFIG = """\
mode = "testnet"
symbol = "BTC/USDT"
[exchange]
url = "{url}"
{exchange_extra}
[store]
url = "{store_url}"
[signals]
window = "5s"
halflife = "30s"
warmup = "{warmup}"
[strategy]
# A busy bot: low thresholds, short holds and order lifetimes, so that creates and cancels
# keep coming while a fault is on (the drills test the failure paths, not the edge).
entry_z = 0.5
exit_z = 0.4
persistence = 1
aggressive_z = {aggressive_z}  # strong signals cross the spread: the drills need fills to audit
max_hold = "4s"
order_ttl = "{order_ttl}"
cost_gate = false   # the drills need trades, not edge: enter on every confirmed signal
[risk]
max_order_notional = {max_notional}
max_orders_per_minute = 120
{risk_extra}
"""


def write_config(workdir: Path, emu: Emulator, *, warmup: str = "2s", max_notional: str = MAX_ORDER_NOTIONAL,
                 exchange_extra: str = "", risk_extra: str = "", store_url: str | None = None,
                 aggressive_z: str = "1.5", order_ttl: str = "1s") -> Path:
    path = workdir / "drill.toml"
    url = store_url or f"sqlite+aiosqlite:///{workdir / 'drill.db'}"
    path.write_text(CONFIG.format(url=emu.url, store_url=url, warmup=warmup, max_notional=max_notional,
                                  aggressive_z=aggressive_z, exchange_extra=exchange_extra, risk_extra=risk_extra,
                                  order_ttl=order_ttl))
    path.chmod(0o600)
    return path


def bot_prefix(config: Path) -> str:
    """The client-id prefix the bot derives from its config (account, symbol, mode)."""
    from bot.config import load_config

    return load_config(config, env={"BOT_API_KEY": API_KEY, "BOT_API_SECRET": "unused"}).client_id_prefix


@dataclass
class Bot:
    """One ``bot run`` process; every start appends to the same output file (the whole log)."""

    config: Path
    secret: str
    out: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    _read: int = 0  # bytes of ``out`` parsed into ``_events``
    _events: list[dict[str, Any]] = field(default_factory=list)

    def start(self) -> None:
        env = dict(os.environ, BOT_API_KEY=API_KEY, BOT_API_SECRET=self.secret, PYTHONUNBUFFERED="1")
        env.pop("BOT_DB_URL", None)
        fh = self.out.open("ab")
        self.proc = subprocess.Popen([*BOT, "run", "--config", str(self.config)], stdout=fh,
                                     stderr=subprocess.STDOUT, env=env, cwd=self.config.parent)
        fh.close()
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as after a power cut or the OOM killer."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.exit_codes.append(self.proc.wait(10))

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit code (the contract: 0 within 10 s)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"bot did not exit within {timeout} s of SIGTERM") from None
        self.exit_codes.append(rc)
        return rc

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        rc = self.proc.wait(timeout)
        self.exit_codes.append(rc)
        return rc

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        """Every JSON line so far; parsed incrementally (the drills poll this many times a second)."""
        return list(self._parse())

    def _parse(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return self._events
        with self.out.open("rb") as fh:
            fh.seek(self._read)
            chunk = fh.read()
        end = chunk.rfind(b"\n") + 1  # a line still being written is parsed next time
        self._read += end
        for raw in chunk[:end].splitlines():
            if raw.startswith(b"{"):
                try:
                    self._events.append(json.loads(raw))
                except ValueError:
                    pass
        return self._events

    def count(self, event: str) -> int:
        return sum(1 for e in self._parse() if e.get("event") == event)


class Traffic:
    """Alternating buy and sell pressure episodes in the emulator's market, in a thread.

    Why: the synthetic market's own episodes start a minute or more in; a drill needs the bot
    to send orders while its fault is on, so it makes the market move now.
    """

    def __init__(self, emu: Emulator, period: float = 4.0) -> None:
        self.emu = emu
        self.period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drill-traffic", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        direction = 1
        while not self._stop.is_set():
            try:
                self.emu.pressure(direction, self.period + 0.5)
            except (OSError, urllib.error.URLError):
                return  # the emulator is gone
            direction = -direction
            self._stop.wait(self.period)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def parse_expectation(spec: str) -> tuple[str, list[tuple[str, str, str]]]:
    """``"rate_limited retry_after_s=2"`` -> ``("rate_limited", [("retry_after_s", "=", "2")])``."""
    name, *conds = spec.split()
    out: list[tuple[str, str, str]] = []
    for c in conds:
        op = "~" if "~" in c and ("=" not in c or c.index("~") < c.index("=")) else "="
        field_name, _, value = c.partition(op)
        if not field_name or not value:
            raise ValueError(f"bad expectation {spec!r}: {c!r} is not field=value or field~part")
        out.append((field_name, op, value))
    return name, out


def _matches(event: dict[str, Any], name: str, conds: list[tuple[str, str, str]]) -> bool:
    if event.get("event") != name:
        return False
    for field_name, op, value in conds:
        if field_name not in event:
            return False
        actual = event[field_name]
        text = actual if isinstance(actual, str) else json.dumps(actual)
        if op == "~":
            if value not in text:
                return False
        elif text != value:
            try:
                if float(text) != float(value):
                    return False
            except ValueError:
                return False
    return True


def count_expected(events: list[dict[str, Any]], spec: str) -> int:
    """How many log lines satisfy the expectation ``spec`` (see :func:`parse_expectation`)."""
    name, conds = parse_expectation(spec)
    return sum(1 for e in events if _matches(e, name, conds))


def report_text(db_url: str, secret: str, cwd: Path) -> str:
    """What ``bot report --db URL`` prints (stdout and stderr), run with the bot's environment."""
    env = dict(os.environ, BOT_API_KEY=API_KEY, BOT_API_SECRET=secret, COLUMNS="200")
    env.pop("BOT_DB_URL", None)
    out = subprocess.run([*BOT, "report", "--db", db_url], capture_output=True, text=True, env=env, cwd=cwd,
                         timeout=60)
    assert out.returncode == 0, f"bot report --db {db_url} exited {out.returncode}: {out.stderr[-2000:]}"
    return out.stdout + out.stderr


def sqlite_dump(db: Path) -> str:
    con = sqlite3.connect(db)
    try:
        return "\n".join(con.iterdump())
    finally:
        con.close()


def wait_for(cond: Any, timeout: float, what: str, step: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


@dataclass
class AuditResult:
    name: str
    fills_checked: int
    duplicates: int
    lost: list[str]
    phantom: list[str]
    duplicate_client_ids: list[str]
    store_position: Decimal
    summed_position: Decimal
    exchange_change: Decimal
    open_orders: list[str]
    peak_position: Decimal = Decimal(0)
    hits: dict[str, int] = field(default_factory=dict)  # the expected faults' hit counts
    explained: dict[str, int] = field(default_factory=dict)  # expectation -> matching log lines
    retry_after_ignored: int = 0

    @property
    def position_ok(self) -> bool:
        return self.store_position == self.exchange_change == self.summed_position

    def line(self) -> str:
        pos = "position ok" if self.position_ok else (
            f"position MISMATCH store {self.store_position} (summed {self.summed_position}) "
            f"!= exchange {self.exchange_change}")
        hits = ", ".join(f"{k} x{v}" for k, v in self.hits.items()) or "none (not an exchange fault)"
        log = ", ".join(f"{k!r} x{v}" if " " in k else f"{k} x{v}" for k, v in self.explained.items())
        return (f"drill {self.name}: fills checked {self.fills_checked}, duplicates {self.duplicates}, "
                f"lost {len(self.lost)}, {pos}, peak |position| {self.peak_position} (max {MAX_POSITION}); "
                f"fault hits {hits}; log {log}")

    def assert_clean(self) -> None:
        assert not self.lost, f"{self.name}: fills on the exchange missing from the store: {self.lost}"
        assert self.duplicates == 0, f"{self.name}: duplicated fills in the store"
        assert not self.phantom, f"{self.name}: fills in the store the exchange does not know: {self.phantom}"
        assert not self.duplicate_client_ids, f"{self.name}: client ids used twice: {self.duplicate_client_ids}"
        assert not self.open_orders, f"{self.name}: orders left open on the exchange: {self.open_orders}"
        assert self.position_ok, self.line()
        assert self.peak_position <= MAX_POSITION, f"{self.name}: position went beyond max_position: {self.line()}"
        never = [k for k, v in self.hits.items() if v <= 0]
        assert not never, f"{self.name}: the fault never fired: {never} ({self.line()})"
        unexplained = [k for k, v in self.explained.items() if v <= 0]
        assert not unexplained, f"{self.name}: the log has no line {unexplained} explaining the fault ({self.line()})"
        assert self.retry_after_ignored == 0, (
            f"{self.name}: {self.retry_after_ignored} requests reached the exchange inside its Retry-After window")


def audit(name: str, emu: Emulator, db: Path, *, events: list[dict[str, Any]],
          expect_events: tuple[str, ...] | list[str], expect_hits: tuple[str, ...] | list[str] = (),
          pg_rows: list[tuple[Any, ...]] | None = None) -> AuditResult:
    """Compare the exchange's truth with the store and the log with the faults; prints the line.

    ``db`` is the SQLite store; a PostgreSQL drill passes its fill rows as ``pg_rows`` instead
    (exact NUMERIC there, not SQLite's integer 1e-8 units). ``events`` is the bot's whole log
    (every start), ``expect_events`` the lines that explain the drill's fault and
    ``expect_hits`` the emulator faults that must have fired.
    """
    if not expect_events:
        raise ValueError(f"{name}: a drill names the log events that explain its fault (expect_events)")
    view = emu.faults()
    all_hits = {str(k): int(v) for k, v in view.get("hits", {}).items()}
    ex_fills = emu.fills()
    ex_orders = emu.orders()
    scale = SCALE
    if pg_rows is not None:
        rows, scale = pg_rows, Decimal(1)
    else:
        con = sqlite3.connect(db)
        try:
            rows = con.execute(
                "SELECT trade_id, side, amount, fee, fee_currency, position_after FROM fills "
                "WHERE symbol = 'BTC/USDT' ORDER BY id"
            ).fetchall()
        finally:
            con.close()
    store_ids = Counter(str(r[0]) for r in rows)
    ex_ids = [str(f["id"]) for f in ex_fills]
    lost = [t for t in ex_ids if t not in store_ids]
    phantom = sorted(set(store_ids) - set(ex_ids))
    duplicates = sum(n - 1 for n in store_ids.values() if n > 1)
    cids = Counter(str(o["clientOrderId"]) for o in ex_orders)
    dup_cids = sorted(c for c, n in cids.items() if n > 1)
    last = Decimal(rows[-1][5]) * scale if rows else Decimal(0)
    summed = Decimal(0)
    for _tid, side, amount, fee, fee_ccy, _pa in rows:
        qty = Decimal(amount) * scale
        summed += qty if side == "buy" else -qty
        if fee_ccy == "BTC":
            summed -= Decimal(fee) * scale
    running = peak = Decimal(0)
    for f in sorted(ex_fills, key=lambda f: int(f["id"])):  # ids follow execution order; "time" moves with clock_skew
        qty = Decimal(f["qty"])
        running += qty if f["side"] == "BUY" else -qty
        if f["commissionAsset"] == "BTC":
            running -= Decimal(f["commission"])
        peak = max(peak, abs(running))
    result = AuditResult(
        name=name,
        fills_checked=len(ex_ids),
        duplicates=duplicates,
        lost=lost,
        phantom=phantom,
        duplicate_client_ids=dup_cids,
        store_position=last.normalize() if rows else Decimal(0),
        summed_position=summed.normalize() if summed else Decimal(0),
        exchange_change=(emu.btc_total() - START_BTC).normalize() if emu.btc_total() != START_BTC else Decimal(0),
        open_orders=[f"{o['clientOrderId']} {o['status']}" for o in ex_orders if o["status"] in OPEN_STATUSES],
        peak_position=peak.normalize() if peak else Decimal(0),
        hits={k: all_hits.get(k, 0) for k in expect_hits},
        explained={spec: count_expected(events, spec) for spec in expect_events},
        retry_after_ignored=int(view.get("retry_after_ignored", 0)),
    )
    print(result.line())
    if os.environ.get("BOT_DRILL_AUDIT_FILE"):  # the end-of-run summary (tests/conftest.py)
        with open(os.environ["BOT_DRILL_AUDIT_FILE"], "a") as fh:
            fh.write(result.line() + "\n")
    return result
