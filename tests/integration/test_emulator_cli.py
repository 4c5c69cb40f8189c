"""``bot emulator serve`` as a process: it serves a recording to real ccxt, stops cleanly on
SIGINT and SIGTERM (exit 0 within 5 s) and refuses to bind a non-loopback address, since its
admin API (``/_emulator``) has no authentication."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bot.emulator import make_ccxt_client
from bot.market.synthetic import write_synthetic_recording

from fixtures_emulator import EMU_KEY, EMU_SECRET
from helpers import free_port, json_lines

SYM = "BTC/USDT"


_events = json_lines


def _serve(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / "emulator.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "bot", "emulator", "serve", *args],
                                stdout=fh, stderr=subprocess.STDOUT, cwd=tmp_path)
    return proc, log


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_emulator/balances", timeout=2):
                return
        except (OSError, urllib.error.URLError):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"emulator did not start:\n{log.read_text(errors='replace')[-2000:]}") from None
            time.sleep(0.1)


async def _one_book_and_one_order(port: int) -> dict[str, Any]:
    ex = make_ccxt_client(f"http://127.0.0.1:{port}", EMU_KEY, EMU_SECRET, timeout_ms=5000)
    try:
        ob = await ex.watch_order_book(SYM)
        assert ob["bids"] and ob["asks"], ob
        bid = float(ob["bids"][0][0])
        order: dict[str, Any] = await ex.create_order(SYM, "limit", "buy", 0.001, round(bid * 0.99, 2))
        return order
    finally:
        await ex.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_serve_a_recording_then_stop_on_a_signal(tmp_path: Path, sig: signal.Signals) -> None:
    rec = tmp_path / "small.jsonl.gz"
    write_synthetic_recording(rec, seconds=5, seed=3)
    port = free_port()
    proc, log = _serve(tmp_path, "--port", str(port), "--market", str(rec),
                       "--api-key", EMU_KEY, "--api-secret", EMU_SECRET)
    try:
        _wait_listening(proc, port, log)
        order = await _one_book_and_one_order(port)
        assert order["status"] == "open", order
        proc.send_signal(sig)
        t0 = time.monotonic()
        rc = proc.wait(5)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text(errors="replace")
    assert rc == 0, f"exit code {rc} after {sig.name}:\n{text[-2000:]}"
    assert took < 5
    names = [e.get("event") for e in _events(text)]
    assert "emulator_ws_open" in names, text[-2000:]
    orders = [e for e in _events(text) if e.get("event") == "emulator_order"]
    assert len(orders) == 1 and orders[0]["client_id"] == order["clientOrderId"], orders
    assert "emulator_stopped" in names, text[-2000:]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_serve_refuses_a_non_loopback_host(tmp_path: Path, host: str) -> None:
    proc, log = _serve(tmp_path, "--host", host, "--port", str(free_port()))
    try:
        rc = proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    assert rc == 2, lines
    assert len(lines) == 1, lines
    assert f"--host {host}" in lines[0] and "no authentication" in lines[0] and "loopback" in lines[0], lines

