"""Inventory accounting: position, cost basis, realised / unrealised PnL, fees, equity, peaks.

Why it is written this way:

* Exact ``Decimal`` throughout, so the books reconcile with the exchange to the last digit.
  The open position is kept as a *cost* (sum of the signed notionals still open), not as an
  average price: on a partial close the removed cost is quantised to 1e-18 quote and then
  subtracted, so ``realised + unrealised == sum of trade cash flows + position x mark`` holds
  exactly, whatever the sequence. ``avg_price`` is derived (cost / position) for display.
* A fill that crosses zero (long 0.3, sell 0.5) closes the whole long, realising all of its
  cost, and opens a short of 0.2 at the fill price.
* Fees are reported in the quote currency. A fee charged in the base currency (Binance
  charges the asset received) also *reduces the base balance*: it is booked as a disposal of
  ``fee`` base units at the fill price (so the position equals the balance change, as the
  exchange sees it) and ``fee x price`` is added to the quote fees. With that rule,
  realised + unrealised - fees equals the change in equity computed from balances, exactly.
  Fees in a third currency (BNB) are converted with ``fee_rates`` when known, else kept
  apart in ``other_fees`` (they do not touch the base/quote balances).
* Equity here is trading equity: ``start_equity + realised + unrealised - fees``. Its peak
  is tracked per run (for ``max_drawdown``) and per UTC day (with the day's starting equity,
  for ``max_daily_loss``). Every fill also marks the book at the fill price, so a replay of
  stored fills (``from_fills``) rebuilds today's PnL after a restart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Context, Decimal, localcontext
from typing import Any

from bot.logging import get_logger
from bot.model import Fill, Position, Side

ZERO = Decimal(0)
DAY_MS = 86_400_000
_QUANT = Decimal("1e-18")  # quote precision of a removed cost basis; far below any exchange's
_CTX = Context(prec=60)  # wide enough that sums of quantised costs never round


def utc_day(ts_ms: int) -> int:
    """Days since the epoch, UTC (the daily-loss window)."""
    return ts_ms // DAY_MS


class Inventory:
    """Position and PnL of one symbol, updated by fills and marks."""

    def __init__(
        self,
        symbol: str,
        *,
        base: str | None = None,
        quote: str | None = None,
        fee_rates: Mapping[str, Decimal] | None = None,
        position: Decimal = ZERO,
        avg_price: Decimal = ZERO,
        start_equity: Decimal = ZERO,
        log: Any = None,
    ) -> None:
        b, _, q = symbol.partition("/")
        self.symbol = symbol
        self.base = base or b
        self.quote = quote or q
        self.fee_rates: dict[str, Decimal] = dict(fee_rates or {})
        self.log: Any = log if log is not None else get_logger("risk")
        self.position = position
        self.cost = position * avg_price  # signed: > 0 long, < 0 short
        self.realized = ZERO
        self.fees = ZERO  # in quote
        self.other_fees: dict[str, Decimal] = {}
        self.start_equity = start_equity
        self.fill_count = 0
        self.last_ts = 0
        self.last_mid: Decimal | None = None
        self.last_micro: Decimal | None = None
        self._seen: set[str] = set()
        # run and day statistics (equity at a mark)
        self.run_peak: Decimal | None = None
        self.run_start_equity: Decimal | None = None
        self.day: int | None = None
        self.day_start_equity: Decimal | None = None
        self._rebase_pending = False
        self.day_peak: Decimal | None = None
        self.day_realized = ZERO
        self.day_fees = ZERO

    # ------------------------------------------------------------------ restore

    @classmethod
    def from_fills(
        cls,
        fills: Iterable[Fill],
        symbol: str,
        *,
        base: str | None = None,
        quote: str | None = None,
        fee_rates: Mapping[str, Decimal] | None = None,
        new_run: bool = True,
        log: Any = None,
    ) -> Inventory:
        """Rebuild from stored fills (the store's ``load_fills``), oldest first.

        Duplicate trade ids are applied once; other symbols are ignored. With ``new_run``
        the run's equity peak restarts at the restored equity (drawdown is per run, as
        DESIGN.md says), while the UTC day's figures keep what today's fills did.
        """
        inv = cls(symbol, base=base, quote=quote, fee_rates=fee_rates, log=log)
        for f in sorted(fills, key=lambda f: f.ts):
            if f.symbol == symbol:
                inv.apply_fill(f, quiet=True)
        if new_run:
            inv.start_run()
        inv.log.info(
            "inventory_restored",
            fills=inv.fill_count,
            position=str(inv.position),
            avg_price=str(inv.avg_price),
            realized=str(inv.realized),
            fees=str(inv.fees),
        )
        return inv

    def start_run(self) -> None:
        """Start the run's equity peak at the current equity (last known mark)."""
        eq = self.equity()
        self.run_start_equity = eq
        self.run_peak = eq

    # ------------------------------------------------------------------ updates

    def fee_in_quote(self, fill: Fill) -> Decimal | None:
        """The fill's fee in quote currency, or None when no conversion rate is known."""
        if fill.fee == ZERO or fill.fee_currency == self.quote:
            return fill.fee
        if fill.fee_currency == self.base:
            return fill.fee * fill.price
        rate = self.fee_rates.get(fill.fee_currency)
        return None if rate is None else fill.fee * rate

    def apply_fill(self, fill: Fill, *, quiet: bool = False) -> bool:
        """Book one fill; returns False (and changes nothing) for a trade id seen before."""
        if fill.trade_id in self._seen:
            return False
        self._seen.add(fill.trade_id)
        with localcontext(_CTX):
            self._roll(fill.ts, mark=fill.price)
            before = self.realized
            self._trade(fill.side.sign * fill.amount, fill.price)
            fee_q = self.fee_in_quote(fill)
            if fill.fee != ZERO and fill.fee_currency == self.base:
                # The exchange took the fee out of the base we hold: a disposal at the fill price.
                self._trade(-fill.fee, fill.price)
            if fee_q is None:
                self.other_fees[fill.fee_currency] = self.other_fees.get(fill.fee_currency, ZERO) + fill.fee
                self.log.warning(
                    "fee_not_converted",
                    trade_id=fill.trade_id,
                    fee=str(fill.fee),
                    currency=fill.fee_currency,
                    why="no rate to the quote currency; kept apart in other_fees",
                )
            else:
                self.fees += fee_q
                self.day_fees += fee_q
            self.day_realized += self.realized - before
        self.fill_count += 1
        self.last_ts = max(self.last_ts, fill.ts)
        self._track(fill.price)
        if not quiet:
            self.log.info(
                "fill_booked",
                trade_id=fill.trade_id,
                side=fill.side.value,
                price=str(fill.price),
                amount=str(fill.amount),
                fee=str(fill.fee),
                fee_currency=fill.fee_currency,
                position=str(self.position),
                avg_price=str(self.avg_price),
                realized=str(self.realized),
                fees=str(self.fees),
            )
        return True

    def rebase_day(self) -> None:
        """Count today's PnL from the equity at the next mark (after an operator's resume).

        Why: a ``max_daily_loss`` halt lifted by ``bot resume`` on the same UTC day would trip
        again on the first book event, since the day's loss is rebuilt from the stored fills.
        The operator who resumed gives the bot a fresh daily budget from that point.
        """
        self._rebase_pending = True

    def mark_to(self, ts_ms: int, mid: Decimal, microprice: Decimal | None = None) -> Decimal:
        """Record the marks (mid, optional microprice); updates peaks; returns equity at mid."""
        self._roll(ts_ms, mark=mid)
        if self._rebase_pending:
            self._rebase_pending = False
            eq = self.equity(mid)
            self.log.info("inventory_day_rebased", previous_day_start=str(self.day_start_equity), start_equity=str(eq))
            self.day_start_equity = eq
            self.day_peak = eq
        self.last_mid = mid
        if microprice is not None:
            self.last_micro = microprice
        self.last_ts = max(self.last_ts, ts_ms)
        return self._track(mid)

    def _trade(self, qty: Decimal, price: Decimal) -> None:
        """Signed quantity at a price through the cost basis; realises PnL on reductions."""
        pos = self.position
        if qty == ZERO:
            return
        if pos == ZERO or (pos > 0) == (qty > 0):
            self.position = pos + qty
            self.cost += qty * price
            return
        if abs(qty) <= abs(pos):
            removed = self.cost if qty == -pos else (self.cost * (-qty) / pos).quantize(_QUANT)
            self.realized += -qty * price - removed
            self.cost -= removed
            self.position = pos + qty
            return
        # through zero: close everything, open the rest at this price
        self.realized += pos * price - self.cost
        rest = pos + qty
        self.position = rest
        self.cost = rest * price

    def _roll(self, ts_ms: int, mark: Decimal) -> None:
        """Start a new UTC day at the equity last known before this event."""
        day = utc_day(ts_ms)
        if self.day is None or day > self.day:
            start = self.equity() if self.last_mid is not None else self.equity(mark)
            if self.day is not None:
                self.log.info(
                    "inventory_new_day",
                    day=day,
                    previous_day_pnl=str(start - (self.day_start_equity or start)),
                    start_equity=str(start),
                )
            self.day = day
            self.day_start_equity = start
            self.day_peak = start
            self.day_realized = ZERO
            self.day_fees = ZERO
        if self.last_mid is None:
            self.last_mid = mark

    def _track(self, mark: Decimal) -> Decimal:
        self.last_mid = mark
        eq = self.equity(mark)
        if self.run_peak is None or eq > self.run_peak:
            self.run_peak = eq
        if self.run_start_equity is None:
            self.run_start_equity = eq
        if self.day_peak is None or eq > self.day_peak:
            self.day_peak = eq
        return eq

    # ------------------------------------------------------------------ figures

    @property
    def avg_price(self) -> Decimal:
        """Average entry price of the open position (0 when flat)."""
        if self.position == ZERO:
            return ZERO
        with localcontext(_CTX):
            return (self.cost / self.position).quantize(_QUANT).normalize()

    def unrealized(self, mark: Decimal | None = None) -> Decimal:
        """Open PnL at ``mark`` (default: the last mid)."""
        m = self.last_mid if mark is None else mark
        if m is None or self.position == ZERO:
            return ZERO
        with localcontext(_CTX):
            return self.position * m - self.cost

    @property
    def unrealized_mid(self) -> Decimal:
        return self.unrealized(self.last_mid)

    @property
    def unrealized_micro(self) -> Decimal:
        """Open PnL at the microprice (falls back to the mid when no microprice was seen)."""
        return self.unrealized(self.last_micro if self.last_micro is not None else self.last_mid)

    def net_pnl(self, mark: Decimal | None = None) -> Decimal:
        """realised + unrealised - fees (quote)."""
        with localcontext(_CTX):
            return self.realized + self.unrealized(mark) - self.fees

    def equity(self, mark: Decimal | None = None) -> Decimal:
        with localcontext(_CTX):
            return self.start_equity + self.net_pnl(mark)

    def daily_pnl(self, mark: Decimal | None = None) -> Decimal:
        """Equity change since the start of the current UTC day."""
        eq = self.equity(mark)
        return eq - (self.day_start_equity if self.day_start_equity is not None else eq)

    def drawdown(self, mark: Decimal | None = None) -> Decimal:
        """How far equity is below the run's peak (>= 0)."""
        eq = self.equity(mark)
        peak = self.run_peak if self.run_peak is not None else eq
        return max(ZERO, max(peak, eq) - eq)

    def day_drawdown(self, mark: Decimal | None = None) -> Decimal:
        eq = self.equity(mark)
        peak = self.day_peak if self.day_peak is not None else eq
        return max(ZERO, max(peak, eq) - eq)

    def snapshot(self, ts_ms: int | None = None) -> Position:
        """A ``Position`` row for the store."""
        return Position(
            symbol=self.symbol,
            amount=self.position,
            avg_price=self.avg_price,
            realized_pnl=self.realized,
            fees=self.fees,
            ts=self.last_ts if ts_ms is None else ts_ms,
        )

    def side_to_reduce(self) -> Side | None:
        """The side that brings the position toward flat (None when flat)."""
        if self.position == ZERO:
            return None
        return Side.SELL if self.position > 0 else Side.BUY
