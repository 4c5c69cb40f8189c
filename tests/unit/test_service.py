"""sd_notify over a real unix datagram socket, credentials, and the unit file."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from bot.service import Notifier, load_credentials, watchdog_interval_s

ROOT = Path(__file__).resolve().parents[2]


def test_notifier_sends_datagrams_in_order(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    try:
        n = Notifier(path)
        assert n.ready("book healthy") and n.watchdog() and n.stopping()
        got = [sock.recv(4096).decode() for _ in range(3)]
    finally:
        sock.close()
    assert got == ["READY=1\nSTATUS=book healthy", "WATCHDOG=1", "STOPPING=1"]


def test_notifier_is_silent_without_socket() -> None:
    n = Notifier("")
    assert not n.enabled
    assert n.ready() is False
    assert n.sent == []


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert watchdog_interval_s() == 15.0
    monkeypatch.delenv("WATCHDOG_USEC")
    assert watchdog_interval_s(7.0) == 7.0


def test_credentials_directory_fills_keys_env_wins(tmp_path: Path) -> None:
    (tmp_path / "bot_api_key").write_text("K-from-cred\n")
    (tmp_path / "bot_api_secret").write_text("S-from-cred\n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path), "BOT_API_SECRET": "S-from-env"}
    assert load_credentials(env) == ["BOT_API_KEY"]
    assert env["BOT_API_KEY"] == "K-from-cred"
    assert env["BOT_API_SECRET"] == "S-from-env"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_file_verifies(tmp_path: Path) -> None:
    bot = shutil.which("bot")
    assert bot, "the bot console script must be installed"
    text = (ROOT / "systemd" / "bot@.service").read_text().replace("/opt/bot/.venv/bin/bot", bot)
    unit = tmp_path / "bot@test.service"
    unit.write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", r.stderr
    for line in ("Type=notify", "WatchdogSec=30", "Restart=on-failure", "EnvironmentFile=-/etc/bot/%i.env",
                 "ExecStart=/opt/bot/.venv/bin/bot run --config /etc/bot/%i.toml", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "DynamicUser=yes", "StateDirectory=bot/%i"):
        assert line in (ROOT / "systemd" / "bot@.service").read_text()
