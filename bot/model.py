"""Shared value types: the messages that flow between the layers drawn in DESIGN.md.

Why one module: every layer (market, signals, risk, execution, store) speaks in these
types, and none of them imports another layer "just for a type". Market data is float
(it feeds the signals and is hot); everything that is money (orders, fills, positions,
fees, PnL) is ``Decimal`` so the books reconcile to the last digit with the exchange.

Market events are ``slots`` dataclasses without ``frozen``: they are created hundreds
of thousands of times per second in replay and frozen ``__init__`` costs ~2x. Treat them
as immutable all the same. Everything else is frozen.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TypeAlias

# A price level in a market event: (price, size). Size 0 removes the level in a delta.
Level: TypeAlias = tuple[float, float]

ZERO = Decimal(0)


class Side(enum.StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        """+1 for buy, -1 for sell: position change per unit of amount."""
        return 1 if self is Side.BUY else -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


# --------------------------------------------------------------------------- market data


@dataclass(slots=True)
class BookSnapshot:
    """The whole visible book; resets the local book (and its health)."""

    ts: int  # exchange time, ms
    bids: list[Level]
    asks: list[Level]
    seq: int | None = None  # exchange update id of the snapshot (lastUpdateId)
    recv: int | None = None  # local receive time, ms (wall clock: a stamp, recorded)
    # local receive time on the monotonic clock, ms (live feed only; never recorded, not compared):
    # what the stale-book check measures against, since a wall-clock step must not move it
    recv_mono: int | None = field(default=None, compare=False)


@dataclass(slots=True)
class BookDelta:
    """The levels one exchange message changed; size 0 removes a level.

    ``seq`` is the last update id the message carries, ``first_seq`` the first (Binance's
    ``U``/``u``); a gap is ``first_seq != previous seq + 1``. When only ``seq`` is given,
    consecutive deltas must step it by exactly one.
    """

    ts: int
    bids: list[Level]
    asks: list[Level]
    seq: int | None = None
    first_seq: int | None = None
    recv: int | None = None
    recv_mono: int | None = field(default=None, compare=False)  # see BookSnapshot.recv_mono


@dataclass(slots=True)
class Trade:
    """One print on the tape; ``side`` is the aggressor's side."""

    ts: int
    price: float
    amount: float
    side: Side
    trade_id: str | None = None
    recv: int | None = None


MarketEvent: TypeAlias = BookSnapshot | BookDelta | Trade


# --------------------------------------------------------------------------- signals


class Direction(enum.IntEnum):
    SHORT = -1
    FLAT = 0
    LONG = 1


@dataclass(frozen=True, slots=True)
class ImbalanceSignal:
    """What the detector tells the strategy: go long/short/flat, how strongly, and why.

    ``strength`` is the combined z-score (signed like ``direction``); ``components`` holds the
    individual signals' z-scores (ofi, mlofi, tfi, book_imbalance, ...), so every order can be
    traced back to the numbers that caused it.
    """

    ts: int
    direction: Direction
    strength: float
    components: dict[str, float] = field(default_factory=dict)
    kind: str = "entry"  # entry | exit | sample


# --------------------------------------------------------------------------- orders and fills


class OrderType(enum.StrEnum):
    LIMIT = "limit"
    MARKET = "market"


class OrderStatus(enum.StrEnum):
    NEW = "new"
    SUBMITTED = "submitted"
    ACKED = "acked"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    UNKNOWN = "unknown"  # after an ambiguous failure, until a lookup settles it

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def is_open(self) -> bool:
        return not self.is_terminal


_TERMINAL = frozenset({OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED})


class Liquidity(enum.StrEnum):
    MAKER = "maker"
    TAKER = "taker"


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """An order the strategy wants, before risk has looked at it."""

    symbol: str
    side: Side
    amount: Decimal
    price: Decimal | None  # None for market orders
    type: OrderType = OrderType.LIMIT
    post_only: bool = False
    reason: str = ""
    signal_strength: float | None = None
    mid_price: Decimal | None = None  # book mid when the signal fired (slippage review)

    @property
    def notional(self) -> Decimal | None:
        return None if self.price is None else self.price * self.amount


@dataclass(frozen=True, slots=True)
class Order:
    """An order as the bot knows it: the request plus identity and status."""

    client_id: str
    symbol: str
    side: Side
    type: OrderType
    amount: Decimal
    price: Decimal | None
    status: OrderStatus = OrderStatus.NEW
    filled: Decimal = ZERO
    exchange_id: str | None = None
    post_only: bool = False
    reason: str = ""
    created_ts: int = 0  # ms
    signal_strength: float | None = None  # combined z-score of the signal that caused it
    mid_price: Decimal | None = None  # book mid when the signal fired; v_trades.slippage_bps uses it

    @property
    def remaining(self) -> Decimal:
        return self.amount - self.filled


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution of one of our orders. ``trade_id`` is unique per exchange + symbol."""

    trade_id: str
    client_id: str
    symbol: str
    side: Side
    price: Decimal
    amount: Decimal
    fee: Decimal
    fee_currency: str
    liquidity: Liquidity
    ts: int  # exchange time, ms
    exchange_order_id: str | None = None

    @property
    def notional(self) -> Decimal:
        return self.price * self.amount


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """One state transition of one order (a row of ``order_events``)."""

    client_id: str
    status: OrderStatus
    ts: int  # ms
    filled: Decimal = ZERO
    exchange_id: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Balance:
    """Free and locked amount of one currency at a moment (a row of ``balances``)."""

    currency: str
    free: Decimal
    locked: Decimal
    ts: int

    @property
    def total(self) -> Decimal:
        return self.free + self.locked


@dataclass(frozen=True, slots=True)
class Position:
    """Position in the base currency with its cost basis and realised PnL, in quote."""

    symbol: str
    amount: Decimal = ZERO
    avg_price: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO  # in quote
    ts: int = 0  # ms, when this snapshot was taken


@dataclass(frozen=True, slots=True)
class Markout:
    """Where the market went ``horizon_ms`` after one of our fills: a row of ``markouts``.

    Why: a fill that the mid runs away from (adverse selection) costs more than its fee; the
    markout measures that per fill. ``mid``/``microprice`` are the first book values at or after
    ``fill_ts + horizon_ms`` (``ts`` is when that book was seen); ``pnl`` is
    ``side.sign * (mid - price) * amount`` in quote, before fees, and ``bps`` the same move per
    unit of price (x 1e4). ``complete`` is False when the stream ended before the horizon
    (``mid`` is then the last one seen). See ``bot.analytics.markouts``.
    """

    trade_id: str
    client_id: str
    symbol: str
    side: Side
    liquidity: Liquidity
    price: Decimal
    amount: Decimal
    fill_ts: int  # ms
    horizon_ms: int
    ts: int  # ms, time of the book the mid was taken from
    mid: Decimal
    microprice: Decimal | None
    pnl: Decimal  # quote, before fees
    bps: float
    micro_bps: float | None = None
    signal_strength: float | None = None
    complete: bool = True


# --------------------------------------------------------------------------- risk


class RiskAction(enum.StrEnum):
    ACCEPT = "accept"
    CLIP = "clip"
    REJECT = "reject"
    HALT = "halt"
    RESUME = "resume"
    # A pause is not a halt: new orders stop while a transient condition lasts (the store is
    # unavailable) and start again by themselves when it clears; a restart does not read it.
    PAUSE = "pause"
    UNPAUSE = "unpause"


@dataclass(frozen=True, slots=True)
class ReconcileDifference:
    """One difference reconciliation found between the store and the exchange (a row of
    ``reconcile_differences``): kind is order_status, order_gone, order_never_arrived,
    order_unsettled, unknown_order, missing_fill or balance."""

    ts: int
    symbol: str
    kind: str
    detail: str
    client_id: str | None = None


@dataclass(frozen=True, slots=True)
class RiskEvent:
    """One risk decision other than a plain accept: what, why, and the numbers behind it."""

    ts: int
    action: RiskAction
    kind: str  # e.g. max_position, price_band, max_daily_loss, store_unavailable
    reason: str  # one human sentence with the numbers
    client_id: str | None = None
    details: dict[str, str] = field(default_factory=dict)
