"""The emulator's ``ws_delay`` fault, seen through a real ccxt.pro binance client.

Before the fault a depth update reaches ``watch_order_book`` soon after its exchange time
``E`` (ccxt's ``ob["timestamp"]``); once ``ws_delay=300ms`` is set, every update generated
after that moment arrives at least 300 ms after its ``E`` (the writer holds each message
until queued + delay). Delayed or not, the book ccxt builds equals the emulator's published
book at every nonce it is observed at (``Emulator.record_books``).

Only lower bounds of the configured delay are asserted; "small before" is checked as the
median pre-fault lag staying below that same delay (no absolute timing bound).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import aiohttp
import pytest

from bot.emulator import Emulator

pytest_plugins = ["fixtures_emulator"]  # until tests/conftest.py registers it
SYM = "BTC/USDT"
DELAY_S = 0.3
# E is int(time.time() * 1000) taken before the message is queued (floored, so never later
# than the true generation time); the hold uses time.monotonic(). Allow 1 ms for the two
# clocks' relative slew over a few seconds; it is not a tolerance on the delay itself.
SLACK_S = 0.001


def as_levels(side: Any) -> list[tuple[float, float]]:
    return [(float(p), float(q)) for p, q in side]


async def observe(ex: Any, log: dict[int, Any]) -> tuple[int, int | None, float]:
    """One watch: (nonce, exchange time E in ms, local receive time in s); checks the book."""
    ob = await asyncio.wait_for(ex.watch_order_book(SYM), 5)
    recv = time.time()  # no await between the wake-up and here: ob is this moment's book
    nonce = int(ob["nonce"])
    ts = ob["timestamp"]
    assert nonce in log, f"nonce {nonce} not among the emulator's published updates"
    bids, asks = log[nonce]
    assert as_levels(ob["bids"]) == bids, f"bids differ at update {nonce}"
    assert as_levels(ob["asks"]) == asks, f"asks differ at update {nonce}"
    return nonce, (int(ts) if ts is not None else None), recv


async def _set_delay(emu: Emulator, how: str, spec: str) -> None:
    if how == "set_faults":
        emu.set_faults(spec)
        return
    async with aiohttp.ClientSession() as s, s.post(f"{emu.base_url}/_emulator/faults", data=spec) as r:
        assert r.status == 200, await r.text()
        body = await r.json()
    assert body["spec"] == spec


@pytest.mark.parametrize("how", ["set_faults", "admin_post"])
@pytest.mark.parametrize("emulator", [{"speed": 5, "symbols": ("BTC/USDT",)}], indirect=True)
async def test_ws_delay_holds_depth_updates_and_the_book_stays_exact(
    emulator: Emulator, ccxt_client: Any, how: str
) -> None:
    log = emulator.record_books(SYM)
    await observe(ccxt_client, log)  # subscribed and synced from the snapshot

    before: list[float] = []
    nonces_before: list[int] = []
    while len(before) < 20:
        nonce, e_ms, recv = await observe(ccxt_client, log)
        if e_ms is not None:
            before.append(recv - e_ms / 1000.0)
            nonces_before.append(nonce)
    assert nonces_before == sorted(nonces_before)

    hits0 = emulator.faults.hits["ws_delay"]
    t_set = time.time()
    await _set_delay(emulator, how, f"ws_delay={int(DELAY_S * 1000)}ms")
    assert emulator.faults.duration("ws_delay") == pytest.approx(DELAY_S)
    set_ms = int(t_set * 1000)  # updates with E > set_ms were generated after the fault

    after: list[tuple[int, float]] = []
    last_nonce = nonces_before[-1]
    while len(after) < 20:
        nonce, e_ms, recv = await observe(ccxt_client, log)
        assert nonce >= last_nonce
        last_nonce = nonce
        if e_ms is not None and e_ms > set_ms:
            after.append((nonce, recv - e_ms / 1000.0))

    lags = [lag for _, lag in after]
    worst = min(lags)
    assert worst >= DELAY_S - SLACK_S, (
        f"an update arrived {worst * 1000:.1f} ms after its E (< {DELAY_S * 1000} ms)"
    )
    assert statistics.median(before) < DELAY_S, (
        f"lag before the fault: median {statistics.median(before):.3f} s"
    )
    assert emulator.faults.hits["ws_delay"] > hits0
    # every delayed update checked above was compared to the emulator's book at its nonce
    assert len({n for n, _ in after}) >= 10, "too few distinct nonces observed under the delay"

    # clearing the fault: updates generated afterwards flow again without the hold
    await _set_delay(emulator, how, "")
    clear_ms = int(time.time() * 1000)
    cleared: list[float] = []
    while len(cleared) < 10:
        nonce, e_ms, recv = await observe(ccxt_client, log)
        if e_ms is not None and e_ms > clear_ms:
            cleared.append(recv - e_ms / 1000.0)
    assert statistics.median(cleared) < DELAY_S
    print(
        f"lag before {statistics.median(before) * 1000:.1f} ms (median), "
        f"under ws_delay {min(lags) * 1000:.1f}..{max(lags) * 1000:.1f} ms, "
        f"after clearing {statistics.median(cleared) * 1000:.1f} ms"
    )
