"""Position sizing: signal strength x volatility-targeted unit, skewed by inventory, rounded.

Volatility targeting (why: the same signal should risk the same money in a calm and in a
wild market)::

    sigma_h   = volatility_bps / 1e4 * sqrt(max_hold)         # 1-sigma move over a holding period
    unit      = risk_fraction * max_daily_loss / (mid * sigma_h)   # base units
    raw       = strength * unit                                # strength = signed z-score

``volatility_bps`` is the standard deviation of 1-second mid returns in bps (the strategy's
``VolatilityEstimator``), ``max_hold`` (strategy) the longest we hold, so ``mid * sigma_h``
is what one base unit can move against us in one holding period. One unit therefore risks
``risk_fraction`` (default 10 %) of the daily loss budget at one sigma; a z of 2 takes two
units. Example: BTC at 60 000, 1 bp/sqrt(s), 120 s hold -> sigma_h = 0.11 %, 65.7 USDT per
BTC, unit = 10 / 65.7 = 0.152 BTC.

Inventory skew (why: a position near its limit should grow slowly and shrink fast): a
target that *adds* to the current exposure only moves a fraction ``1 - |position| /
max_position`` of the way from the position to the raw target; a target that reduces the
exposure (or flips it) is taken in full. The result is capped at +-``max_position`` and
truncated to the market's amount step.

``order_for`` turns a target into one limit order for the part not already covered by the
position and by open orders, rounded with ccxt's own precision functions (amount
truncated, price toward the passive side) and dropped when below the market's minimum
amount or notional, so paper and live send identical orders.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal

from bot.config import Settings
from bot.logging import get_logger
from bot.model import Direction, ImbalanceSignal, Order, OrderRequest, OrderType, Side
from bot.risk.market_rules import MarketRules

ZERO = Decimal(0)
ONE = Decimal(1)


def open_exposure(open_orders: Sequence[Order], symbol: str) -> tuple[Decimal, Decimal]:
    """Remaining amount of open buy orders and of open sell orders for ``symbol``."""
    buys = sells = ZERO
    for o in open_orders:
        if o.symbol != symbol or not o.status.is_open:
            continue
        rem = max(ZERO, o.remaining)
        if o.side is Side.BUY:
            buys += rem
        else:
            sells += rem
    return buys, sells


class Sizer:
    """Signal -> target position -> a rounded order request (or None)."""

    def __init__(self, settings: Settings, rules: MarketRules, *, risk_fraction: float = 0.1) -> None:
        self.settings = settings
        self.rules = rules
        self.risk_fraction = risk_fraction
        self.log = get_logger("risk")

    @property
    def max_position(self) -> Decimal:
        return self.settings.risk.max_position

    def unit_size(self, volatility_bps: float, mid: float) -> Decimal:
        """Base units whose one-sigma move over ``max_hold`` costs ``risk_fraction * max_daily_loss``."""
        hold_s = max(self.settings.strategy.max_hold, 1.0)
        sigma_h = max(volatility_bps, 1e-6) / 1e4 * math.sqrt(hold_s)
        if mid <= 0 or not math.isfinite(mid):
            return ZERO
        budget = float(self.settings.risk.max_daily_loss) * self.risk_fraction
        return Decimal(repr(budget / (mid * sigma_h)))

    def target_position(
        self, signal: ImbalanceSignal, *, position: Decimal, volatility_bps: float, mid: float
    ) -> Decimal:
        """Signed target position in base units (see the module docstring for the formula)."""
        if signal.direction == Direction.FLAT or signal.strength == 0 or not math.isfinite(signal.strength):
            return ZERO
        unit = self.unit_size(volatility_bps, mid)
        strength = Decimal(repr(abs(signal.strength))) * (1 if signal.direction == Direction.LONG else -1)
        raw = strength * unit
        cap = self.max_position
        target = self.skew(raw, position)
        target = max(-cap, min(cap, target))
        rounded = self.rules.amount_to_precision(abs(target)) * (1 if target >= 0 else -1)
        self.log.debug(
            "target_position",
            strength=signal.strength,
            volatility_bps=volatility_bps,
            mid=mid,
            unit=str(unit),
            raw=str(raw),
            position=str(position),
            target=str(rounded),
        )
        return rounded

    def skew(self, raw: Decimal, position: Decimal) -> Decimal:
        """Damp moves that add exposure by ``1 - |position|/max_position``; keep reducing moves."""
        cap = self.max_position
        adds = (raw > position >= ZERO) or (raw < position <= ZERO)
        if not adds:
            return raw
        room = max(ZERO, ONE - abs(position) / cap)
        return position + (raw - position) * room

    def order_for(
        self,
        target: Decimal,
        position: Decimal,
        open_orders: Sequence[Order],
        price: Decimal,
        side_hint: Side | None = None,
        reason: str = "",
    ) -> OrderRequest | None:
        """One limit order toward ``target``, net of open orders; None if nothing placeable.

        ``side_hint`` (optional) restricts the order to one side: an order the other way is
        not produced. The price rounds toward the passive side; the amount truncates.
        """
        buys, sells = open_exposure(open_orders, self.rules.symbol)
        delta = target - (position + buys - sells)
        if delta == ZERO:
            return None
        side = Side.BUY if delta > 0 else Side.SELL
        if side_hint is not None and side_hint is not side:
            return None
        amount = self.rules.amount_to_precision(abs(delta))
        if self.rules.max_amount is not None:
            amount = min(amount, self.rules.max_amount)
        px = self.rules.price_to_precision(price, side)
        why = self.rules.below_minimum(amount, px)
        if why is not None:
            self.log.debug(
                "order_dropped", side=side.value, target=str(target), position=str(position), delta=str(delta), why=why
            )
            return None
        return OrderRequest(
            symbol=self.rules.symbol, side=side, amount=amount, price=px, type=OrderType.LIMIT, reason=reason
        )
