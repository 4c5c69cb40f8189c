"""One rate limiter in front of every REST call (orders, lookups, reconciliation).

Why our own layer on top of ccxt's: ccxt spaces requests evenly but knows nothing of a
429's ``Retry-After`` or of a 418 ban, and it does not separate the order-count limit from
the request-weight limit. Binance spot publishes both: 6000 request weight per minute per
IP and 100 orders per 10 s per account (``exchangeInfo.rateLimits``). We stay under a
``safety`` fraction of each, with one ``asyncio_throttle.Throttler`` per endpoint class
(so one chatty class cannot starve order placement) plus a shared weight budget.

* 429: every class waits ``Retry-After`` seconds before the next request.
* 418 (IP ban): nothing at all is sent until the ban's ``Retry-After`` has passed (2 min when
  the exchange gives none); every ``acquire`` meanwhile raises ``ExchangeHalted``. The engine
  turns the first one into a persisted risk halt, so after the ban only the clean-up requests
  (cancel open orders, fetch the fills) go out, never a new order.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from asyncio_throttle import Throttler

from bot.execution.broker import ExchangeHalted
from bot.logging import get_logger

log = get_logger("execution.throttle")

DEFAULT_BAN_S = 120.0  # a 418 without Retry-After: Binance's shortest ban


@dataclass(frozen=True, slots=True)
class EndpointClass:
    """``weight``: request weight per call; ``rate``/``period``: this class's own cap."""

    weight: int
    rate: int
    period: float = 1.0
    counts_as_order: bool = False


# Binance spot weights (GET /api/v3/order 4, openOrders with symbol 6, myTrades 20, allOrders 20,
# account 20, POST/DELETE order 1, DELETE openOrders 1, GET time 1); class caps are well under them.
BINANCE_SPOT: dict[str, EndpointClass] = {
    "create": EndpointClass(weight=1, rate=10, counts_as_order=True),
    "cancel": EndpointClass(weight=1, rate=10),
    "cancel_all": EndpointClass(weight=1, rate=2),
    "order": EndpointClass(weight=4, rate=10),
    "open_orders": EndpointClass(weight=6, rate=5),
    "my_trades": EndpointClass(weight=20, rate=5),
    "all_orders": EndpointClass(weight=20, rate=2),
    "balance": EndpointClass(weight=20, rate=5),
    "time": EndpointClass(weight=1, rate=2),
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
        self._banned_until = 0.0
        self.halted: str | None = None  # the 418 ban's reason while it lasts
        self.calls: dict[str, int] = dict.fromkeys(self.classes, 0)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def acquire(self, endpoint: str) -> None:
        if endpoint not in self.classes:
            raise KeyError(f"unknown endpoint class {endpoint!r}; known: {sorted(self.classes)}")
        while True:
            if self.halted:
                left = self._banned_until - self._now()
                if left > 0:
                    raise ExchangeHalted(f"{self.halted}; banned for another {left:.0f} s")
                log.warning("exchange_ban_over", was=self.halted)
                self.halted = None
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

    @property
    def banned_for(self) -> float:
        """Seconds left of a 418 ban (0 when not banned)."""
        return max(0.0, self._banned_until - self._now()) if self.halted else 0.0

    def halt(self, reason: str, retry_after_s: float | None = None) -> None:
        """A 418 (IP ban): no request at all for ``retry_after_s`` (default DEFAULT_BAN_S)."""
        until = self._now() + (retry_after_s if retry_after_s is not None else DEFAULT_BAN_S)
        self._banned_until = max(self._banned_until, until)
        if not self.halted:
            self.halted = reason
            log.error("exchange_halt", reason=reason, banned_for_s=round(self.banned_for, 1))


class _Slot:
    __slots__ = ("_endpoint", "_limiter")

    def __init__(self, limiter: RateLimiter, endpoint: str) -> None:
        self._limiter = limiter
        self._endpoint = endpoint

    async def __aenter__(self) -> None:
        await self._limiter.acquire(self._endpoint)

    async def __aexit__(self, *exc: object) -> None:
        return None
