"""The imbalance strategy: an ImbalanceSignal becomes a target position, worked with limit orders.

Why it is this simple: the edge lives in the signal, so the strategy's job is only to follow
it without doing harm. On an entry signal it sizes a target (through ``risk.sizing``), and
works the difference to the current position with ONE limit order at a time: at the touch
(join the best bid/ask) when the signal is moderate, across the spread (limit at the
opposite best price, i.e. marketable but capped) when it is strong. An order older than
``order_ttl`` or on the wrong side is cancelled and re-worked. On an exit signal, or after
``max_hold``, the target becomes flat.

The strategy never talks to the exchange or to risk limits: it returns ``Place``/``Cancel``
intents; the engine runs each ``Place`` through the risk checks and the order manager.

Time: ``order_ttl`` and ``max_hold`` are durations, measured on the monotonic clock the engine
passes in (``now_ms``: ``clock.mono_ms()``, which is event time in replay), never on order or
signal stamps, so a wall-clock step neither expires nor freezes them. The volatility estimate
samples the market on its own event time (``ts_ms``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from bot.analytics.cost import CostGate
from bot.config import Settings
from bot.model import Direction, ImbalanceSignal, Order, OrderRequest, OrderType, Side
from bot.risk.market_rules import MarketRules
from bot.risk.sizing import Sizer

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Place:
    request: OrderRequest


@dataclass(frozen=True, slots=True)
class Cancel:
    client_id: str
    reason: str


Intent = Place | Cancel


class VolatilityEstimator:
    """EWMA of squared 1-second log returns of the mid, in bps per sqrt(second).

    Sampled on a fixed 1 s grid of event time, so it costs one comparison per event and is
    identical in live and replay. Until enough samples exist it reports ``floor_bps``.
    """

    def __init__(self, halflife_s: float = 60.0, floor_bps: float = 1.0) -> None:
        self.alpha = 1.0 - math.exp(math.log(0.5) / max(halflife_s, 1.0))
        self.floor_bps = floor_bps
        self._var = 0.0
        self._n = 0
        self._last_mid = 0.0
        self._next_ms = 0

    def update(self, ts_ms: int, mid: float) -> None:
        if ts_ms < self._next_ms or mid <= 0:
            return
        if self._last_mid > 0:
            r = math.log(mid / self._last_mid)
            self._var += self.alpha * (r * r - self._var)
            self._n += 1
        self._last_mid = mid
        self._next_ms = ts_ms - ts_ms % 1000 + 1000

    @property
    def bps(self) -> float:
        if self._n < 5:
            return self.floor_bps
        return max(self.floor_bps, math.sqrt(self._var) * 1e4)


class ImbalanceStrategy:
    """Signal -> target position -> at most one working order toward it."""

    def __init__(self, settings: Settings, rules: MarketRules, sizer: Sizer | None = None) -> None:
        self.settings = settings
        self.rules = rules
        self.sizer = sizer or Sizer(settings, rules)
        self.symbol = settings.symbol
        self.target = ZERO
        self.target_since_ms = 0  # monotonic ms when the target was last set (max_hold)
        self.last_signal: ImbalanceSignal | None = None
        self.volatility = VolatilityEstimator()
        st = settings.strategy
        # Fees: the [paper] fee model (paper/replay); for testnet/live set it to the account's fees.
        self.gate: CostGate | None = (
            CostGate(
                taker_fee_bps=settings.paper.taker_fee_bps,
                maker_fee_bps=settings.paper.maker_fee_bps,
                min_edge_bps=st.min_edge_bps,
                mapping=(lambda z: st.edge_bps_per_z * abs(z)) if st.edge_bps_per_z > 0 else None,
            )
            if st.cost_gate
            else None
        )
        self.last_skip: str | None = None

    # ------------------------------------------------------------------ inputs

    def on_signal(self, sig: ImbalanceSignal, position: Decimal, mid: float, half_spread_bps: float = 0.0,
                  now_ms: int | None = None) -> bool:
        """Update the target from a detector signal; False when the cost gate skipped an entry.

        ``now_ms``: the monotonic time of the signal (``max_hold`` counts from it); the signal's
        own ``ts`` when not given (tests and replay, where the two are the same).
        """
        self.last_signal = sig
        self.last_skip = None
        if sig.kind == "exit" or sig.direction == Direction.FLAT:
            self.target = ZERO
        else:
            if self.gate is not None:
                aggressive = abs(sig.strength) >= self.settings.strategy.aggressive_z
                ok, why = self.gate.allow(abs(sig.strength), half_spread_bps, aggressive)
                if not ok:
                    self.last_skip = why
                    return False
            self.target = self.sizer.target_position(
                sig, position=position, volatility_bps=self.volatility.bps, mid=mid
            )
        self.target_since_ms = sig.ts if now_ms is None else now_ms
        return True

    def on_tick(self, ts_ms: int, mid: float | None, now_ms: int | None = None) -> None:
        """One market event at event time ``ts_ms``, seen at monotonic ``now_ms`` (default ``ts_ms``)."""
        if mid is not None:
            self.volatility.update(ts_ms, mid)
        now = ts_ms if now_ms is None else now_ms
        if self.target != ZERO and now - self.target_since_ms > self.settings.strategy.max_hold * 1000:
            self.target = ZERO
            self.target_since_ms = now

    # ------------------------------------------------------------------ decisions

    def decide(
        self,
        now_ms: int,
        position: Decimal,
        open_orders: Sequence[Order],
        best_bid: float | None,
        best_ask: float | None,
        placed_ms: Mapping[str, int] | None = None,
    ) -> list[Intent]:
        """Intents that move the position toward the target; empty when nothing to do.

        ``now_ms`` is monotonic time; ``placed_ms`` maps a client id to the monotonic time its
        order was placed (the engine keeps it). An order missing from it is aged by its
        ``created_ts`` stamp, which is only right where stamps and ``now_ms`` share one clock
        (replay, tests).
        """
        intents: list[Intent] = []
        want = self.target - position
        ttl_ms = self.settings.strategy.order_ttl * 1000
        working: list[Order] = []
        for o in open_orders:
            if o.symbol != self.symbol or not o.status.is_open:
                continue
            wrong_side = (want > 0 and o.side is Side.SELL) or (want < 0 and o.side is Side.BUY) or want == 0
            if wrong_side:
                intents.append(Cancel(o.client_id, "target changed"))
            elif now_ms - (placed_ms.get(o.client_id, o.created_ts) if placed_ms else o.created_ts) >= ttl_ms:
                intents.append(Cancel(o.client_id, "order older than order_ttl"))
            else:
                working.append(o)
        if want == 0 or working or best_bid is None or best_ask is None:
            return intents
        if any(isinstance(i, Cancel) for i in intents):
            return intents  # re-work after the cancels are confirmed
        side = Side.BUY if want > 0 else Side.SELL
        strength = abs(self.last_signal.strength) if self.last_signal else 0.0
        # Getting out is never passive: a flatten crosses the spread (a limit at the opposite touch).
        aggressive = strength >= self.settings.strategy.aggressive_z or self.target == ZERO
        if side is Side.BUY:
            price = best_ask if aggressive else best_bid
        else:
            price = best_bid if aggressive else best_ask
        req = self.sizer.order_for(
            self.target,
            position,
            open_orders,
            Decimal(repr(price)),
            reason=self._reason(side, aggressive),
        )
        if req is None:
            return intents
        req = OrderRequest(
            symbol=req.symbol,
            side=req.side,
            amount=req.amount,
            price=req.price,
            type=OrderType.LIMIT,
            post_only=False,
            reason=req.reason,
            signal_strength=self.last_signal.strength if self.last_signal else None,
        )
        intents.append(Place(req))
        return intents

    def _reason(self, side: Side, aggressive: bool) -> str:
        sig = self.last_signal
        style = "cross" if aggressive else "join"
        if self.target == ZERO:
            what = "exit" if sig is not None and sig.kind == "exit" else "flatten"
        else:
            what = "entry"
        z = f" z={sig.strength:+.2f}" if sig is not None else ""
        return f"{what} {side.value} {style}{z} target={self.target}"
