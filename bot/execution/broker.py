"""The Broker protocol: what the order manager needs from an exchange, real or simulated.

Why a protocol: live/testnet (``CcxtBroker``) and paper/replay (``PaperBroker``) must be
interchangeable under the same ``OrderManager``, so that a replay exercises the very code
path that trades. The contract that makes the manager simple:

* ``create_order`` never raises for an ordinary outcome. It returns the order in the state
  the exchange reports (acked, partially filled, filled, rejected with a reason) or, when
  every retry ended ambiguously, ``unknown`` -- reconciliation settles that later. It raises
  only ``ExchangeHalted`` (a 418 ban or similar: nothing more may be sent) and
  ``BrokerError`` for configuration faults (bad keys).
* Order updates and fills also arrive asynchronously through ``updates()`` (or
  ``drain_updates()`` for a synchronous replay loop). Fills may arrive twice (websocket and
  REST fallback); the consumer deduplicates by ``trade_id``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Protocol, TypeAlias, runtime_checkable

from bot.model import Balance, Fill, Order, OrderEvent

Update: TypeAlias = OrderEvent | Fill


class BrokerError(Exception):
    """A definitive failure that a retry cannot fix (bad credentials, unsupported symbol)."""


class ExchangeHalted(BrokerError):
    """The exchange told us to stop (HTTP 418 IP ban): no further request may be sent."""


class OrderRejected(BrokerError):
    """Raised by cancel paths when the exchange definitively refuses the action."""


def authentication_error(exc: BaseException) -> BaseException | None:
    """The exchange's refusal of our API key or signature behind ``exc``, or None.

    ccxt raises ``AuthenticationError`` for it (Binance -2014/-2015 bad key, -1022 bad
    signature, HTTP 401); the broker wraps it in ``BrokerError`` and the engine in
    ``EngineTaskFailed``, so the chain of causes is followed. No retry can fix wrong keys:
    start-up reconciliation gives up at once and ``bot run`` exits 78.
    """
    from ccxt.base.errors import AuthenticationError

    refused: type[BaseException] = AuthenticationError
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, refused):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ if cur.__cause__ is not None else (None if cur.__suppress_context__ else cur.__context__)
    return None


@runtime_checkable
class Broker(Protocol):
    """Both ``CcxtBroker`` and ``PaperBroker`` implement this."""

    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def create_order(self, order: Order) -> Order:
        """Place ``order`` (its ``client_id`` is already set); see the module docstring."""
        ...

    async def cancel_order(self, order: Order) -> Order:
        """Cancel; returns the order as the exchange now reports it (cancelled, or filled if
        it filled first). Returns status ``unknown`` if the outcome could not be learned."""
        ...

    async def cancel_all(self, symbol: str, owned: Callable[[str], bool] | None = None) -> list[Order]:
        """Cancel the open orders of ``symbol`` for which ``owned(client_id)`` holds (all when None)."""
        ...

    async def fetch_order(self, client_id: str, symbol: str) -> Order | None:
        """None when the exchange does not know the client id (it never arrived)."""
        ...

    async def fetch_open_orders(self, symbol: str) -> list[Order]: ...

    async def fetch_my_trades(self, symbol: str, since_ms: int | None = None) -> list[Fill]: ...

    async def fetch_balance(self) -> dict[str, Balance]: ...

    def updates(self) -> AsyncIterator[Update]:
        """Order events and fills as they happen, forever (until ``close``)."""
        ...

    def drain_updates(self) -> list[Update]:
        """Everything queued so far, without waiting (for the replay loop)."""
        ...
