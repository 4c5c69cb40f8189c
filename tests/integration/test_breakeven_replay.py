"""``bot analyze``'s break-even fee is the engine's own zero-fee replay: it equals what ``bot replay``
with zero fees earns per unit of notional on the same recording and config (both real recordings)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from bot.analytics.breakeven import gross_of

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "recordings"
RECORDINGS = ["btcusdt_spot_20240808.jsonl.gz", "ethusdt_spot_20240808.jsonl.gz"]
BOT = [sys.executable, "-m", "bot"]
SCALE = Decimal("0.00000001")


def test_gross_of_marks_the_open_position_and_counts_round_trips() -> None:
    fills = [("buy", Decimal("100"), Decimal("2")), ("sell", Decimal("101"), Decimal("2")),
             ("sell", Decimal("102"), Decimal("1"))]
    out = gross_of(fills, Decimal("101.5"))
    # +2 on the round trip, short 1 from 102 marked at 101.5: +0.5
    assert out["gross_pnl"] == Decimal("2.5") and out["round_trips"] == 1
    assert out["notional"] == Decimal("200") + Decimal("202") + Decimal("102")
    assert out["break_even_fee_bps"] == pytest.approx(2.5 / 504 * 1e4)
    assert gross_of([], None)["break_even_fee_bps"] is None


@pytest.mark.slow
@pytest.mark.parametrize("name", RECORDINGS)
def test_analyze_break_even_equals_the_zero_fee_replay(name: str, tmp_path: Path) -> None:
    rec = SHARED / name
    if not rec.exists():
        pytest.skip(f"real recordings not found at {SHARED} (../shared is absent)")
    cfg = tmp_path / "c.toml"
    # no cost gate (it refuses every entry at 10 bps), and base currency to sell: ETH's entries are shorts
    body = "[strategy]\ncost_gate = false\n[paper]\nbalances = { USDT = 10000, BTC = 1, ETH = 10 }\n"
    cfg.write_text(body)
    zero = tmp_path / "zero.toml"
    zero.write_text(body + "taker_fee_bps = 0\nmaker_fee_bps = 0\n")
    env = dict(os.environ)
    env.pop("BOT_DB_URL", None)
    a = subprocess.run([*BOT, "analyze", str(rec), "--interval", "10s", "--json", "--config", str(cfg)],
                       capture_output=True, text=True, env=env, timeout=300, check=True)
    be = json.loads(a.stdout)["break_even"]
    db = tmp_path / "replay.db"
    subprocess.run([*BOT, "replay", str(rec), "--config", str(zero), "--db", f"sqlite+aiosqlite:///{db}"],
                   capture_output=True, text=True, env=env, timeout=300, check=True)
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT side, price, amount, position_after FROM fills ORDER BY id").fetchall()
        mark_row = con.execute("SELECT mid FROM markouts ORDER BY ts DESC, id DESC LIMIT 1").fetchone()
    finally:
        con.close()
    assert rows, "the zero-fee replay traded nothing: the comparison would be empty"
    cash = notional = Decimal(0)
    for side, price, amount, _ in rows:
        p, q = Decimal(price) * SCALE, Decimal(amount) * SCALE
        cash += -p * q if side == "buy" else p * q
        notional += p * q
    position = Decimal(rows[-1][3]) * SCALE
    mark = Decimal(mark_row[0]) * SCALE if mark_row else Decimal(0)
    replay_bps = float((cash + position * mark) / notional * 10_000)
    assert be["fills"] == len(rows)
    assert Decimal(be["notional"]) == notional
    assert be["break_even_fee_bps"] == pytest.approx(replay_bps, rel=0.10, abs=1e-6)
    print(f"{name}: analyze break-even {be['break_even_fee_bps']:.4f} bps per side, zero-fee replay "
          f"{replay_bps:.4f} bps ({len(rows)} fills, notional {notional:.2f}, open {position})")
