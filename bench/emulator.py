"""Benchmark: websocket book updates per second the emulator delivers to one client.

Two clients, measured one after the other against a market stepping as fast as it can:
a raw aiohttp websocket (what the server can push) and ccxt.pro ``watch_order_book`` (what
the bot's real client applies, update ids checked). Target: >= 2,000 updates/s.

    python -m bench.emulator [--quick] [--seconds N]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time

import aiohttp
import orjson

from bot.emulator import Emulator, make_ccxt_client

SYM = "BTC/USDT"


async def raw_client(emu: Emulator, seconds: float) -> tuple[int, float]:
    n = 0
    async with aiohttp.ClientSession() as s, s.ws_connect(f"ws://127.0.0.1:{emu.port}/stream/ws") as ws:
        await ws.send_str(
            orjson.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@depth@100ms"], "id": 1}).decode()
        )
        t0 = time.perf_counter()
        end = t0 + seconds
        prev_u = None
        async for msg in ws:
            d = orjson.loads(msg.data)
            if d.get("e") == "depthUpdate":
                if prev_u is not None and d["U"] != prev_u + 1:
                    raise AssertionError("sequence gap")
                prev_u = d["u"]
                n += 1
            if time.perf_counter() >= end:
                break
        return n, time.perf_counter() - t0


async def ccxt_client(emu: Emulator, seconds: float) -> tuple[int, float]:
    ex = make_ccxt_client(emu.base_url, "emulator-key", "emulator-secret")
    log = emu.record_books(SYM)
    try:
        ob = await ex.watch_order_book(SYM)
        start = int(ob["nonce"])
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            ob = await ex.watch_order_book(SYM)
        last = int(ob["nonce"])
        elapsed = time.perf_counter() - t0
        return sum(1 for u in log if start < u <= last), elapsed
    finally:
        emu.book_log.clear()
        await ex.close()


async def main(seconds: float) -> None:
    logging.disable(logging.INFO)
    for name, fn in (("raw websocket", raw_client), ("ccxt.pro watch_order_book", ccxt_client)):
        emu = Emulator(speed=5000, symbols=(SYM,))
        await emu.start()
        try:
            n, dt = await fn(emu, seconds)
        finally:
            await emu.stop()
        print(f"{name:28s} {n:8d} book updates in {dt:5.2f} s = {n / dt:9.0f} updates/s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="2 s per client")
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    asyncio.run(main(2.0 if args.quick else args.seconds))
