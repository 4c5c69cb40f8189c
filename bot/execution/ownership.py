"""What on the exchange account is this bot's, and what is somebody else's.

Why a rule of its own: the account a bot trades on is usually also used by a person (a
hedge resting on the book, a market order placed by hand) or by another program. The bot
must act on its own orders and fills only: booking a person's fill moves the bot's position
(and the bot then "flattens" somebody's trade), adopting a person's order lets the strategy
cancel it. The rule, which every layer follows (docs/execution.md):

* an order is the bot's if its client id carries this instance's prefix
  (``<prefix>-<run>-<seq>``, ``[execution] client_id_prefix``) or it is in the bot's own
  ``orders`` table for this account, mode, venue and symbol;
* a fill is the bot's only if its order is;
* everything else is foreign: recorded once (a ``reconcile_differences`` row of kind
  ``foreign_order`` / ``foreign_fill``, a log line, a counter) and otherwise left alone --
  never adopted, never in the position, never cancelled unless ``cancel_unknown = true``,
  never flattened.
"""

from __future__ import annotations

from collections.abc import Iterable

from bot.execution.client_ids import ClientIdFactory

UNATTRIBUTED = "unknown-"  # a trade whose order the broker could not name (``unknown-<exchange id>``)


class Ownership:
    """Answers "is this client id (or exchange order id) the bot's?" for one instance."""

    def __init__(self, ids: ClientIdFactory, own_client_ids: Iterable[str] = ()) -> None:
        self.ids = ids
        self._own: set[str] = set(own_client_ids)
        self._xids: dict[str, str] = {}  # exchange order id -> our client id

    def remember(self, client_id: str, exchange_id: str | None = None) -> None:
        """An order of ours (placed, or stored by an earlier run): its ids are ours for good."""
        self._own.add(client_id)
        if exchange_id:
            self._xids[exchange_id] = client_id

    def is_own(self, client_id: str | None) -> bool:
        if not client_id:
            return False
        return client_id in self._own or self.ids.is_ours(client_id)

    def client_id_of(self, exchange_id: str | None) -> str | None:
        """Our client id for an exchange order id, if the order is ours and we know its id."""
        return None if exchange_id is None else self._xids.get(exchange_id)

    def attribute(self, client_id: str, exchange_id: str | None) -> str | None:
        """The bot's client id a trade belongs to, or None when the trade is not the bot's.

        A trade the broker could not name (``unknown-<id>``) is the bot's when its exchange
        order id is one of our orders'.
        """
        if client_id.startswith(UNATTRIBUTED):
            return self.client_id_of(exchange_id)
        return client_id if self.is_own(client_id) else None
