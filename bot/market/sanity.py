"""Bounds on the market-data values the bot accepts, from an exchange or from a recording.

Why a bound at all: a price or size that is finite but absurd (``1e300``, a 30-digit integer
that a JSON parser turns into ``1.2e29``) is as corrupt as NaN, and it poisons everything
downstream (a mid of 5e299, an OFI that swamps every z-score, a notional that overflows
``Decimal`` quantisation). No listed market trades above a trillion per unit, and no single
book level or print holds a trillion units, so anything beyond these limits is bad data.
Both the live normaliser (``bot.market.feed``) and the recording reader
(``bot.market.recorder``) apply the same limits.
"""

from __future__ import annotations

MAX_PRICE = 1e12  # quote currency per unit
MAX_AMOUNT = 1e12  # base currency, one level or one trade
MAX_TS_MS = 10**13  # epoch milliseconds (year 2286): a larger exchange time is garbage
