"""Start-up edge cases of ``bot run``, as real processes against the emulator over real ccxt.

* A SIGTERM (or SIGINT) in the first seconds -- while the modules load, the store opens, the
  markets load or the start-up reconciliation retries against an exchange that does not
  answer -- is a clean stop: exit 0 within 10 s, ``stopped`` logged, the ``runs`` row closed.
* Wrong API keys end at once with one stderr line naming authentication and exit 78 (systemd's
  ``RestartPreventExitStatus``), never retried, the wrong value nowhere in the output or the
  database.

The emulator runs in the test's event loop; the slow exchange is its ``rest_timeout`` fault,
armed the moment the bot has loaded the markets and synced its clock (its first
``/api/v3/time``), so every request of the start-up reconciliation is held until the client
times out and the reconciler retries with backoff.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.emulator import Emulator

from fixtures_emulator import EMU_KEY, EMU_SECRET
from helpers import json_lines

CONFIG = """\
mode = "testnet"
symbol = "BTC/USDT"
[exchange]
url = "{url}"
timeout = "1s"
[store]
url = "sqlite+aiosqlite:///{db}"
"""


@dataclass
class Ended:
    code: int
    seconds: float  # from the signal (or the start, when none was sent) to the exit
    out: str
    err: str
    db: Path

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in json_lines(self.out) if e.get("event") == name]

    def runs(self) -> list[tuple[int, int | None]]:
        con = sqlite3.connect(self.db)
        try:
            return [(int(r[0]), r[1]) for r in con.execute("SELECT id, ended_at FROM runs")]
        finally:
            con.close()

    def db_text(self) -> bytes:
        """The database's bytes, WAL included, and its SQL dump."""
        raw = b"".join(p.read_bytes() for p in self.db.parent.glob(self.db.name + "*"))
        con = sqlite3.connect(self.db)
        try:
            return raw + "\n".join(con.iterdump()).encode()
        finally:
            con.close()


def _slow_after_clock_sync(emu: Emulator) -> asyncio.Event:
    """Arm ``rest_timeout`` right after the emulator answered the first ``/api/v3/time``."""
    armed = asyncio.Event()
    answer_time = emu.h_time

    async def h_time(request: web.Request) -> web.Response:
        response = await answer_time(request)
        if not armed.is_set():
            emu.set_faults("rest_timeout=100000")
            armed.set()
        return response

    emu.h_time = h_time  # type: ignore[method-assign]  # routed when the emulator starts
    return armed


def _catches(pid: int, sig: signal.Signals) -> bool | None:
    """Whether process ``pid`` handles ``sig`` itself (``SigCgt``); None without /proc/PID."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    caught = next((ln.split()[1] for ln in status.splitlines() if ln.startswith("SigCgt:")), "0")
    return bool(int(caught, 16) & (1 << (sig - 1)))


async def _catching(pid: int, sig: signal.Signals, within_s: float = 5.0) -> None:
    """Until process ``pid`` handles ``sig`` (Linux; elsewhere at once).

    ``bot run`` catches stop signals from the first line of its own code on; a signal before
    that (while the interpreter and the CLI load, ~0.2 s, longer on a loaded machine) gets the
    default action -- before any run exists, so nothing is left to close.
    """
    for _ in range(int(within_s / 0.01)):
        if _catches(pid, sig) is not False:
            return
        await asyncio.sleep(0.01)


async def _bot(tmp_path: Path, url: str, *, key: str = EMU_KEY, secret: str = EMU_SECRET) -> tuple[Any, Path]:
    db = tmp_path / "bot.db"
    cfg = tmp_path / "bot.toml"
    cfg.write_text(CONFIG.format(url=url, db=db))
    cfg.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}
    env.update(BOT_API_KEY=key, BOT_API_SECRET=secret, PYTHONUNBUFFERED="1")
    with (tmp_path / "out").open("wb") as out, (tmp_path / "err").open("wb") as err:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "run", "--config", str(cfg),
                                                    stdout=out, stderr=err, env=env, cwd=tmp_path)
    return proc, db


async def _ended(proc: Any, tmp_path: Path, db: Path, since: float, within_s: float) -> Ended:
    try:
        code = await asyncio.wait_for(proc.wait(), within_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"bot run did not exit within {within_s} s:\n"
                             f"{(tmp_path / 'out').read_text(errors='replace')[-3000:]}") from None
    return Ended(code, time.monotonic() - since, (tmp_path / "out").read_text(errors="replace"),
                 (tmp_path / "err").read_text(errors="replace"), db)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "after_s", "during"),
    [
        (signal.SIGTERM, 0.3, None),  # the modules are still loading
        (signal.SIGTERM, 1.0, None),  # loading, or the store opening
        (signal.SIGTERM, 2.0, "reconciling"),  # the exchange holds every request: reconciliation retries
        (signal.SIGINT, 1.0, None),
    ],
    ids=["SIGTERM-0.3s", "SIGTERM-1s", "SIGTERM-2s-reconciling", "SIGINT-1s"],
)
async def test_a_stop_signal_during_start_up_is_a_clean_stop(
    tmp_path: Path, sig: signal.Signals, after_s: float, during: str | None
) -> None:
    emu = Emulator(seed=5)
    armed = _slow_after_clock_sync(emu)
    await emu.start(port=0)
    try:
        started = time.monotonic()
        proc, db = await _bot(tmp_path, emu.base_url)
        try:
            await asyncio.sleep(after_s)
            await _catching(proc.pid, sig)
            if during == "reconciling":
                # land inside the start-up reconciliation, also on a slow machine: its requests
                # are held from the moment the clock sync was answered
                await asyncio.wait_for(armed.wait(), 20)
                await asyncio.sleep(max(0.3, started + after_s - time.monotonic()))
            assert proc.returncode is None, (tmp_path / "out").read_text()[-3000:]
            sent = time.monotonic()
            proc.send_signal(sig)
            ended = await _ended(proc, tmp_path, db, sent, within_s=12)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    finally:
        await emu.stop()
    print(f"{sig.name} at {sent - started:.2f} s: exit {ended.code} after {ended.seconds:.2f} s")
    assert ended.code == 0, ended.out[-3000:] + ended.err[-3000:]
    assert ended.seconds < 10
    assert "Traceback" not in ended.err, ended.err[-3000:]
    stop = ended.events("stop_requested")
    assert [e["reason"] for e in stop] == [sig.name], stop
    if during is not None:
        assert stop[0]["state"] == during, stop
        assert armed.is_set()
    assert [e["reason"] for e in ended.events("stopped")] == [sig.name]
    runs = ended.runs()
    assert len(runs) == 1 and runs[0][1] is not None, runs  # one process start, one closed run


@pytest.mark.slow
@pytest.mark.parametrize("wrong", ["secret", "key"])
async def test_wrong_api_keys_exit_78_with_one_line_and_no_retry(tmp_path: Path, wrong: str) -> None:
    bad = "wrong-SeCrEt-8c2f6e1d94" if wrong == "secret" else "wrong-KeY-3b7d5a9e1f"
    emu = Emulator(seed=5)
    await emu.start(port=0)
    try:
        started = time.monotonic()
        keys = {"secret": bad} if wrong == "secret" else {"key": bad}
        proc, db = await _bot(tmp_path, emu.base_url, **keys)
        try:
            ended = await _ended(proc, tmp_path, db, started, within_s=15)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    finally:
        await emu.stop()
    print(f"wrong {wrong}: exit {ended.code} after {ended.seconds:.2f} s; stderr: {ended.err.strip()}")
    assert ended.code == 78, ended.out[-3000:] + ended.err[-3000:]
    lines = [line for line in ended.err.splitlines() if line.strip()]
    assert len(lines) == 1, ended.err
    assert lines[0].startswith("exchange: authentication failed (check BOT_API_KEY / BOT_API_SECRET): "), lines
    code = "-1022" if wrong == "secret" else "-2015"
    assert code in lines[0], lines  # the exchange's own answer, as ccxt reports it
    assert len(ended.events("authentication_failed")) == 1
    assert ended.events("startup_reconcile_failed") == []  # not retried: no retry fixes a key
    assert len(ended.events("stopped")) == 1
    runs = ended.runs()
    assert len(runs) == 1 and runs[0][1] is not None, runs
    for where, text in (("stdout", ended.out.encode()), ("stderr", ended.err.encode()),
                        ("the database", ended.db_text())):
        assert bad.encode() not in text, f"the wrong {wrong} appears in {where}"


def test_authentication_error_is_found_behind_the_wrappers() -> None:
    import ccxt

    from bot.engine import EngineTaskFailed
    from bot.execution.broker import BrokerError, authentication_error

    refused = ccxt.AuthenticationError('binance {"code":-1022,"msg":"Signature for this request is not valid."}')
    try:
        try:
            raise refused
        except ccxt.AuthenticationError as exc:
            raise BrokerError("the exchange refused our credentials") from exc
    except BrokerError as wrapped:
        assert authentication_error(wrapped) is refused
        try:
            raise EngineTaskFailed("order-updates", wrapped) from wrapped  # as LiveRunner._named does
        except EngineTaskFailed as failed:
            assert authentication_error(failed) is refused
    assert authentication_error(ccxt.RequestTimeout("timed out")) is None
    assert authentication_error(BrokerError("unsupported symbol")) is None


async def test_startup_reconciliation_gives_up_at_once_on_wrong_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    import ccxt

    from bot.clock import SimulatedClock
    from bot.execution.broker import BrokerError
    from bot.execution.reconcile import Reconciler

    calls = 0

    async def refused(self: Reconciler) -> None:
        nonlocal calls
        calls += 1
        raise BrokerError("the exchange refused our credentials") from ccxt.AuthenticationError("-2015")

    monkeypatch.setattr(Reconciler, "reconcile_once", refused)
    manager: Any = type("M", (), {"ids": None, "symbol": "BTC/USDT", "last_fill_ts": None, "open_orders": []})()
    rec = Reconciler(manager, broker=None, clock=SimulatedClock(0))  # type: ignore[arg-type]
    with pytest.raises(BrokerError):
        await asyncio.wait_for(rec.startup(backoff_base=0.01), 5)
    assert calls == 1
