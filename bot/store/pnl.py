"""Average-cost inventory accounting for the ``fills`` running columns.

The method (what ``v_trades`` and ``v_daily_pnl`` report):

* Fills of one (account, symbol) are applied in the order the store receives them (within a
  batch sorted by exchange time), across runs: the position survives restarts.
* A fill in the direction of the position (or from flat) adds to it; the average entry price
  becomes the amount-weighted mean of the old average and the fill price.
* A fill against the position closes ``min(|fill|, |position|)``; the realised PnL of that
  fill is ``(price - avg_entry) * closed * sign(position)``. The average entry is unchanged.
* A fill through zero first closes the whole position (realising as above), then opens the
  rest at the fill price (the new average entry).
* A fee charged in the base currency (Binance buys) reduces the position like a sale of the
  fee at the fill price, as the exchange's balance does. Fees are never part of the
  realised PnL: ``fee_quote`` is reported beside it, and net PnL = realised - fees.
* Everything is kept at the store's precision (8 dp, half-even after each step), so the
  running state re-read from the database after a restart is the state the writer had.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from bot.model import ZERO, Fill
from bot.store.types import quantize


@dataclass(slots=True)
class Inventory:
    """Running position (base), average entry (quote per base) and realised PnL (quote)."""

    position: Decimal = ZERO
    avg_price: Decimal = ZERO

    def trade(self, signed: Decimal, price: Decimal) -> Decimal:
        """Apply ``signed`` base at ``price``; return the PnL it realised (8 dp)."""
        pos = self.position
        if signed == ZERO:
            return ZERO
        if pos == ZERO or (pos > 0) == (signed > 0):
            total = pos + signed
            self.avg_price = quantize((self.avg_price * abs(pos) + price * abs(signed)) / abs(total))
            self.position = total
            return ZERO
        closed = min(abs(signed), abs(pos))
        direction = 1 if pos > 0 else -1
        realized = quantize((price - self.avg_price) * closed * direction)
        total = pos + signed
        if total == ZERO:
            self.avg_price = ZERO
        elif (total > 0) != (pos > 0):
            self.avg_price = quantize(price)  # flipped: the rest opens at this price
        self.position = total
        return realized


def fee_in_quote(fill: Fill, base: str, quote: str) -> Decimal | None:
    """The fee in quote currency; None when charged in a third currency (e.g. BNB)."""
    if fill.fee == ZERO or fill.fee_currency == quote:
        return quantize(fill.fee)
    if fill.fee_currency == base:
        return quantize(fill.fee * fill.price)
    return None


def apply_fill(inv: Inventory, fill: Fill, base: str) -> Decimal:
    """Apply one fill (and a base-currency fee) to ``inv``; return the realised PnL."""
    price = quantize(fill.price)
    realized = inv.trade(quantize(fill.amount) * fill.side.sign, price)
    if fill.fee_currency == base and fill.fee:
        realized += inv.trade(-quantize(fill.fee), price)
    return realized


def split_symbol(symbol: str) -> tuple[str, str]:
    """'BTC/USDT' -> ('BTC', 'USDT'); a symbol without '/' has no known quote."""
    base, _, quote = symbol.partition("/")
    quote = quote.split(":")[0]  # ccxt derivatives: 'BTC/USDT:USDT'
    return base, quote
