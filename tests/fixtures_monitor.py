"""A fixed engine status snapshot (notes/status_schema.md) for the monitor and status-server tests.

Import it (``from fixtures_monitor import sample_status``); a fresh deep copy each call, so a
test can change a field without affecting others.
"""

from __future__ import annotations

import copy
from typing import Any

T0 = 1_723_075_200_000  # 2024-08-08 00:00:00 UTC

_SAMPLE: dict[str, Any] = {
    "ts": T0 + 12_345,
    "run_id": 3,
    "mode": "paper",
    "symbol": "BTC/USDT",
    "account": "default",
    "state": "trading",
    "book": {
        "healthy": True,
        "reason": None,
        "mid": 60000.005,
        "spread": 0.01,
        "microprice": 60000.007,
        "bids": [[59999.99, 0.5], [59999.5, 1.25], [59999.0, 2.0], [59998.0, 0.1]],
        "asks": [[60000.0, 0.3], [60000.5, 0.75], [60001.0, 3.0], [60002.0, 0.2]],
        "updates": 12345,
    },
    "signals": {"ofi": 1.2, "mlofi": 3.4, "tfi": -0.5, "imbalance": 0.12, "cvd": 10.5, "microprice_dev": 0.002},
    "zscores": {"ofi": 0.8, "mlofi": 1.1, "tfi": -0.2, "imbalance": 0.4, "combined": 1.3},
    "detector": {"state": "long", "combined_z": 1.3, "entry_z": 2.0, "exit_z": 0.5, "persistence": 3},
    "position": {
        "amount": "0.01",
        "avg_price": "59950.00",
        "realized_pnl": "1.23",
        "unrealized_pnl": "-0.40",
        "fees": "0.12",
        "equity": "10000.71",
    },
    "open_orders": [
        {"client_id": "ofi-3-1a", "side": "buy", "price": "59999.5", "amount": "0.001",
         "filled": "0", "status": "acked", "age_ms": 1200},
        {"client_id": "ofi-3-1b", "side": "sell", "price": "60001.0", "amount": "0.002",
         "filled": "0.0005", "status": "partially_filled", "age_ms": 300},
    ],
    "risk": {
        "halted": False,
        "halt_kind": None,
        "halt_reason": None,
        "limits": {"position_pct": 20.0, "daily_loss_pct": 0.0, "drawdown_pct": 1.5, "orders_per_minute_pct": 90.0},
    },
    "health": {"feed": "up", "store": "ok", "loop_lag_ms": 0.4},
    "decisions": [
        {"ts": T0 + 10_000, "kind": "signal", "text": "entry long z=+2.31"},
        {"ts": T0 + 10_050, "kind": "order", "text": "buy 0.01 @ 60000.00 ofi-3-19"},
        {"ts": T0 + 10_120, "kind": "fill", "text": "bought 0.01 @ 59950.00 taker fee 0.12"},
        {"ts": T0 + 11_000, "kind": "risk", "text": "clip order 0.02 -> 0.01 (max_position)"},
    ],
}


def sample_status() -> dict[str, Any]:
    return copy.deepcopy(_SAMPLE)


def halted_status() -> dict[str, Any]:
    s = sample_status()
    s["state"] = "halted"
    s["risk"]["halted"] = True
    s["risk"]["halt_kind"] = "daily_loss"
    s["risk"]["halt_reason"] = "daily loss 101.20 USDT >= max_daily_loss 100"
    s["risk"]["limits"]["daily_loss_pct"] = 101.2
    return s
