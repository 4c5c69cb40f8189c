"""Break-even fee of a strategy on a recording, from the engine's own zero-fee replay.

Why not from the signal alone: the move after a signal (``bot.analytics.edge``) is measured from
the signal's mid, with no latency, at a fixed horizon, and it says nothing of how the position
is actually opened and closed. What a trader needs is the fee at which *this bot, with this
config* would have broken even: so the recording is replayed through the same engine path as
``bot replay`` (``bot.engine.run_replay``: PaperBroker fills, latency, the entry styles, the
exit rule, the cost gate) with both paper fees set to 0, and

    gross PnL        = realised PnL of the fills + the position left, marked at the last mid
    notional         = sum of |price x amount| over the fills (both legs)
    break-even fee   = gross PnL / notional, in bps per side

is the fee per unit of notional traded that would have taken the run to exactly 0. The zero-fee
replay writes to a throw-away SQLite file; its numbers equal those of ``bot replay`` run with the
same config and zero fees (a test holds them together).
"""

from __future__ import annotations

import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

from bot.config import Settings

ZERO = Decimal(0)


def zero_fee(settings: Settings) -> Settings:
    """``settings`` with both paper fees at 0 (the cost gate then charges spreads only)."""
    paper = settings.paper.model_copy(update={"taker_fee_bps": 0.0, "maker_fee_bps": 0.0})
    return settings.model_copy(update={"paper": paper})


def gross_of(fills: list[tuple[str, Decimal, Decimal]], mark: Decimal | None) -> dict[str, Any]:
    """(side, price, amount) fills -> gross PnL (the open position at ``mark``), notional, round trips."""
    cash = ZERO
    position = ZERO
    notional = ZERO
    flat_returns = 0
    for side, price, amount in fills:
        signed = amount if side == "buy" else -amount
        before = position
        position += signed
        cash -= signed * price
        notional += abs(price * amount)
        if before != ZERO and position == ZERO:
            flat_returns += 1
    open_value = position * mark if mark is not None else ZERO
    gross = cash + open_value
    return {
        "fills": len(fills),
        "round_trips": flat_returns,
        "gross_pnl": gross,
        "notional": notional,
        "open_position": position,
        "break_even_fee_bps": float(gross / notional * 10_000) if notional else None,
    }


async def replay_break_even(recording: str | Path, settings: Settings) -> dict[str, Any]:
    """Replay ``recording`` at zero fees through ``run_replay`` and return :func:`gross_of`'s figures."""
    from sqlalchemy import select

    from bot.engine import run_replay
    from bot.store import tables as t
    from bot.store.db import make_engine

    with tempfile.TemporaryDirectory(prefix="bot-breakeven-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'breakeven.db'}"
        summary = await run_replay(Path(recording), zero_fee(settings), url)
        engine = make_engine(url)
        try:
            async with engine.connect() as conn:
                c = t.fills.c  # the Money type decodes SQLite's integer 1e-8 units exactly
                rows = (await conn.execute(
                    select(c.side, c.price, c.amount).where(c.run_id == summary.run_id).order_by(c.id)
                )).all()
        finally:
            await engine.dispose()
    fills = [(str(r[0]), Decimal(r[1]), Decimal(r[2])) for r in rows]
    mark = summary.extra.get("mark")
    out = gross_of(fills, Decimal(str(mark)) if mark is not None else None)
    out["gross_pnl"] = str(out["gross_pnl"])
    out["notional"] = str(out["notional"])
    out["open_position"] = str(out["open_position"])
    return out
