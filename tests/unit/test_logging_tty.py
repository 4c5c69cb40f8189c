"""bot/logging.py on a terminal and through ``--log-level``.

The JSON path is covered in test_config.py; here a child process writes to a pseudo-terminal
(so ``sys.stdout.isatty()`` is true) and must render the readable console format, still with
run_id/mode/symbol on the line and secrets redacted. The ``--log-level`` tests go through the
real CLI callback (``bot --log-level ...``) in a child process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-VALUE-xyz-9876"
KEY = "k3y-VALUE-abc-1234"
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")

LOG_SCRIPT = (
    "import os\n"
    "from bot.logging import configure_logging, get_logger, bind_run\n"
    "configure_logging('info')\n"
    "bind_run(42, 'paper', 'ETH/USDT')\n"
    "log = get_logger('tty-test')\n"
    "log.info('hello_console', url='https://x/?signature=' + os.environ['BOT_API_SECRET'])\n"
    "log.warning('second_line', detail='key ' + os.environ['BOT_API_KEY'])\n"
)

# A throwaway command registered on the real typer app, so the real ``--log-level`` callback
# configures logging before it runs.
CLI_SCRIPT = (
    "import sys\n"
    "from bot.cli import app\n"
    "from bot.logging import bind_run, get_logger\n"
    "@app.command('log-probe')\n"
    "def _probe() -> None:\n"
    "    bind_run(5, 'paper', 'BTC/USDT')\n"
    "    log = get_logger('probe')\n"
    "    log.debug('debug_probe_line')\n"
    "    log.info('info_probe_line')\n"
    "    log.warning('warning_probe_line')\n"
    "app(sys.argv[1:], prog_name='bot')\n"
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "BOT_API_KEY",
                                                              "BOT_API_SECRET")}
    env.update(PYTHONUNBUFFERED="1", TERM="xterm-256color", **extra)
    return env


def _run_on_pty(args: list[str], env: dict[str, str], timeout: float = 60.0) -> tuple[int, str]:
    """Run ``args`` with stdout/stderr on a pty slave; return (rc, everything it wrote)."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env,
                                cwd=ROOT, close_fds=True)
    finally:
        os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO once the child closed its end of the terminal
                break
            if not chunk:
                break
            out += chunk
            if time.monotonic() > deadline:
                break
        rc = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return rc, out.decode("utf-8", "replace")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_console_format_on_a_tty_with_run_fields_and_secrets_redacted() -> None:
    rc, raw = _run_on_pty([sys.executable, "-c", LOG_SCRIPT], _env(BOT_API_SECRET=SECRET, BOT_API_KEY=KEY))
    text = ANSI.sub("", raw).replace("\r\n", "\n")
    assert rc == 0, text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    ours = [ln for ln in lines if "hello_console" in ln or "second_line" in ln]
    assert len(ours) == 2, text
    for ln in ours:
        # console renderer, not JSON
        assert not ln.lstrip().startswith("{"), ln
        with pytest.raises(ValueError):
            json.loads(ln)
        assert "run_id=42" in ln and "mode=paper" in ln and "symbol=ETH/USDT" in ln, ln
    assert "[info" in ours[0] and "[warning" in ours[1]
    # the renderer used colours on a terminal
    assert "\x1b[" in raw
    # secrets never reach the terminal, replaced by ***
    assert SECRET not in raw and KEY not in raw
    assert "***" in ours[0] and "***" in ours[1]


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_json_when_not_a_tty_same_script() -> None:
    """Control for the pty test: the identical script on a pipe writes JSON lines."""
    r = subprocess.run([sys.executable, "-c", LOG_SCRIPT], capture_output=True, text=True,
                       env=_env(BOT_API_SECRET=SECRET, BOT_API_KEY=KEY), cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    assert [x["event"] for x in lines] == ["hello_console", "second_line"]
    assert all(x["run_id"] == "42" and x["mode"] == "paper" and x["symbol"] == "ETH/USDT" for x in lines)
    assert SECRET not in r.stdout and KEY not in r.stdout


def _cli_events(*level_args: str) -> list[dict[str, object]]:
    r = subprocess.run([sys.executable, "-c", CLI_SCRIPT, *level_args, "log-probe"], capture_output=True,
                       text=True, env=_env(), cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return [json.loads(x) for x in r.stdout.splitlines() if x.strip()]


def test_log_level_info_hides_debug() -> None:
    events = _cli_events("--log-level", "info")
    assert [e["event"] for e in events] == ["info_probe_line", "warning_probe_line"]
    assert all(e["run_id"] == "5" and e["mode"] == "paper" and e["symbol"] == "BTC/USDT" for e in events)


def test_log_level_default_is_info() -> None:
    assert [e["event"] for e in _cli_events()] == ["info_probe_line", "warning_probe_line"]


def test_log_level_debug_shows_debug() -> None:
    events = _cli_events("--log-level", "debug")
    assert [e["event"] for e in events] == ["debug_probe_line", "info_probe_line", "warning_probe_line"]
    assert events[0]["level"] == "debug"


def test_log_level_warning_hides_info() -> None:
    assert [e["event"] for e in _cli_events("--log-level", "WARNING")] == ["warning_probe_line"]


def test_log_level_unknown_is_a_usage_error() -> None:
    r = subprocess.run([sys.executable, "-c", CLI_SCRIPT, "--log-level", "loud", "log-probe"],
                       capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "probe_line" not in r.stdout
