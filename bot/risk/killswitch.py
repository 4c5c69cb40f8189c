"""Runtime guards and the kill switch: cancel everything, flatten, halt, and stay halted.

Why the halt is sticky: a bot that lost its daily budget, or lost its database or its
market feed, must not start trading again because systemd restarted it. A halt is written
as a ``risk_events`` row (action ``halt``); on start the engine reads the latest one
(``store.queries.latest_halt``) and calls ``restore``. Only ``bot resume`` (a person looked)
lifts it, or, for ``max_daily_loss`` only and when ``risk.daily_loss_resume = "next_day"``,
the start of a new UTC day.

The guards (``evaluate``), in order: ``max_daily_loss`` (equity change since the start of
the UTC day), ``max_drawdown`` (from the run's equity peak), store unavailable, feed down,
``max_rejections`` consecutive exchange rejections. The first breach returns the HALT event,
exactly once; later calls return None while halted.

``trigger`` then acts: cancel all open orders, and with ``flatten_on_halt`` send one
marketable limit order for the whole position, priced at the far edge of the price band
(rounded toward the passive side, so it stays inside the band): it crosses the spread and
walks the book, but never further than the band allows. It bypasses the pre-trade limits on
purpose (they would refuse orders while the book is unhealthy or the rate is exhausted).
"""

from __future__ import annotations

import datetime as dt
import importlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from bot.clock import Clock
from bot.config import RiskSettings
from bot.logging import get_logger
from bot.model import OrderRequest, OrderType, RiskAction, RiskEvent, Side
from bot.risk.inventory import Inventory, utc_day
from bot.risk.limits import MarketState
from bot.risk.market_rules import MarketRules

ZERO = Decimal(0)


class KillSwitchActions(Protocol):
    """What the kill switch needs from execution (the engine adapts its order manager)."""

    async def cancel_all(self) -> None: ...

    async def submit(self, req: OrderRequest) -> None: ...


@dataclass(frozen=True)
class HaltState:
    """Whether trading is halted, and why; what a restart reads back."""

    halted: bool
    kind: str | None = None
    reason: str | None = None
    ts: int | None = None

    @classmethod
    def from_event(cls, ev: RiskEvent | None) -> HaltState:
        if ev is None or ev.action is not RiskAction.HALT:
            return cls(False)
        return cls(True, ev.kind, ev.reason, ev.ts)


def _day_str(ts_ms: int) -> str:
    return dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d")


class KillSwitch:
    """Runtime guards for one (account, symbol); halts once, stays halted until resumed."""

    def __init__(self, settings: RiskSettings, clock: Clock, halt_state: HaltState | None = None,
                 log: Any = None) -> None:
        self.settings = settings
        self.clock = clock
        self.log = log if log is not None else get_logger("risk")
        self.halted = False
        self.halt_reason: str | None = None
        self.halt_kind: str | None = None
        self.halt_ts: int | None = None
        if halt_state is not None and halt_state.halted:
            self.halted = True
            self.halt_kind = halt_state.kind
            self.halt_reason = halt_state.reason
            self.halt_ts = halt_state.ts

    @property
    def state(self) -> HaltState:
        return HaltState(self.halted, self.halt_kind, self.halt_reason, self.halt_ts)

    def update_settings(self, settings: RiskSettings) -> None:
        self.settings = settings

    # ------------------------------------------------------------------ guards

    def evaluate(
        self, *, inventory: Inventory, mark: Decimal, store_healthy: bool, feed_up: bool, rejections: int
    ) -> RiskEvent | None:
        """Check every guard; the first breach halts and its HALT event is returned (once)."""
        if self.halted:
            return None
        s = self.settings
        now = self.clock.now_ms()
        inventory.mark_to(now, mark)
        eq = inventory.equity(mark)
        day_pnl = inventory.daily_pnl(mark)
        dd = inventory.drawdown(mark)
        base = {"equity": str(eq), "mark": str(mark), "position": str(inventory.position)}
        if -day_pnl >= s.max_daily_loss:
            start = inventory.day_start_equity if inventory.day_start_equity is not None else eq
            return self.halt(RiskEvent(
                ts=now,
                action=RiskAction.HALT,
                kind="max_daily_loss",
                reason=(
                    f"daily loss {-day_pnl} {inventory.quote} reached max_daily_loss {s.max_daily_loss} "
                    f"(equity {eq}, day start {start}, mark {mark})"
                ),
                details={**base, "daily_pnl": str(day_pnl), "day_start_equity": str(start),
                         "max_daily_loss": str(s.max_daily_loss)},
            ))
        if dd >= s.max_drawdown:
            peak = inventory.run_peak if inventory.run_peak is not None else eq
            return self.halt(RiskEvent(
                ts=now,
                action=RiskAction.HALT,
                kind="max_drawdown",
                reason=(
                    f"drawdown {dd} {inventory.quote} from run peak {peak} reached max_drawdown "
                    f"{s.max_drawdown} (equity {eq}, mark {mark})"
                ),
                details={**base, "drawdown": str(dd), "run_peak": str(peak), "max_drawdown": str(s.max_drawdown)},
            ))
        if not store_healthy:
            return self.halt(RiskEvent(
                ts=now, action=RiskAction.HALT, kind="store_unavailable",
                reason="store unavailable: records kept in memory, no new positions", details=base,
            ))
        if not feed_up:
            return self.halt(RiskEvent(
                ts=now, action=RiskAction.HALT, kind="feed_down",
                reason="market feed down: cannot price or protect the position", details=base,
            ))
        if rejections >= s.max_rejections:
            return self.halt(RiskEvent(
                ts=now, action=RiskAction.HALT, kind="max_rejections",
                reason=f"{rejections} consecutive order rejections reached max_rejections {s.max_rejections}",
                details={**base, "rejections": str(rejections), "max_rejections": str(s.max_rejections)},
            ))
        return None

    def halt(self, event: RiskEvent) -> RiskEvent | None:
        """Halt with this event; returns it, or None if already halted (one halt per episode)."""
        if self.halted:
            return None
        self.halted = True
        self.halt_kind = event.kind
        self.halt_reason = event.reason
        self.halt_ts = event.ts
        self.log.error("risk_halt", kind=event.kind, reason=event.reason, **event.details)
        return event

    # ------------------------------------------------------------------ restart / resume

    def restore(self, latest_halt: RiskEvent | None, now_ms: int) -> RiskEvent | None:
        """Apply the persisted halt after a restart.

        Returns None when no halt is in effect; the persisted HALT event itself when the bot
        is still halted (do not store it again); a new RESUME event when the halt was lifted
        by the next-UTC-day rule (``max_daily_loss`` with ``daily_loss_resume = "next_day"``),
        which the caller persists.
        """
        if latest_halt is None or latest_halt.action is not RiskAction.HALT:
            self.halted = False
            self.halt_kind = self.halt_reason = None
            self.halt_ts = None
            return None
        if (
            latest_halt.kind == "max_daily_loss"
            and self.settings.daily_loss_resume == "next_day"
            and utc_day(now_ms) > utc_day(latest_halt.ts)
        ):
            self.halted = False
            self.halt_kind = self.halt_reason = None
            self.halt_ts = None
            reason = f"resumed automatically on new UTC day {_day_str(now_ms)} after {latest_halt.reason}"
            ev = RiskEvent(ts=now_ms, action=RiskAction.RESUME, kind=latest_halt.kind, reason=reason,
                           details={"halt_ts": str(latest_halt.ts), "who": "next_day"})
            self.log.warning("risk_resume", kind=ev.kind, reason=reason, halt_ts=latest_halt.ts)
            return ev
        self.halted = True
        self.halt_kind = latest_halt.kind
        self.halt_reason = latest_halt.reason
        self.halt_ts = latest_halt.ts
        self.log.error("risk_still_halted", kind=latest_halt.kind, reason=latest_halt.reason,
                       halt_ts=latest_halt.ts, how_to_resume="bot resume")
        return latest_halt

    def resume(self, now_ms: int, who: str = "operator") -> RiskEvent:
        """Lift the halt; returns the RESUME event to persist."""
        kind = self.halt_kind or "manual"
        if self.halted:
            reason = f"resumed by {who} after {self.halt_reason}"
        else:
            reason = f"resume requested by {who}; the bot was not halted"
        ev = RiskEvent(ts=now_ms, action=RiskAction.RESUME, kind=kind, reason=reason,
                       details={"who": who, "halt_ts": str(self.halt_ts)})
        self.halted = False
        self.halt_kind = self.halt_reason = None
        self.halt_ts = None
        self.log.warning("risk_resume", kind=kind, reason=reason, who=who)
        return ev

    # ------------------------------------------------------------------ acting

    def flatten_order(self, position: Decimal, market: MarketState, rules: MarketRules) -> OrderRequest | None:
        """The marketable limit that closes ``position`` inside the price band, or None."""
        if position == ZERO or market.mid is None or market.mid <= 0:
            return None
        side = Side.SELL if position > 0 else Side.BUY
        amount = rules.amount_to_precision(abs(position))
        band = Decimal(repr(self.settings.price_band_bps)) / 10_000
        mid = Decimal(repr(market.mid))
        raw = mid * (1 - band) if side is Side.SELL else mid * (1 + band)
        price = rules.price_to_precision(raw, side)  # toward passive: stays inside the band
        if rules.below_minimum(amount, price) is not None:
            return None
        return OrderRequest(
            symbol=rules.symbol, side=side, amount=amount, price=price, type=OrderType.LIMIT,
            reason=f"kill switch flatten {side.value} {amount} @ {price} (mid {mid}, band {self.settings.price_band_bps:g} bps)",
        )

    async def trigger(
        self, actions: KillSwitchActions, event: RiskEvent, market: MarketState, position: Decimal,
        rules: MarketRules,
    ) -> None:
        """Cancel all open orders, flatten (if configured) and make sure the halt is set."""
        if not self.halted:
            self.halt(event)
        try:
            await actions.cancel_all()
            self.log.warning("kill_switch_cancelled_all", kind=event.kind)
        except Exception as exc:  # the halt stands even if the exchange does not answer
            self.log.error("kill_switch_cancel_failed", kind=event.kind, error=repr(exc))
        if not self.settings.flatten_on_halt or position == ZERO:
            self.log.warning("kill_switch_no_flatten", kind=event.kind, position=str(position),
                             flatten_on_halt=self.settings.flatten_on_halt)
            return
        req = self.flatten_order(position, market, rules)
        if req is None:
            self.log.error("kill_switch_cannot_flatten", kind=event.kind, position=str(position),
                           mid=market.mid, why="no mid price or position below the market minimum")
            return
        try:
            await actions.submit(req)
            self.log.warning("kill_switch_flatten", kind=event.kind, side=req.side.value,
                             amount=str(req.amount), price=str(req.price), mid=market.mid,
                             position=str(position))
        except Exception as exc:
            self.log.error("kill_switch_flatten_failed", kind=event.kind, error=repr(exc))


async def resume_persisted(db_url: str, account: str, symbol: str, now_ms: int,
                           who: str = "operator", *, mode: str,
                           venue: str) -> tuple[RiskEvent | None, RiskEvent | None]:
    """``bot resume``: find the latest halt of (account, mode, venue, symbol) in the store and
    write a RESUME row for it (``mode``/``venue``: the config's ``mode`` and ``Settings.venue``;
    a paper halt is never lifted by a testnet config, nor the other way round).

    Returns (halt, resume_event); (None, None) when the bot is not halted.
    """
    # The store is below risk; imported only for this command (and by name, so the risk
    # layer does not depend on the store at import time).
    db: Any = importlib.import_module("bot.store.db")
    queries: Any = importlib.import_module("bot.store.queries")
    engine = db.make_engine(db_url)
    try:
        halt = await queries.latest_halt(engine, account, symbol, mode=mode, venue=venue)
        if halt is None or halt.action is not RiskAction.HALT:
            return None, None
        ks = KillSwitch(RiskSettings(), _FixedClock(now_ms), HaltState.from_event(halt))
        ev = ks.resume(now_ms, who)
        # `bot resume` is not a run: run_id None attaches the row to the scope's newest run.
        await queries.insert_risk_event(engine, None, account, symbol, ev, mode=mode, venue=venue)
        return halt, ev
    finally:
        await engine.dispose()


class _FixedClock:
    def __init__(self, now_ms: int) -> None:
        self._now = now_ms

    def now_ms(self) -> int:
        return self._now

    def mono_ms(self) -> int:
        return self._now

    def monotonic(self) -> float:
        return self._now / 1000
