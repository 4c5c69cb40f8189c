"""Pre-trade limits: every order is accepted, clipped or rejected here, with a reason.

Why a separate gate: the strategy only says what it wants; this module is the one place that
knows what the account may do. Checks, in order (the first that fails decides):

1. market feed up, book healthy (not stale, crossed or resyncing) -> else reject;
2. open orders below ``max_open_orders`` -> else reject;
3. orders sent in the last 60 s below ``max_orders_per_minute`` -> else reject (the 60 s
   are measured on the monotonic clock: a wall-clock step neither freezes nor empties them);
4. a mid exists and the limit price is within ``price_band_bps`` of it -> else reject;
5. notional <= ``max_order_notional`` -> else clip the amount (reject if the clip leaves
   less than the market minimum);
6. worst-case position <= ``max_position``: the position plus *every* open order on the same
   side (their unfilled remainders) plus this order, as if all of them filled -> else clip
   to the room left (reject if none, or below the market minimum).

Because check 6 counts the remainders of open orders, no sequence of accepted orders and
(partial) fills can take ``|position|`` past ``max_position``.

Every clip and reject is a ``RiskEvent`` (``decision.event``; the engine persists it as a
``risk_events`` row) and one log line with the numbers that caused it.

The runtime guards (daily loss, drawdown, store, feed, rejections) and the kill switch are
in ``bot.risk.killswitch``; ``KillSwitch``, ``KillSwitchActions`` and ``HaltState`` can also
be imported from here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from bot.clock import Clock
from bot.config import RiskSettings
from bot.logging import get_logger
from bot.model import Order, OrderRequest, RiskAction, RiskEvent, Side
from bot.risk.market_rules import MarketRules
from bot.risk.sizing import open_exposure

ZERO = Decimal(0)
MINUTE_MS = 60_000


@dataclass(frozen=True)
class RiskDecision:
    """The verdict on one order: ``order`` is what may be sent (None on reject)."""

    action: RiskAction
    order: OrderRequest | None
    kind: str
    reason: str
    event: RiskEvent | None = None  # the risk_events row to persist (clip / reject)

    @property
    def allowed(self) -> bool:
        return self.order is not None


@dataclass
class MarketState:
    """What the limits need to know about the market at the moment of a check."""

    mid: float | None
    best_bid: float | None
    best_ask: float | None
    book_healthy: bool
    book_reason: str | None
    feed_up: bool = True


@dataclass
class _Verdict:
    kind: str
    reason: str
    details: dict[str, str] = field(default_factory=dict)


def _d(x: float) -> Decimal:
    return Decimal(repr(x))


class RiskLimits:
    """Pre-trade checks for one (account, symbol)."""

    def __init__(self, settings: RiskSettings, rules: MarketRules, clock: Clock, log: Any = None) -> None:
        self.settings = settings
        self.rules = rules
        self.clock = clock
        self.log = log if log is not None else get_logger("risk")
        self._sent: deque[int] = deque()  # monotonic ms (``clock.mono_ms``) of the orders sent
        self.rejections = 0  # consecutive exchange rejections
        self._rejection_event_sent = False

    # ------------------------------------------------------------------ bookkeeping

    def update_settings(self, settings: RiskSettings) -> None:
        """Take new limits (SIGHUP reload); open orders are judged by them from now on."""
        old = self.settings
        self.settings = settings
        changed = {
            k: f"{getattr(old, k)} -> {getattr(settings, k)}"
            for k in type(settings).model_fields
            if getattr(old, k) != getattr(settings, k)
        }
        self.log.info("risk_settings_reloaded", changed=changed)

    def on_order_sent(self, mono_ms: int | None = None) -> None:
        """Count an order toward ``max_orders_per_minute``, sent at ``mono_ms`` on the monotonic
        clock (``clock.mono_ms()``, the default); never a wall-clock stamp."""
        now = self.clock.mono_ms() if mono_ms is None else mono_ms
        self._sent.append(now)
        self._expire(now)

    def on_accepted(self) -> None:
        """The exchange accepted an order: the consecutive-rejection count restarts."""
        self.rejections = 0
        self._rejection_event_sent = False

    def on_rejection(self) -> RiskEvent | None:
        """Count an exchange rejection; at ``max_rejections`` in a row, return the HALT event.

        Returned once per streak. Hand it to ``KillSwitch.halt`` (or pass ``rejections`` to
        ``KillSwitch.evaluate``); the kill switch halts only once either way.
        """
        self.rejections += 1
        if self.rejections < self.settings.max_rejections or self._rejection_event_sent:
            self.log.info("order_rejected_by_exchange", consecutive=self.rejections,
                          max_rejections=self.settings.max_rejections)
            return None
        self._rejection_event_sent = True
        reason = (
            f"{self.rejections} consecutive order rejections reached max_rejections "
            f"{self.settings.max_rejections}"
        )
        ev = RiskEvent(
            ts=self.clock.now_ms(),
            action=RiskAction.HALT,
            kind="max_rejections",
            reason=reason,
            details={"rejections": str(self.rejections), "max_rejections": str(self.settings.max_rejections)},
        )
        # the caller hands ev to KillSwitch.halt, which writes the one risk_halt line
        self.log.info("order_rejected_by_exchange", consecutive=self.rejections,
                      max_rejections=self.settings.max_rejections)
        return ev

    def _expire(self, mono_ms: int) -> None:
        while self._sent and self._sent[0] <= mono_ms - MINUTE_MS:
            self._sent.popleft()

    def orders_last_minute(self) -> int:
        """Orders sent in the last 60 s of monotonic time."""
        self._expire(self.clock.mono_ms())
        return len(self._sent)

    # ------------------------------------------------------------------ the check

    def check(
        self, req: OrderRequest, *, position: Decimal, open_orders: Sequence[Order], market: MarketState
    ) -> RiskDecision:
        """Accept, clip or reject ``req`` (see the module docstring for the order of checks)."""
        s = self.settings
        hard = self._hard_checks(req, open_orders, market)
        if hard is not None:
            return self._reject(req, hard, position)

        amount = req.amount
        clips: list[_Verdict] = []
        ref_price = req.price if req.price is not None else _d(market.mid or 0.0)

        # 5. max order notional
        notional = amount * ref_price
        if notional > s.max_order_notional:
            clipped = self.rules.amount_to_precision(s.max_order_notional / ref_price)
            text = f"notional {notional} above max_order_notional {s.max_order_notional}"
            details = {"notional": str(notional), "max_order_notional": str(s.max_order_notional)}
            why = self.rules.below_minimum(clipped, ref_price)
            if why is not None:
                return self._reject(req, _Verdict("max_order_notional", f"{text}; clipped {why}", details), position)
            clips.append(_Verdict("max_order_notional", f"{text}: amount clipped {amount} -> {clipped}", details))
            amount = clipped

        # 6. worst-case position
        buys, sells = open_exposure(open_orders, req.symbol)
        if req.side is Side.BUY:
            worst = position + buys + amount
            room = s.max_position - (position + buys)
            open_txt = f"open buys {buys}"
            signed = f"+{amount}"
        else:
            worst = position - sells - amount
            room = s.max_position + (position - sells)
            open_txt = f"open sells {sells}"
            signed = f"-{amount}"
        if abs(worst) > s.max_position and (worst > 0) == (req.side is Side.BUY):
            text = (
                f"worst-case position {worst} (position {position}, {open_txt}, order {signed}) "
                f"exceeds max_position {s.max_position}"
            )
            details = {
                "position": str(position),
                "open_buys": str(buys),
                "open_sells": str(sells),
                "amount": str(amount),
                "worst_case": str(worst),
                "max_position": str(s.max_position),
            }
            if room <= ZERO:
                return self._reject(req, _Verdict("max_position", f"{text}; no room left", details), position)
            clipped = self.rules.amount_to_precision(min(amount, room))
            why = self.rules.below_minimum(clipped, ref_price)
            if why is not None:
                return self._reject(req, _Verdict("max_position", f"{text}; clipped {why}", details), position)
            clips.append(_Verdict("max_position", f"{text}: amount clipped {amount} -> {clipped}", details))
            amount = clipped

        if not clips:
            return RiskDecision(RiskAction.ACCEPT, req, "ok", "accepted")
        out = OrderRequest(
            symbol=req.symbol,
            side=req.side,
            amount=amount,
            price=req.price,
            type=req.type,
            post_only=req.post_only,
            reason=req.reason,
            signal_strength=req.signal_strength,
        )
        kind = clips[-1].kind
        reason = "; ".join(c.reason for c in clips)
        numbers: dict[str, str] = {}
        for c in clips:
            numbers.update(c.details)
        numbers.update(requested=str(req.amount), allowed=str(amount), side=req.side.value)
        ev = RiskEvent(ts=self.clock.now_ms(), action=RiskAction.CLIP, kind=kind, reason=reason, details=numbers)
        self.log.warning("risk_clip", kind=kind, reason=reason, **numbers)
        return RiskDecision(RiskAction.CLIP, out, kind, reason, ev)

    def _hard_checks(self, req: OrderRequest, open_orders: Sequence[Order], market: MarketState) -> _Verdict | None:
        s = self.settings
        if not market.feed_up:
            return _Verdict("feed_down", "market feed is down: no new orders")
        if (
            market.best_bid is not None
            and market.best_ask is not None
            and market.best_bid >= market.best_ask
        ):
            return _Verdict(
                "book_unhealthy",
                f"book crossed (best bid {market.best_bid} >= best ask {market.best_ask}): "
                "no new orders until it resyncs",
                {"best_bid": repr(market.best_bid), "best_ask": repr(market.best_ask)},
            )
        if not market.book_healthy:
            why = market.book_reason or "unknown"
            return _Verdict(
                "book_unhealthy", f"book not healthy ({why}): no new orders until it resyncs", {"book_reason": why}
            )
        n_open = sum(1 for o in open_orders if o.symbol == req.symbol and o.status.is_open)
        if n_open >= s.max_open_orders:
            return _Verdict(
                "max_open_orders",
                f"{n_open} open orders, max_open_orders is {s.max_open_orders}",
                {"open_orders": str(n_open), "max_open_orders": str(s.max_open_orders)},
            )
        n_sent = self.orders_last_minute()
        if n_sent >= s.max_orders_per_minute:
            return _Verdict(
                "max_orders_per_minute",
                f"{n_sent} orders sent in the last 60 s, max_orders_per_minute is {s.max_orders_per_minute}",
                {"orders_last_minute": str(n_sent), "max_orders_per_minute": str(s.max_orders_per_minute)},
            )
        if market.mid is None or market.mid <= 0:
            return _Verdict("no_mid", "no mid price: the price band cannot be checked")
        if req.price is not None:
            mid = _d(market.mid)
            dev_bps = abs(req.price - mid) / mid * 10_000
            if dev_bps > _d(s.price_band_bps):
                return _Verdict(
                    "price_band",
                    f"price {req.price} is {dev_bps:.1f} bps from mid {mid}, price_band_bps is {s.price_band_bps:g}",
                    {"price": str(req.price), "mid": str(mid), "deviation_bps": f"{dev_bps:.4f}",
                     "price_band_bps": f"{s.price_band_bps:g}"},
                )
        if req.amount <= ZERO:
            return _Verdict("invalid_amount", f"amount {req.amount} is not positive")
        return None

    def _reject(self, req: OrderRequest, v: _Verdict, position: Decimal) -> RiskDecision:
        details = {
            **v.details,
            "side": req.side.value,
            "amount": str(req.amount),
            "price": str(req.price),
            "position": str(position),
        }
        ev = RiskEvent(ts=self.clock.now_ms(), action=RiskAction.REJECT, kind=v.kind, reason=v.reason, details=details)
        self.log.warning("risk_reject", kind=v.kind, reason=v.reason, **details)
        return RiskDecision(RiskAction.REJECT, None, v.kind, v.reason, ev)


def __getattr__(name: str) -> Any:
    # The kill switch lives in its own module (it imports MarketState from here).
    if name in ("KillSwitch", "KillSwitchActions", "HaltState"):
        from bot.risk import killswitch

        return getattr(killswitch, name)
    raise AttributeError(name)
