"""Synthetic market: deterministic, on the grid, never crossed, and the regimes do what they say."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from bot.market.book import OrderBook
from bot.market.recorder import RecordingReader
from bot.market.synthetic import Regime, SyntheticMarket, write_synthetic_recording
from bot.model import BookDelta, BookSnapshot, MarketEvent, Side, Trade


def _on_grid(x: float, unit: str) -> bool:
    return Decimal(repr(x)) % Decimal(unit) == 0


def test_same_seed_same_events_other_seed_differs() -> None:
    a = list(SyntheticMarket(seed=3).events(20))
    b = list(SyntheticMarket(seed=3).events(20))
    c = list(SyntheticMarket(seed=4).events(20))
    assert a == b
    assert a != c


def test_events_shape_seq_and_grid() -> None:
    m = SyntheticMarket(seed=5, levels=10)
    evs = list(m.events(30))
    assert isinstance(evs[0], BookSnapshot) and evs[0].seq == 1_000_000
    assert len(evs[0].bids) == 10 and len(evs[0].asks) == 10
    deltas = [e for e in evs if isinstance(e, BookDelta)]
    assert len(deltas) == 300 and m.now_ms == 1_700_000_000_000 + 30_000
    prev = evs[0].seq
    for d in deltas:
        assert d.first_seq == prev + 1 and d.seq is not None and d.seq >= d.first_seq
        prev = d.seq
    last_ts = 0
    for e in evs:
        if isinstance(e, Trade):
            assert _on_grid(e.price, "0.01") and _on_grid(e.amount, "0.00001") and e.amount > 0
        else:
            assert all(_on_grid(p, "0.01") and _on_grid(q, "0.00001") for p, q in e.bids + e.asks)
        assert e.ts >= last_ts  # trades of a step come before its delta, in time order
        last_ts = e.ts


def test_book_never_crossed_and_matches_market_state() -> None:
    m = SyntheticMarket(seed=9)
    book = OrderBook()
    for ev in m.events(120):
        book.apply(ev)
        if not isinstance(ev, Trade):
            assert book.healthy, book.reason
            assert book.best_bid_price() < book.best_ask_price()
    bids, asks = m.book_levels()
    assert book.bids() == bids and book.asks() == asks
    assert 20 <= len(bids) <= 25 and 20 <= len(asks) <= 25


def _stats(evs: list[MarketEvent], regimes: list[Regime]) -> tuple[dict[int, float], dict[int, float]]:
    """Per direction (0 = outside regimes): buy share of traded volume, and mid change per second."""
    vol: dict[int, list[float]] = {-1: [0.0, 0.0], 0: [0.0, 0.0], 1: [0.0, 0.0]}
    book = OrderBook()
    mids: list[tuple[int, float]] = []
    for ev in evs:
        if isinstance(ev, Trade):
            d = next((r.direction for r in regimes if r.start_ms <= ev.ts <= r.end_ms), 0)
            vol[d][0 if ev.side is Side.BUY else 1] += ev.amount
        else:
            book.apply(ev)
            m = book.mid()
            assert m is not None
            mids.append((ev.ts, m))
    drift: dict[int, float] = {}
    for d in (-1, 1):
        moves = []
        for r in regimes:
            if r.direction == d:
                inside = [m for t, m in mids if r.start_ms <= t <= r.end_ms]
                moves.append((inside[-1] - inside[0]) / ((r.end_ms - r.start_ms) / 1000))
        if moves:
            drift[d] = sum(moves) / len(moves)
    share = {d: b / (b + s) for d, (b, s) in vol.items() if b + s > 0}
    return share, drift


def test_pressure_regimes_move_flow_and_mid() -> None:
    m = SyntheticMarket(seed=7)
    evs = list(m.events(600))
    regimes = [r for r in m.regimes if r.start_ms < m.now_ms]
    assert {r.direction for r in regimes} == {1, -1}
    share, drift = _stats(evs, regimes)
    assert share[1] > 0.75 and share[-1] < 0.25 and 0.4 < share[0] < 0.6
    assert drift[1] > 0.03 and drift[-1] < -0.03  # quote per second, several ticks


def test_explicit_regimes_and_pure_noise() -> None:
    reg = [Regime(1_700_000_010_000, 1_700_000_040_000, -1)]
    m = SyntheticMarket(seed=1, pressure=reg)
    evs = list(m.events(60))
    assert m.regimes == reg
    share, drift = _stats(evs, reg)
    assert share[-1] < 0.25 and drift[-1] < -0.03
    quiet = SyntheticMarket(seed=1, pressure=False)
    list(quiet.events(60))
    assert quiet.regimes == []


def test_write_synthetic_recording(tmp_path: Path) -> None:
    p = tmp_path / "syn.jsonl.gz"
    regimes = write_synthetic_recording(p, 200, seed=7)
    assert regimes and all(r.start_ms < 1_700_000_000_000 + 200_000 for r in regimes)
    r = RecordingReader(p)
    evs = list(r)
    assert r.header.tick == 0.01 and r.header.symbol == "BTC/USDT" and r.header.exchange == "synthetic"
    assert evs == list(SyntheticMarket(seed=7).events(200))
