"""A market's trading rules (tick, step, minimums) and rounding that matches ccxt exactly.

Why not call ``exchange.amount_to_precision``: paper and replay must size orders without a
network round trip to ``load_markets``, yet an order sized in paper must be the order live
would send. So the rules are built from the same ccxt *unified market dict* (``precision``
and ``limits``), and rounding goes through ccxt's own ``decimal_to_precision`` with the
exchange's precision mode (``TICK_SIZE`` for binance). Live and paper therefore round to
the same string, digit for digit.

Rounding directions, and why:

* amounts are truncated (ccxt's ``amount_to_precision`` does the same): never send more
  than asked for, never exceed a limit by rounding;
* prices round to the nearest tick by default (ccxt's ``price_to_precision``), or toward
  the passive side when a side is given: a buy rounds down, a sell rounds up, so rounding
  never makes an order more aggressive than the strategy or the price band allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ccxt.base.decimal_to_precision import (
    DECIMAL_PLACES,
    NO_PADDING,
    ROUND,
    TICK_SIZE,
    TRUNCATE,
    decimal_to_precision,
)

from bot.model import Side

ZERO = Decimal(0)

# Binance spot's real filters (GET /api/v3/exchangeInfo, PRICE_FILTER / LOT_SIZE / NOTIONAL),
# in ccxt's unified market shape, so the offline default goes through the same code path.
_BINANCE_SPOT: dict[str, dict[str, Any]] = {
    "BTC/USDT": {
        "id": "BTCUSDT",
        "symbol": "BTC/USDT",
        "base": "BTC",
        "quote": "USDT",
        "precision": {"amount": 0.00001, "price": 0.01},
        "limits": {
            "amount": {"min": 0.00001, "max": 9000.0},
            "price": {"min": 0.01, "max": 1000000.0},
            "cost": {"min": 5.0, "max": 9000000.0},
        },
    },
    "ETH/USDT": {
        "id": "ETHUSDT",
        "symbol": "ETH/USDT",
        "base": "ETH",
        "quote": "USDT",
        "precision": {"amount": 0.0001, "price": 0.01},
        "limits": {
            "amount": {"min": 0.0001, "max": 9000.0},
            "price": {"min": 0.01, "max": 1000000.0},
            "cost": {"min": 5.0, "max": 9000000.0},
        },
    },
}


def _dec(value: object) -> Decimal | None:
    """ccxt numbers (float/int/str/None) -> Decimal via str, so 0.00001 stays 0.00001."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(str(value))


def _ccxt_number(d: Decimal) -> str:
    """A Decimal as ccxt's precision argument (a plain string it float()s)."""
    return format(d.normalize(), "f")


@dataclass(frozen=True, slots=True)
class MarketRules:
    """Tick, step and minimums of one market, plus ccxt-identical rounding.

    ``price_precision`` / ``amount_precision`` are kept as ccxt has them: a tick size in
    ``TICK_SIZE`` mode (binance), a number of decimals in ``DECIMAL_PLACES`` mode.
    """

    symbol: str
    base: str
    quote: str
    price_precision: Decimal
    amount_precision: Decimal
    min_amount: Decimal | None = None
    max_amount: Decimal | None = None
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    min_notional: Decimal | None = None
    max_notional: Decimal | None = None
    precision_mode: int = TICK_SIZE

    def __post_init__(self) -> None:
        if self.precision_mode not in (TICK_SIZE, DECIMAL_PLACES):
            raise ValueError(
                f"{self.symbol}: precision mode {self.precision_mode} not supported (TICK_SIZE or DECIMAL_PLACES)"
            )

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_market(cls, market: Mapping[str, Any], precision_mode: int = TICK_SIZE) -> MarketRules:
        """Build from a ccxt unified market dict (``exchange.market(symbol)``)."""
        precision = market.get("precision") or {}
        limits = market.get("limits") or {}
        amount_l = limits.get("amount") or {}
        price_l = limits.get("price") or {}
        cost_l = limits.get("cost") or {}
        price_p = _dec(precision.get("price"))
        amount_p = _dec(precision.get("amount"))
        symbol = str(market.get("symbol", ""))
        if price_p is None or amount_p is None:
            raise ValueError(f"{symbol}: market has no price/amount precision")
        base, _, quote = symbol.partition("/")
        return cls(
            symbol=symbol,
            base=str(market.get("base") or base),
            quote=str(market.get("quote") or quote.split(":")[0]),
            price_precision=price_p,
            amount_precision=amount_p,
            min_amount=_dec(amount_l.get("min")),
            max_amount=_dec(amount_l.get("max")),
            min_price=_dec(price_l.get("min")),
            max_price=_dec(price_l.get("max")),
            min_notional=_dec(cost_l.get("min")),
            max_notional=_dec(cost_l.get("max")),
            precision_mode=precision_mode,
        )

    @classmethod
    def from_exchange(cls, exchange: Any, symbol: str) -> MarketRules:
        """From a ccxt exchange whose markets are loaded (live/testnet)."""
        return cls.from_market(exchange.market(symbol), int(exchange.precisionMode))

    @classmethod
    def binance_spot(cls, symbol: str) -> MarketRules:
        """Binance spot's real filters for BTC/USDT and ETH/USDT; offline default for paper/replay."""
        try:
            market = _BINANCE_SPOT[symbol]
        except KeyError:
            known = ", ".join(sorted(_BINANCE_SPOT))
            raise ValueError(f"no built-in Binance spot rules for {symbol!r} (known: {known})") from None
        return cls.from_market(market, TICK_SIZE)

    # ------------------------------------------------------------------ steps

    @property
    def tick(self) -> Decimal:
        """The smallest price increment."""
        if self.precision_mode == TICK_SIZE:
            return self.price_precision
        return Decimal(1).scaleb(-int(self.price_precision))

    @property
    def step(self) -> Decimal:
        """The smallest amount increment."""
        if self.precision_mode == TICK_SIZE:
            return self.amount_precision
        return Decimal(1).scaleb(-int(self.amount_precision))

    def _precision_arg(self, p: Decimal) -> str | int:
        return _ccxt_number(p) if self.precision_mode == TICK_SIZE else int(p)

    # ------------------------------------------------------------------ rounding

    def amount_to_precision(self, amount: Decimal) -> Decimal:
        """Truncate an amount to the step, like ccxt's ``amount_to_precision`` (0 if below a step)."""
        if amount == ZERO:
            return ZERO
        out = decimal_to_precision(
            str(amount), TRUNCATE, self._precision_arg(self.amount_precision), self.precision_mode, NO_PADDING
        )
        return Decimal(out)

    def price_to_precision(self, price: Decimal, side: Side | None = None) -> Decimal:
        """Round a price to the tick: nearest (ccxt's default) or toward the passive side.

        ``side=BUY`` rounds down and ``side=SELL`` rounds up, so rounding never makes an
        order more aggressive than asked (nor pushes it out of a price band it was inside).
        """
        arg = self._precision_arg(self.price_precision)
        if side is None:
            return Decimal(decimal_to_precision(str(price), ROUND, arg, self.precision_mode, NO_PADDING))
        down = Decimal(decimal_to_precision(str(price), TRUNCATE, arg, self.precision_mode, NO_PADDING))
        if side is Side.BUY or down == price:
            return down
        return down + self.tick

    def amount_str(self, amount: Decimal) -> str:
        """The amount exactly as ccxt would send it."""
        return str(
            decimal_to_precision(
                str(amount), TRUNCATE, self._precision_arg(self.amount_precision), self.precision_mode, NO_PADDING
            )
        )

    # ------------------------------------------------------------------ minimums

    def below_minimum(self, amount: Decimal, price: Decimal | None) -> str | None:
        """Why an order of this size cannot be placed, or None if it can."""
        if amount <= ZERO:
            return f"amount {amount} is not positive after rounding to step {self.step}"
        if self.min_amount is not None and amount < self.min_amount:
            return f"amount {amount} below the market minimum {self.min_amount}"
        if price is not None and self.min_notional is not None and amount * price < self.min_notional:
            return f"notional {amount * price} below the market minimum {self.min_notional} {self.quote}"
        return None
