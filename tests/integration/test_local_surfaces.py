"""What the bot exposes on the machine it runs on: the status server answers only requests that
name a loopback host (DNS rebinding) and, when BOT_STATUS_TOKEN is set, carry the token; files the
bot creates (SQLite database, recordings) are owner-only; the emulator's secret can come from the
environment instead of the command line (which `ps` shows); and whatever a command did not handle
ends as one line naming the command, exit 1."""

from __future__ import annotations

import asyncio
import io
import os
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from rich.console import Console

from bot.cli import main
from bot.emulator import make_ccxt_client
from bot.market.recorder import RecordingWriter
from bot.model import BookSnapshot
from bot.monitor import run_monitor
from bot.status_server import StatusServer, host_allowed
from bot.store.db import upgrade_sync

from fixtures_monitor import sample_status
from helpers import free_port

# --------------------------------------------------------------------------- status server: Host


@pytest.mark.parametrize(
    ("host", "ok"),
    [("127.0.0.1:{port}", True), ("127.0.0.1", True), ("localhost:{port}", True), ("LOCALHOST", True),
     ("[::1]:{port}", True), ("evil.example", False), ("evil.example:{port}", False),
     ("127.0.0.1.evil.example:{port}", False), ("localhost:1", False), ("127.0.0.2:{port}", False),
     ("", False), (None, False)],
)
def test_host_allowed(host: str | None, ok: bool) -> None:
    assert host_allowed(host.format(port=9464) if host is not None else None, 9464) is ok


async def _get(url: str, **headers: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as r:
        return r.status, await r.text()


async def test_status_server_refuses_a_foreign_host_name() -> None:
    async with StatusServer(sample_status, port=0, token="") as server:
        port = server.port
        for path in ("/status", "/metrics", "/healthz", "/"):
            assert (await _get(f"{server.url}{path}"))[0] == 200
            status, text = await _get(f"{server.url}{path}", Host=f"rebind.evil.example:{port}")
            assert status == 421 and "Host" in text
        for host in (f"localhost:{port}", "localhost", f"[::1]:{port}"):
            assert (await _get(f"{server.url}/status", Host=host))[0] == 200
        # HTTP/1.0 without any Host header: refused too
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /status HTTP/1.0\r\n\r\n")
        await writer.drain()
        head = await reader.read(64)
        writer.close()
        assert head.startswith(b"HTTP/1.0 421") or head.startswith(b"HTTP/1.1 421"), head
        assert server.refused == 5


# --------------------------------------------------------------------------- status server: token


async def test_status_server_wants_the_bearer_token_when_one_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOT_STATUS_TOKEN", "tok-ABCDEFGH")
    async with StatusServer(sample_status, port=0) as server:
        assert server.token == "tok-ABCDEFGH"
        assert (await _get(f"{server.url}/status"))[0] == 401
        assert (await _get(f"{server.url}/metrics", Authorization="Bearer wrong"))[0] == 403
        assert (await _get(f"{server.url}/status", Authorization="Basic tok-ABCDEFGH"))[0] == 401
        assert (await _get(f"{server.url}/status", Authorization="Bearer tok-ABCDEFGH"))[0] == 200
        assert (await _get(f"{server.url}/healthz"))[0] == 200  # liveness shows nothing
        # the Host check comes first, token or not
        assert (await _get(f"{server.url}/status", Host="evil.example",
                           Authorization="Bearer tok-ABCDEFGH"))[0] == 421
        # `bot monitor` sends the token from the same variable
        console = Console(file=io.StringIO(), width=120, record=True)
        assert await run_monitor(server.url, 0.05, console, max_polls=1) == 0
        assert "bot unreachable" not in console.export_text()
    monkeypatch.delenv("BOT_STATUS_TOKEN")
    assert StatusServer(sample_status, port=0).token is None


# --------------------------------------------------------------------------- files: 0600


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_a_new_sqlite_database_is_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        upgrade_sync(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
        assert _mode(tmp_path / "bot.db") == 0o600
        existing = tmp_path / "shared.db"
        existing.touch(mode=0o640)
        existing.chmod(0o640)
        upgrade_sync(f"sqlite+aiosqlite:///{existing}")  # a file someone made: left as it is
        assert _mode(existing) == 0o640
    finally:
        os.umask(old)


@pytest.mark.parametrize("name", ["rec.jsonl", "rec.jsonl.gz"])
def test_recordings_are_owner_only(tmp_path: Path, name: str) -> None:
    old = os.umask(0o022)
    try:
        (tmp_path / name).write_bytes(b"old")
        (tmp_path / name).chmod(0o644)
        snap = BookSnapshot(1, [(100.0, 1.0)], [(101.0, 1.0)], 1)
        with RecordingWriter(tmp_path / name, "binance", "BTC/USDT", 0.01, rotate_bytes=10) as w:
            w.write(snap)
            w.write(snap)
        assert len(w.files) >= 2  # rotated: every file of the recording
        assert all(_mode(f) == 0o600 for f in w.files), [oct(_mode(f)) for f in w.files]
    finally:
        os.umask(old)


# --------------------------------------------------------------------------- emulator secret


def test_emulator_takes_its_secret_from_the_environment(tmp_path: Path) -> None:
    port = free_port()
    secret = "env-secret-ABCDEFGH"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BOT_")},
           "BOT_EMULATOR_API_KEY": "env-key", "BOT_EMULATOR_API_SECRET": secret}
    log = tmp_path / "emulator.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "bot", "emulator", "serve", "--port", str(port)],
                                stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_emulator/balances", timeout=2):
                    break
            except (OSError, urllib.error.URLError):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
                time.sleep(0.1)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert secret.encode() not in cmdline

        async def signed_calls() -> None:
            good = make_ccxt_client(f"http://127.0.0.1:{port}", "env-key", secret, timeout_ms=5000)
            bad = make_ccxt_client(f"http://127.0.0.1:{port}", "env-key", "emulator-secret", timeout_ms=5000)
            try:
                assert "USDT" in (await good.fetch_balance())["total"]
                with pytest.raises(Exception, match=r"(?i)signature|auth|invalid"):
                    await bad.fetch_balance()
            finally:
                await good.close()
                await bad.close()

        asyncio.run(signed_calls())
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    assert secret not in log.read_text(errors="replace")


# --------------------------------------------------------------------------- the top-level handler


def _boom(*_args: object) -> int:
    raise OverflowError("Python int too large to convert to C long\n  second line")


def test_an_unhandled_error_is_one_line_naming_the_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import bot.runner

    monkeypatch.setattr(bot.runner, "run_replay_cli", _boom)
    rec = tmp_path / "r.jsonl"
    rec.write_text("")
    with pytest.raises(SystemExit) as info:
        main(["replay", str(rec)])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "bot replay: unexpected error: OverflowError: Python int too large to convert to C long second line "
        "(--log-level debug shows the traceback)"
    ]
    with pytest.raises(SystemExit) as info:
        main(["--log-level", "debug", "replay", str(rec)])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "OverflowError" in err
    assert err.splitlines()[-1].startswith("bot replay: unexpected error: OverflowError")


def test_the_handler_keeps_secrets_out_of_its_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import bot.runner

    def leak(*_args: object) -> int:
        raise RuntimeError("cannot connect to postgresql+asyncpg://bot:pw-ABCDEFGH@db/bot")

    monkeypatch.setattr(bot.runner, "run_service", leak)
    with pytest.raises(SystemExit) as info:
        main(["run"])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "pw-ABCDEFGH" not in err and "postgresql+asyncpg://bot:***@db/bot" in err
    assert err.startswith("bot run: unexpected error: RuntimeError")


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["emulator", "serve", "--port", "99999"])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "bot emulator serve: Invalid value for --port: must be 1..65535 (got 99999) "
        "(see 'bot emulator serve --help')"
    ]
    with pytest.raises(SystemExit) as info:
        main(["check-config", "--help"])
    assert info.value.code == 0
