"""End to end: `python -m bot monitor` in a pseudo-terminal, reading the screen it draws.

A tiny status server (our StatusServer with a fixed status JSON) stands in for a running
bot; the monitor runs as a real process on a pty (so it sees a TTY: full screen, cbreak
keys), and the test reads what it draws, presses q and checks it exits 0.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bot.status_server import StatusServer

from fixtures_monitor import sample_status
from helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
ROWS, COLS = 40, 130
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")


class PtyProcess:
    """A child process on a pseudo-terminal of a fixed size, its output collected as it comes."""

    def __init__(self, args: list[str]) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "CI")}
        env.update(TERM="xterm-256color", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT,
                                     start_new_session=True, close_fds=True)
        os.close(slave)
        self.master = master
        self.raw = bytearray()
        self._got = asyncio.Event()
        asyncio.get_running_loop().add_reader(master, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.master)
        self.raw += data
        self._got.set()

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw.decode("utf-8", "replace"))

    async def expect(self, pred: Callable[[str], bool], what: str, within: float = 15.0) -> str:
        deadline = time.monotonic() + within
        while not pred(self.text):
            left = deadline - time.monotonic()
            if left <= 0 or (self.proc.poll() is not None and not self._got.is_set()):
                raise AssertionError(f"{what} not seen on screen; rc={self.proc.poll()} screen tail:\n"
                                     f"{self.text[-3000:]}")
            self._got.clear()
            try:
                await asyncio.wait_for(self._got.wait(), timeout=min(left, 0.5))
            except TimeoutError:
                pass
        return self.text

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    async def wait(self, within: float = 10.0) -> int:
        try:
            rc = await asyncio.to_thread(self.proc.wait, within)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"monitor did not exit; screen tail:\n{self.text[-2000:]}") from None
        await asyncio.sleep(0.1)  # let the reader drain the last output
        return rc

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        loop = asyncio.get_running_loop()
        loop.remove_reader(self.master)
        os.close(self.master)


async def _monitor(url: str) -> AsyncIterator[PtyProcess]:
    p = PtyProcess([sys.executable, "-m", "bot", "monitor", "--url", url, "--refresh", "100ms"])
    try:
        yield p
    finally:
        p.close()


async def test_monitor_shows_the_bot_mid_and_position_and_q_quits() -> None:
    status = sample_status()
    status["position"]["amount"] = "0.0123"
    status["book"]["mid"] = 60000.005
    async with StatusServer(lambda: status, port=0) as server:
        async for mon in _monitor(server.url):
            screen = await mon.expect(lambda t: "── mid 60000.005" in t and re.search(r"position\s+0\.0123 ", t)
                                      is not None, "mid price and position")
            assert "spread 0.01" in screen
            assert "TRADING" in screen
            # the view follows the bot: a new position shows up on the next poll
            status["position"]["amount"] = "-0.0042"
            status["ts"] += 1000
            await mon.expect(lambda t: re.search(r"position\s+-0\.0042 ", t) is not None, "updated position")
            mon.send(b"p")
            await mon.expect(lambda t: "PAUSED" in t, "paused marker")
            mon.send(b"q")
            assert await mon.wait() == 0
            assert "Traceback" not in mon.text
            assert server.requests >= 2


async def test_monitor_unreachable_shows_a_banner_no_traceback_and_q_quits() -> None:
    port = free_port()
    async for mon in _monitor(f"http://127.0.0.1:{port}"):
        await mon.expect(lambda t: f"bot unreachable at http://127.0.0.1:{port}/status" in t, "unreachable banner")
        await mon.expect(lambda t: "(attempt 2)" in t, "a retry")
        mon.send(b"q")
        assert await mon.wait() == 0
        assert "Traceback" not in mon.text


async def test_monitor_rejects_a_bad_refresh_with_a_usage_error() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "monitor", "--refresh", "soon", cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _out, err = await proc.communicate()
    assert proc.returncode == 2
    assert "--refresh" in err.decode() and "expected a duration" in err.decode()


async def test_monitor_against_the_real_bot_matches_its_status_endpoint(tmp_path: Path) -> None:
    """The real `bot run` (paper, real ccxt) against a paused emulator (a still book), watched by
    `bot monitor` on a pseudo-terminal: the mid and position on screen equal /status."""
    import aiohttp

    from bot.emulator.server import Emulator

    emu = Emulator(market="synthetic", seed=3, speed=0)
    await emu.start(port=0)
    metrics_port = free_port()
    cfg = tmp_path / "bot.toml"
    cfg.write_text(
        f'mode = "paper"\n[exchange]\nurl = "{emu.base_url}"\n'
        f'[store]\nurl = "sqlite+aiosqlite:///{tmp_path / "bot.db"}"\n[metrics]\nport = {metrics_port}\n'
    )
    cfg.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}
    bot = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", "--config", str(cfg), env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{metrics_port}"
    try:
        status: dict[str, object] | None = None
        async with aiohttp.ClientSession() as http:
            for _ in range(150):
                try:
                    async with http.get(f"{url}/status") as r:
                        status = await r.json()
                    if status and status.get("book", {}).get("mid"):  # type: ignore[union-attr]
                        break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        assert status is not None, "the bot's status endpoint never answered"
        mid = f'{status["book"]["mid"]:.8f}'.rstrip("0").rstrip(".")  # type: ignore[index]
        amount = status["position"]["amount"]  # type: ignore[index]
        async for mon in _monitor(url):
            await mon.expect(lambda t: f"── mid {mid}" in t and re.search(rf"position\s+{re.escape(amount)} ", t)
                             is not None, f"mid {mid} and position {amount} from /status")
            mon.send(b"q")
            assert await mon.wait() == 0
            assert "Traceback" not in mon.text
    finally:
        bot.terminate()
        try:
            assert await asyncio.wait_for(bot.wait(), 15) == 0
        finally:
            if bot.returncode is None:
                bot.kill()
            await emu.stop()
