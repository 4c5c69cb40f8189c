"""RateLimiter (bot/execution/throttle.py) on a virtual clock.

The limiter reads time from the event loop (``loop.time()``, for 429 pauses and 418 bans) and
from ``asyncio_throttle`` (``time.monotonic()``, for the sliding windows). Both are pointed at
one virtual clock: the event loop below advances it by the select timeout instead of
sleeping, so ``asyncio.sleep(60)`` returns at once with the clock 60 s later, and every wait
is measured exactly in virtual seconds, with no wall-clock timing involved.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable, Callable, Iterator
from types import SimpleNamespace
from typing import Any, TypeVar

import asyncio_throttle.throttler as throttler_module
import pytest

from bot.execution.broker import ExchangeHalted
from bot.execution.throttle import BINANCE_SPOT, DEFAULT_BAN_S, EndpointClass, RateLimiter

T = TypeVar("T")
T0 = 1_000.0


class VirtualClock:
    def __init__(self) -> None:
        self.now = T0

    def monotonic(self) -> float:
        return self.now


class _VirtualSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Never blocks: with nothing ready, jumps the clock to the next timer instead."""

    clock: VirtualClock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        if not ready and timeout is not None and timeout > 0:
            self.clock.now += timeout
        elif not ready and timeout is None:
            raise RuntimeError("deadlock: nothing scheduled and nothing to wait for")
        return ready


class _VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: VirtualClock) -> None:
        sel = _VirtualSelector()
        sel.clock = clock
        self._vclock = clock
        super().__init__(sel)

    def time(self) -> float:
        return self._vclock.now


@pytest.fixture
def vclock(monkeypatch: pytest.MonkeyPatch) -> Iterator[VirtualClock]:
    clock = VirtualClock()
    monkeypatch.setattr(throttler_module, "time", SimpleNamespace(monotonic=clock.monotonic))
    yield clock


def run(clock: VirtualClock, main: Callable[[], Awaitable[T]]) -> T:
    loop = _VirtualLoop(clock)
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


async def _timed(limiter: RateLimiter, endpoint: str, n: int, clock: VirtualClock) -> list[float]:
    """Acquire ``endpoint`` n times in a row; the virtual time (since T0) each acquire returned."""
    out = []
    for _ in range(n):
        await limiter.acquire(endpoint)
        out.append(round(clock.now - T0, 6))
    return out


def _max_in_window(times: list[float], window: float) -> int:
    return max(sum(1 for u in times if t <= u < t + window) for t in times)


def test_virtual_clock_drives_both_the_loop_and_the_throttler(vclock: VirtualClock) -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(60)
        return loop.time(), throttler_module.time.monotonic()

    assert run(vclock, main) == (T0 + 60, T0 + 60)


def test_per_class_rate_and_classes_are_independent(vclock: VirtualClock) -> None:
    classes = {"a": EndpointClass(weight=1, rate=5), "b": EndpointClass(weight=1, rate=5)}
    limiter = RateLimiter(classes, weight_per_minute=100_000, orders_per_10s=100_000)

    async def main() -> tuple[list[float], list[float]]:
        a = await _timed(limiter, "a", 12, vclock)
        b = await _timed(limiter, "b", 5, vclock)  # a's window is full; b has its own
        return a, b

    a, b = run(vclock, main)
    print(f"\nclass a (5/s), 12 calls at t = {a}")
    assert a[:5] == [0.0] * 5  # the first `rate` calls go at once
    assert _max_in_window(a, 1.0) == 5  # never more than `rate` in any 1 s
    assert 1.0 < a[5] <= 1.05 and 2.0 < a[10] <= 2.1  # then one window per `rate` calls
    assert b == [a[-1]] * 5  # class b did not wait for class a
    assert limiter.calls == {"a": 12, "b": 5}


def test_weight_budget_is_shared_by_all_classes(vclock: VirtualClock) -> None:
    # 100 weight per minute x safety 0.5 = 50 per 60 s
    classes = {"heavy": EndpointClass(weight=20, rate=100), "light": EndpointClass(weight=1, rate=100)}
    limiter = RateLimiter(classes, weight_per_minute=100, orders_per_10s=100_000, safety=0.5)

    async def main() -> tuple[list[float], list[float]]:
        heavy = await _timed(limiter, "heavy", 2, vclock)  # 40 of 50
        light = await _timed(limiter, "light", 10, vclock)  # 50 of 50
        heavy += await _timed(limiter, "heavy", 1, vclock)  # needs 20 more: the window must roll
        return heavy, light

    heavy, light = run(vclock, main)
    print(f"\nweight budget 50/60 s: heavy (20) at {heavy}, light (1) at {light}")
    assert heavy[:2] == [0.0, 0.0] and light == [0.0] * 10
    assert 60.0 < heavy[2] <= 60.1, heavy  # the budget is per minute, across classes


def test_order_count_cap_counts_only_orders(vclock: VirtualClock) -> None:
    # 10 orders per 10 s x safety 0.5 = 5 orders per 10 s; cancels are not orders
    classes = {"create": EndpointClass(weight=1, rate=100, counts_as_order=True),
               "cancel": EndpointClass(weight=1, rate=100)}
    limiter = RateLimiter(classes, weight_per_minute=100_000, orders_per_10s=10, safety=0.5)

    async def main() -> tuple[list[float], list[float]]:
        creates = await _timed(limiter, "create", 5, vclock)
        cancels = await _timed(limiter, "cancel", 20, vclock)
        creates += await _timed(limiter, "create", 6, vclock)
        return creates, cancels

    creates, cancels = run(vclock, main)
    print(f"\norder cap 5/10 s: creates at {creates}")
    assert creates[:5] == [0.0] * 5 and cancels == [0.0] * 20
    assert _max_in_window(creates, 10.0) == 5
    assert 10.0 < creates[5] <= 10.1 and 20.0 < creates[10] <= 20.2


def test_binance_defaults_cap_orders_at_half_the_published_limit(vclock: VirtualClock) -> None:
    limiter = RateLimiter()  # BINANCE_SPOT, 6000 weight/min, 100 orders/10 s, safety 0.5
    assert BINANCE_SPOT["create"].counts_as_order and not BINANCE_SPOT["cancel"].counts_as_order
    creates = run(vclock, lambda: _timed(limiter, "create", 51, vclock))
    # create's own class cap is 10/s, the order cap 50 per 10 s: the 51st waits for the window
    assert _max_in_window(creates, 1.0) == 10
    assert creates[49] < 5.0 < 10.0 < creates[50] <= 10.1, creates[45:]


def test_429_pauses_every_class_for_retry_after(vclock: VirtualClock) -> None:
    limiter = RateLimiter()

    async def main() -> dict[str, Any]:
        await limiter.acquire("create")
        limiter.retry_after(2.0)
        paused = limiter.paused_for
        limiter.retry_after(0.5)  # a shorter Retry-After never shortens the pause
        t_order = await _timed(limiter, "order", 1, vclock)
        limiter.retry_after(3.0)
        t = await asyncio.gather(_timed(limiter, "create", 1, vclock), _timed(limiter, "balance", 1, vclock))
        limiter.retry_after(0.0)  # nothing to wait for
        t_zero = await _timed(limiter, "time", 1, vclock)
        return {"paused": paused, "order": t_order, "both": t, "zero": t_zero, "left": limiter.paused_for}

    got = run(vclock, main)
    print(f"\n429: {got}")
    assert got["paused"] == 2.0
    assert got["order"] == [2.0]  # waited exactly Retry-After
    assert got["both"] == [[5.0], [5.0]]  # every class waits, concurrently
    assert got["zero"] == [5.0] and got["left"] == 0.0
    assert limiter.halted is None


def test_418_halts_everything_until_the_ban_ends(vclock: VirtualClock) -> None:
    limiter = RateLimiter()

    async def main() -> list[str]:
        seen = []
        limiter.halt("HTTP 418 from the exchange (IP ban)", 30.0)
        limiter.halt("a second 418", 10.0)  # the first reason stays; the ban never shortens
        assert limiter.halted == "HTTP 418 from the exchange (IP ban)"
        assert limiter.banned_for == 30.0
        for endpoint in ("create", "cancel", "open_orders"):  # nothing goes out, not even clean-up
            with pytest.raises(ExchangeHalted, match=r"IP ban\); banned for another 30 s"):
                await limiter.acquire(endpoint)
        await asyncio.sleep(29.9)
        with pytest.raises(ExchangeHalted, match="banned for another 0 s"):
            await limiter.acquire("cancel")
        seen.append(f"at +29.9 s still banned ({limiter.banned_for:.1f} s left)")
        await asyncio.sleep(0.1)
        await limiter.acquire("cancel")  # the ban is over: requests go out again
        seen.append(f"at +{vclock.now - T0:.1f} s cancel sent, halted={limiter.halted}")
        return seen

    seen = run(vclock, main)
    print("\n418: " + "; ".join(seen))
    assert limiter.halted is None and limiter.banned_for == 0.0
    assert limiter.calls["cancel"] == 1 and limiter.calls["create"] == 0


def test_418_without_retry_after_bans_for_the_default(vclock: VirtualClock) -> None:
    limiter = RateLimiter()

    async def main() -> float:
        limiter.halt("HTTP 418")
        left = limiter.banned_for
        await asyncio.sleep(DEFAULT_BAN_S - 1)
        with pytest.raises(ExchangeHalted):
            await limiter.acquire("create")
        await asyncio.sleep(1)
        await limiter.acquire("create")
        return left

    assert run(vclock, main) == DEFAULT_BAN_S == 120.0


def test_a_ban_during_a_429_pause_raises_instead_of_waiting(vclock: VirtualClock) -> None:
    limiter = RateLimiter()

    async def main() -> float:
        limiter.retry_after(5.0)
        waiter = asyncio.create_task(limiter.acquire("create"))
        await asyncio.sleep(1.0)
        limiter.halt("HTTP 418", 60.0)
        with pytest.raises(ExchangeHalted):
            await waiter  # it wakes after the pause and finds the ban
        return vclock.now - T0

    assert run(vclock, main) == 5.0


def test_slot_context_and_unknown_class(vclock: VirtualClock) -> None:
    limiter = RateLimiter()

    async def main() -> None:
        async with limiter.slot("my_trades"):
            pass
        with pytest.raises(KeyError, match="unknown endpoint class 'nope'"):
            await limiter.acquire("nope")

    run(vclock, main)
    assert limiter.calls["my_trades"] == 1
