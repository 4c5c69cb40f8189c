"""Reconciliation: make the bot's view of orders, fills and balances equal the exchange's.

Why: the database and the exchange drift apart exactly when something went wrong -- a
crash between an order's ack and its row, a fill delivered while the websocket was down,
a stop that executed on the exchange while the bot was down and the database still shows
the position open. The exchange is the truth; this module folds it back into the store:

* open orders on the exchange that we know -> their status/fill is merged;
* orders we think open that the exchange no longer lists -> looked up one by one and
  closed with the exchange's final status (or ``rejected``/``expired`` "not found on the
  exchange" if it never got them, which also ends any polling of them);
* ``unknown`` orders (a create whose every attempt ended ambiguously) -> adopted if the
  exchange lists them or has a fill with their client id; closed ``expired`` only when the
  lookup by client id still says "not found" and they have been unknown for
  ``settle_unknown_ms`` (until then an ``order_unsettled`` difference, and they stay open);
* open orders we do not know -> a previous run's order of this bot (its client id carries
  our prefix) is adopted; anybody else's is ``foreign_order``: reported once, never adopted,
  cancelled only if ``execution.cancel_unknown`` (``bot.execution.ownership``);
* our fills since the last one we stored -> every missing one is inserted (durably) and
  moves the position; a trade of somebody else's order is ``foreign_fill``: reported once,
  never booked. The sweep looks back only as far as the bot's own history (its last fill,
  its open orders, an unfinished previous run) -- never through the account's history -- and
  moves forward with every sweep;
* balances -> stored as a row; a change of the base balance that our fills do not explain
  is reported.

Every difference is one log line and one row (an ``order_events``, ``fills`` or
``balances`` row). ``startup`` runs before the first order and retries with backoff until
it succeeds: a bot that cannot see the exchange does not trade.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal

from bot.clock import Clock
from bot.execution.broker import Broker, ExchangeHalted
from bot.execution.client_ids import ClientIdFactory
from bot.execution.orders import OrderManager
from bot.execution.ownership import UNATTRIBUTED
from bot.logging import get_logger
from bot.model import Balance, Order, OrderStatus, ReconcileDifference

log = get_logger("execution.reconcile")

S = OrderStatus
FILL_LOOKBACK_MS = 5_000  # re-read this much before the last stored fill (clock skew, same-ms trades)
# How far back a start-up sweep may reach for the bot's own unconfirmed history (an open order
# or an unfinished run older than this is not searched for trades beyond it).
MAX_LOOKBACK_MS = 24 * 3600 * 1000
# An order whose create ended ambiguously is closed as never arrived only after it has been
# unknown this long (well past Binance's recvWindow, 10 s in ccxt, so a late create cannot land).
SETTLE_UNKNOWN_MS = 30_000


@dataclass(frozen=True, slots=True)
class Difference:
    # order_status | order_gone | order_never_arrived | order_unsettled | unknown_order | missing_fill |
    # balance | baseline | foreign_order | foreign_fill | unattributed_fill
    kind: str
    detail: str
    client_id: str | None = None


@dataclass(slots=True)
class ReconcileReport:
    ts: int
    differences: list[Difference] = field(default_factory=list)
    open_orders: int = 0
    fills_checked: int = 0
    balances: dict[str, Balance] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.differences

    def kinds(self) -> list[str]:
        return [d.kind for d in self.differences]


class Reconciler:
    """Compares the exchange (through the broker, so through its rate limiter) with ``manager``."""

    def __init__(
        self,
        manager: OrderManager,
        broker: Broker,
        clock: Clock,
        *,
        cancel_unknown: bool = False,
        ids: ClientIdFactory | None = None,
        settle_unknown_ms: int = SETTLE_UNKNOWN_MS,
        history_from_ms: int | None = None,
    ) -> None:
        self.manager = manager
        self.settle_unknown_ms = settle_unknown_ms
        self.broker = broker
        self.clock = clock
        self.cancel_unknown = cancel_unknown
        self.ids = ids or manager.ids
        self.symbol = manager.symbol
        self.base = self.symbol.split("/")[0]
        self._last_base: Decimal | None = None
        self._last_position: Decimal | None = None
        self.runs = 0
        # Oldest time (exchange ms) at which a trade of ours may still be unbooked; see sweep_fills.
        self._sweep_from = self._first_sweep_from(history_from_ms)
        self._cancelled_foreign: set[str] = set()

    def _first_sweep_from(self, history_from_ms: int | None) -> int:
        """Where the first sweep starts: the bot's own history, never the account's.

        The newest of (a bounded window back from now) and the oldest of: the last stored fill,
        the creation of every open order of ours, and ``history_from_ms`` (the start of an
        unfinished previous run, whose orders may have filled without a stored row). A fresh
        database starts ``FILL_LOOKBACK_MS`` before now: position 0, nothing of the account's
        past is read.
        """
        m = self.manager
        now = self.clock.now_ms()
        marks = [now]
        if m.last_fill_ts is not None:
            marks.append(m.last_fill_ts)
        marks += [o.created_ts for o in m.open_orders if o.created_ts]
        if history_from_ms is not None:
            marks.append(history_from_ms)
        return max(min(marks), now - MAX_LOOKBACK_MS) - FILL_LOOKBACK_MS

    def _diff(self, report: ReconcileReport, kind: str, detail: str, client_id: str | None = None) -> None:
        """One difference: a log line and a ``reconcile_differences`` row (reviewable with SQL)."""
        report.differences.append(Difference(kind, detail, client_id))
        log.warning("reconcile_difference", kind=kind, client_id=client_id, detail=detail)
        self.manager.sink.put(ReconcileDifference(self.clock.now_ms(), self.symbol, kind, detail, client_id))

    async def sweep_fills(self, report: ReconcileReport | None = None) -> int:
        """Book every trade of ours on the exchange that is not in the store yet; returns how many.

        Step 1 of every pass, and on its own at shutdown: an order that filled between the
        last websocket update and the final cancel would otherwise be stored as filled without
        its trades (the next start would book them, but the run's own tables must be whole).
        """
        m = self.manager
        report = report if report is not None else ReconcileReport(ts=self.clock.now_ms())
        before = len(report.differences)
        trades = await self.broker.fetch_my_trades(self.symbol, self._sweep_from)
        report.fills_checked = len(trades)
        newest: int | None = None
        unnamed: list[int] = []  # trades whose order could not be named yet: looked at again
        for f in sorted(trades, key=lambda f: (f.ts, f.trade_id)):
            newest = f.ts if newest is None else max(newest, f.ts)
            if m.has_seen(f.trade_id):
                continue
            cid = m.ownership.attribute(f.client_id, f.exchange_order_id)
            if cid is None:
                if f.client_id.startswith(UNATTRIBUTED):
                    unnamed.append(f.ts)
                self._foreign(
                    report, "unattributed_fill" if f.client_id.startswith(UNATTRIBUTED) else "foreign_fill",
                    f.trade_id, f"trade {f.trade_id}: {f.side} {f.amount} @ {f.price} of exchange order "
                    f"{f.exchange_order_id}; not the bot's, not booked", f.client_id,
                )
                continue
            if cid != f.client_id:
                f = replace(f, client_id=cid)
            self._diff(
                report,
                "missing_fill",
                f"trade {f.trade_id}: {f.side} {f.amount} @ {f.price} was on the exchange but not in the store",
                f.client_id,
            )
            if m.get(f.client_id) is None:
                # an order of ours this run never saw (a previous run's): its row first
                order = await self.broker.fetch_order(f.client_id, self.symbol)
                if order is not None:
                    m.adopt(order, "reconcile: order of a missing fill")
            await m.on_fill_update(f)
        if newest is not None:
            # Every trade up to ``newest`` has been looked at: the next sweep starts there (less the
            # lookback), but never past a trade whose order could not be named yet.
            self._sweep_from = max(self._sweep_from, min([newest, *unnamed]) - FILL_LOOKBACK_MS)
        return len(report.differences) - before

    def _foreign(self, report: ReconcileReport, kind: str, key: str, detail: str, client_id: str | None) -> None:
        """Something on the account that is not the bot's: one row and line (the manager's), once."""
        if self.manager.note_foreign(kind, key, detail, client_id):
            report.differences.append(Difference(kind, detail, client_id))

    async def reconcile_once(self) -> ReconcileReport:
        """One full pass; raises if the exchange cannot be read (the caller retries)."""
        m = self.manager
        report = ReconcileReport(ts=self.clock.now_ms())
        # 1. fills first: they decide order fill amounts and the position
        await self.sweep_fills(report)
        # 2. open orders on the exchange
        listed = await self.broker.fetch_open_orders(self.symbol)
        report.open_orders = len(listed)
        listed_ids = {o.client_id for o in listed}
        for ex in listed:
            mine = m.get(ex.client_id)
            if mine is None:
                await self._unknown(report, ex)
                continue
            if ex.client_id in m.busy:
                continue
            if ex.status is not mine.status or ex.filled != mine.filled:
                self._diff(
                    report,
                    "order_status",
                    f"store {mine.status} filled {mine.filled}, exchange {ex.status} filled {ex.filled}",
                    ex.client_id,
                )
                await m.merge(ex, f"reconcile: exchange reports {ex.status}")
            self._track(ex)
        # 3. orders we think open that the exchange does not list
        for mine in list(m.open_orders):
            if mine.client_id in listed_ids or mine.client_id in m.busy or mine.status is S.NEW:
                continue
            found = await self.broker.fetch_order(mine.client_id, mine.symbol)
            if found is None and mine.status is S.UNKNOWN:
                # Its create ended ambiguously: not listed, no fill, and the lookup by client id
                # says "not found". Closed once it has been unknown for ``settle_unknown_ms``
                # (a late create can no longer land then); until then it stays open for risk.
                since = m.unknown_since.get(mine.client_id)
                age = None if since is None else self.clock.mono_ms() - since  # both monotonic ms
                if age is not None and age < self.settle_unknown_ms:
                    self._diff(
                        report,
                        "order_unsettled",
                        f"unknown for {age} ms and not on the exchange yet; closed if still not found "
                        f"after {self.settle_unknown_ms} ms",
                        mine.client_id,
                    )
                else:
                    self._diff(
                        report,
                        "order_never_arrived",
                        f"store {mine.status} ({mine.reason}), exchange has no such order",
                        mine.client_id,
                    )
                    await m.merge(
                        _replace_status(mine, S.EXPIRED),
                        "reconcile: never reached the exchange (not listed, no fill, lookup by client id "
                        "not found)",
                    )
            elif found is None:
                status = S.EXPIRED if mine.status in (S.ACKED, S.PARTIALLY_FILLED) else S.REJECTED
                self._diff(
                    report,
                    "order_never_arrived",
                    f"store {mine.status}, exchange has no such order",
                    mine.client_id,
                )
                await m.merge(_replace_status(mine, status), "reconcile: not found on the exchange")
            else:
                current = m.get(mine.client_id) or mine  # fills above may have moved it already
                if found.status is not current.status or found.filled != current.filled:
                    self._diff(
                        report,
                        "order_gone" if found.status.is_terminal else "order_status",
                        f"store {current.status} filled {current.filled}, exchange {found.status} filled {found.filled}",
                        mine.client_id,
                    )
                    await m.merge(found, f"reconcile: exchange reports {found.status}")
            self._track(m.get(mine.client_id))
        # 4. balances
        report.balances = await self.broker.fetch_balance()
        for b in report.balances.values():
            if b.total:
                m.sink.put(b)
        if self.runs == 0 and m.last_fill_ts is None and not m.orders:
            # A fresh database: the bot starts at position 0 whatever the account holds; what the
            # account held is kept as a baseline row (the balances rows above carry the numbers).
            held = ", ".join(f"{b.currency} {b.total}" for b in report.balances.values() if b.total) or "nothing"
            log.info("balance_baseline", balances=held, position="0")
            m.sink.put(ReconcileDifference(self.clock.now_ms(), self.symbol, "baseline",
                                           f"fresh database: position 0; the account held {held}"))
        base = report.balances.get(self.base)
        position = m.position.amount
        if base is not None:
            if self._last_base is not None and self._last_position is not None:
                expected = self._last_base + (position - self._last_position)
                if base.total != expected:
                    self._diff(
                        report,
                        "balance",
                        f"{self.base} balance {base.total}, expected {expected} from the previous balance and our fills",
                    )
            self._last_base, self._last_position = base.total, position
        self.runs += 1
        log.info(
            "reconciled",
            differences=len(report.differences),
            open_orders=report.open_orders,
            fills_checked=report.fills_checked,
            position=str(position),
        )
        return report

    def _track(self, order: Order | None) -> None:
        track = getattr(self.broker, "track", None)
        if order is not None and callable(track):
            track(order)

    async def _unknown(self, report: ReconcileReport, ex: Order) -> None:
        """An open order the manager does not hold: a previous run's of ours, or somebody else's."""
        if self.manager.is_own(ex.client_id):
            # ours (prefix or our orders table) but not loaded: e.g. its row was lost in a crash
            self._diff(
                report,
                "unknown_order",
                f"open order from a previous run of this bot ({ex.side} {ex.amount} @ {ex.price}); adopted",
                ex.client_id,
            )
            self.manager.adopt(ex, "reconcile: adopted open order from a previous run of this bot")
            self._track(ex)
            return
        action = "cancelling (cancel_unknown = true)" if self.cancel_unknown else "left alone"
        self._foreign(
            report, "foreign_order", ex.client_id,
            f"open order of another client ({ex.side} {ex.amount} @ {ex.price}); {action}", ex.client_id,
        )
        if self.cancel_unknown and ex.client_id not in self._cancelled_foreign:
            # the broker directly: a foreign order gets no row of ours, even when we cancel it
            self._cancelled_foreign.add(ex.client_id)
            done = await self.broker.cancel_order(ex)
            log.warning("foreign_order_cancelled", client_id=ex.client_id, status=str(done.status))

    async def startup(
        self,
        *,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_attempts: int | None = None,
        on_failure: Callable[[int, BaseException], None] | None = None,
    ) -> ReconcileReport:
        """Reconcile before any new order; retry with backoff until it works (or halts)."""
        attempt = 0
        while True:
            try:
                return await self.reconcile_once()
            except ExchangeHalted:
                raise
            except Exception as exc:
                from bot.execution.broker import authentication_error

                if authentication_error(exc) is not None:
                    raise  # wrong API keys: no retry can fix them (`bot run` exits 78)
                attempt += 1
                log.error(
                    "startup_reconcile_failed",
                    attempt=attempt,
                    error=f"{type(exc).__name__}: {exc}"[:300],
                    trading="blocked",
                )
                if on_failure is not None:
                    on_failure(attempt, exc)
                if max_attempts is not None and attempt >= max_attempts:
                    raise
                await asyncio.sleep(min(backoff_max, backoff_base * 2 ** (attempt - 1)))

    async def run_periodic(self, interval: float) -> None:
        """Every ``interval`` seconds, forever (a task of the engine's TaskGroup)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reconcile_once()
            except ExchangeHalted as exc:  # a 418 ban: the engine halts; reconcile again after it
                log.warning("reconcile_skipped", reason=str(exc)[:300])
            except Exception as exc:
                log.warning("reconcile_failed", error=f"{type(exc).__name__}: {exc}"[:300])


def _replace_status(order: Order, status: OrderStatus) -> Order:
    from dataclasses import replace

    return replace(order, status=status)
