"""The engine: wires feed -> book -> signals -> strategy -> risk -> orders -> broker -> store.

Why one ``TradingCore`` with an ``on_event`` method: live, paper, testnet and replay must
take the very same decisions from the same events. Replay calls ``on_event`` in a plain loop
under a ``SimulatedClock`` (deterministic: same recording + config -> identical orders and
fills); live runs it from the feed task under the wall clock, next to the broker's update
stream, the reconciler, the store writer and the watchdog, all in one ``TaskGroup`` so a
failing task stops everything cleanly (cancel orders, flush the store) instead of leaving a
half-alive process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from bot import __version__
from bot.analytics.markouts import MarkoutTracker
from bot.clock import Clock, LiveClock, SimulatedClock
from bot.config import Settings, load_config
from bot.execution.broker import Broker, ExchangeHalted
from bot.execution.client_ids import ClientIdFactory
from bot.execution.orders import OrderManager
from bot.execution.paper_broker import PaperBroker
from bot.logging import bind_run, get_logger
from bot.market.book import OrderBook
from bot.model import (
    Direction,
    Fill,
    ImbalanceSignal,
    Liquidity,
    MarketEvent,
    Order,
    OrderRequest,
    OrderStatus,
    RiskAction,
    RiskEvent,
    Trade,
)
from bot.risk.inventory import Inventory, utc_day
from bot.risk.killswitch import KillSwitch
from bot.risk.limits import MarketState, RiskLimits
from bot.risk.market_rules import MarketRules
from bot.signals.book_imbalance import microprice
from bot.signals.engine import SignalEngine
from bot.store import queries
from bot.store.db import make_engine, upgrade
from bot.store.writer import StoreWriter
from bot.strategy import Cancel, ImbalanceStrategy, Place

log = get_logger("engine")

ZERO = Decimal(0)
DECIDE_EVERY_MS = 250  # strategy re-evaluation cadence when nothing else changed
GUARD_EVERY_MS = 1000  # kill-switch evaluation cadence (also after every fill)
FEED_DOWN_HALT_MS = 30_000  # a feed down this long is a kill-switch halt; shorter: no new orders only
# A store unavailable this long is a kill-switch halt; shorter: a pause (no new orders, records
# held in memory by the writer, trading resumes by itself once a batch commits again).
STORE_DOWN_HALT_MS = 120_000
EDGE_HORIZON_MS = 10_000  # the move after an entry signal that calibrates the cost gate


def _d(x: float) -> Decimal:
    return Decimal(repr(x))


@dataclass
class Decision:
    ts: int
    kind: str
    text: str


def _num(d: Decimal) -> str:
    """A Decimal as plain digits, no exponent or trailing zeros (0E-8 -> 0, 0.00800000 -> 0.008)."""
    s = format(d.normalize(), "f")
    return "0" if s == "-0" else s


@dataclass
class RunSummary:
    """What one run did: every count and sum is the run's own (its orders, fills, PnL and fees),
    never the account's over earlier runs; ``position`` is where the ledger stands at the end,
    ``start_position`` where it stood when the run started (earlier runs' fills)."""

    run_id: int
    events: int = 0
    seconds: float = 0.0
    orders: int = 0
    fills: int = 0
    signals: int = 0
    risk_events: int = 0
    position: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    halted: bool = False
    halt_reason: str | None = None
    skipped_events: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    start_position: Decimal = ZERO
    halt_kind: str | None = None

    def lines(self) -> list[str]:
        rate = self.events / self.seconds if self.seconds > 0 else 0.0
        start = f" ({_num(self.start_position)} at the run's start)" if self.start_position else ""
        out = [
            f"run {self.run_id}: {self.events} events in {self.seconds:.2f} s ({rate:,.0f} events/s)",
            f"orders {self.orders}, fills {self.fills}, signals {self.signals}, risk events {self.risk_events}",
            f"position {_num(self.position)}{start}, realised PnL {_num(self.realized_pnl)}, fees {_num(self.fees)}",
        ]
        if self.extra.get("skipped_for_cost"):
            out.append(f"entries skipped for cost: {self.extra['skipped_for_cost']}")
        if self.halted:
            out.append(f"HALTED: {self.halt_reason}")
        return out


class EngineTaskFailed(RuntimeError):
    """A task of the live engine died (a crash, not a risk halt): the run stops, exit code 1."""

    def __init__(self, task: str, error: BaseException) -> None:
        self.task = task
        self.error = error
        super().__init__(f"task {task!r} failed: {type(error).__name__}: {error}"[:500])


class StartupStopped(Exception):
    """A stop was requested before the engine was trading (while the exchange was first read):
    ``LiveRunner.run`` ends the run cleanly, exit code 0."""


class _ShutdownSink:
    """The order manager's sink during shutdown: the writer, or a log line per record once the
    writer is dead (records of the final cancels still reach the journal, never vanish)."""

    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer
        self.lost = 0

    def _lost(self, record: object, exc: BaseException) -> None:
        self.lost += 1
        log.error("record_not_stored", record=repr(record)[:500], error=f"{type(exc).__name__}: {exc}"[:200])

    def put(self, record: object) -> None:
        try:
            self.writer.put(record)
        except Exception as exc:
            self._lost(record, exc)

    async def durable(self, record: object) -> None:
        try:
            await asyncio.wait_for(self.writer.durable(record), 2.0)
        except Exception as exc:
            self._lost(record, exc)


class _KillActions:
    """What the kill switch may do: cancel everything, submit the flatten order (no limits)."""

    def __init__(self, core: TradingCore) -> None:
        self.core = core

    async def cancel_all(self) -> None:
        await self.core.om.cancel_all()

    async def submit(self, req: OrderRequest) -> None:
        await self.core.om.submit(req)


class TradingCore:
    """Everything below the feed for one (account, symbol); driven by ``on_event``."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock,
        broker: Broker,
        writer: StoreWriter,
        run_id: int,
        rules: MarketRules,
        tick: float | None = None,
        orders: Iterable[Order] = (),
        fills: Iterable[Fill] = (),
        warmup_s: float | None = None,
        position_floor: Decimal | None = None,
        own_client_ids: Iterable[str] = (),
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.broker = broker
        self.paper = broker if isinstance(broker, PaperBroker) else None
        self.writer = writer
        self.run_id = run_id
        self.rules = rules
        self.symbol = settings.symbol
        fills = list(fills)
        self.book = OrderBook(self.symbol, tick=tick)
        self.signals = SignalEngine(
            settings, sink=self._on_signal_row, tick=tick,
            warmup_s=warmup_s if warmup_s is not None else settings.signals.warmup,
        )
        self.strategy = ImbalanceStrategy(settings, rules)
        self.limits = RiskLimits(settings.risk, rules, clock)
        self.killswitch = KillSwitch(settings.risk, clock)
        self.inventory = Inventory.from_fills(fills, self.symbol)
        self.position_floor = position_floor
        # the ledger when this run started (earlier runs' fills): the summary counts the run's own PnL
        self._start_totals = (self.inventory.position, self.inventory.realized, self.inventory.fees)
        self.om = OrderManager(
            broker,
            writer,
            clock,
            ClientIdFactory(run_id, settings.client_id_prefix),
            self.symbol,
            on_fill=self._on_fill,
            on_order=self._on_order,
            orders=orders,
            fills=fills,
            own_client_ids=own_client_ids,
        )
        self.actions = _KillActions(self)
        self.markouts = MarkoutTracker()
        # (due ts, direction, mid at signal, strength): the move after each entry feeds the cost gate
        # [start ts (signal + paper latency), due ts, direction, mid at start (None until then), strength]:
        # the move from when our order could arrive to the horizon, never the part before it
        self._edge_due: deque[list[Any]] = deque()
        self._latency_ms = int(settings.paper.latency_ms)
        # (due ts, side sign, mid at fill): the mid's move after each passive fill (adverse selection)
        self._passive_due: deque[tuple[int, int, float]] = deque()
        self.state = "starting"
        self.feed_up = True
        # Durations run on the monotonic clock (clock.mono_ms), wall time only stamps rows (clock.py).
        self.feed_down_since: int | None = None  # monotonic ms
        self.store_healthy = True
        self.store_down_since: int | None = None  # monotonic ms
        # monotonic ms at which each open order was placed: its age for order_ttl and /status
        self._placed_mono: dict[str, int] = {}
        self._event_ts = 0  # the largest event ts seen (markouts are timed in event time)
        self._ban_cleanup: asyncio.Task[None] | None = None
        self.events = 0
        self.counts = {"orders": 0, "fills": 0, "signals": 0, "risk_events": 0, "skipped_for_cost": 0}
        self.decisions: deque[Decision] = deque(maxlen=50)
        self._dirty = False
        self._next_decide = 0  # monotonic ms
        self._next_guard = 0  # monotonic ms
        self._last_signal: ImbalanceSignal | None = None
        self.loop_lag_ms = 0.0

    # ------------------------------------------------------------------ callbacks

    def _on_signal_row(self, sig: ImbalanceSignal) -> None:
        """Detector sink: every entry/exit and the sampled stream go to the signals table."""
        self.writer.put(sig)

    async def _on_fill(self, fill: Fill) -> None:
        self.inventory.apply_fill(fill)
        order = self.om.get(fill.client_id)
        self.markouts.add_fill(fill, order.signal_strength if order is not None else None)
        mid_now = self.book.mid()
        if fill.liquidity is Liquidity.MAKER and mid_now is not None:
            self._passive_due.append((fill.ts + EDGE_HORIZON_MS, fill.side.sign, mid_now))
        self.counts["fills"] += 1
        self._dirty = True
        self._decision(fill.ts, "fill", f"{fill.side.value} {fill.amount} @ {fill.price} ({fill.liquidity.value})")
        await self._guard(force=True)

    async def _on_order(self, order: Order) -> None:
        if order.status is OrderStatus.REJECTED:
            ev = self.limits.on_rejection()
            self._decision(self.clock.now_ms(), "order", f"rejected {order.client_id}: {order.reason}")
            if ev is not None:
                await self._halt(ev)
        elif order.status in (OrderStatus.ACKED, OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED):
            self.limits.on_accepted()
        if order.status.is_terminal:
            self._placed_mono.pop(order.client_id, None)
            self._dirty = True

    def _decision(self, ts: int, kind: str, text: str) -> None:
        self.decisions.append(Decision(ts, kind, text))

    def on_store_health(self, ok: bool, reason: str) -> None:
        """The writer's health: unavailable pauses new orders, a committed batch unpauses them.

        Nothing is lost while paused (the writer holds every record in memory and retries);
        orders already working stay working and their fills are booked when the store is back.
        A pause that outlasts STORE_DOWN_HALT_MS (monotonic) becomes a kill-switch halt in ``_guard``.
        """
        now = self.clock.now_ms()  # the rows' stamp
        mono = self.clock.mono_ms()  # the outage's duration
        self.store_healthy = ok
        if not ok and self.store_down_since is None:
            self.store_down_since = mono
            if not self.killswitch.halted:
                ev = RiskEvent(ts=now, action=RiskAction.PAUSE, kind="store_unavailable",
                               reason=f"{reason}: no new orders, records held in memory until the store is back",
                               details={"halt_after_s": str(STORE_DOWN_HALT_MS // 1000)})
                self._risk_event(ev)
                log.warning("trading_paused", kind=ev.kind, reason=ev.reason)
        elif ok and self.store_down_since is not None:
            down_s = (mono - self.store_down_since) / 1000
            self.store_down_since = None
            if not self.killswitch.halted:
                ev = RiskEvent(ts=now, action=RiskAction.UNPAUSE, kind="store_unavailable",
                               reason=f"store back after {down_s:.1f} s: new orders allowed again",
                               details={"down_s": f"{down_s:.1f}"})
                self._risk_event(ev)
                log.info("trading_resumed", kind=ev.kind, reason=ev.reason)
            self._dirty = True

    def on_feed_health(self, up: bool) -> None:
        """The market feed's health: down refuses new orders at once (``MarketState.feed_up``);
        down for FEED_DOWN_HALT_MS of monotonic time trips the kill switch in ``_guard``."""
        self.feed_up = up
        if up:
            self.feed_down_since = None
        elif self.feed_down_since is None:
            self.feed_down_since = self.clock.mono_ms()

    async def on_exchange_ban(self, reason: str) -> None:
        """A 418: a persisted halt at once; open orders are cancelled when the ban runs out.

        Nothing can be sent while banned, so the kill switch's cancel/flatten cannot run now.
        No flatten afterwards either: the first requests after a ban are the clean-up only
        (cancel every open order, the poller fetches the fills made meanwhile); the position
        stays as it is until a person looks (``bot resume``).
        """
        if self.killswitch.halt_kind == "exchange_ban" and self._ban_cleanup is not None:
            return
        now = self.clock.now_ms()
        wait = getattr(self.broker, "wait_unbanned", None)
        ev = RiskEvent(ts=now, action=RiskAction.HALT, kind="exchange_ban",
                       reason=f"{reason}: nothing sent until the ban ends, then open orders are cancelled "
                              "(no flatten); trading stays halted until `bot resume`",
                       details={"position": str(self.position)})
        if not self.killswitch.halted:
            self.killswitch.halt(ev)
        else:  # already halted for another reason: the ban is recorded too
            self.killswitch.halt_kind = "exchange_ban"
            log.error("risk_halt", kind=ev.kind, reason=ev.reason, **ev.details)
        self._risk_event(ev)
        self.state = "halted"
        self.strategy.target = ZERO
        if wait is not None:
            self._ban_cleanup = asyncio.create_task(self._after_ban(wait), name="after-ban")

    async def _after_ban(self, wait_unbanned: Callable[[], Awaitable[None]]) -> None:
        while True:
            await wait_unbanned()
            try:
                await self.om.cancel_all()
            except ExchangeHalted:
                continue  # banned again
            except Exception as exc:
                log.error("after_ban_cancel_failed", error=f"{type(exc).__name__}: {exc}"[:300])
                await asyncio.sleep(5)
                continue
            left = [o.client_id for o in self.om.open_orders]
            (log.warning if left else log.info)("after_ban_cleanup", open_orders_left=left)
            return

    def _risk_event(self, ev: RiskEvent) -> None:
        self.writer.put(ev)
        self.counts["risk_events"] += 1
        self._decision(ev.ts, "risk", f"{ev.action.value} {ev.kind}: {ev.reason}")

    # ------------------------------------------------------------------ market state

    def market_state(self) -> MarketState:
        bb = self.book.best_bid()
        ba = self.book.best_ask()
        return MarketState(
            mid=self.book.mid(),
            best_bid=bb[0] if bb else None,
            best_ask=ba[0] if ba else None,
            book_healthy=self.book.healthy and self.book.has_snapshot,
            book_reason=self.book.reason if self.book.has_snapshot else "no snapshot yet",
            feed_up=self.feed_up,
        )

    @property
    def position(self) -> Decimal:
        return self.inventory.position

    @property
    def exposure(self) -> Decimal:
        """What risk and the strategy act on: the booked position plus fills the exchange has
        reported on orders whose trades are not booked yet (``OrderManager.unbooked``)."""
        return self.inventory.position + self.om.unbooked()

    # ------------------------------------------------------------------ the hot path

    async def on_event(self, ev: MarketEvent) -> None:
        # Two times: ``ts``, the event's (exchange) time, for the market's own measures (signals,
        # volatility, markouts, paper fills); ``now``, the monotonic clock, for every timer of the
        # bot (max_hold, order_ttl, decision and guard cadences). In replay both are event time.
        ts = ev.ts
        if isinstance(self.clock, SimulatedClock):
            ts = self.clock.advance(ts)
        if ts > self._event_ts:
            self._event_ts = ts
        self.events += 1
        paper = self.paper
        if type(ev) is Trade:
            self.signals.on_trade(ev)
            if paper is not None:
                paper.on_trade(ev)
        else:
            self.book.apply(ev)  # type: ignore[arg-type]
            self.signals.on_book(self.book, ev, ts)
            if paper is not None:
                paper.on_book(self.book, ts)
        if paper is not None and paper._queue:
            await self.om.drain()
        sig = self.signals.detector.update(ts)
        mid = self.book.mid()
        if mid is not None and (self.markouts.pending or self._edge_due or self._passive_due):
            self._follow_up(ts, mid)
        now = self.clock.mono_ms()
        self.strategy.on_tick(ts, mid, now)
        if sig is not None and sig.kind in ("entry", "exit"):
            self._on_detector(sig, mid, now)
        if now >= self._next_guard:
            await self._guard()
        if self._dirty or now >= self._next_decide:
            await self.decide(now)

    def _micro(self) -> float | None:
        bb, ba = self.book.best_bid(), self.book.best_ask()
        if bb is None or ba is None:
            return None
        return microprice(bb[0], bb[1], ba[0], ba[1])

    def _follow_up(self, ts: int, mid: float) -> None:
        """Markouts of past fills and the realised move after past entries (cost-gate calibration)."""
        if self.markouts.pending:
            for m in self.markouts.on_mid(ts, mid, self._micro()):
                self.writer.put(m)
        gate = self.strategy.gate
        for due in self._edge_due:  # in signal order: start mids are taken oldest first
            if due[3] is not None:
                continue
            if due[0] > ts:
                break
            due[3] = mid
        while self._edge_due and self._edge_due[0][1] <= ts:
            _, _, direction, mid0, strength = self._edge_due.popleft()
            if gate is not None and mid0 is not None and mid0 > 0:
                gate.observe(abs(strength), direction * (mid - mid0) / mid0 * 1e4)
        while self._passive_due and self._passive_due[0][0] <= ts:
            _, sign, mid0 = self._passive_due.popleft()
            if gate is not None and mid0 > 0:
                gate.observe_passive_fill(sign * (mid - mid0) / mid0 * 1e4)

    def flush_markouts(self) -> int:
        """End of the stream (replay end, live shutdown): write the markouts still waiting.

        The ones whose horizon has passed get the current mid (complete); the rest the current
        mid with ``complete=False`` (the table's ``mid`` is NOT NULL). Returns how many rows.
        Horizons are event time, like the fills' ``ts`` they count from: "passed" means by the
        latest event seen, never by the local wall clock (which can step).
        """
        mid = self.book.mid()
        rows = []
        if mid is not None and self.markouts.pending:
            # the tracker may not have seen a mid since the last fill (it only looks while waiting)
            rows = self.markouts.on_mid(self._event_ts, mid, self._micro())
        rows += self.markouts.flush_pending()
        for m in rows:
            self.writer.put(m)
        return len(rows)

    def _on_detector(self, sig: ImbalanceSignal, mid: float | None, now: int | None = None) -> None:
        """An entry/exit signal; ``now`` is the monotonic time it was seen (default: the clock's)."""
        self.counts["signals"] += 1
        self._last_signal = sig
        self._decision(sig.ts, "signal", f"{sig.kind} {sig.direction.name.lower()} z={sig.strength:+.2f}")
        log.info("signal", kind=sig.kind, direction=sig.direction.name.lower(), strength=round(sig.strength, 3),
                 components={k: round(v, 3) for k, v in sig.components.items()})
        if mid is None:
            return
        spread = self.book.spread() or 0.0
        if sig.kind == "entry":
            self._edge_due.append([sig.ts + self._latency_ms, sig.ts + EDGE_HORIZON_MS, int(sig.direction),
                                   mid if self._latency_ms == 0 else None, sig.strength])
        now = self.clock.mono_ms() if now is None else now
        if not self.strategy.on_signal(sig, self.exposure, mid, spread / 2 / mid * 1e4, now_ms=now):
            self.counts["skipped_for_cost"] += 1
            self.writer.put(ImbalanceSignal(sig.ts, sig.direction, sig.strength, dict(sig.components),
                                            kind="skipped_for_cost"))
            self._decision(sig.ts, "signal", f"skipped for cost: {self.strategy.last_skip}")
            log.info("skipped_for_cost", strength=round(sig.strength, 3), reason=self.strategy.last_skip)
            return
        if self.position_floor is not None and self.strategy.target < self.position_floor:
            self.strategy.target = self.rules.amount_to_precision(self.position_floor) if self.position_floor else ZERO
        self._dirty = True

    async def _guard(self, force: bool = False) -> None:
        now = self.clock.mono_ms()  # cadence and outage durations; the kill switch stamps wall time itself
        self._next_guard = now + GUARD_EVERY_MS
        mid = self.book.mid()
        banned = getattr(self.broker, "banned", None)
        if banned and self.killswitch.halt_kind != "exchange_ban":
            await self.on_exchange_ban(banned)
        if mid is None or self.killswitch.halted:
            return
        # A reconnect is routine: while the feed is down the pre-trade check refuses new orders
        # (MarketState.feed_up); only a feed down for FEED_DOWN_HALT_MS trips the kill switch.
        # Both outages are timed on the monotonic clock: a wall-clock step neither trips nor delays them.
        feed_dead = self.feed_down_since is not None and now - self.feed_down_since >= FEED_DOWN_HALT_MS
        store_dead = self.store_down_since is not None and now - self.store_down_since >= STORE_DOWN_HALT_MS
        ev = self.killswitch.evaluate(
            inventory=self.inventory,
            mark=_d(mid),
            store_healthy=not store_dead,
            feed_up=not feed_dead,
            rejections=self.limits.rejections,
        )
        if ev is not None:
            await self._halt(ev)

    async def _halt(self, ev: RiskEvent) -> None:
        # No log line here: ``KillSwitch.halt`` writes the one ``risk_halt`` line, with the numbers.
        self._risk_event(ev)
        self.state = "halted"
        await self.killswitch.trigger(self.actions, ev, self.market_state(), self.exposure, self.rules)
        self.strategy.target = ZERO

    async def decide(self, now: int) -> None:
        """Run the strategy at monotonic time ``now`` (``clock.mono_ms()``; event time in replay)."""
        self._dirty = False
        self._next_decide = now + DECIDE_EVERY_MS
        if self.state != "trading" or self.killswitch.halted or not self.store_healthy:
            return
        bb = self.book.best_bid()
        ba = self.book.best_ask()
        open_orders = self.om.open_orders
        placed = self._placed_mono
        if len(placed) != len(open_orders) or any(o.client_id not in placed for o in open_orders):
            self._note_placed(open_orders, now)
        intents = self.strategy.decide(
            now, self.exposure, open_orders, bb[0] if bb else None, ba[0] if ba else None, placed
        )
        try:
            for intent in intents:
                if isinstance(intent, Cancel):
                    if intent.client_id not in self.om.busy:
                        await self.om.cancel(intent.client_id)
                    continue
                assert isinstance(intent, Place)
                await self._place(intent.request)
        except ExchangeHalted as exc:
            await self.on_exchange_ban(str(exc))

    def _note_placed(self, open_orders: Iterable[Order], now: int) -> None:
        """Keep ``_placed_mono`` to the open orders: an order this process did not place (loaded
        from the store, the kill switch's flatten) is given the age its wall-clock stamp says now,
        once, and is then aged on the monotonic clock like the others."""
        wall = self.clock.now_ms()
        live = {o.client_id for o in open_orders}
        for cid in [c for c in self._placed_mono if c not in live]:
            del self._placed_mono[cid]
        for o in open_orders:
            if o.client_id not in self._placed_mono:
                self._placed_mono[o.client_id] = now - max(0, wall - o.created_ts)

    async def _place(self, req: OrderRequest) -> None:
        market = self.market_state()
        decision = self.limits.check(req, position=self.exposure, open_orders=self.om.open_orders, market=market)
        if decision.event is not None:
            self._risk_event(decision.event)
        if decision.action not in (RiskAction.ACCEPT, RiskAction.CLIP) or decision.order is None:
            return
        order_req = decision.order
        if order_req.mid_price is None and market.mid is not None:
            order_req = OrderRequest(
                symbol=order_req.symbol, side=order_req.side, amount=order_req.amount, price=order_req.price,
                type=order_req.type, post_only=order_req.post_only, reason=order_req.reason,
                signal_strength=order_req.signal_strength, mid_price=_d(market.mid),
            )
        sent = self.clock.mono_ms()
        self.limits.on_order_sent(sent)
        self.counts["orders"] += 1
        order = await self.om.submit(order_req)
        if order.status.is_open:
            self._placed_mono.setdefault(order.client_id, sent)
        self._decision(order.created_ts, "order",
                       f"{order.side.value} {order.amount} @ {order.price} -> {order.status.value} ({order.reason})")

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """The snapshot served at /status (see docs/operations.md)."""
        s = self.settings
        mid = self.book.mid()
        snap = self.signals.snapshot()
        mark = _d(mid) if mid is not None else None
        inv = self.inventory
        zs = {k[2:]: v for k, v in snap.items() if k.startswith("z_")}
        limits: dict[str, float] = {
            "position_pct": float(abs(inv.position) / s.risk.max_position * 100),
        }
        if mark is not None:
            limits["daily_loss_pct"] = max(0.0, float(-inv.daily_pnl(mark) / s.risk.max_daily_loss * 100))
            limits["drawdown_pct"] = max(0.0, float(inv.drawdown(mark) / s.risk.max_drawdown * 100))
        now = self.clock.now_ms()  # the snapshot's stamp
        mono = self.clock.mono_ms()  # order ages
        return {
            "ts": now,
            "run_id": self.run_id,
            "mode": s.mode,
            "symbol": self.symbol,
            "account": s.exchange.account,
            "state": "halted" if self.killswitch.halted else self.state,
            "book": {
                "healthy": self.book.healthy and self.book.has_snapshot,
                "reason": self.book.reason,
                "mid": mid,
                "spread": self.book.spread(),
                "microprice": snap.get("microprice"),
                "bids": [list(x) for x in self.book.top_bids(10)],
                "asks": [list(x) for x in self.book.top_asks(10)],
                "updates": self.book.updates,
            },
            "signals": {k: v for k, v in snap.items() if not k.startswith("z_") and k != "state"},
            "zscores": zs,
            "detector": {
                "state": {1: "long", -1: "short"}.get(int(snap.get("state", 0)), "flat"),
                "combined_z": zs.get("combined"),
                "entry_z": s.strategy.entry_z,
                "exit_z": s.strategy.exit_z,
                "persistence": s.strategy.persistence,
            },
            "position": {
                "amount": str(inv.position),
                "avg_price": str(inv.avg_price),
                "realized_pnl": str(inv.realized),
                "unrealized_pnl": str(inv.unrealized(mark)) if mark is not None else None,
                "fees": str(inv.fees),
                "equity": str(inv.equity(mark)) if mark is not None else None,
            },
            "open_orders": [
                {"client_id": o.client_id, "side": o.side.value, "price": str(o.price), "amount": str(o.amount),
                 "filled": str(o.filled), "status": o.status.value,
                 "age_ms": (mono - self._placed_mono[o.client_id] if o.client_id in self._placed_mono
                            else max(0, now - o.created_ts))}
                for o in self.om.open_orders
            ],
            "risk": {
                "halted": self.killswitch.halted,
                "halt_kind": self.killswitch.halt_kind,
                "halt_reason": self.killswitch.halt_reason,
                "limits": limits,
            },
            "health": {
                "feed": "up" if self.feed_up else "down",
                "store": "ok" if self.store_healthy else "unavailable",
                "loop_lag_ms": self.loop_lag_ms,
            },
            "decisions": [{"ts": d.ts, "kind": d.kind, "text": d.text} for d in list(self.decisions)[-20:]],
            # since the start of the run; skipped_for_cost: entry signals the cost gate refused
            "counts": {"events": self.events, **self.counts,
                       "foreign_orders": self.om.foreign["orders"], "foreign_fills": self.om.foreign["fills"]},
        }

    def summary(self, seconds: float) -> RunSummary:
        """This run's own numbers (see ``RunSummary``): PnL and fees since the run started."""
        start_position, start_realized, start_fees = self._start_totals
        return RunSummary(
            run_id=self.run_id,
            events=self.events,
            seconds=seconds,
            orders=self.counts["orders"],
            fills=self.counts["fills"],
            signals=self.counts["signals"],
            risk_events=self.counts["risk_events"],
            position=self.inventory.position,
            start_position=start_position,
            realized_pnl=self.inventory.realized - start_realized,
            fees=self.inventory.fees - start_fees,
            halted=self.killswitch.halted,
            halt_reason=self.killswitch.halt_reason,
            halt_kind=self.killswitch.halt_kind,
            extra={"skipped_for_cost": self.counts["skipped_for_cost"], "markouts": self.markouts.emitted,
                   "mark": self.book.mid()},  # the last mid: what an open position is worth at the end
        )


# --------------------------------------------------------------------------- setup helpers


async def open_store(settings: Settings, mode: str, started_ms: int) -> tuple[Any, int]:
    """Migrate the database, write the ``runs`` row; returns (engine, run id)."""
    url = settings.store.url
    await upgrade(url)
    engine = make_engine(url)
    run_id = await queries.create_run(
        engine,
        mode=mode,
        config_hash=settings.config_hash(),
        version=__version__,
        account=settings.exchange.account,
        symbol=settings.symbol,
        exchange=settings.exchange.id,
        venue=settings.venue,
        started_ms=started_ms,
    )
    return engine, run_id


def live_paper_broker(settings: Settings, clock: Clock, run_id: int, fills: list[Fill]) -> PaperBroker:
    """The paper broker of a live paper run: ids unique to the run, balances after the stored fills."""
    broker = PaperBroker(clock, settings.paper, settings.symbol, id_prefix=f"paper-r{run_id}")
    broker.restore(fills)
    return broker


def _writer(settings: Settings, engine: Any, run_id: int, core_ref: list[TradingCore],
            mode: str | None = None, **options: Any) -> StoreWriter:
    """The run's writer; its rows carry ``mode`` (default ``settings.mode``; a replay: "replay")
    and ``settings.venue``, as the run's ``open_store`` row does. ``options``: further
    ``StoreWriter`` keywords (the replay's ``backlog_health``/``run_inventory``)."""

    def on_health(ok: bool, reason: str) -> None:
        if core_ref:  # the writer logs store_health itself; the core logs the pause/resume
            core_ref[0].on_store_health(ok, reason)

    return StoreWriter(
        engine,
        run_id=run_id,
        account=settings.exchange.account,
        symbol=settings.symbol,
        mode=mode or settings.mode,
        venue=settings.venue,
        exchange=settings.exchange.id,
        queue_size=settings.store.queue_size,
        batch_ms=settings.store.batch_ms,
        max_buffered=settings.store.max_buffered,
        on_health=on_health,
        **options,
    )


async def _restore_halt(core: TradingCore, engine: Any) -> None:
    s = core.settings
    last = await queries.latest_halt_or_resume(engine, s.exchange.account, s.symbol, mode=s.mode, venue=s.venue)
    latest = last if last is not None and last.action is RiskAction.HALT else None
    now = core.clock.now_ms()
    if (last is not None and last.action is RiskAction.RESUME and last.kind == "max_daily_loss"
            and utc_day(last.ts) == utc_day(now)):
        # resumed by an operator today: today's loss budget starts again from here
        core.inventory.rebase_day()
        log.warning("daily_loss_budget_restarted", resumed_ts=last.ts, reason=last.reason,
                    max_daily_loss=str(s.risk.max_daily_loss))
    ev = core.killswitch.restore(latest, now)
    if ev is not None and ev.action is RiskAction.RESUME:
        core._risk_event(ev)
    if core.killswitch.halted:
        core.state = "halted"
        log.warning("still_halted", kind=core.killswitch.halt_kind, reason=core.killswitch.halt_reason,
                    hint="run `bot resume` after looking at why")


# --------------------------------------------------------------------------- replay


# A replay waits for the store writer (backpressure) once this share of ``[store] queue_size``
# records is waiting to be written.
REPLAY_HIGH_WATER = 0.5


def _failure_reason(exc: BaseException) -> str:
    """One line saying why a replay failed (a RecordingError already reads ``path:line: what``)."""
    from bot.market.recorder import RecordingError

    if isinstance(exc, RecordingError):
        text = str(exc)
    elif isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)):
        text = f"interrupted ({type(exc).__name__})"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return (text.splitlines() or [type(exc).__name__])[0][:500]


async def _close_out_failed_replay(core: TradingCore) -> None:
    """A replay that stops on a failure: cancel what is still working and write what is pending,
    so the tables are final. Every step runs even when an earlier one fails (the store may be
    the failure: then the records go to the log, see ``_ShutdownSink``)."""
    core.state = "stopping"
    core.om.sink = _ShutdownSink(core.writer)
    await _step("cancel_open_orders", core.om.cancel_all())
    await _step("final_drain", core.om.drain())
    try:
        core.flush_markouts()
    except Exception as exc:
        log.error("markouts_flush_failed", error=f"{type(exc).__name__}: {exc}"[:300])
    left = [o.client_id for o in core.om.open_orders]
    if left:
        log.error("open_orders_at_replay_failure", client_ids=left)


async def run_replay(
    recording: Path,
    settings: Settings,
    db_url: str | None = None,
    *,
    progress: bool = False,
    on_status: Callable[[dict[str, Any]], Awaitable[None] | None] | None = None,
    status_every_ms: int = 100,
    speed: float = 0.0,
    warmup_s: float | None = None,
) -> RunSummary:
    """Feed a recording through the engine with a simulated clock and the paper broker.

    * Market time: the ``runs`` row starts at the first event's ``ts`` and ends at the latest
      ``ts`` seen (the simulated clock), never at the wall clock or 1970.
    * The store never pauses or halts a replay: once ``REPLAY_HIGH_WATER`` x ``[store]
      queue_size`` records wait (or the writer reports an error) the replay awaits the writer
      before the next event (backpressure: event time stands still meanwhile, so no outage timer
      runs). Only the strategy's own risk rules halt a replay: the run ends ``halted`` and
      ``RunSummary.halted`` is set (``bot replay`` exits 1).
    * A failure (a bad line in the middle of the recording, a dead store) cancels the open
      orders, marks the run ``failed`` with the reason (``runs.status``/``end_reason``) and
      re-raises. A bad line before the first event fails before any run is created.
    * Every replay is its own simulation: paper ids and the stored running inventory
      (``fills.position_after``) are the run's own, so replays share a database safely.
    """
    from itertools import chain

    from bot.market.recorder import RecordingReader

    reader = RecordingReader(recording, on_error="stop")
    header = reader.header
    update: dict[str, Any] = {"mode": "paper"}
    if header.symbol and header.symbol != settings.symbol:
        update["symbol"] = header.symbol
    settings = settings.model_copy(update=update)
    if db_url:
        settings = settings.model_copy(update={"store": settings.store.model_copy(update={"url": db_url})})
    rules = MarketRules.binance_spot(settings.symbol)
    events = iter(reader)
    first = next(events, None)  # the run starts at the first event's time
    start_ms = first.ts if first is not None else 0
    clock = SimulatedClock(start_ms)
    engine, run_id = await open_store(settings, "replay", start_ms)
    bind_run(run_id, "replay", settings.symbol)
    core_ref: list[TradingCore] = []
    writer = _writer(settings, engine, run_id, core_ref, mode="replay", backlog_health=False, run_inventory=True)
    broker = PaperBroker(clock, settings.paper, settings.symbol, id_prefix=f"replay-r{run_id}")
    core = TradingCore(
        settings, clock=clock, broker=broker, writer=writer, run_id=run_id, rules=rules, tick=header.tick,
        warmup_s=warmup_s, position_floor=-settings.paper.balances.get(settings.base, ZERO),
    )
    core_ref.append(core)
    await writer.start()
    core.state = "trading"
    high_water = max(1, int(settings.store.queue_size * REPLAY_HIGH_WATER))
    started = time.perf_counter()
    next_status = 0
    bar: Any = None
    task: Any = None
    failure: BaseException | None = None
    if progress:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("replay"), BarColumn(), TextColumn("{task.completed:,} events"),
                       TimeRemainingColumn(), transient=True)
        bar.start()
        task = bar.add_task("replay", total=None)
    try:
        first_ts: int | None = None
        wall0 = time.monotonic()
        for ev in chain((first,), events) if first is not None else ():
            await core.on_event(ev)
            if writer.backlog >= high_water or not writer.healthy:
                await writer.flush()  # backpressure: wait for the store, never pause or halt for it
            if bar is not None and core.events % 20000 == 0:
                bar.update(task, completed=core.events)
            if on_status is not None and ev.ts >= next_status:
                next_status = ev.ts + status_every_ms
                if speed > 0:
                    if first_ts is None:
                        first_ts = ev.ts
                    ahead = (ev.ts - first_ts) / 1000 / speed - (time.monotonic() - wall0)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                res = on_status(core.status())
                if asyncio.iscoroutine(res):
                    await res
        # End of the recording: cancel what is still working, so the tables are final.
        await core.om.cancel_all()
        await core.om.drain()
        core.flush_markouts()
    except BaseException as exc:  # a bad line, a dead store, an interrupt: the run failed
        failure = exc
        log.error("replay_failed", error=_failure_reason(exc), run_id=run_id, events=core.events)
        await _close_out_failed_replay(core)
    finally:
        if bar is not None:
            bar.stop()
    try:
        await writer.close()
    except Exception as exc:
        log.error("replay_store_close_failed", error=f"{type(exc).__name__}: {exc}"[:300])
        failure = failure or exc
    if failure is not None:
        status, reason = "failed", _failure_reason(failure)
    elif core.killswitch.halted:
        status, reason = "halted", f"{core.killswitch.halt_kind}: {core.killswitch.halt_reason}"[:500]
    else:
        status, reason = "ended", None
    try:
        await queries.end_run(engine, run_id, clock.now_ms(), status, reason)
    except Exception as exc:
        log.error("replay_end_run_failed", error=f"{type(exc).__name__}: {exc}"[:300], status=status)
        failure = failure or exc
    finally:
        await engine.dispose()
    if failure is not None:
        failure.add_note(f"run {run_id} marked failed; its open orders were cancelled")
        raise failure
    summary = core.summary(time.perf_counter() - started)
    summary.skipped_events = reader.skipped
    return summary


# --------------------------------------------------------------------------- live / paper / testnet


class LiveRunner:
    """``bot run``: the TaskGroup of feed, order updates, reconciler, writer, watchdog, status."""

    def __init__(self, settings: Settings, *, config_path: Path | None = None, warmup_s: float | None = None,
                 notifier: Any = None, duration_s: float | None = None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.warmup_s = warmup_s
        self.notifier = notifier
        self.duration_s = duration_s
        self.stop_event = asyncio.Event()
        self.core: TradingCore | None = None
        self.run_id: int | None = None
        self.stop_reason = ""
        self.reconciler: Any = None  # testnet/live: the final fill sweep at shutdown uses it
        self.history_from_ms: int | None = None  # start of an unfinished previous run (the first fill sweep)
        self.failure: EngineTaskFailed | None = None  # set when a task crashed: run() raises it
        self._reload_pending = False  # a SIGHUP before the core existed: reloaded once it does

    def request_stop(self, reason: str) -> None:
        if not self.stop_event.is_set():
            self.stop_reason = reason
            log.info("stop_requested", reason=reason, state=self.core.state if self.core else "starting")
            self.stop_event.set()

    def reload_limits(self) -> None:
        """SIGHUP: re-read [risk] from the config file; keep the running limits on any error."""
        if self.config_path is None:
            return
        if self.core is None:
            self._reload_pending = True  # still starting: applied as soon as the core exists
            return
        try:
            fresh = load_config(self.config_path)
        except Exception as exc:
            log.error("reload_failed", error=str(exc).splitlines()[0][:300], kept="previous risk limits")
            return
        self.core.limits.update_settings(fresh.risk)
        self.core.killswitch.update_settings(fresh.risk)
        log.info("risk_limits_reloaded", **{k: str(v) for k, v in fresh.risk.model_dump().items()})

    async def run(self) -> RunSummary:
        from bot.emulator.client import make_ccxt_client
        from bot.market.feed import MarketFeed, market_tick

        s = self.settings
        clock = LiveClock()
        started = time.perf_counter()
        signals = self._catch_signals()  # first: a stop from here on ends the run cleanly
        engine, run_id = await open_store(s, s.mode, clock.now_ms())
        self.run_id = run_id
        bind_run(run_id, s.mode, s.symbol)
        keys = (
            (s.exchange.api_key.get_secret_value() if s.exchange.api_key else None),
            (s.exchange.api_secret.get_secret_value() if s.exchange.api_secret else None),
        )
        exchange = make_ccxt_client(s.exchange.url or None, keys[0], keys[1], pro=True,
                                    sandbox=s.exchange.sandbox, timeout_ms=int(s.exchange.timeout * 1000),
                                    exchange_id=s.exchange.id)
        core_ref: list[TradingCore] = []
        writer = _writer(s, engine, run_id, core_ref)
        fills = await queries.load_fills(engine, s.exchange.account, s.symbol, mode=s.mode, venue=s.venue)
        open_orders = await queries.load_orders(engine, s.exchange.account, s.symbol, open_only=True, mode=s.mode,
                                                venue=s.venue)
        # ownership by table (beside the client-id prefix), and how far back the first fill sweep reads
        own_ids = await queries.load_own_client_ids(engine, s.exchange.account, s.mode, s.venue, s.symbol)
        self.history_from_ms = await queries.unfinished_run_start(engine, s.exchange.account, s.mode, s.venue,
                                                                  s.symbol, run_id)
        try:
            await self._unless_stopped(exchange.load_markets())
            rules = MarketRules.from_exchange(exchange, s.symbol)
            tick = market_tick(exchange, s.symbol)
            broker: Broker
            if s.mode == "paper":
                broker = live_paper_broker(s, clock, run_id, fills)
                floor: Decimal | None = -s.paper.balances.get(s.base, ZERO)
            else:
                from bot.execution.ccxt_broker import CcxtBroker

                broker = CcxtBroker(exchange, s.symbol, clock, max_retries=s.execution.max_retries)
                floor = None
            core = TradingCore(s, clock=clock, broker=broker, writer=writer, run_id=run_id, rules=rules, tick=tick,
                               orders=open_orders, fills=fills, warmup_s=self.warmup_s, position_floor=floor,
                               own_client_ids=own_ids)
            core_ref.append(core)
            self.core = core
            if self._reload_pending:
                self.reload_limits()
            await writer.start()
            await self._unless_stopped(broker.start())
            await _restore_halt(core, engine)
            await self._main(core, exchange, clock, MarketFeed)
        except StartupStopped:
            pass  # stopped before trading began: the shutdown below closes the run, exit 0
        except Exception as exc:
            self.stop_reason = self.stop_reason or f"{type(exc).__name__}: {exc}"[:300]  # for `stopped`
            raise
        finally:
            await self._shutdown(exchange, writer, engine, run_id, clock)
            self._restore_signals(signals)
        if self.failure is not None:
            raise self.failure  # after the clean stop: `bot run` exits 1 (a risk halt never gets here)
        return (self.core.summary(time.perf_counter() - started) if self.core else RunSummary(run_id))

    async def _main(self, core: TradingCore, exchange: Any, clock: LiveClock, feed_cls: Any) -> None:
        s = self.settings
        reconciler = None
        if s.mode != "paper":
            from bot.execution.reconcile import Reconciler

            core.state = "reconciling"
            reconciler = Reconciler(core.om, core.broker, clock, cancel_unknown=s.execution.cancel_unknown,
                                    history_from_ms=self.history_from_ms)
            await self._unless_stopped(reconciler.startup())  # retries while the exchange cannot be read
            self.reconciler = reconciler  # the shutdown's fill sweep, once the exchange could be read
        if not core.killswitch.halted:
            core.state = "trading"

        def on_health(up: bool, reason: str) -> None:
            core.on_feed_health(up)
            (log.info if up else log.warning)("feed_health", up=up, reason=reason)

        feed = feed_cls(exchange, s.symbol, max(s.signals.levels, 20), clock, on_health)
        status_server = None
        # Tasks started outside the TaskGroup (the store writer, the broker's user streams and
        # poller): the supervisor task turns the death of any of them into a stop of the engine.
        watched: dict[str, asyncio.Task[Any]] = {}
        if core.writer.task is not None:
            watched["store-writer"] = core.writer.task
        for t in getattr(core.broker, "tasks", ()):
            watched[t.get_name()] = t
        named = self._named
        try:
            if s.metrics.port:
                from bot.status_server import StatusServer

                status_server = StatusServer(core.status, s.metrics.port)
                await named("status-server", status_server.start())
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(named("feed", feed.run()), name="feed"),
                    tg.create_task(named("consume", self._consume(core, feed)), name="consume"),
                    tg.create_task(named("watchdog", self._watchdog(core, feed)), name="watchdog"),
                    tg.create_task(self._supervise(watched), name="supervisor"),
                ]
                if core.paper is None:
                    tasks.append(tg.create_task(named("order-updates", core.om.run_updates()), name="order-updates"))
                if reconciler is not None:
                    tasks.append(tg.create_task(
                        named("reconcile", reconciler.run_periodic(s.execution.reconcile_interval)),
                        name="reconcile"))
                stopper = tg.create_task(self._until_stop(), name="stop")
                await stopper
                for t in tasks:
                    t.cancel()
        except* ExchangeHalted as eg:
            log.error("exchange_halted", error=str(eg.exceptions[0])[:300])
            self.stop_reason = "exchange halted (418)"
        except* EngineTaskFailed as eg:
            first = eg.exceptions[0]
            assert isinstance(first, EngineTaskFailed)
            self.failure = first
            self.stop_reason = f"task {first.task} failed"
            others = sorted({e.task for e in eg.exceptions[1:] if isinstance(e, EngineTaskFailed)} - {first.task})
            # the one line that says what died; the shutdown (cancel, flush) follows
            log.error("task_failed", task=first.task, error=f"{type(first.error).__name__}: {first.error}"[:300],
                      also_failed=others or None, action="stopping: cancel open orders, flush the store, exit 1")
        finally:
            with contextlib.suppress(Exception):
                await feed.stop()
            if status_server is not None:
                await status_server.stop()

    def _catch_signals(self) -> list[tuple[signal.Signals, Any]]:
        """SIGTERM/SIGINT -> a clean stop, SIGHUP -> reload the risk limits, from the first
        moment of the run (a stop while the store opens or the exchange is first read ends the
        run cleanly too); takes over what ``bot.service.catch_signals_early`` remembered before.
        Returns the handlers to restore when the run is over."""
        from bot.service import take_early_signals

        loop = asyncio.get_running_loop()
        handlers = ((signal.SIGTERM, lambda: self.request_stop("SIGTERM")),
                    (signal.SIGINT, lambda: self.request_stop("SIGINT")),
                    (signal.SIGHUP, self.reload_limits))
        installed: list[tuple[signal.Signals, Any]] = []
        for sig, handler in handlers:
            previous = signal.getsignal(sig)
            try:
                loop.add_signal_handler(sig, handler)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                continue
            installed.append((sig, previous))
        if installed:
            early = take_early_signals()
            if early.stop:
                self.request_stop(early.stop)
            if early.reload:
                self.reload_limits()
        return installed

    @staticmethod
    def _restore_signals(installed: list[tuple[signal.Signals, Any]]) -> None:
        loop = asyncio.get_running_loop()
        for sig, previous in installed:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
                if previous is not None:
                    signal.signal(sig, previous)

    async def _unless_stopped(self, step: Coroutine[Any, Any, Any]) -> Any:
        """Await one start-up step (load_markets, the broker's start, the start-up reconciliation,
        which retries for as long as the exchange cannot be read) unless a stop comes first:
        then the step is cancelled and ``StartupStopped`` raised."""
        if self.stop_event.is_set():
            step.close()
            raise StartupStopped(self.stop_reason)
        task = asyncio.ensure_future(step)
        stop = asyncio.ensure_future(self.stop_event.wait())
        try:
            done, _ = await asyncio.wait((task, stop), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()  # we are cancelled ourselves: the step goes with us
            raise
        finally:
            stop.cancel()
        if task in done:
            return task.result()
        task.cancel()
        await asyncio.wait((task,))  # let it unwind (its own finally clauses run)
        if not task.cancelled():
            task.exception()  # how a step we cancelled ended does not matter: retrieved, dropped
        raise StartupStopped(self.stop_reason)

    @staticmethod
    async def _named(name: str, coro: Awaitable[Any]) -> Any:
        """Run ``coro``; an error becomes ``EngineTaskFailed`` naming the task (a 418 stays itself)."""
        try:
            return await coro
        except (asyncio.CancelledError, ExchangeHalted, EngineTaskFailed):
            raise
        except Exception as exc:
            raise EngineTaskFailed(name, exc) from exc

    @staticmethod
    async def _supervise(watched: dict[str, asyncio.Task[Any]]) -> None:
        """Raise ``EngineTaskFailed`` as soon as a watched task ends: while the engine runs, the
        store writer and the broker's streams only end by dying."""
        names = {t: n for n, t in watched.items()}
        if not names:
            await asyncio.Event().wait()
        done, _ = await asyncio.wait(names, return_when=asyncio.FIRST_COMPLETED)
        t = next(iter(done))
        if t.cancelled():
            error: BaseException = RuntimeError("cancelled")
        else:
            error = t.exception() or RuntimeError("ended while the engine was running")
        raise EngineTaskFailed(names[t], error)

    async def _until_stop(self) -> None:
        if self.duration_s is None:
            await self.stop_event.wait()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop_event.wait(), self.duration_s)
        self.request_stop(self.stop_reason or "duration reached")

    async def _consume(self, core: TradingCore, feed: AsyncIterator[MarketEvent]) -> None:
        n = 0
        async for ev in feed:
            await core.on_event(ev)
            n += 1
            if n % 64 == 0:
                await asyncio.sleep(0)  # a burst of queued events must not starve timers and order updates

    async def _watchdog(self, core: TradingCore, feed: Any = None) -> None:
        """READY after the first healthy book; WATCHDOG only while loop and feed are healthy."""
        from bot.service import watchdog_interval_s

        interval = min(1.0, watchdog_interval_s())
        ready = False
        pet_every = watchdog_interval_s()
        last_pet = 0.0
        loop = asyncio.get_running_loop()
        stale_ms = int(self.settings.risk.stale_after * 1000)
        while True:
            t0 = loop.time()
            await asyncio.sleep(interval)
            core.loop_lag_ms = max(0.0, (loop.time() - t0 - interval) * 1000)
            if core.feed_down_since is not None or core.store_down_since is not None:
                await core._guard()  # a feed down sends no events: check the guards here
            was_stale = core.book.reason is not None and core.book.reason.startswith("stale")
            # like with like: the feed stamps each book event's monotonic receive time (recv_mono)
            healthy_book = core.book.has_snapshot and core.book.check_stale(core.clock.mono_ms(), stale_ms)
            if (not healthy_book and core.book.has_snapshot and not was_stale and feed is not None
                    and (core.book.reason or "").startswith("stale")):
                # The book stays unhealthy until a snapshot: ask the feed for one (it comes with
                # the next book ccxt delivers once the stream moves again).
                log.warning("book_stale", reason=core.book.reason, action="resync requested, no new orders")
                feed.request_resync(core.book.reason or "stale")
            if not ready and healthy_book and core.state in ("trading", "halted"):
                ready = True
                if self.notifier is not None:
                    self.notifier.ready(f"run {core.run_id} {core.state}")
                log.info("ready", run_id=core.run_id, state=core.state)
            if ready and self.notifier is not None and core.feed_up and core.loop_lag_ms < 1000 \
                    and self._store_alive(core) and loop.time() - last_pet >= pet_every:
                self.notifier.watchdog()
                last_pet = loop.time()

    @staticmethod
    def _store_alive(core: TradingCore) -> bool:
        """False once the writer task is dead, or the store has been unavailable for
        STORE_DOWN_HALT_MS (when the kill switch gives up on it): then no WATCHDOG=1, so
        systemd restarts the bot. A shorter outage is a pause the bot rides out by itself."""
        task = core.writer.task
        if task is not None and task.done():
            return False
        down = core.store_down_since
        return down is None or core.clock.mono_ms() - down < STORE_DOWN_HALT_MS

    async def _shutdown(self, exchange: Any, writer: StoreWriter, engine: Any, run_id: int, clock: LiveClock) -> None:
        """Stop new orders, cancel open orders, flush the store; within the 10 s budget.

        Also the path after a crashed task: every step runs even when an earlier one failed.
        """
        if self.notifier is not None:
            self.notifier.stopping(self.stop_reason)
        core = self.core
        if core is not None:
            core.state = "stopping"
            # From here on the writer may be dead (the crash that stops us): every record of the
            # clean-up goes through a sink that logs what it cannot store instead of raising.
            core.om.sink = _ShutdownSink(writer)
            # A crash cancels whatever cancel_on_stop says: nothing watches the orders any more.
            if (self.settings.execution.cancel_on_stop or self.failure is not None) and core.om.open_orders:
                await core.om.shutdown(budget_s=5.0)
                if core.paper is not None:
                    await _step("final_drain", core.om.drain())
            if self.reconciler is not None:
                # Trades made between the last order update and the final cancels (an order that
                # filled while we cancelled it): fetch and book them before the store closes.
                try:
                    async with asyncio.timeout(2.0):
                        booked = await self.reconciler.sweep_fills()
                    (log.warning if booked else log.info)("shutdown_fill_sweep", fills_booked=booked)
                except Exception as exc:
                    log.error("shutdown_fill_sweep_failed", error=f"{type(exc).__name__}: {exc}"[:300],
                              then="the next start's reconciliation books them")
            pending = core.markouts.pending
            if pending:
                try:
                    written = core.flush_markouts()
                    log.info("markouts_flushed", pending=pending, written=written)
                except Exception as exc:
                    log.error("markouts_flush_failed", pending=pending, error=f"{type(exc).__name__}: {exc}"[:300])
            with contextlib.suppress(Exception):
                await core.broker.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.close(), 3.0)
        with contextlib.suppress(Exception):
            halted = core is not None and core.killswitch.halted
            status = "failed" if self.failure is not None else ("halted" if halted else "ended")
            await queries.end_run(engine, run_id, clock.now_ms(), status, self.stop_reason or None)
        with contextlib.suppress(Exception):
            await engine.dispose()
        with contextlib.suppress(Exception):
            await exchange.close()
        log.info("stopped", reason=self.stop_reason, pid=os.getpid())


async def _step(name: str, aw: Awaitable[Any]) -> None:
    """One shutdown step: a failure is logged and the next step still runs."""
    try:
        await aw
    except Exception as exc:
        log.error("shutdown_step_failed", step=name, error=f"{type(exc).__name__}: {exc}"[:300])


__all__ = ["Direction", "EngineTaskFailed", "LiveRunner", "RunSummary", "TradingCore", "run_replay"]


async def replay_with_status(
    recording: Path,
    settings: Settings,
    db_url: str,
    on_status: Callable[[dict[str, Any]], Awaitable[None] | None],
    speed: float,
) -> None:
    """A replay paced at ``speed`` x real time that reports ``status()`` every 100 ms of event time
    (``bot monitor --replay``)."""
    await run_replay(recording, settings, db_url, on_status=on_status, status_every_ms=100, speed=speed)
