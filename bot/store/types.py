"""Column types shared by the models and the migrations: exact money and UTC timestamps.

Why custom types: the same model must be exact on two engines that disagree on decimals.

* PostgreSQL has an exact ``NUMERIC``: money columns are ``NUMERIC(38, 8)``.
* SQLite has no decimal type; ``NUMERIC`` there is a float, and a TEXT decimal is exact but
  ``sum()`` turns it into a float (0.1 + 0.2 = 0.30000000000000004). So on SQLite money is an
  ``INTEGER`` count of 1e-8 units (satoshis): exact, and ``sum()`` in ``sqlite3`` is integer
  arithmetic, exact up to 9.2e10 units of currency. The review views divide by 1e8 once,
  after summing.

Both engines therefore store exactly 8 decimal places, the precision exchanges report
(Binance: prices, amounts and fees in 1e-8). A value with more digits (a simulated fee of
10 bps on a 10-decimal notional) is rounded half-even on write, identically on both engines,
so a review gives the same digits on SQLite and PostgreSQL.

Timestamps are UTC: ``TIMESTAMP WITH TIME ZONE`` on PostgreSQL, ISO text
``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC, no offset) on SQLite, which ``date()`` and
``julianday()`` read. The model's integer milliseconds are converted with ``ms_to_dt``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import BigInteger, DateTime, Numeric
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

SCALE = 8
UNIT = Decimal(1).scaleb(-SCALE)  # Decimal('1E-8')
_FACTOR = 10**SCALE
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def quantize(value: Decimal) -> Decimal:
    """Round to the stored precision (8 dp, half-even): what a round trip through the store gives."""
    return value.quantize(UNIT, rounding=ROUND_HALF_EVEN)


def ms_to_dt(ms: int) -> datetime:
    """Integer epoch milliseconds -> aware UTC datetime, exactly (no float)."""
    return EPOCH + timedelta(milliseconds=ms)


def dt_to_ms(dt: datetime) -> int:
    """Aware (or naive = UTC) datetime -> integer epoch milliseconds."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


class Money(TypeDecorator[Decimal]):
    """Exact decimal with 8 places: NUMERIC(38, 8) on PostgreSQL, INTEGER 1e-8 units on SQLite."""

    impl = Numeric(38, SCALE)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(38, SCALE, asdecimal=True))

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any]:
        """One flat function per value (not TypeDecorator's two-level wrapper): the writer's hot path."""
        if dialect.name == "sqlite":

            def to_units(value: Any) -> int | None:
                if value is None:
                    return None
                d = value if type(value) is Decimal else Decimal(str(value))
                return int(d.scaleb(SCALE).to_integral_value(rounding=ROUND_HALF_EVEN))

            return to_units

        def to_numeric(value: Any) -> Decimal | None:
            if value is None:
                return None
            d = value if type(value) is Decimal else Decimal(str(value))
            return d.quantize(UNIT, rounding=ROUND_HALF_EVEN)

        return to_numeric

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        d = value if isinstance(value, Decimal) else Decimal(str(value))
        if dialect.name == "sqlite":
            return int(d.scaleb(SCALE).to_integral_value(rounding=ROUND_HALF_EVEN))
        return d.quantize(UNIT, rounding=ROUND_HALF_EVEN)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-SCALE)
        return value if isinstance(value, Decimal) else Decimal(str(value))


class UtcDateTime(TypeDecorator[datetime]):
    """A UTC timestamp; always returned timezone-aware (UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def to_text(value: Any) -> str | None:
            # the exact text SQLAlchemy's SQLite DATETIME writes and reads back, in UTC
            if value is None:
                return None
            if isinstance(value, int):
                value = ms_to_dt(value)
            if value.tzinfo is not None:
                value = value.astimezone(UTC).replace(tzinfo=None)
            return value.isoformat(" ", "microseconds")  # type: ignore[no-any-return]

        return to_text

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, int):
            value = ms_to_dt(value)
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        if dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]
