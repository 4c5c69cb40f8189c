"""One rate limiter in front of every REST call (orders, lookups, reconciliation).

Why our own layer on top of ccxt's: ccxt spaces requests evenly but knows nothing of a
429's ``Retry-After`` or of a 418 ban, and it does not separate the order-count limit from
the request-weight limit. Binance spot publishes both: 6000 request weight per minute per
IP and 100 orders per 10 s per account (``exchangeInfo.rateLimits``). We stay under a
``safety`` fraction of each, with one ``asyncio_throttle.Throttler`` per endpoint class
(so one chatty class cannot starve order placement) plus a shared weight budget.

* 429: every class waits ``Retry-After`` seconds before the next request.
* 418: the limiter halts; every later ``acquire`` raises ``ExchangeHalted``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from asyncio_throttle import Throttler

from bot.execution.broker import ExchangeHalted
from bot.logging import get_logger

log = get_logger("execution.throttle")


@dataclass(frozen=True, slots=True)
class EndpointClass:
    """``weight``: request weight per call; ``rate``/``period``: this class's own cap."""

    weight: int
    rate: int
    period: float = 1.0
    counts_as_order: bool = False


# Binance spot weights (GET /api/v3/order 4, openOrders with symbol 6, myTrades 20,
# account 20, POST/DELETE order 1, DELETE openOrders 1); class caps are well under them.
BINANCE_SPOT: dict[str, EndpointClass] = {
    "create": EndpointClass(weight=1, rate=10, counts_as_order=True),
    "cancel": EndpointClass(weight=1, rate=10),
    "cancel_all": EndpointClass(weight=1, rate=2),
    "order": EndpointClass(weight=4, rate=10),
    "open_orders": EndpointClass(weight=6, rate=5),
    "my_trades": EndpointClass(weight=20, rate=5),
    "balance": EndpointClass(weight=20, rate=5),
}


class RateLimiter:
    """``async with limiter.slot("create"): ...`` before each REST request."""

    def __init__(
        self,
        classes: dict[str, EndpointClass] | None = None,
        *,
        weight_per_minute: int = 6000,
        orders_per_10s: int = 100,
        safety: float = 0.5,
    ) -> None:
        self.classes = dict(classes or BINANCE_SPOT)
        self._class_throttles = {k: Throttler(c.rate, c.period) for k, c in self.classes.items()}
        self._weight = Throttler(max(1, int(weight_per_minute * safety)), 60.0)
        self._orders = Throttler(max(1, int(orders_per_10s * safety)), 10.0)
        self._pause_until = 0.0
        self.halted: str | None = None
        self.calls: dict[str, int] = dict.fromkeys(self.classes, 0)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def acquire(self, endpoint: str) -> None:
        if endpoint not in self.classes:
            raise KeyError(f"unknown endpoint class {endpoint!r}; known: {sorted(self.classes)}")
        while True:
            if self.halted:
                raise ExchangeHalted(self.halted)
            wait = self._pause_until - self._now()
            if wait <= 0:
                break
            await asyncio.sleep(wait)
        cls = self.classes[endpoint]
        await self._class_throttles[endpoint].acquire()
        for _ in range(cls.weight):
            await self._weight.acquire()
        if cls.counts_as_order:
            await self._orders.acquire()
        self.calls[endpoint] += 1

    def slot(self, endpoint: str) -> _Slot:
        return _Slot(self, endpoint)

    def retry_after(self, seconds: float) -> None:
        """A 429: nobody sends anything for ``seconds``."""
        until = self._now() + max(0.0, seconds)
        if until > self._pause_until:
            self._pause_until = until
            log.warning("rate_limited", retry_after_s=seconds)

    @property
    def paused_for(self) -> float:
        return max(0.0, self._pause_until - self._now())

    def halt(self, reason: str) -> None:
        """A 418 (IP ban): stop every request until a person restarts the bot."""
        if not self.halted:
            self.halted = reason
            log.error("exchange_halt", reason=reason)


class _Slot:
    __slots__ = ("_endpoint", "_limiter")

    def __init__(self, limiter: RateLimiter, endpoint: str) -> None:
        self._limiter = limiter
        self._endpoint = endpoint

    async def __aenter__(self) -> None:
        await self._limiter.acquire(self._endpoint)

    async def __aexit__(self, *exc: object) -> None:
        return None
