"""The status server over real HTTP on 127.0.0.1, and the monitor polling it."""

from __future__ import annotations

import io
import socket
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
import pytest
from rich.console import Console

from bot.monitor import run_monitor
from bot.status_server import StatusServer

from fixtures_monitor import halted_status, sample_status
from helpers import free_port


async def test_routes_serve_status_metrics_and_health() -> None:
    status = sample_status()
    status["position"]["fees"] = Decimal("0.120")  # an engine may hand over Decimals
    server = StatusServer(lambda: status, port=0)
    port = await server.start()
    try:
        assert port > 0 and server.url == f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{server.url}/status") as r:
                assert r.status == 200
                assert r.content_type == "application/json"
                body = orjson.loads(await r.read())
            assert body["book"]["mid"] == 60000.005
            assert body["position"]["fees"] == "0.120"
            assert body["decisions"] == sample_status()["decisions"]
            async with s.get(f"{server.url}/metrics") as r:
                assert r.status == 200
                assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
                assert "\nbot_book_mid 60000.005\n" in await r.text()
            async with s.get(f"{server.url}/healthz") as r:
                assert (r.status, await r.text()) == (200, "ok\n")
            async with s.post(f"{server.url}/status") as r:
                assert r.status == 405  # read-only
        assert server.requests == 2
    finally:
        await server.stop()


async def test_listens_on_loopback_only_and_frees_the_port() -> None:
    port = free_port()
    server = StatusServer(sample_status, port=port)
    assert await server.start() == port
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        host_ip = socket.gethostbyname(socket.gethostname())
    if not host_ip.startswith("127."):
        with pytest.raises(OSError), socket.create_connection((host_ip, port), timeout=1):
            pass
    await server.stop()
    await server.stop()  # idempotent
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # free again


async def test_a_failing_provider_gives_500_and_the_server_stays_up() -> None:
    calls = {"n": 0}

    def provider() -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("engine not started")
        return sample_status()

    async with StatusServer(provider, port=0) as server, aiohttp.ClientSession() as s:
        async with s.get(f"{server.url}/status") as r:
            assert r.status == 500
            assert orjson.loads(await r.read()) == {"error": "status unavailable: RuntimeError: engine not started"}
        async with s.get(f"{server.url}/status") as r:
            assert r.status == 200


async def test_custom_metrics_callable_is_served() -> None:
    async with StatusServer(sample_status, port=0, metrics=lambda: "x 1\n") as server, \
            aiohttp.ClientSession() as s, s.get(f"{server.url}/metrics") as r:
        assert await r.text() == "x 1\n"


def _console() -> Console:
    return Console(record=True, width=120, height=44, file=io.StringIO(), color_system=None, force_terminal=False)


async def test_monitor_polls_the_bot_and_shows_its_numbers() -> None:
    async with StatusServer(halted_status, port=0) as server:
        console = _console()
        assert await run_monitor(server.url, 0.05, console, max_polls=3) == 0
    text = console.export_text()
    assert "── mid 60000.005  spread 0.01 ──" in text
    assert "HALTED (daily_loss): daily loss 101.20 USDT >= max_daily_loss 100" in text
    assert server.requests == 3


async def test_monitor_shows_a_banner_when_the_bot_is_unreachable() -> None:
    port = free_port()
    console = _console()
    assert await run_monitor(f"http://127.0.0.1:{port}", 0.01, console, max_polls=2) == 0
    text = console.export_text()
    assert f"bot unreachable at http://127.0.0.1:{port}/status: connection failed" in text
    assert "(attempt 2); q quits" in text
    assert "Traceback" not in text


async def test_monitor_reports_a_non_json_answer() -> None:
    async with StatusServer(sample_status, port=0) as server:
        console = _console()
        await run_monitor(f"{server.url}/healthz?", 0.01, console, max_polls=1)
    assert "bot unreachable at" in console.export_text()
