"""OrderBook: level bookkeeping, reads, and the health guards (gap, crossed, stale, early delta)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.market.book import OrderBook
from bot.model import BookDelta, BookSnapshot, Side, Trade


def snap(bids: list[tuple[float, float]], asks: list[tuple[float, float]], seq: int | None = None, ts: int = 1000) -> BookSnapshot:
    return BookSnapshot(ts=ts, bids=bids, asks=asks, seq=seq)


def delta(bids: tuple[tuple[float, float], ...] | list[tuple[float, float]] = (),
          asks: tuple[tuple[float, float], ...] | list[tuple[float, float]] = (), seq: int | None = None,
          first_seq: int | None = None, ts: int = 1100) -> BookDelta:
    return BookDelta(ts=ts, bids=list(bids), asks=list(asks), seq=seq, first_seq=first_seq)


def basic() -> OrderBook:
    b = OrderBook("BTC/USDT", tick=0.01)
    b.apply(snap([(100.0, 1.0), (99.5, 2.0), (99.0, 3.0)], [(100.5, 1.5), (101.0, 2.5), (102.0, 4.0)], seq=1042))
    return b


def test_snapshot_reads() -> None:
    b = basic()
    assert b.healthy and b.reason is None and b.has_snapshot
    assert b.best_bid() == (100.0, 1.0)
    assert b.best_ask() == (100.5, 1.5)
    assert (b.best_bid_price(), b.best_bid_size(), b.best_ask_price(), b.best_ask_size()) == (100.0, 1.0, 100.5, 1.5)
    assert b.mid() == 100.25
    assert b.spread() == 0.5
    assert b.top_bids(2) == [(100.0, 1.0), (99.5, 2.0)]
    assert b.top_asks(10) == [(100.5, 1.5), (101.0, 2.5), (102.0, 4.0)]
    assert b.bid_size(99.5) == 2.0 and b.bid_size(98.0) == 0.0
    assert b.ask_size(101.0) == 2.5 and b.ask_size(100.0) == 0.0
    assert b.depth(Side.BUY, 2) == 3.0
    assert b.depth(Side.SELL, 5) == 8.0
    # 50 bps of 100.25 = 0.50125: bids >= 99.74875 (100.0), asks <= 100.75125 (100.5)
    assert b.depth_bps(Side.BUY, 50) == 1.0
    assert b.depth_bps(Side.SELL, 50) == 1.5
    assert b.seq == 1042 and b.updates == 1


def test_empty_book_reads() -> None:
    b = OrderBook()
    assert not b.healthy and b.reason == "no snapshot yet"
    assert b.best_bid() is None and b.best_ask() is None
    assert math.isnan(b.best_bid_price()) and math.isnan(b.best_ask_price())
    assert b.best_bid_size() == 0.0 and b.best_ask_size() == 0.0
    assert b.mid() is None and b.spread() is None
    assert b.top_bids(5) == [] and b.depth_bps(Side.BUY, 10) == 0.0


def test_delta_updates_inserts_and_removes() -> None:
    b = basic()
    b.apply(delta(bids=[(100.0, 0.5), (100.2, 0.7), (99.0, 0.0)], asks=[(100.5, 0.0), (100.4, 1.0)], seq=1043))
    assert b.top_bids(5) == [(100.2, 0.7), (100.0, 0.5), (99.5, 2.0)]
    assert b.top_asks(5) == [(100.4, 1.0), (101.0, 2.5), (102.0, 4.0)]
    assert b.healthy and b.seq == 1043 and b.updates == 2 and b.last_update_ms == 1100
    # removing a level that is not there is a no-op
    b.apply(delta(bids=[(42.0, 0.0)], seq=1044))
    assert b.top_bids(5) == [(100.2, 0.7), (100.0, 0.5), (99.5, 2.0)]


def test_trade_is_ignored_by_apply() -> None:
    b = basic()
    b.apply(Trade(ts=1200, price=100.5, amount=1.0, side=Side.BUY))
    assert b.updates == 1 and b.best_ask() == (100.5, 1.5)


def test_delta_before_snapshot_is_ignored_and_reported() -> None:
    b = OrderBook()
    b.apply(delta(bids=[(100.0, 1.0)]))
    assert not b.healthy and b.reason == "delta before snapshot"
    assert b.best_bid() is None and b.updates == 0 and b.ignored == 1
    b.apply(snap([(99.0, 1.0)], [(101.0, 1.0)]))
    assert b.healthy and b.reason is None and b.best_bid() == (99.0, 1.0)


def test_sequence_gap_with_first_seq() -> None:
    b = basic()
    b.apply(delta(bids=[(99.9, 1.0)], first_seq=1043, seq=1045))
    assert b.healthy
    b.apply(delta(bids=[(99.8, 1.0)], first_seq=1050, seq=1052))
    assert not b.healthy and b.reason == "sequence gap: expected 1046, got 1050"
    # still applied, so signals keep running; unhealthy until the next snapshot
    assert b.bid_size(99.8) == 1.0 and b.seq == 1052
    b.apply(delta(bids=[(99.7, 1.0)], first_seq=1053, seq=1053))
    assert not b.healthy and b.reason == "sequence gap: expected 1046, got 1050"
    b.apply(snap([(100.0, 1.0)], [(101.0, 1.0)], seq=2000))
    assert b.healthy and b.reason is None and b.bid_size(99.8) == 0.0


def test_sequence_gap_with_seq_only() -> None:
    b = basic()
    b.apply(delta(bids=[(99.9, 1.0)], seq=1043))
    assert b.healthy
    b.apply(delta(bids=[(99.9, 2.0)], seq=1045))
    assert b.reason == "sequence gap: expected 1044, got 1045"


def test_stale_or_duplicate_seq_is_ignored() -> None:
    b = basic()
    b.apply(delta(bids=[(99.9, 1.0)], first_seq=1043, seq=1044))
    b.apply(delta(bids=[(99.9, 5.0)], first_seq=1043, seq=1044))  # duplicate
    b.apply(delta(bids=[(99.9, 7.0)], seq=1040))  # older than the book
    assert b.healthy and b.bid_size(99.9) == 1.0 and b.ignored == 2 and b.updates == 2


def test_first_delta_after_snapshot_may_overlap_it() -> None:
    """Binance: the first diff after a snapshot has U <= lastUpdateId+1 <= u."""
    b = basic()  # seq 1042
    b.apply(delta(bids=[(99.9, 1.0)], first_seq=1040, seq=1047))
    assert b.healthy and b.seq == 1047
    b.apply(delta(bids=[(99.9, 1.0)], first_seq=1045, seq=1049))  # overlap later is a broken stream
    assert b.reason == "sequence gap: expected 1048, got 1045"


def test_crossed_book_is_flagged_with_prices() -> None:
    b = basic()
    b.apply(delta(bids=[(100.6, 1.0)]))
    assert not b.healthy and b.reason == "crossed book: best bid 100.6 >= best ask 100.5"
    b.apply(delta(bids=[(100.6, 0.0)]))
    assert not b.healthy  # until the next snapshot
    b.apply(snap([(100.0, 1.0)], [(100.0, 1.0)]))
    assert b.reason == "crossed book: best bid 100.0 >= best ask 100.0"


def test_check_stale() -> None:
    b = basic()  # last update at ts 1000
    assert b.check_stale(now_ms=5000, stale_after_ms=5000) is True
    assert b.check_stale(now_ms=6001, stale_after_ms=5000) is False
    assert b.reason == "stale: no book update for 5001 ms (limit 5000 ms)"
    b.apply(snap([(100.0, 1.0)], [(101.0, 1.0)], ts=7000))
    assert b.check_stale(now_ms=7100, stale_after_ms=5000) is True


def test_last_update_prefers_local_receive_time() -> None:
    b = OrderBook()
    b.apply(BookSnapshot(ts=1000, bids=[(1.0, 1.0)], asks=[(2.0, 1.0)], recv=1300))
    assert b.last_update_ms == 1300


def test_mark_unhealthy_keeps_first_reason() -> None:
    b = basic()
    b.mark_unhealthy("feed reconnecting")
    b.mark_unhealthy("something else")
    assert b.reason == "feed reconnecting"


# --------------------------------------------------------------------------- properties

prices = st.integers(min_value=1, max_value=60).map(lambda i: i * 0.5)
sizes = st.sampled_from([0.0, 0.0, 0.1, 1.0, 2.5, 3.0])
levels_st = st.lists(st.tuples(prices, sizes), max_size=8)


@settings(max_examples=300, deadline=None)
@given(
    snapshot_bids=st.lists(st.tuples(prices, sizes.filter(lambda q: q > 0)), max_size=10),
    snapshot_asks=st.lists(st.tuples(prices, sizes.filter(lambda q: q > 0)), max_size=10),
    deltas=st.lists(st.tuples(levels_st, levels_st), max_size=25),
)
def test_book_equals_naive_reference(
    snapshot_bids: list[tuple[float, float]],
    snapshot_asks: list[tuple[float, float]],
    deltas: list[tuple[list[tuple[float, float]], list[tuple[float, float]]]],
) -> None:
    b = OrderBook()
    b.apply(BookDelta(ts=0, bids=[(1.0, 1.0)], asks=[]))  # ignored: before the snapshot
    ref_b = {p: q for p, q in snapshot_bids}
    ref_a = {p: q for p, q in snapshot_asks}
    b.apply(BookSnapshot(ts=1, bids=snapshot_bids, asks=snapshot_asks))
    crossed_seen = bool(ref_b and ref_a and max(ref_b) >= min(ref_a))
    for i, (db, da) in enumerate(deltas):
        b.apply(BookDelta(ts=2 + i, bids=db, asks=da))
        for p, q in db:
            if q > 0:
                ref_b[p] = q
            else:
                ref_b.pop(p, None)
        for p, q in da:
            if q > 0:
                ref_a[p] = q
            else:
                ref_a.pop(p, None)
        if ref_b and ref_a and max(ref_b) >= min(ref_a):
            crossed_seen = True
        want_b = sorted(ref_b.items(), reverse=True)
        want_a = sorted(ref_a.items())
        assert b.bids() == want_b
        assert b.asks() == want_a
        assert b.top_bids(3) == want_b[:3] and b.top_asks(3) == want_a[:3]
        bb, ba = b.best_bid(), b.best_ask()
        if bb is not None and ba is not None and bb[0] >= ba[0]:
            assert not b.healthy and b.reason is not None and b.reason.startswith("crossed book")
        if not crossed_seen:
            assert b.healthy
    # a snapshot resets state and health
    b.apply(BookSnapshot(ts=10_000, bids=[(10.0, 1.0)], asks=[(11.0, 2.0)]))
    assert b.bids() == [(10.0, 1.0)] and b.asks() == [(11.0, 2.0)] and b.healthy and b.reason is None


def test_last_update_prefers_the_monotonic_receive_time() -> None:
    """The live feed stamps ``recv_mono``; the stale check then compares monotonic with monotonic."""
    b = OrderBook()
    b.apply(BookSnapshot(ts=1000, bids=[(1.0, 1.0)], asks=[(2.0, 1.0)], recv=1300, recv_mono=40))
    assert b.last_update_ms == 40
    b.apply(BookDelta(ts=1100, bids=[(1.0, 2.0)], asks=[], recv=1400, recv_mono=90))
    assert b.last_update_ms == 90
    assert b.check_stale(now_ms=5090, stale_after_ms=5000) is True
    assert b.check_stale(now_ms=5091, stale_after_ms=5000) is False
    # recv_mono is local bookkeeping: not part of an event's value
    assert BookDelta(ts=1, bids=[], asks=[], recv_mono=1) == BookDelta(ts=1, bids=[], asks=[], recv_mono=2)
